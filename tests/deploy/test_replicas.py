"""Replicas behind the HAProxy gateway on the real Docker Engine: a killed replica, scaling, a canary."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import TEST_BASE_IMAGE, TEST_PROXY_IMAGE
from tests.helpers import Load, free_port, run_cli, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two versions of a model, and a service of version 1 with 3 replicas; everything removed after."""
    import docker
    import pandas as pd

    tmp = tmp_path_factory.mktemp("replicas")
    name = f"rp-{uuid.uuid4().hex[:6]}"
    env = {"MODELPORT_HOME": str(tmp / "home"), "MODELPORT_PROXY_IMAGE": TEST_PROXY_IMAGE}
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 8)), columns=[f"f{i}" for i in range(8)])
    frame["target"] = frame.to_numpy() @ np.arange(1, 9) + 3
    frame.to_csv(tmp / "data.csv", index=False)
    for _ in range(2):
        run_cli("train", "--data", str(tmp / "data.csv"), "--target", "target", "--name", name, env=env)
    client = docker.from_env()
    port = free_port()
    try:
        run_cli("run", f"{name}:1", "--port", str(port), "--replicas", "3", "--base-image", TEST_BASE_IMAGE, env=env,
                timeout=900)
        yield {"env": env, "name": name, "url": f"http://127.0.0.1:{port}", "client": client}
    finally:
        for c in client.containers.list(all=True, filters={"label": f"io.modelport.service={name}"}):
            c.remove(force=True)
        for net in client.networks.list(names=[f"modelport-{name}"]):
            net.remove()
        for image in client.images.list(name=f"modelport/{name}"):
            client.images.remove(image.id, force=True)


def test_the_gateway_configuration_is_valid_haproxy(service: dict) -> None:
    """`haproxy -c` on the configuration every gateway runs (the one in the image built by `run`)."""
    (gateway,) = service["client"].containers.list(filters={"label": [f"io.modelport.service={service['name']}",
                                                                      "io.modelport.role=gateway"]})
    out = service["client"].containers.run(gateway.image.id, ["-c"], remove=True, stderr=True).decode()
    assert "Configuration file is valid" in out, out
    assert gateway.exec_run(["id", "-un"]).output.decode().strip() == "haproxy"
    assert gateway.attrs["NetworkSettings"]["Ports"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": service["url"].rsplit(":", 1)[1]}]}


def replicas(service: dict) -> list[dict]:
    rows = json.loads(run_cli("ps", "--json", env=service["env"]).stdout)
    return [r for r in rows if r["service"] == service["name"] and r["role"] == "model"]


def all_up(count: int):
    return lambda rows: len(rows) == count and all(r["status"] == "running" and r["proxy"] == "UP" for r in rows)


def test_ps_shows_every_replica_with_its_health_and_weight(service: dict) -> None:
    rows = wait_until(lambda: replicas(service), all_up(3), timeout=60)
    assert [r["weight"] for r in rows] == [33, 33, 33] and {r["version"] for r in rows} == {"1"}
    out = run_cli("ps", env=service["env"]).stdout
    assert out.count(f"{service['name']}-v1-") == 3 and "33%" in out and "UP" in out
    metrics = httpx.get(service["url"] + "/proxy/metrics").text  # the proxy's, beside the replicas' /metrics
    assert "haproxy_backend_http_responses_total" in metrics
    assert "modelport" in httpx.get(service["url"] + "/metrics").text


def test_a_killed_replica_costs_no_request_and_rejoins(service: dict) -> None:
    (victim, *_) = wait_until(lambda: replicas(service), all_up(3), timeout=60)
    with Load(service["url"]) as load:
        wait_until(lambda: load.ok, lambda ok: ok >= 50, timeout=60)
        # A crash: its process killed from the host (`docker kill` would be a manual stop, which no
        # restart policy undoes).
        os.kill(service["client"].containers.get(victim["name"]).attrs["State"]["Pid"], signal.SIGKILL)
        wait_until(lambda: load.ok, lambda ok: ok >= 300, timeout=120)  # with the replica gone
        # The restart policy brings it back, and the proxy's checks put it in again.
        rows = wait_until(lambda: replicas(service), all_up(3), timeout=180, what=lambda rows: json.dumps(rows))
        after = load.ok
        wait_until(lambda: load.ok, lambda ok: ok >= after + 100, timeout=60)
    assert load.failed == []
    back = next(r for r in rows if r["name"] == victim["name"])
    assert back["started_at"] != victim["started_at"] and back["weight"] == 33


def test_scale_replaces_a_docker_killed_replica_then_down_and_up_under_load(service: dict) -> None:
    (victim, *_) = wait_until(lambda: replicas(service), all_up(3), timeout=60)
    with Load(service["url"]) as load:
        wait_until(lambda: load.ok, lambda ok: ok >= 50, timeout=60)
        service["client"].containers.get(victim["name"]).kill()  # a manual stop: Docker leaves it down
        wait_until(lambda: load.ok, lambda ok: ok >= 300, timeout=120)
        run_cli("scale", service["name"], "3", env=service["env"], timeout=600)  # replaces it
        wait_until(lambda: replicas(service), all_up(3), timeout=60)
        assert not service["client"].containers.list(all=True, filters={"name": victim["name"]})  # removed
        out = run_cli("scale", service["name"], "1", env=service["env"], timeout=300)
        assert "runs 1 replica(s)" in out.stdout
        assert [r["weight"] for r in replicas(service)] == [100]
        run_cli("scale", service["name"], "2", env=service["env"], timeout=600)
        wait_until(lambda: replicas(service), all_up(2), timeout=60)
        before = load.ok
        wait_until(lambda: load.ok, lambda ok: ok >= before + 100, timeout=60)
    assert load.failed == [] and load.ok > 200
    assert len(service["client"].containers.list(all=True, filters={"label": [
        f"io.modelport.service={service['name']}", "io.modelport.role=model"]})) == 2
    out = run_cli("scale", service["name"], "0", env=service["env"], check=False)
    assert out.returncode == 1 and "from 1 to 16" in out.stderr


def _versions(url: str, n: int) -> Counter[str]:
    with httpx.Client(timeout=10) as client:
        return Counter(client.post(url + "/predict", json={"features": [0.5] * 8}).headers["x-model-version"]
                       for _ in range(n))


def test_canary_then_promote_and_rollback_lose_no_request(service: dict) -> None:
    name, env, url = service["name"], service["env"], service["url"]
    run_cli("scale", name, "2", env=env, timeout=600)
    out = run_cli("deploy", f"{name}:2", "--replace", name, "--canary", "10", "--base-image", TEST_BASE_IMAGE, env=env,
                  timeout=900)
    assert "sends 10% of requests" in out.stdout
    rows = replicas(service)
    assert sorted((r["version"], r["weight"]) for r in rows) == [("1", 45), ("1", 45), ("2", 5), ("2", 5)]
    counts = _versions(url, 2000)
    assert 160 <= counts["2"] <= 240 and counts["1"] + counts["2"] == 2000, counts
    out = run_cli("deploy", f"{name}:1", "--replace", name, env=env, check=False)
    assert out.returncode == 1 and "runs a canary" in out.stderr

    with Load(url) as load:
        run_cli("promote", name, env=env, timeout=300)
        before = load.ok
        wait_until(lambda: load.ok, lambda ok: ok >= before + 100, timeout=60)
    assert load.failed == [] and load.versions == {"1", "2"}
    assert _versions(url, 200) == {"2": 200}
    assert {(r["version"], r["weight"]) for r in replicas(service)} == {("2", 50)}

    run_cli("deploy", f"{name}:1", "--replace", name, "--canary", "50", env=env, timeout=900)
    with Load(url) as load:
        wait_until(lambda: load.counts, lambda counts: min(counts["1"], counts["2"]) >= 20, timeout=60)
        out = run_cli("rollback", name, env=env, timeout=300)
        before = load.ok
        wait_until(lambda: load.ok, lambda ok: ok >= before + 100, timeout=60)
    assert "rolled back to" in out.stdout and f"{name}:2" in out.stdout
    assert load.failed == [] and load.versions == {"1", "2"}
    assert _versions(url, 200) == {"2": 200}
    assert {r["version"] for r in replicas(service)} == {"2"} and len(replicas(service)) == 2
    out = run_cli("promote", name, env=env, check=False)
    assert out.returncode == 1 and "runs no canary" in out.stderr
