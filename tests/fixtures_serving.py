"""In-process model servers: small models saved to a temporary store, served through the ASGI app
with no process or socket (starlette's TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression
from starlette.testclient import TestClient

import modelport
from modelport.serving.app import create_app
from modelport.serving.batching import BatchConfig
from modelport.serving.runtime import ModelSet, ServeSpec, load_models
from modelport.store import ModelStore
from tests.helpers import Server, free_port

FEATURES = ["a", "b", "c", "d"]


def small_models(home: Path) -> ModelStore:
    """A store with ``lin`` (a linear regressor) and ``forest`` (a random-forest classifier), 4 features each."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4))
    store = ModelStore(home)
    modelport.save_model(LinearRegression().fit(x, x @ [1.0, 2.0, 3.0, 4.0]), "lin", feature_names=FEATURES, store=store)
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, np.where(x[:, 0] > 0, "yes", "no"))
    modelport.save_model(forest, "forest", feature_names=FEATURES, store=store)
    return store


def serve_small_models(tmp: Path, workers: int = 2) -> Server:
    """``modelport serve lin forest`` (the models of ``small_models``) in its own process; stop it when done."""
    small_models(tmp / "home").close()
    port = free_port()
    return Server(["serve", "lin", "forest", "--port", str(port), "--workers", str(workers)], port, tmp / "server.log",
                  env={"MODELPORT_HOME": str(tmp / "home")})


def serve_in_process(store: ModelStore, refs: list[str], batch: BatchConfig | None = None, **app_options) -> tuple[TestClient, ModelSet]:
    models = load_models([ServeSpec.parse(r, batch) for r in refs], store)
    return TestClient(create_app(models, **app_options), raise_server_exceptions=False), models


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStore]:
    store = small_models(tmp_path_factory.mktemp("serving") / "home")
    yield store
    store.close()


@pytest.fixture(scope="module")
def app_client(model_store: ModelStore) -> Iterator[TestClient]:
    """``lin`` (the default for /predict) and ``forest``, served in-process."""
    test_client, _ = serve_in_process(model_store, ["lin", "forest"])
    with test_client:
        yield test_client
