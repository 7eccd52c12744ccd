"""Table 1: a scikit-learn LinearRegression on 8 numeric features, one row per request."""

from __future__ import annotations

import pickle
from pathlib import Path

from bench.errors import BenchError
from bench.suite import Suite
from bench.systems.asgi_limit import ASGILimit
from bench.systems.base import Workload
from bench.systems.bentoml_serve import BentoMLServe
from bench.systems.fastapi_uvicorn import FastAPIUvicorn
from bench.systems.flask_dev import FlaskDev
from bench.systems.gunicorn_flask import GunicornFlask
from bench.systems.litserve_cpu import LitServeCPU
from bench.systems.mlserver_sklearn import MLServerSKLearn
from bench.systems.modelport import Modelport


def train_linear(work: Path) -> Workload:
    try:
        from sklearn.datasets import make_regression
        from sklearn.linear_model import LinearRegression
    except ImportError:
        raise BenchError("scikit-learn is not installed in the harness's environment") from None
    X, y = make_regression(n_samples=1000, n_features=8, random_state=0)
    model = LinearRegression().fit(X, y)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "model.pkl"
    with path.open("wb") as f:
        pickle.dump(model, f)
    # Floats survive JSON exactly (repr round-trips), so every server sees this very row.
    sample = [float(v) for v in X[0]]
    expected = float(model.predict([sample])[0])
    return Workload("LinearRegression, 8 features", path, sample, expected)


TABULAR = Suite(
    key="tabular",
    title="Tabular regression: scikit-learn LinearRegression, 8 float features, 1 row per request",
    prepare=train_linear,
    systems=(
        FlaskDev(),
        GunicornFlask(),
        FastAPIUvicorn(),
        BentoMLServe(),
        MLServerSKLearn(),
        LitServeCPU(),
        Modelport(),
        ASGILimit(),
    ),
)
