"""Training tabular models from a CSV and registering the result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.api import save_model
from modelport.errors import DataError
from modelport.extras import require
from modelport.store import ModelStore, ModelVersion
from modelport.store.refs import check_name
from modelport.training.data import load_csv


def _estimators() -> dict[str, tuple[Callable[[int], Any], bool]]:
    """name → (factory taking a seed, is_classifier). Imported lazily: sklearn is heavy."""
    from sklearn import ensemble, linear_model

    return {
        "linear-regression": (lambda seed: linear_model.LinearRegression(), False),
        "ridge": (lambda seed: linear_model.Ridge(random_state=seed), False),
        "random-forest": (lambda seed: ensemble.RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=-1), False),
        "gradient-boosting": (lambda seed: ensemble.GradientBoostingRegressor(random_state=seed), False),
        "logistic-regression": (lambda seed: linear_model.LogisticRegression(max_iter=1000, random_state=seed), True),
        "random-forest-classifier": (lambda seed: ensemble.RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=-1), True),
    }


MODEL_TYPES = ("linear-regression", "ridge", "random-forest", "gradient-boosting", "logistic-regression", "random-forest-classifier")


def check_options(name: str, model: str, test_size: float) -> None:
    """Everything about a training run that can be wrong before any data is read or anything is fitted."""
    check_name(name)
    if model not in MODEL_TYPES:
        raise DataError(f"Unknown model type {model!r}; choose one of: {', '.join(MODEL_TYPES)}")
    if not 0 < test_size < 1:
        raise DataError(f"--test-size must be between 0 and 1 (got {test_size})")


@dataclass
class TrainResult:
    version: ModelVersion
    metrics: dict[str, float]
    n_train: int
    n_test: int


def train(data: str | Path, target: str, name: str, *, model: str = "linear-regression", test_size: float = 0.2,
          seed: int = 42, store: ModelStore | None = None, description: str = "",
          progress: Callable[[str], None] = lambda _: None) -> TrainResult:
    require("train", "Training")
    check_options(name, model, test_size)
    from sklearn.model_selection import train_test_split

    factory, is_classifier = _estimators()[model]

    progress(f"Reading {data}")
    ds = load_csv(data, target, classification=is_classifier)
    n_test = int(round(len(ds.y) * test_size))
    if n_test < 1 or len(ds.y) - n_test < 2:
        raise DataError(f"{len(ds.y)} rows are too few to split with --test-size {test_size}: need at least 2 for training and 1 for testing")
    stratify = ds.y if is_classifier and ds.y.value_counts().min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(ds.x, ds.y, test_size=test_size, random_state=seed, stratify=stratify)
    if is_classifier and y_train.nunique() < 2:
        raise DataError(f"Target {target!r} has a single class in the training split: a classifier needs at least two")

    progress(f"Fitting {model} on {len(y_train)} rows × {len(ds.features)} features")
    estimator = factory(seed)
    estimator.fit(x_train, y_train)

    progress(f"Evaluating on {len(y_test)} held-out rows")
    metrics = evaluate(estimator, x_test, y_test, is_classifier)

    progress(f"Registering {name}")
    tags = {"model_type": model, "target": target, "data": Path(data).name}
    # Held-out rows go with the model: a conversion to ONNX (build --runtime onnx) is checked on them.
    info = save_model(estimator, name, feature_names=ds.features, input_example=x_test, metrics=metrics, tags=tags, store=store,
                      description=description or f"{model} trained on {Path(data).name} to predict {target}")
    return TrainResult(info, metrics, len(y_train), len(y_test))


def evaluate(estimator: Any, x: Any, y: Any, is_classifier: bool) -> dict[str, float]:
    from sklearn import metrics as m

    pred = estimator.predict(x)
    if is_classifier:
        average = "binary" if y.nunique() == 2 and set(y.unique()) <= set(estimator.classes_) and len(estimator.classes_) == 2 else "macro"
        pos = estimator.classes_[1] if average == "binary" else 1
        return {"accuracy": float(m.accuracy_score(y, pred)),
                "f1": float(m.f1_score(y, pred, average=average, pos_label=pos) if average == "binary" else m.f1_score(y, pred, average=average))}
    return {"r2": float(m.r2_score(y, pred)), "mae": float(m.mean_absolute_error(y, pred)),
            "rmse": float(m.root_mean_squared_error(y, pred))}
