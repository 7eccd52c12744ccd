"""Images for frameworks other than scikit-learn: built, run and called on the real engine."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

import modelport
from tests.conftest import TEST_BASE_IMAGE
from tests.helpers import free_port, run_cli
from tests.image_contents import distributions, unneeded

# Image builds and stack start-ups take minutes; on a busy machine far more than the suite's 600 s default.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]


def test_xgboost_image_serves_on_cpu_without_the_cuda_libraries(home: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    import docker

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    model = xgb.XGBRegressor(n_estimators=20, max_depth=3).fit(x, x @ [1, -1, 2, 0, 0.5])
    name = f"xgb-{uuid.uuid4().hex[:6]}"
    modelport.save_model(model, name)
    port = free_port()
    client = docker.from_env()
    try:
        out = run_cli("run", name, "--port", str(port), "--base-image", TEST_BASE_IMAGE, timeout=900)
        assert f"http://127.0.0.1:{port}" in out.stdout
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": x[:4].tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], model.predict(x[:4]), rtol=1e-6)
        dists = distributions(lambda cmd: run_cli("exec", name, "--", *cmd).stdout)
        assert "xgboost-cpu" in dists and "xgboost" not in dists
        assert not [d for d in dists if d.startswith("nvidia")]  # no CUDA runtime in a CPU image
        assert unneeded(dists, "xgboost", "regression") == []  # nor the command line's libraries
    finally:
        run_cli("rm", name, "--force", check=False)
        for image in client.images.list(name=f"modelport/{name}"):
            client.images.remove(image.id, force=True)
        client.close()


def test_onnx_runtime_image_serves_a_sklearn_model_without_scikit_learn(home: Path) -> None:
    """``build --runtime onnx``: the same answers as the native model through the real HTTP API (labels equal,
    probabilities within the conversion's tolerance), from an image without scikit-learn or SciPy."""
    pytest.importorskip("skl2onnx")
    import docker
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)) * [100, 3, 20, 1e4]
    labels = np.where(x @ [0.02, -1, 0.1, 1e-4] > 0, "yes", "no")
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, labels)
    name = f"onnxrt-{uuid.uuid4().hex[:6]}"
    modelport.save_model(model, name, feature_names=["area", "rooms", "age", "price"], input_example=x[:32])
    native = modelport.load_model(name)  # what the native runtime serves
    port = free_port()
    client = docker.from_env()
    try:
        out = run_cli("build", name, "--runtime", "onnx", "--base-image", TEST_BASE_IMAGE, timeout=900)
        assert f"Built modelport/{name}:1-onnx" in out.stdout and "matches the native model on 273 rows (32 test rows, 241 generated)" in out.stdout
        labels_of = client.images.get(f"modelport/{name}:1-onnx").labels
        assert labels_of["io.modelport.runtime"] == "onnx" and labels_of["io.modelport.framework"] == "sklearn"
        run_cli("run", f"modelport/{name}:1-onnx", "--port", str(port), timeout=300)

        rows = rng.normal(size=(50, 4)) * [100, 3, 20, 1e4]
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": rows.tolist(), "probabilities": True}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == native.predict(rows).tolist()
        got = np.array([[p[c] for c in ("no", "yes")] for p in r.json()["probabilities"]])
        np.testing.assert_allclose(got, native.predict_proba(rows), atol=1e-4)
        one = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": {"area": 120.5, "rooms": 4, "age": 12,
                                                                                "price": 3.2e4}}, timeout=10)
        assert one.json() == {"prediction": native.predict([[120.5, 4, 12, 3.2e4]])[0]}
        v2 = httpx.post(f"http://127.0.0.1:{port}/v2/models/{name}/infer", timeout=10, json={
            "inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP64", "data": rows[:3].ravel().tolist()}]})
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == native.predict(rows[:3]).tolist()

        dists = distributions(lambda argv: run_cli("exec", name, "--", *argv).stdout)
        assert "onnxruntime" in dists
        assert not {"scikit-learn", "scipy", "skops", "joblib", "threadpoolctl"} & set(dists), dists
        assert unneeded(dists, "onnx", "classification") == []  # served as an ONNX model: nothing else
    finally:
        run_cli("rm", name, "--force", check=False)
        for image in client.images.list(name=f"modelport/{name}"):
            client.images.remove(image.id, force=True)
        client.close()
