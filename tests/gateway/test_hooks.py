"""The hooks in the gateway's app, in process, in front of a real model server (modelport's app on a loopback
port): keys and the log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from modelport.gateway.keys import KeyStore

from modelport.errors import ModelportError
from modelport.gateway.hooks import hooks_from_options
from modelport.gateway.proxy import RouteTable, Upstream, create_gateway_app
from modelport.predlog import open_log
from modelport.predlog.db import make_engine
from modelport.predlog.queries import list_predictions
from tests.fixtures_db import record
from tests.helpers import free_port


def test_keys_and_prediction_log_through_the_gateway(store, regression_csv, serve_in_thread, db_url: str,
                                                     tmp_path: Path) -> None:
    from modelport.training.trainer import train

    path, x, _ = regression_csv
    train(path, "target", "lin", store=store)
    server = serve_in_thread("lin")
    key, token = KeyStore(make_engine(db_url)).create("test")
    hooks = hooks_from_options(db_url, True, tmp_path / "spool")
    app = create_gateway_app(RouteTable([Upstream("lin", server.url)]), default="lin", hooks=hooks)

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway") as client:
            body = {"features": x[0].tolist()}
            return [await client.post("/predict", json=body),
                    await client.post("/predict", json=body, headers={"authorization": f"Bearer {token}"}),
                    await client.post("/models/lin/predict", json={"instances": x[:3].tolist()},
                                      headers={"x-api-key": token, "x-request-id": "mine"})]

    anonymous, single, batch = asyncio.run(scenario())
    assert anonymous.status_code == 401 and single.status_code == 200 and batch.status_code == 200
    assert hooks.predictions.flush(10)
    hooks.close()
    rows = list_predictions(make_engine(db_url), model="lin")
    assert len(rows) == 2  # the refused request is no prediction
    newest = rows[0]
    assert (newest["request_id"], newest["key_id"], newest["version"], newest["status"]) == ("mine", key.id, "1", 200)
    assert json.loads(newest["inputs"]) == {"instances": x[:3].tolist()}
    assert json.loads(newest["outputs"]) == batch.json()


def test_a_model_service_that_does_not_answer_is_logged_as_a_failed_prediction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    hooks = hooks_from_options(url, False, tmp_path / "spool")
    routes = RouteTable([Upstream("lin", f"http://127.0.0.1:{free_port()}", "3")])  # nothing listens there
    app = create_gateway_app(routes, default="lin", hooks=hooks)

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway") as client:
            return await client.post("/predict", json={"features": [1.0, 2.0]}, headers={"x-request-id": "down-1"})

    reply = asyncio.run(scenario())
    assert reply.status_code == 503 and "'lin' is unavailable" in reply.json()["error"]
    assert reply.headers["x-request-id"] == "down-1" and reply.headers["retry-after"] == "1"
    assert hooks.predictions.flush(10)
    hooks.close()
    (row,) = list_predictions(make_engine(url), model="lin")
    assert (row["request_id"], row["version"], row["status"]) == ("down-1", "3", 503)
    assert json.loads(row["inputs"]) == {"features": [1.0, 2.0]}
    assert json.loads(row["outputs"]) == reply.json()


def test_options() -> None:
    assert hooks_from_options(None, False, None) is None
    with pytest.raises(ModelportError, match="--require-keys needs --db-url"):
        hooks_from_options(None, True, None)


def test_open_log_writes_in_the_background(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = open_log(url, tmp_path / "spool")
    for n in range(5):
        log.submit(record(n, key_id=None))
    log.close()  # writes what is queued
    assert len(list_predictions(make_engine(url))) == 5
