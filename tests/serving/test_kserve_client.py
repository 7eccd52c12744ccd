"""The ``kserve`` package's REST client against a real ``modelport serve``: live, ready, model ready,
inference with JSON and binary tensors (tritonclient's conformance is in test_server.py).

Every kserve release (0.19-0.21) requires pandas<3 and the train extra pins pandas 3.1, so kserve
lives in a venv of its own (scripts/test.sh makes it and names its Python in
MODELPORT_KSERVE_PYTHON); the client runs there, in a subprocess, against the server here."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_serving import serve_small_models
from tests.helpers import Server

ROWS = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]])

CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def conversation(url, rows):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        seen = {"live": await client.is_server_live(url), "ready": await client.is_server_ready(url),
                "lin ready": await client.is_model_ready(url, "lin"), "nope ready": await client.is_model_ready(url, "nope")}
        for binary in (False, True):
            inp = InferInput("input", list(rows.shape), "FP64")
            inp.set_data_from_numpy(rows, binary_data=binary)
            result = await client.infer(url, InferRequest("lin", [inp], request_id="r-1"), model_name="lin")
            seen[f"binary={binary}"] = [result.id, result.outputs[0].as_numpy().tolist()]
        unloaded = await client._client.post(f"{url}/v2/repository/models/lin/unload")  # no client method for it
        seen["unload status"] = unloaded.status_code
        seen["unloaded lin ready"] = await client.is_model_ready(url, "lin")
        await client._client.post(f"{url}/v2/repository/models/lin/load")
        return seen
    finally:
        await client.close()

print(json.dumps(asyncio.run(conversation(sys.argv[1], np.array(json.loads(sys.argv[2]))))))
"""


def kserve_python() -> str:
    python = os.environ.get("MODELPORT_KSERVE_PYTHON")
    if python and Path(python).exists():
        return python
    message = "kserve's client needs its own venv: run scripts/test.sh, or set MODELPORT_KSERVE_PYTHON"
    if os.environ.get("MODELPORT_REQUIRE_DOCKER"):  # scripts/test.sh, CI: nothing is skipped there
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    kserve_python()  # skipped (or failed) before starting a server it would not use
    with serve_small_models(tmp_path_factory.mktemp("kserve")) as server:
        yield server.wait_ready()


def test_kserve_rest_client(server: Server) -> None:
    run = subprocess.run([kserve_python(), "-c", CLIENT, server.url, json.dumps(ROWS.tolist())],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen.pop("live") is True and seen.pop("ready") is True
    assert seen.pop("lin ready") is True and seen.pop("nope ready") is False
    assert seen.pop("unload status") == 200 and seen.pop("unloaded lin ready") is False
    expected = ROWS @ [1.0, 2.0, 3.0, 4.0]  # lin is fit exactly to this
    assert set(seen) == {"binary=False", "binary=True"}
    for key, (rid, predictions) in seen.items():
        assert rid == "r-1", key
        np.testing.assert_allclose(predictions, expected, rtol=1e-9, err_msg=key)
