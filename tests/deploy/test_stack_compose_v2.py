"""The same stack under Compose v2 (`docker compose`), which most users have.

The other stack tests run on Debian's docker-compose 1.29; this one points DOCKER_CONFIG at the
directory where scripts/test-env.sh installed the Compose v2 plugin, so `docker compose` exists
for these commands only, and checks that v2 really created the containers.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import TEST_BASE_IMAGE
from tests.fixtures_stack import POSTGRES_IMAGE, remove_everything
from tests.helpers import free_port, run_cli

docker = pytest.importorskip("docker")

# Image builds and stack start-ups take minutes; on a busy machine far more than the suite's 600 s default.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

COMPOSE_V2_CONFIG = Path("/usr/local/lib/modelport-test/compose-v2")  # see scripts/test-env.sh


def test_stack_lifecycle_under_compose_v2(tmp_path: Path) -> None:
    # Its own model name: image tags (modelport/NAME:VERSION) are the engine's, shared with the other stack tests.
    assert (COMPOSE_V2_CONFIG / "cli-plugins" / "docker-compose").exists(), "run scripts/test-env.sh"
    import pandas as pd

    env = {"MODELPORT_HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(COMPOSE_V2_CONFIG)}
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.normal(size=(200, 4)), columns=["a", "b", "c", "d"])
    frame["y"] = frame.to_numpy() @ np.array([1.0, -2.0, 3.0, 0.5])
    frame.to_csv(tmp_path / "data.csv", index=False)
    frame.iloc[:100].assign(y=frame["y"] * 2).to_csv(tmp_path / "double.csv", index=False)
    for data in ("data.csv", "double.csv"):  # v2lin:1, then v2lin:2 with other coefficients
        run_cli("train", "--data", str(tmp_path / data), "--target", "y", "--name", "v2lin", env=env)
    x = frame[["a", "b", "c", "d"]].to_numpy()[:3]
    name = f"mpt-{uuid.uuid4().hex[:6]}"
    directory = tmp_path / name
    port = free_port()
    client = docker.from_env()
    try:
        run_cli("stack", "init", str(directory), "--model", "v2lin:1", "--gateway-port", str(port),
                "--base-image", TEST_BASE_IMAGE, "--db-image", POSTGRES_IMAGE, "--memory", "512m", env=env)
        run_cli("stack", "up", "--dir", str(directory), env=env, timeout=900)
        containers = client.containers.list(filters={"label": f"com.docker.compose.project={name}"})
        assert {c.labels["com.docker.compose.service"] for c in containers} == {"db", "control", "v2lin-blue", "gateway"}
        assert {c.labels["com.docker.compose.version"] for c in containers} == {"2.40.3"}  # made by Compose v2
        password = (directory / "secrets" / "db-password").read_text()  # a secret file under v2 too, in no environment
        assert all(password not in json.dumps(c.attrs) for c in containers)

        key = re.search(r"^(mpk_\S+)$", run_cli("stack", "keys", "create", "v2", "--dir", str(directory), env=env).stdout, re.M)[1]
        url = f"http://127.0.0.1:{port}/models/v2lin/predict"
        assert httpx.post(url, json={"instances": x.tolist()}, timeout=10).status_code == 401
        r = httpx.post(url, json={"instances": x.tolist()}, headers={"x-api-key": key}, timeout=10)
        assert r.status_code == 200 and r.headers["x-model-version"] == "1", r.text
        np.testing.assert_allclose(r.json()["predictions"], x @ [1.0, -2.0, 3.0, 0.5], rtol=1e-6, atol=1e-9)

        run_cli("stack", "deploy", "v2lin=2", "--dir", str(directory), env=env, timeout=600)
        r = httpx.post(url, json={"instances": x.tolist()}, headers={"x-api-key": key}, timeout=10)
        assert r.status_code == 200 and r.headers["x-model-version"] == "2", r.text
        np.testing.assert_allclose(r.json()["predictions"], 2 * x @ [1.0, -2.0, 3.0, 0.5], rtol=1e-6, atol=1e-9)

        run_cli("stack", "restart", "v2lin", "--dir", str(directory), env=env, timeout=300)
        assert httpx.post(url, json={"instances": x.tolist()}, headers={"x-api-key": key}, timeout=10).status_code == 200
        logs = run_cli("stack", "logs", "gateway", "--tail", "50", "--dir", str(directory), env=env).stdout
        assert "gateway" in logs and key not in logs
        ps = json.loads(run_cli("stack", "ps", "--json", "--dir", str(directory), env=env).stdout)
        assert {(s["service"], s["state"]) for s in ps} == {("db", "healthy"), ("control", "running"),
                                                            ("v2lin-green", "healthy"), ("gateway", "healthy")}
        run_cli("stack", "down", "--dir", str(directory), env=env)
        assert not client.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"})
    finally:
        if directory.exists():
            run_cli("stack", "down", "--volumes", "--dir", str(directory), env=env, check=False)
        remove_everything(client, name)
        client.close()
