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
