"""The inference server, started as a user starts it and called over real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import modelport
from modelport.store import ModelStore
from tests.fixtures_serving import serve_in_process
from tests.helpers import Server, free_port, run_cli, run_in_process, wait_until


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict]]:
    """One server for the read-only tests: a regressor trained by the CLI (default) and a classifier."""
    tmp = tmp_path_factory.mktemp("served")
    env = {"MODELPORT_HOME": str(tmp / "home")}
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 8)), columns=[f"f{i}" for i in range(8)])
    frame["target"] = frame.to_numpy() @ np.arange(1, 9) + 3
    frame.to_csv(tmp / "reg.csv", index=False)
    cls = frame.drop(columns="target").iloc[:, :3].copy()
    cls["label"] = np.where(cls.f0 + cls.f1 > 0, "yes", "no")
    cls.to_csv(tmp / "cls.csv", index=False)
    run_in_process("train", "--data", str(tmp / "reg.csv"), "--target", "target", "--name", "reg", env=env)
    run_in_process("train", "--data", str(tmp / "cls.csv"), "--target", "label", "--name", "cls", "--model", "logistic-regression",
                   env=env)
    port = free_port()
    server = Server(["serve", "reg", "cls", "--port", str(port), "--workers", "2", "--max-body-mb", "0.05"], port,
                    tmp / "server.log", env=env)
    try:
        server.wait_ready()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MODELPORT_HOME", env["MODELPORT_HOME"])
            models = {"reg": modelport.load_model("reg"), "cls": modelport.load_model("cls"), "frame": frame}
        yield server, models
    finally:
        server.stop()


def test_predict_matches_the_model_in_process(served) -> None:
    server, models = served
    row = models["frame"].iloc[3, :8].tolist()
    r = httpx.post(server.url + "/predict", json={"features": row})
    assert r.status_code == 200
    assert r.json() == {"prediction": models["reg"].predict([row])[0]}
    assert r.headers["x-model"] == "reg" and r.headers["x-model-version"] == "1"


def test_features_by_name_and_instances(served) -> None:
    server, models = served
    row = models["frame"].iloc[5, :8]
    by_name = httpx.post(server.url + "/models/reg/predict", json={"features": {k: float(v) for k, v in row.items()}}).json()
    assert by_name["prediction"] == pytest.approx(models["reg"].predict([row.tolist()])[0], rel=1e-12)
    rows = models["frame"].iloc[:4, :8].to_numpy().tolist()
    many = httpx.post(server.url + "/predict", json={"instances": rows}).json()
    np.testing.assert_allclose(many["predictions"], models["reg"].predict(rows), rtol=1e-12)


def test_classifier_labels_and_probabilities(served) -> None:
    server, models = served
    row = models["frame"].iloc[0, :3].tolist()
    out = httpx.post(server.url + "/models/cls/predict", json={"features": row, "probabilities": True}).json()
    assert out["prediction"] == models["cls"].predict([row])[0]
    proba = models["cls"].predict_proba([row])[0]
    assert out["probabilities"] == pytest.approx({"no": proba[0], "yes": proba[1]})


BAD = [
    (b'{"features": [1, 2', 400, "Malformed JSON"),
    (b"", 400, "body is empty"),
    (b'[1, 2, 3]', 400, "must be a JSON object"),
    (b'{"feature": [1]}', 400, 'Expected "features"'),
    (b'{"features": [1, 2, 3]}', 400, "has 3 values; the model expects 8 (f0, f1"),
    (b'{"features": [1, 2, 3, 4, 5, 6, 7, "8"]}', 400, "feature 'f7' must be a number, got the string '8'"),
    (b'{"features": [1, 2, 3, 4, 5, 6, 7, true]}', 400, "feature 'f7' must be a number, got true"),
    (b'{"features": [1, 2, 3, 4, 5, 6, 7, null]}', 400, "does not accept missing values"),
    (b'{"features": [NaN, 2, 3, 4, 5, 6, 7, 8]}', 400, "NaN and Infinity are not valid JSON"),
    (b'{"features": [1e999, 2, 3, 4, 5, 6, 7, 8]}', 400, "Malformed JSON: number is infinity"),
    (b'{"features": {"f0": 1, "zz": 2}}', 400, "missing 'f1'"),
    (b'{"features": {"f0": 1, "f1": 1, "f2": 1, "f3": 1, "f4": 1, "f5": 1, "f6": 1, "f7": 1, "zz": 2}}', 400, "unknown 'zz'"),
    (b'{"instances": []}', 400, "non-empty list"),
    (b'{"instances": [[1,2,3,4,5,6,7,8], [1]]}', 400, "instances[1] has 1 values"),
    (b'{"features": "1,2,3"}', 400, "must be a list of 8 numbers"),
    (b'{"features": [1,2,3,4,5,6,7,8], "probabilities": true}', 400, "has no class probabilities"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD)
def test_bad_requests_get_a_clear_4xx(served, body: bytes, status: int, message: str) -> None:
    server, _ = served
    r = httpx.post(server.url + "/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert message in r.json()["error"]
    assert httpx.post(server.url + "/predict", json={"features": [0] * 8}).status_code == 200  # still serving


def test_body_over_the_limit_unknown_model_and_routes(served) -> None:
    server, _ = served
    big = json.dumps({"instances": [[0.0] * 8] * 2000}).encode()
    r = httpx.post(server.url + "/predict", content=big)
    assert r.status_code == 413 and "limit is 52428 bytes" in r.json()["error"]

    def chunks():
        yield b'{"instances": ['
        for _ in range(3000):
            yield b"[0,0,0,0,0,0,0,0],"
        yield b"[0,0,0,0,0,0,0,0]]}"

    r = httpx.post(server.url + "/predict", content=chunks())  # chunked: no Content-Length to trust
    assert r.status_code == 413
    r = httpx.post(server.url + "/models/nope/predict", json={"features": [1]})
    assert r.status_code == 404 and r.json() == {"error": "Model 'nope' is not served here (served: reg, cls)"}
    r = httpx.get(server.url + "/predict")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]
    assert httpx.get(server.url + "/nothing").json() == {"error": "No such endpoint: GET /nothing"}


def test_v2_protocol_json(served) -> None:
    server, models = served
    assert httpx.get(server.url + "/v2").json()["extensions"] == ["binary_tensor_data", "model_repository"]
    assert httpx.get(server.url + "/v2/health/live").status_code == 200
    assert httpx.get(server.url + "/v2/models/reg/ready").status_code == 200
    assert httpx.get(server.url + "/v2/models/reg/versions/1/ready").status_code == 200
    assert httpx.get(server.url + "/v2/models/reg/versions/9/ready").status_code == 404
    meta = httpx.get(server.url + "/v2/models/cls").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}]
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "probabilities"]
    rows = models["frame"].iloc[:3, :8].to_numpy()
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [3, 8], "datatype": "FP64", "data": rows.ravel().tolist()}]}
    out = httpx.post(server.url + "/v2/models/reg/versions/1/infer", json=body).json()
    assert out["id"] == "r1" and out["model_version"] == "1"
    np.testing.assert_allclose(out["outputs"][0]["data"], models["reg"].predict(rows), rtol=1e-12)
    per_feature = {"inputs": [{"name": f"f{i}", "shape": [3], "datatype": "FP32", "data": rows[:, i].tolist()} for i in range(8)]}
    out = httpx.post(server.url + "/v2/models/reg/infer", json=per_feature).json()
    np.testing.assert_allclose(out["outputs"][0]["data"], models["reg"].predict(rows.astype(np.float32)), rtol=1e-5)
    cls_body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": rows[0, :3].tolist()}],
                "outputs": [{"name": "predictions"}, {"name": "probabilities"}]}
    out = httpx.post(server.url + "/v2/models/cls/infer", json=cls_body).json()
    assert out["outputs"][0]["datatype"] == "BYTES" and out["outputs"][0]["data"] == [models["cls"].predict(rows[:1, :3])[0]]
    assert out["outputs"][1]["shape"] == [1, 2]


def test_v2_plain_requests_answer_as_the_general_path_does(served) -> None:
    """The one-pass path for the usual tabular request must give exactly what the general path gives."""
    server, models = served
    rows = models["frame"].iloc[:4, :8].to_numpy()
    cases = [
        ("reg", {"inputs": [{"name": "input", "shape": [4, 8], "datatype": "FP64", "data": rows.ravel().tolist()}]}),
        ("reg", {"id": "7", "inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}),
        ("cls", {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP64", "data": rows[:2, :3].ravel().tolist()}]}),
    ]
    for model, plain in cases:
        general = {**plain, "parameters": {}}  # any extra key takes the general path
        a = httpx.post(f"{server.url}/v2/models/{model}/infer", json=plain)
        b = httpx.post(f"{server.url}/v2/models/{model}/infer", json=general)
        assert a.status_code == b.status_code == 200
        assert a.json() == b.json()
    expected = models["reg"].predict(rows)
    np.testing.assert_allclose(httpx.post(server.url + "/v2/models/reg/infer", json=cases[0][1]).json()["outputs"][0]["data"], expected, rtol=1e-12)


@pytest.mark.parametrize(("body", "message"), [
    ({"inputs": []}, 'non-empty "inputs"'),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP99", "data": [0] * 8}]}, "datatype 'FP99'"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": [0] * 7}]}, "has 7 elements but its shape [1, 8] needs 8"),
    ({"inputs": [{"name": "input", "shape": [1, 7], "datatype": "FP64", "data": [0] * 7}]}, "expects [N, 8]"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": ["a"] * 8}]}, "not FP64 numbers"),
    ({"inputs": [{"name": "input", "shape": "1x8", "datatype": "FP64", "data": [0] * 8}]}, "needs a shape"),
    ({"inputs": [{"name": "input", "shape": [1, -8], "datatype": "FP64", "data": [0] * 8}]}, "needs a shape"),
    ({"inputs": [{"name": "input", "shape": [True, 8], "datatype": "FP64", "data": [0] * 8}]}, "needs a shape"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": [True] * 8}]}, "not FP64 numbers"),
    ({"inputs": [{"name": "", "shape": [1, 8], "datatype": "FP64", "data": [0] * 8}]}, "has no name"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": [0] * 7 + [None]}]}, "not FP64 numbers"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": [[0] * 4, [0] * 3 + ["1"]]}]}, "not FP64 numbers"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "INT8", "data": [300] * 8}]}, "out of the range of INT8"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [1e39] * 8}]}, "NaN or infinite"),
    ({"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP64", "data": [0] * 8}], "outputs": [{"name": "zz"}]}, "Unknown output 'zz'"),
])
def test_v2_bad_requests(served, body: dict, message: str) -> None:
    server, _ = served
    r = httpx.post(server.url + "/v2/models/reg/infer", json=body)
    assert r.status_code == 400 and message in r.json()["error"]


def test_v2_version_that_is_not_served(served) -> None:
    server, _ = served
    r = httpx.post(server.url + "/v2/models/reg/versions/3/infer", json={"inputs": []})
    assert r.status_code == 404 and "version 3 is not served" in r.json()["error"]


def test_tritonclient_gets_the_same_prediction(served) -> None:
    import tritonclient.http as triton

    server, models = served
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("reg")
    assert client.get_model_metadata("reg")["inputs"][0]["shape"] == [-1, 8]
    rows = models["frame"].iloc[:5, :8].to_numpy()
    expected = models["reg"].predict(rows)
    for binary in (True, False):
        inp = triton.InferInput("input", list(rows.shape), "FP64")
        inp.set_data_from_numpy(rows, binary_data=binary)
        for compression in (None, "gzip", "deflate"):
            result = client.infer("reg", [inp], outputs=[triton.InferRequestedOutput("predictions", binary_data=binary)],
                                  request_compression_algorithm=compression)
            np.testing.assert_allclose(result.as_numpy("predictions"), expected, rtol=1e-12)
    inp = triton.InferInput("input", [1, 3], "FP64")
    inp.set_data_from_numpy(rows[:1, :3])
    result = client.infer("cls", [inp])  # no outputs named: the client asks for all of them in binary
    assert result.as_numpy("predictions")[0].decode() == models["cls"].predict(rows[:1, :3])[0]
    nan = rows[:1].copy()
    nan[0, 0] = np.nan
    with pytest.raises(triton.InferenceServerException, match="NaN or infinite"):  # binary tensors are checked
        inp = triton.InferInput("input", [1, 8], "FP64")
        inp.set_data_from_numpy(nan, binary_data=True)
        client.infer("reg", [inp])
    with pytest.raises(triton.InferenceServerException, match="expects"):
        bad = triton.InferInput("input", [1, 2], "FP64")
        bad.set_data_from_numpy(rows[:1, :2])
        client.infer("reg", [bad])


def test_metrics_count_requests_per_model_and_version_across_workers(served) -> None:
    server, _ = served
    for _ in range(20):
        httpx.post(server.url + "/models/cls/predict", json={"features": [0, 0, 0]})
    httpx.post(server.url + "/models/cls/predict", json={"features": [0]})
    # Each worker flushes its counts every second: the other worker's show up within that.
    ok_pattern = r'modelport_requests_total\{code="200",model="cls",protocol="simple",version="1"\} ([\d.]+)'
    error_pattern = r'modelport_request_errors_total\{code="400",model="cls",protocol="simple",version="1"\} [1-9]'

    def counted(text: str) -> bool:
        ok = re.search(ok_pattern, text)
        return bool(ok and int(float(ok.group(1))) >= 20 and re.search(error_pattern, text))

    text = wait_until(lambda: httpx.get(server.url + "/metrics").text, counted, timeout=5,
                      what=lambda text: "\n".join(line for line in text.splitlines() if 'model="cls"' in line))
    ok = re.search(ok_pattern, text)
    assert ok and int(float(ok.group(1))) >= 20
    assert re.search(error_pattern, text)
    assert 'modelport_request_duration_seconds_bucket{le="0.005",model="cls",protocol="simple",version="1"}' in text
    assert "modelport_requests_in_flight" in text and "modelport_batch_size_bucket" in text


def test_openapi_schema_comes_from_the_signature(served) -> None:
    server, _ = served
    spec = httpx.get(server.url + "/openapi.json").json()
    schema = spec["paths"]["/models/cls/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    row = schema["oneOf"][0]["properties"]["features"]["oneOf"]
    assert row[0]["minItems"] == row[0]["maxItems"] == 3
    assert row[1]["required"] == ["f0", "f1", "f2"]
    assert "/v2/models/reg/infer" in spec["paths"]
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert httpx.get(server.url + "/docs/static/swagger-ui-bundle.js").status_code == 200  # works offline


@pytest.mark.parametrize("where", ["files", "none"])
def test_docs_from_swagger_ui_files_or_a_page_that_says_they_are_missing(home: Path, tmp_path: Path, where: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A model image has Swagger UI's two files, not its package (MODELPORT_SWAGGER_UI names where); a Python
    with neither still answers /docs, with where the API's description is."""
    from modelport.serving import swagger
    from tests.fixtures_serving import small_models

    store = small_models(home)
    if where == "files":
        (tmp_path / "swagger-ui-bundle.js").write_text("window.SwaggerUIBundle = 1;")
        monkeypatch.setenv(swagger.SWAGGER_UI_ENV, str(tmp_path))
    else:
        monkeypatch.delenv(swagger.SWAGGER_UI_ENV, raising=False)
        monkeypatch.setitem(sys.modules, "swagger_ui_bundle", None)  # not installed
    client, _ = serve_in_process(store, ["lin"])
    page, script = client.get("/docs"), client.get("/docs/static/swagger-ui-bundle.js")
    store.close()
    assert page.status_code == 200 and "/openapi.json" in page.text
    if where == "files":
        assert "SwaggerUIBundle(" in page.text and script.text == "window.SwaggerUIBundle = 1;"
    else:
        assert "Swagger UI is not installed" in page.text and script.status_code == 404


def test_serve_an_alias_and_versions(store: ModelStore, regression_csv) -> None:
    """References as ``serve`` takes them (ServeSpec.parse), served in-process: an alias, and a name given to one."""
    path, x, _ = regression_csv
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house", "--model", "ridge")
    run_in_process("models", "tag", "house:1", "production")
    v1 = modelport.load_model("house:1")
    client, _ = serve_in_process(store, ["house@production", "latest=house"])  # an alias (the default for /predict), a name
    with client:
        r = client.post("/predict", json={"features": x[0].tolist()})
        assert r.headers["x-model"] == "house"
        assert r.headers["x-model-version"] == "1" and r.json()["prediction"] == v1.predict(x[:1])[0]
        r = client.post("/models/latest/predict", json={"features": x[0].tolist()})
        assert r.headers["x-model-version"] == "2"
        assert r.json()["prediction"] == pytest.approx(modelport.load_model("house:2").predict(x[:1])[0])


def test_serve_refuses_models_that_cannot_load(home: Path, regression_csv) -> None:
    path, _, _ = regression_csv
    out = run_in_process("serve", "ghost", "--port", str(free_port()), check=False)
    assert out.returncode == 1 and "No model named 'ghost'" in out.stderr and "Traceback" not in out.stderr
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    mv = modelport.get_store().resolve("house")
    blob = modelport.get_store().blobs.path(mv.files["model.skops"].sha256)
    blob.write_bytes(blob.read_bytes()[:100])
    out = run_in_process("serve", "house", "--port", str(free_port()), check=False)
    assert out.returncode == 1 and "Cannot serve house: The artifact file 'model.skops' of house:1 is corrupted" in " ".join(out.stderr.split())


def test_port_in_use_is_a_clear_error(home: Path, regression_csv) -> None:
    path, _, _ = regression_csv
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    with socket.socket() as taken:  # any listener holds the port: here, this process's
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_in_process("serve", "house", "--port", str(port), check=False)
    assert out.returncode == 1 and f"Cannot listen on 127.0.0.1:{port}" in out.stderr


def test_a_model_that_only_fails_inside_the_workers_stops_serve(home: Path) -> None:
    """Intact artifact, refused by the framework at load: with several workers the parent's cheap
    check passes, a worker fails to load, and serve stops with the reason instead of looping."""
    from fractions import Fraction

    import skops.io as sio

    store = modelport.get_store()
    store.save("unsafe", {"model.skops": sio.dumps({"x": Fraction(1, 3)})}, framework="sklearn", task="regression",
               signature={"kind": "tabular", "features": ["a"], "dtype": "float64", "output": {"dtype": "float64"}})
    out = run_cli("serve", "unsafe", "--port", str(free_port()), "--workers", "2", check=False, timeout=120)
    assert out.returncode == 1
    assert "Refusing to load a scikit-learn model that contains types outside" in " ".join(out.stderr.split())


def test_a_normal_stop_of_serve_writes_every_prediction_record(home: Path, regression_csv, serve, tmp_path: Path) -> None:
    """SIGTERM right after the last answer: every record still queued in a worker is written before it exits."""
    import asyncio

    from modelport.predlog.db import make_engine
    from modelport.predlog.queries import list_predictions

    path, x, _ = regression_csv
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    db = f"sqlite:///{tmp_path / 'predictions.db'}"
    server = serve("house", "--log-db", db, workers=2)
    ids = [f"stop-{i}" for i in range(300)]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            replies = await asyncio.gather(*(client.post("/predict", json={"features": x[i % len(x)].tolist()},
                                                         headers={"x-request-id": rid}) for i, rid in enumerate(ids)))
        return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [200] * len(ids)
    os.killpg(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.output()
    stored = {r["request_id"] for r in list_predictions(make_engine(db), model="house", limit=10_000)}
    assert set(ids) <= stored, f"{len(set(ids) - stored)} records lost at stop"


def test_serve_log_db_records_every_prediction(store: ModelStore, regression_csv, tmp_path: Path) -> None:
    """What ``serve --log-db`` records, in-process (the app with its prediction log); the records are written while
    it serves, and the ``predictions`` commands read them. A real multi-worker stop: the test above."""
    path, x, _ = regression_csv
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    db = f"sqlite:///{tmp_path / 'predictions.db'}"
    client, _ = serve_in_process(store, ["house"], log_db=db, spool_dir=str(tmp_path / "spool"))
    with client:
        for i in range(10):
            client.post("/predict", json={"features": x[i].tolist()}, headers={"x-request-id": f"req-{i}"})
        client.post("/predict", json={"features": [1]})
        wanted = {f"req-{i}" for i in range(10)}
        # The log writes in the background: wait for these requests' records (the bad request's id is generated).
        def listed() -> list[dict]:
            out = run_in_process("predictions", "list", "--db-url", db, "--json", "--limit", "50", check=False)
            if out.returncode and ("no prediction log yet" in out.stderr or "does not exist" in out.stderr):
                # the writer (in the background) has not created the database or its table yet
                return []
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        rows = wait_until(listed,
                          lambda rows: wanted <= {r["request_id"] for r in rows} and any(r["status"] == 400 for r in rows),
                          timeout=60, interval=0.1, what=lambda rows: f"records so far: {[r['request_id'] for r in rows]}")
    assert len(rows) == 11
    ok = {r["request_id"]: r for r in rows if r["status"] == 200}
    assert set(ok) == {f"req-{i}" for i in range(10)}
    assert json.loads(ok["req-3"]["inputs"]) == {"features": x[3].tolist()}
    assert json.loads(ok["req-3"]["outputs"])["prediction"] == pytest.approx(modelport.load_model("house").predict(x[3:4])[0])
    stats = run_in_process("predictions", "stats", "--db-url", db).stdout
    assert "house" in stats
    out = tmp_path / "export.csv"
    run_in_process("predictions", "export", "--db-url", db, "--format", "csv", "--output", str(out))
    assert len(out.read_text().strip().splitlines()) == 12  # header + 11 records


def test_request_ids_are_bounded_and_key_ids_trusted_only_behind_the_proxy(store: ModelStore, regression_csv,
                                                                           tmp_path: Path) -> None:
    path, x, _ = regression_csv
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    body = {"features": x[0].tolist()}
    for trusted in (False, True):
        db = f"sqlite:///{tmp_path / f'log-{trusted}.db'}"
        client, _ = serve_in_process(store, ["house"], log_db=db, spool_dir=str(tmp_path / "spool"),
                                     trust_proxy_headers=trusted)
        with client:  # leaving it is the app's normal stop: it writes every queued record
            ok = client.post("/predict", json=body, headers={"x-request-id": "abc-1.2:3", "x-modelport-key-id": "key_x"})
            assert ok.headers["x-request-id"] == "abc-1.2:3"
            for bad in ("a" * 129, "bad id", "a\u00e9b"):
                r = client.post("/predict", json=body, headers={"x-request-id": bad.encode("utf-8")})
                assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32 and r.headers["x-request-id"] != bad
        rows = json.loads(run_in_process("predictions", "list", "--db-url", db, "--json", "--limit", "50").stdout)
        assert len(rows) == 4 and all(len(r["request_id"]) <= 128 for r in rows)
        (mine,) = [r for r in rows if r["request_id"] == "abc-1.2:3"]
        assert mine["key_id"] == ("key_x" if trusted else None)


def _started(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "modelport", *args], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "stderr.log", "wb"), text=True, start_new_session=True)  # noqa: SIM115


def _lines_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """stdout lines up to and including the first with ``marker``; at once when the line is printed."""
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never printed; stdout: {lines}")


def _stop(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_announces_itself_only_once_it_answers(home: Path, regression_csv, tmp_path: Path, workers: int) -> None:
    """The server prints its line from its own ready transition (startup.Starting), once, whatever the
    number of workers: the very next request is answered."""
    path, x, _ = regression_csv
    run_in_process("train", "--data", str(path), "--target", "target", "--name", "house")
    port = free_port()
    proc = _started(["serve", "house", "--port", str(port), "--workers", str(workers)], tmp_path)
    try:
        lines = _lines_until(proc, "Serving house on")
        # the very next requests are answered: no retry, no waiting for a worker to come up
        for _ in range(4):
            r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": x[0].tolist()}, timeout=0.5)
            assert r.status_code == 200, r.text
        assert lines[-1] == f"Serving house on http://127.0.0.1:{port}  (docs: http://127.0.0.1:{port}/docs)"
        assert any(line.strip().startswith("Starting") for line in lines[:-1]), lines  # progress until then
    finally:
        _stop(proc)
    assert "Serving house on" not in proc.stdout.read(), "announced more than once"  # type: ignore[union-attr]


def test_workers_are_forked_through_uvicorns_private_subprocess_api() -> None:
    """serving.server.forked_workers swaps uvicorn._subprocess.spawn (a private API, uvicorn pinned) for the
    fork context. A uvicorn that makes its workers another way would silently spawn them again (each
    importing the frameworks anew, about 1.5 s of a cold start): this fails first."""
    import multiprocessing.context

    import uvicorn
    import uvicorn._subprocess
    import uvicorn.supervisors.multiprocess

    from modelport.serving.server import forked_workers

    assert uvicorn.supervisors.multiprocess.get_subprocess is uvicorn._subprocess.get_subprocess
    config = uvicorn.Config("modelport.serving.server:app_from_env", factory=True)
    with forked_workers([]):
        forked = uvicorn._subprocess.get_subprocess(config, target=lambda sockets: None, sockets=[])
    assert isinstance(forked, multiprocessing.context.ForkProcess)
    spawned = uvicorn._subprocess.get_subprocess(config, target=lambda sockets: None, sockets=[])
    assert isinstance(spawned, multiprocessing.context.SpawnProcess)  # put back


def test_quickstart_trains_serves_and_prints_a_working_curl_once_the_server_answers(home: Path, tmp_path: Path) -> None:
    import shlex

    from sklearn.datasets import load_diabetes

    port = free_port()
    proc = _started(["quickstart", "--port", str(port), "--workers", "2"], tmp_path)
    try:
        lines = _lines_until(proc, "curl -s -X POST")
        # run at once, as printed: the server answers by then
        out = subprocess.run(shlex.split(lines[-1].strip()), capture_output=True, text=True, timeout=5)
        assert out.returncode == 0, out
        prediction = json.loads(out.stdout)["prediction"]
        assert any(f"Serving diabetes:1 on http://127.0.0.1:{port}" in line for line in lines), lines
    finally:
        _stop(proc)
    first = load_diabetes().data[0]
    assert prediction == pytest.approx(modelport.load_model("diabetes").predict([first])[0], rel=1e-5)


def test_quickstart_no_serve_prints_no_curl(home: Path) -> None:
    out = run_in_process("quickstart", "--no-serve", check=False)
    assert out.returncode == 0, out.stderr
    assert "Registered diabetes:1" in out.stdout
    assert "curl" not in out.stdout and "http://" not in out.stdout
    assert "modelport serve diabetes" in out.stdout


def test_the_image_entry_point_checks_and_reports_without_a_traceback(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m modelport.serving serve REF ...`` (a model image's command): `modelport serve`'s arguments."""
    from modelport.serving.command import main
    from tests.fixtures_serving import small_models

    small_models(home).close()
    main(["serve", "lin", "forest", "--check"])
    assert capsys.readouterr().out.strip() == "lin, forest: loaded"
    for argv, code, message in ((["serve", "ghost", "--check"], 1, "Error: Cannot serve ghost: No model named 'ghost'"),
                                ([], "usage: python -m modelport.serving serve REF", None),
                                (["serve", "lin", "--workers", "two"], 2, "argument --workers: invalid int value: 'two'")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        if message is None:
            assert str(stop.value.code).startswith(code)
        else:
            assert stop.value.code == code and message in err and "Traceback" not in err
