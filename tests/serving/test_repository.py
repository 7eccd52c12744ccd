"""The model repository extension (index, load, unload) as Triton's and MLServer's clients use it,
against a real ``modelport serve`` with two workers: they must agree on what is unloaded."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from tests.fixtures_serving import serve_small_models
from tests.helpers import Server

ROW = np.array([[0.5, -1.0, 2.0, 0.25]])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve_small_models(tmp_path_factory.mktemp("repository")) as server:
        yield server.wait_ready()


def infer(client: triton.InferenceServerClient, name: str) -> np.ndarray:
    inp = triton.InferInput("input", list(ROW.shape), "FP64")
    inp.set_data_from_numpy(ROW)
    return client.infer(name, [inp]).as_numpy("predictions")


def test_unload_and_load_with_tritonclient(server: Server) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.get_model_repository_index() == [
        {"name": "lin", "version": "1", "state": "READY", "reason": ""},
        {"name": "forest", "version": "1", "state": "READY", "reason": ""}]
    before = infer(client, "lin")

    client.unload_model("lin")
    # Each request may reach either worker: every one of them must see the model unloaded.
    for _ in range(8):
        assert not client.is_model_ready("lin") and client.is_model_ready("forest")
        with pytest.raises(triton.InferenceServerException, match="Model 'lin' is unloaded") as e:
            infer(client, "lin")
        assert e.value.status() == "400"
        r = httpx.post(server.url + "/predict", json={"features": ROW[0].tolist()})  # lin is the default model
        assert r.status_code == 400 and "POST /v2/repository/models/lin/load" in r.json()["error"]
        assert infer(client, "forest").shape == (1,)
    r = httpx.get(server.url + "/v2/models/lin/ready")
    assert r.status_code == 400 and r.json()["ready"] is False and r.json()["name"] == "lin"
    assert [m["state"] for m in client.get_model_repository_index()] == ["UNAVAILABLE", "READY"]
    assert [m["name"] for m in httpx.post(server.url + "/v2/repository/index", json={"ready": True}).json()] == ["forest"]
    assert client.is_server_ready()  # the server can still serve (and load lin again)

    client.unload_model("lin")  # a no-op the second time
    client.load_model("lin")
    for _ in range(8):
        assert client.is_model_ready("lin")
        np.testing.assert_array_equal(infer(client, "lin"), before)
    client.load_model("lin")  # loading a loaded model is a no-op


def test_only_served_models_and_plain_requests(server: Server) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    for call in (client.load_model, client.unload_model):
        with pytest.raises(triton.InferenceServerException, match="'nope' is not served here") as e:
            call("nope")
        assert e.value.status() == "404"
    with pytest.raises(triton.InferenceServerException, match=r"Loading with parameters \(config\) is not supported"):
        client.load_model("lin", config='{"max_batch_size": 8}')
    for path, body, message in [
        ("/v2/repository/index", b"[1]", "must be a JSON object"),
        ("/v2/repository/index", b'{"ready": 1}', '"ready" must be true or false'),
        ("/v2/repository/models/lin/unload", b'{"parameters": {"unload_dependents": "yes"}}', "true or false"),
        ("/v2/repository/models/lin/unload", b'{"parameters": {"force": true}}', "Unknown unload parameter 'force'"),
        ("/v2/repository/models/lin/load", b"{", "Malformed JSON"),
    ]:
        r = httpx.post(server.url + path, content=body)
        assert r.status_code == 400 and message in r.json()["error"], (path, body, r.text)
    assert httpx.get(server.url + "/v2/repository/index").status_code == 405
    assert client.is_model_ready("lin")  # none of that unloaded anything
