"""In-process model servers: small models saved to a temporary store, served through the ASGI app
with no process or socket (starlette's TestClient), or on a real loopback socket by uvicorn in a thread
(``ThreadServer``, the ``serve_in_thread`` fixture) where a client needs a port."""

from __future__ import annotations

import threading
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
from modelport.serving.limits import ReadLimits
from modelport.serving.runtime import ModelSet, ServeSpec, load_models
from modelport.store import ModelStore
from tests.helpers import Server, free_port, wait_until

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


class ThreadServer:
    """``refs`` from ``store`` served by modelport's app on a free loopback port, by uvicorn in a thread of
    this process with the options ``modelport serve`` gives it (one worker): for tests whose subject is
    not the serve command (a gateway in front, a client library) but that need real HTTP on a port."""

    def __init__(self, store: ModelStore, refs: list[str], *, limits: ReadLimits = ReadLimits(), host: str = "127.0.0.1",
                 port: int | None = None, **app_options) -> None:
        """``host``, ``port``: another loopback address (127.0.0.2...) and a given port, for a proxy that
        finds its servers by name on one port (tests/haproxy)."""
        import uvicorn

        from modelport.serving.protocol import uvicorn_options

        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self.models = load_models([ServeSpec.parse(r) for r in refs], store)
        app = create_app(self.models, max_buffered=limits.max_buffered, **app_options)
        config = uvicorn.Config(app, host=host, port=self.port, loop="uvloop", log_level="warning",
                                server_header=False, proxy_headers=False, timeout_graceful_shutdown=10,
                                **uvicorn_options(limits))
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)

    def start(self) -> ThreadServer:
        self._thread.start()
        wait_until(lambda: self._server.started or not self._thread.is_alive(), bool, timeout=30, interval=0.02)
        if not self._server.started:
            raise AssertionError(f"the in-thread server on port {self.port} did not start")
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """A normal stop: the app's shutdown runs (queued prediction records are written)."""
        self._server.should_exit = True
        self._thread.join(30)
        assert not self._thread.is_alive(), f"the in-thread server on port {self.port} did not stop"

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def serve_in_thread(store: ModelStore) -> Iterator:
    """Start a ``ThreadServer`` for models of this test's store; each still running is stopped after the test."""
    servers: list[ThreadServer] = []

    def start(*refs: str, **app_options) -> ThreadServer:
        servers.append(ThreadServer(store, list(refs), **app_options))
        return servers[-1].start()

    yield start
    for server in servers:
        if server.running:
            server.stop()


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
