"""Open Inference Protocol conformance and the documented request shapes, in-process."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
from starlette.testclient import TestClient

from modelport.store import ModelStore
from tests.fixtures_serving import serve_in_process

ROW = {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}


def test_health_and_model_ready_answer_the_protocol_bodies(app_client: TestClient) -> None:
    assert app_client.get("/v2/health/live").json() == {"live": True}
    assert app_client.get("/v2/health/ready").json() == {"ready": True}
    assert app_client.get("/v2/models/forest/ready").json() == {"name": "forest", "ready": True}
    assert app_client.get("/v2/models/forest/versions/1/ready").json() == {"name": "forest", "ready": True}
    assert app_client.get("/v2/models/forest/versions/2/ready").status_code == 404
    assert app_client.get("/v2/").json() == app_client.get("/v2").json()
    assert app_client.get("/v2/").json()["name"] == "modelport"


def test_request_id_is_echoed_only_as_a_string(app_client: TestClient) -> None:
    for extra in ({}, {"parameters": {}}):  # the one-pass path and the general one
        r = app_client.post("/v2/models/lin/infer", json={"id": "abc", "inputs": [ROW], **extra})
        assert r.status_code == 200 and r.json()["id"] == "abc"
        assert "id" not in app_client.post("/v2/models/lin/infer", json={"inputs": [ROW], **extra}).json()
        for bad, kind in ((7, "a number"), (None, "null"), ({"a": 1}, "an object"), (["x"], "a list"), (True, "a boolean")):
            r = app_client.post("/v2/models/lin/infer", json={"id": bad, "inputs": [ROW], **extra})
            assert r.status_code == 400 and r.json()["error"] == f'"id" must be a string, got {kind}'


def test_compressed_requests_are_decoded(app_client: TestClient) -> None:
    expected = app_client.post("/predict", json={"features": [1, 2, 3, 4]}).json()
    body = json.dumps({"features": [1, 2, 3, 4]}).encode()
    for encoding, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)), ("identity", body)):
        r = app_client.post("/predict", content=data, headers={"content-encoding": encoding})
        assert r.status_code == 200 and r.json() == expected
    # tritonclient compresses the JSON header and the binary tensors together
    header = json.dumps({"inputs": [{**ROW, "data": None, "parameters": {"binary_data_size": 32}}]}).encode()
    raw = header + np.array([1, 2, 3, 4], dtype=np.float64).tobytes()
    r = app_client.post("/v2/models/lin/infer", content=gzip.compress(raw),
                        headers={"content-encoding": "gzip", "inference-header-content-length": str(len(header))})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [expected["prediction"]]


def test_unsupported_or_broken_compression_is_a_clear_4xx(app_client: TestClient) -> None:
    body = json.dumps({"features": [1, 2, 3, 4]}).encode()
    r = app_client.post("/predict", content=body, headers={"content-encoding": "br"})
    assert r.status_code == 415
    assert r.json()["error"].startswith("Content-Encoding br is not supported")
    r = app_client.post("/predict", content=body, headers={"content-encoding": "gzip"})
    assert r.status_code == 400 and "not valid gzip data" in r.json()["error"]
    r = app_client.post("/predict", content=gzip.compress(body)[:-12], headers={"content-encoding": "gzip"})
    assert r.status_code == 400 and "not valid gzip data: it ends early" in r.json()["error"]


def test_decompressed_bodies_are_held_to_the_body_limit(model_store: ModelStore) -> None:
    client, _ = serve_in_process(model_store, ["lin"], max_body=10_000)
    bomb = gzip.compress(b" " * 5_000_000 + b'{"features": [1, 2, 3, 4]}')  # ~5 KB that expands to 5 MB
    assert len(bomb) < 10_000
    with client:
        r = client.post("/predict", content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413
        assert r.json()["error"] == "Request body is over the limit of 10000 bytes once decompressed"
        small = gzip.compress(b" " * 9_000 + b'{"features": [1, 2, 3, 4]}')
        assert client.post("/predict", content=small, headers={"content-encoding": "gzip"}).status_code == 200


@pytest.mark.parametrize(("body", "message"), [
    ({"features": [1, 2, 3, 4], "probabilities": "yes"}, '"probabilities" must be true or false, got "yes"'),
    ({"features": [1, 2, 3, 4], "probabilities": 1}, '"probabilities" must be true or false, got 1'),
    ({"features": [1, 2, 3, 4], "probabilities": None}, '"probabilities" must be true or false, got null'),
    ({"features": [1, 2, 3, 4], "instances": [[1, 2, 3, 4]]}, 'either "features" (one row) or "instances" (several rows), not both'),
])
def test_predict_bodies_the_openapi_document_refuses_are_a_400(app_client: TestClient, body: dict, message: str) -> None:
    r = app_client.post("/models/forest/predict", json=body)
    assert r.status_code == 400 and message in r.json()["error"]


def test_the_openapi_document_says_what_the_server_does(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    request = spec["components"]["schemas"]["InferenceRequest"]
    assert request["properties"]["inputs"]["minItems"] == 1
    assert request["properties"]["id"] == {"type": "string"}
    assert request["properties"]["outputs"]["items"]["required"] == ["name"]
    assert "BOOL" in request["properties"]["inputs"]["items"]["properties"]["datatype"]["enum"]
    assert app_client.post("/v2/models/lin/infer", json={"inputs": []}).status_code == 400
    predict = spec["paths"]["/models/forest/predict"]["post"]
    one_of = predict["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert all(option["properties"]["probabilities"] == {"type": "boolean"} for option in one_of)
    assert {"400", "413", "415", "422"} <= set(predict["responses"])
