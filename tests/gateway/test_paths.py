"""The gateway lets no encoding of a path reach a model unchecked (issue 10, defect 1).

A real gateway process (uvicorn) with API keys and a SQLite prediction log, in front of a real
model server (modelport's app on a loopback port, served in a thread of the test); requests are sent as raw bytes so that no client normalises them first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from modelport.gateway.keys import KeyStore

from modelport.gateway.paths import ambiguity
from modelport.predlog.db import make_engine
from modelport.predlog.queries import list_predictions
from tests.fixtures_serving import ThreadServer
from tests.gateway.path_corpus import AMBIGUOUS, SAME_ROUTE, body_for, decoded_route, raw_post
from tests.helpers import Server, free_port

PREDICTION_ROUTE = re.compile(r"/predict|/models/lin/predict|/v2/models/lin(/versions/1)?/infer")


@pytest.mark.parametrize(("raw", "refused"), [
    ("/predict", False), ("/models/a.b-c_d/predict", False), ("/pre%64ict", False), ("/predict/", False),
    ("/%2570redict", True), ("/a%2Fb", True), ("/a%5cb", True), ("/./predict", True), ("/a/../predict", True),
    ("/%2e%2e/predict", True), ("//predict", True), ("/predict;x", True), ("/predict%00", True), ("predict", True),
])
def test_ambiguous_paths(raw: str, refused: bool) -> None:
    assert (ambiguity(raw.encode(), decoded_route(raw)) is not None) == refused


def model_requests(server_url: str) -> float:
    """Prediction requests the model server has answered, from its own metrics."""
    text = httpx.get(server_url + "/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(r'^modelport_requests_total\{[^}]*\} (\S+)$', text, re.M))


@dataclass
class Edge:
    gateway: Server
    model: ThreadServer
    token: str
    revoked_token: str
    db_url: str


@pytest.fixture
def edge(store, regression_csv, serve_in_thread, tmp_path: Path) -> Iterator[Edge]:
    """A gateway process requiring keys, logging to SQLite, in front of a model server for 'lin'."""
    from modelport.training.trainer import train

    path, _, _ = regression_csv
    train(path, "target", "lin", store=store)
    model = serve_in_thread("lin")
    db_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    keys = KeyStore(make_engine(db_url))
    _, token = keys.create("client")
    revoked, revoked_token = keys.create("former")
    keys.revoke(revoked.id)
    port = free_port()
    gateway = Server(["gateway", "--route", f"lin={model.url}@1", "--port", str(port), "--admin-port", str(free_port()),
                      "--db-url", db_url, "--require-keys", "--spool-dir", str(tmp_path / "spool")],
                     port, tmp_path / "gateway.log").wait_ready()
    try:
        yield Edge(gateway, model, token, revoked_token, db_url)
    finally:
        gateway.stop()


def test_no_encoding_of_a_path_reaches_a_model_without_a_valid_key(edge: Edge) -> None:
    port = edge.gateway.port
    before = model_requests(edge.model.url)
    answers: dict[tuple[str, str], int] = {}
    logged: list[str] = []
    for n, path in enumerate(SAME_ROUTE + AMBIGUOUS):
        for who, headers in (("anonymous", {}), ("revoked", {"x-api-key": edge.revoked_token}),
                             ("client", {"authorization": f"Bearer {edge.token}"})):
            request_id = f"{who}-{n}"
            status, text = raw_post(port, path, body_for(path, 8), {**headers, "x-request-id": request_id})
            answers[(path, who)] = status
            assert status < 500, (path, who, status, text)
            if status == 200:
                logged.append(request_id)
    assert model_requests(edge.model.url) - before == len(logged)
    edge.gateway.stop()  # a normal stop writes every queued record

    def reached(path: str) -> list[str]:
        return [who for who in ("anonymous", "revoked", "client") if answers[(path, who)] == 200]

    # A valid key is needed for every route a model answers; paths that decode (once) to a
    # prediction route are that route; everything else reaches nothing, whatever the key.
    assert {p: reached(p) for p in SAME_ROUTE} == {p: ["client"] for p in SAME_ROUTE}
    assert {p: reached(p) for p in AMBIGUOUS} == {p: [] for p in AMBIGUOUS}
    assert all(answers[(p, w)] == 401 for p in SAME_ROUTE for w in ("anonymous", "revoked"))
    assert all(PREDICTION_ROUTE.fullmatch(decoded_route(p)) for p in SAME_ROUTE)
    rows = list_predictions(make_engine(edge.db_url), limit=1000)
    assert sorted(r["request_id"] for r in rows) == sorted(logged)
    assert {r["key_id"] for r in rows} != {None} and all(r["model"] == "lin" for r in rows)


def test_only_health_and_the_api_description_are_public(edge: Edge) -> None:
    """Issue 10, defect 12: metrics, model metadata and the route table need a key; no internal address leaks."""
    url, auth = edge.gateway.url, {"authorization": f"Bearer {edge.token}"}
    public = ["/v2/health/live", "/v2/health/ready", "/openapi.json", "/docs"]
    keyed = ["/metrics", "/models", "/health", "/v2", "/v2/models/lin", "/v2/models/lin/ready",
             "/v2/models/lin/versions/1", "/gateway/routes"]
    with httpx.Client(base_url=url, timeout=10) as client:
        assert {p: client.get(p).status_code for p in public} == {p: 200 for p in public}
        assert {p: client.get(p).status_code for p in keyed} == {p: 401 for p in keyed}
        assert {p: client.get(p, headers=auth).status_code for p in keyed} == {p: 200 for p in keyed}
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        routes = client.get("/gateway/routes", headers=auth)
    assert routes.json()["routes"] == [{"name": "lin", "version": "1", "in_flight": 0}]
    assert edge.model.url.split("//")[1] not in routes.text
