"""The model server's one route table: the raw prediction endpoints are routes in it, matched as
Starlette matches them, and everything else about a request (404, 405, errors) is answered in one
place. In-process: the app through httpx.ASGITransport, its lifespan run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.routing import Route

from modelport.serving.app import create_app
from modelport.serving.predict_router import FastRoutes, Predictions
from modelport.serving.runtime import ModelSet, ServeSpec, load_models
from modelport.store import ModelStore

ROW = [0.1, 0.2, 0.3, 0.4]
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # uvicorn's loop


@pytest.fixture
async def served(model_store: ModelStore) -> AsyncIterator[tuple[httpx.AsyncClient, ModelSet, FastRoutes]]:
    models = load_models([ServeSpec.parse("lin"), ServeSpec.parse("forest")], model_store)
    app = create_app(models)
    assert isinstance(app, FastRoutes)
    lifespan = _Lifespan(app)
    await lifespan.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://modelport") as client:
        yield client, models, app
    await lifespan.stop()


class _Lifespan:
    """The ASGI lifespan protocol, as a server runs it (httpx's transport does not)."""

    def __init__(self, app: FastRoutes) -> None:
        self.app = app
        self.to_app: asyncio.Queue[dict] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict] = asyncio.Queue()

    async def start(self) -> None:
        self.task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                                 self.to_app.get, self.from_app.put))
        await self.to_app.put({"type": "lifespan.startup"})
        assert (await self.from_app.get())["type"] == "lifespan.startup.complete"

    async def stop(self) -> None:
        await self.to_app.put({"type": "lifespan.shutdown"})
        assert (await self.from_app.get())["type"] == "lifespan.shutdown.complete"
        await self.task


def test_the_prediction_endpoints_are_routes_of_the_app(model_store: ModelStore) -> None:
    app = create_app(load_models([ServeSpec.parse("lin")], model_store))
    assert isinstance(app, FastRoutes)
    table = {r.path: r for r in app.app.routes if isinstance(r, Route)}  # the Starlette app's one table
    for path in ("/predict", "/models/{name}/predict", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        assert isinstance(table[path].endpoint, Predictions) and table[path].methods == {"POST"}
    assert {"/health", "/v2/models/{name}", "/metrics"} <= table.keys()


async def test_predictions_answer_on_every_prediction_path(served) -> None:
    client, _, _ = served
    simple = await client.post("/predict", json={"features": ROW})
    named = await client.post("/models/lin/predict", json={"features": ROW})
    assert simple.status_code == named.status_code == 200 and simple.json() == named.json()
    assert simple.headers["x-model"] == "lin" and simple.headers["x-model-version"] == "1"
    v2 = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
    for path in ("/v2/models/forest/infer", "/v2/models/forest/versions/1/infer"):
        r = await client.post(path, json=v2)
        assert r.status_code == 200 and r.json()["model_name"] == "forest", r.text


async def test_wrong_methods_unknown_paths_and_models_are_json_errors(served) -> None:
    client, _, _ = served
    r = await client.get("/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json() == {"error": "Method GET is not allowed on /predict; use POST"}
    r = await client.put("/v2/models/lin/infer", json={})
    assert r.status_code == 405 and r.json()["error"] == "Method PUT is not allowed on /v2/models/lin/infer; use POST"
    r = await client.post("/models/lin/predict/more", json={"features": ROW})
    assert r.status_code == 404 and r.json() == {"error": "No such endpoint: POST /models/lin/predict/more"}
    r = await client.post("/models/ghost/predict", json={"features": ROW})
    assert r.status_code == 404 and "Model 'ghost' is not served here" in r.json()["error"]
    r = await client.post("/v2/models/lin/versions/7/infer", json={})
    assert r.status_code == 404 and "version 7 is not served here" in r.json()["error"]
    r = await client.get("/v2/models/lin")  # not a prediction route: the metadata, through the app
    assert r.status_code == 200 and r.json()["name"] == "lin"


async def test_bad_bodies_are_400s_with_the_same_reader_on_every_path(served) -> None:
    client, _, _ = served
    for path in ("/predict", "/v2/models/lin/infer"):
        r = await client.post(path, content=b"")
        assert r.status_code == 400 and r.json() == {"error": "Request body is empty: send a JSON object"}
        r = await client.post(path, content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"].startswith("Malformed JSON")
        r = await client.post(path, content=b"{}", headers={"content-encoding": "br"})
        assert r.status_code == 415 and "Content-Encoding br is not supported" in r.json()["error"]


async def test_the_lifespan_closes_the_model_sets_threads(model_store: ModelStore) -> None:
    models = load_models([ServeSpec.parse("lin")], model_store)
    lifespan = _Lifespan(create_app(models))  # type: ignore[arg-type]
    await lifespan.start()
    (pool,) = models.pools
    assert pool.submit(sum, [1, 2]).result() == 3
    await lifespan.stop()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(sum, [1, 2])
