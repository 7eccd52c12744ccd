"""The autoscaler's scaler against a real three-node Swarm (scripts/swarm-cluster.sh, in the swarm
branch): a tiny service named as a stack's model slot, scaled through the Docker API on the manager
by the scaler and by the loop; the replicas run, the last decision is the service's label, the
service's other labels stay and its running tasks are not replaced by the label's update."""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from modelport.deploy.autoscale import (
    LABEL,
    Autoscale,
    Autoscaler,
    BackendStats,
    Decision,
    Scrape,
    SwarmScaler,
    status_of,
)
from modelport.errors import ModelportError
from tests.helpers import wait_until

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

# The local base image, as the test cluster's nodes pull it: from the cluster's registry.
PROBE_IMAGE = os.environ.get("MODELPORT_TEST_DEBIAN_IMAGE", "modelport-test/debian:bookworm")
MARK = "io.modelport.test"


@pytest.fixture(scope="module")
def manager() -> Iterator[tuple[Any, str]]:
    """The cluster's manager and the probe image in its registry. The cluster is brought up outside the
    tests (scripts/swarm-cluster.sh up; its `env` gives these variables)."""
    address, registry = os.environ.get("MODELPORT_SWARM_MANAGER"), os.environ.get("MODELPORT_SWARM_REGISTRY")
    if not address or not registry:
        pytest.skip("no Swarm test cluster: scripts/swarm-cluster.sh up, then export its `env` "
                    "(MODELPORT_SWARM_MANAGER, MODELPORT_SWARM_REGISTRY)")
    host = docker.from_env(timeout=120)
    image = f"{registry}/modelport-test/autoscale-probe:1"
    host.images.get(PROBE_IMAGE).tag(image)
    for line in host.images.push(image, stream=True, decode=True):
        if "error" in line:
            raise AssertionError(f"push {image}: {line['error']}")
    client = docker.DockerClient(base_url=address, timeout=60)
    try:
        yield client, image
    finally:
        client.close()
        host.close()


@pytest.fixture
def service(manager: tuple[Any, str]) -> Iterator[tuple[Any, str]]:
    """``{stack}_lin-blue`` with one replica of a process that does nothing (SIGKILL: gone at once)."""
    from docker.types import EndpointSpec, ServiceMode

    client, image = manager
    stack = f"mpas{uuid.uuid4().hex[:6]}"
    svc = client.services.create(image, command=["sleep", "infinity"], name=f"{stack}_lin-blue",
                                 labels={MARK: "autoscale", "com.docker.stack.namespace": stack},
                                 mode=ServiceMode("replicated", 1), endpoint_spec=EndpointSpec(mode="dnsrr"),
                                 stop_signal="SIGKILL")
    try:
        running(svc, 1)
        yield client, stack
    finally:
        svc.remove()


def running(svc: Any, count: int) -> list[dict]:
    """Until ``count`` of the service's tasks run (and no more are meant to): → those tasks."""
    def tasks() -> list[dict]:
        return [t for t in svc.tasks(filters={"desired-state": "running"})]

    done = wait_until(tasks, lambda ts: len(ts) == count and all(t["Status"]["State"] == "running" for t in ts),
                      timeout=120, interval=0.25,
                      what=lambda ts: f"{[(t['Status']['State'], t['Status'].get('Err')) for t in ts]}, want {count} running")
    return done


def spec(client: Any, stack: str) -> dict:
    return client.services.get(f"{stack}_lin-blue").attrs["Spec"]


def test_the_scaler_sets_the_replicas_and_labels_its_decision(service: tuple[Any, str]) -> None:
    client, stack = service
    scaler = SwarmScaler(client, stack)
    assert scaler.replicas("lin") == {"blue": 1}
    first = running(client.services.get(f"{stack}_lin-blue"), 1)[0]["ID"]
    scaler.apply("lin", "blue", Decision(1, 3, "up", "in_flight 12/replica, target 4: 3 replica(s)"), "2026-12-03T14:00:00Z")
    tasks = running(client.services.get(f"{stack}_lin-blue"), 3)
    assert first in {t["ID"] for t in tasks}  # scaled, not replaced: the update changed no task
    assert len({t["NodeID"] for t in tasks}) > 1  # spread over the nodes
    s = spec(client, stack)
    assert s["Mode"]["Replicated"]["Replicas"] == 3 and scaler.replicas("lin") == {"blue": 3}
    assert status_of(s["Labels"]) == {"desired": 3, "current": 1, "kind": "up", "time": "2026-12-03T14:00:00Z",
                                      "reason": "in_flight 12/replica, target 4: 3 replica(s)"}
    assert s["Labels"][MARK] == "autoscale" and s["Labels"]["com.docker.stack.namespace"] == stack
    scaler.apply("lin", "blue", Decision(3, 1, "down", "idle"), "2026-12-03T14:01:00Z")
    assert first in {t["ID"] for t in running(client.services.get(f"{stack}_lin-blue"), 1)}
    assert status_of(spec(client, stack)["Labels"])["desired"] == 1
    assert scaler.replicas("absent") == {}
    with pytest.raises(ModelportError, match=f"No service {stack}_absent-blue"):
        scaler.apply("absent", "blue", Decision(1, 2, "up", ""), "")


class StaticMetrics:
    def __init__(self) -> None:
        self.sessions: float | None = 0

    def scrape(self) -> Scrape:
        if self.sessions is None:
            raise ModelportError("Cannot read the gateway's metrics: test")
        return Scrape(0.0, {"lin-blue": BackendStats(self.sessions, 0)})


def test_the_loop_scales_a_swarm_service_within_its_bounds(service: tuple[Any, str]) -> None:
    client, stack = service
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 4}, "down_window": 0})
    metrics, out = StaticMetrics(), io.StringIO()
    autoscaler = Autoscaler({"lin": policy}, metrics, SwarmScaler(client, stack), out=out)
    svc = client.services.get(f"{stack}_lin-blue")
    metrics.sessions = 12
    assert autoscaler.step()["lin"].desired == 3
    running(svc, 3)
    metrics.sessions = 100  # past max
    assert autoscaler.step()["lin"].desired == 4
    running(svc, 4)
    assert status_of(spec(client, stack)["Labels"])["reason"].endswith("clamped to max 4")
    client.services.get(f"{stack}_lin-blue").scale(6)  # by hand, past max; and the gateway unreadable
    metrics.sessions = None
    assert autoscaler.step()["lin"].desired == 4
    running(svc, 4)
    metrics.sessions = 0
    assert autoscaler.step()["lin"].desired == 1
    running(svc, 1)
    events = [(e["event"], e.get("kind"), e.get("desired")) for e in map(json.loads, out.getvalue().splitlines())]
    assert events == [("scale", "up", 3), ("scale", "up", 4), ("error", None, None), ("scale", "bounds", 4),
                      ("recovered", None, None), ("scale", "down", 1)]
    assert status_of(spec(client, stack)["Labels"])["desired"] == 1
    assert LABEL in spec(client, stack)["Labels"]
