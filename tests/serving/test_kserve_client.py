"""The ``kserve`` package's REST client against a real ``modelport serve``: live, ready, model ready,
inference with JSON and binary tensors (tritonclient's conformance is in test_server.py).

Skipped where kserve is not installed: every kserve release (0.19-0.21) requires pandas<3, and the
train extra pins pandas 3.1, so it cannot be in the dev extra; install it in an environment of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from tests.fixtures_serving import serve_small_models
from tests.helpers import Server

kserve = pytest.importorskip("kserve", reason="kserve requires pandas<3 (see the module docstring)")

ROWS = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve_small_models(tmp_path_factory.mktemp("kserve")) as server:
        yield server.wait_ready()


async def _conversation(url: str) -> dict[str, object]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        seen: dict[str, object] = {
            "live": await client.is_server_live(url), "ready": await client.is_server_ready(url),
            "lin ready": await client.is_model_ready(url, "lin"), "nope ready": await client.is_model_ready(url, "nope")}
        for binary in (False, True):
            inp = InferInput("input", list(ROWS.shape), "FP64")
            inp.set_data_from_numpy(ROWS, binary_data=binary)
            result = await client.infer(url, InferRequest("lin", [inp], request_id="r-1"), model_name="lin")
            seen[f"binary={binary}"] = (result.id, result.outputs[0].as_numpy())
        unloaded = await client._client.post(f"{url}/v2/repository/models/lin/unload")  # no client method for it
        assert unloaded.status_code == 200
        seen["unloaded lin ready"] = await client.is_model_ready(url, "lin")
        await client._client.post(f"{url}/v2/repository/models/lin/load")
        return seen
    finally:
        await client.close()


def test_kserve_rest_client(server: Server) -> None:
    seen = asyncio.run(_conversation(server.url))
    assert seen.pop("live") is True and seen.pop("ready") is True
    assert seen.pop("lin ready") is True and seen.pop("nope ready") is False and seen.pop("unloaded lin ready") is False
    expected = ROWS @ [1.0, 2.0, 3.0, 4.0]  # lin is fit exactly to this
    for key, (rid, predictions) in seen.items():
        assert rid == "r-1", key
        np.testing.assert_allclose(predictions, expected, rtol=1e-9, err_msg=key)
