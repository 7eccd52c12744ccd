"""The autoscaler's scaler against a real three-node Swarm (scripts/swarm-cluster.sh, in the swarm
branch): a tiny service named as a stack's model slot, scaled through the Docker API on the manager
by the scaler and by the loop; the replicas run, the last decision is the service's label, the
service's other labels stay and its running tasks are not replaced by the label's update. Then the
whole loop, `modelport stack autoscale`, between a real HAProxy on the host (the stack's
configuration, in front of a stand-in model server) and that Swarm service, under a bounded load."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.deploy import proxy
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
from modelport.deploy.proxy import Runtime
from modelport.errors import ModelportError
from modelport.keys import digest
from tests.haproxy.host import FakeDNS, HeldServer, HostProxy, host_layout
from tests.helpers import free_port, wait_until

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.docker, pytest.mark.swarm]

# The local base image, as the test cluster's nodes pull it: from the cluster's registry.
PROBE_IMAGE = os.environ.get("MODELPORT_TEST_DEBIAN_IMAGE", "modelport-test/debian:bookworm")
MARK = "io.modelport.test"
KEY = "mpk_autoscale-swarm-test"


@pytest.fixture(scope="module")
def manager(swarm_cluster: Any) -> Iterator[tuple[Any, str]]:
    """The test cluster's manager (tests/fixtures_swarm.py) and the probe image in its registry."""
    client, registry = swarm_cluster.manager, swarm_cluster.registry
    host = docker.from_env(timeout=120)
    image = f"{registry}/modelport-test/autoscale-probe:1"
    host.images.get(PROBE_IMAGE).tag(image)
    for line in host.images.push(image, stream=True, decode=True):
        if "error" in line:
            raise AssertionError(f"push {image}: {line['error']}")
    try:
        yield client, image
    finally:
        host.images.remove(image, noprune=True)  # the tag only: the registry keeps the image for the next run
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


def running(svc: Any, count: int, more: Callable[[], str] = str) -> list[dict]:
    """Until ``count`` of the service's tasks run (and no more are meant to): → those tasks. ``more``:
    what else to say if they do not."""
    def tasks() -> list[dict]:
        return svc.tasks(filters={"desired-state": "running"})

    def what(ts: list[dict]) -> str:
        return f"{[(t['Status']['State'], t['Status'].get('Err')) for t in ts]}, want {count} running\n{more()}"

    return wait_until(tasks, lambda ts: len(ts) == count and all(t["Status"]["State"] == "running" for t in ts),
                      timeout=120, interval=0.25, what=what)


def spec(client: Any, stack: str) -> dict:
    return client.services.get(f"{stack}_lin-blue").attrs["Spec"]


def test_the_scaler_sets_the_replicas_and_labels_its_decision(service: tuple[Any, str]) -> None:
    client, stack = service
    scaler = SwarmScaler(client, stack)
    scaler.check()  # the manager is one
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


# -- the whole loop: `modelport stack autoscale` between a real gateway and a real Swarm ------------

@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    """The stack's HAProxy configuration on the host in front of a model server answering in 0.5 s."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        dns = FakeDNS({"lin-blue": ["127.0.0.2"]})
        stack.callback(dns.stop)
        stack.callback(HeldServer("127.0.0.2", port, delay=0.5).stop)
        layout = host_layout(tmp_path, port, dns.address)
        gw = HostProxy(proxy.stack_files("haproxy:2.6", ["lin"], default="lin", syslog="127.0.0.1:9", layout=layout), layout)
        stack.callback(gw.stop)
        runtime = Runtime(gw.transport)
        runtime.set_keys({digest(KEY): "key_autoscale"})
        wait_until(lambda: [s.status for s in Runtime(gw.transport, "lin-").servers("blue") if s.address], lambda up: "UP" in up, timeout=20,
                   interval=0.05, what=lambda up: f"{up}\n{gw.output()}")
        yield gw.url


def load(url: str, connections: int, stop: threading.Event, statuses: Counter[int]) -> list[threading.Thread]:
    """``connections`` clients, each sending one request after the other until ``stop``."""
    def client() -> None:
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {KEY}"}, timeout=30) as c:
            while not stop.is_set():
                try:
                    statuses[c.get("/v2/models/lin").status_code] += 1
                except httpx.HTTPError:  # a keep-alive connection the proxy closed as it was reused
                    statuses[0] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    return threads


def test_a_bounded_load_scales_up_to_max_and_back_to_min_after_the_cool_down(
        service: tuple[Any, str], gateway: str, tmp_path: Path, swarm_cluster: Any) -> None:
    client, stack = service
    svc = client.services.get(f"{stack}_lin-blue")
    down_window = 3.0
    policy = {"lin": {"min": 1, "max": 4, "target": {"in_flight": 4}, "down_window": down_window}}
    log = tmp_path / "autoscale.log"
    with open(log, "wb") as out:
        loop = subprocess.Popen([sys.executable, "-m", "modelport", "stack", "autoscale", "--stack", stack, "--gateway",
                                 gateway, "--every", "0.5", "--policy", json.dumps(policy)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "DOCKER_HOST": swarm_cluster.manager_url})
    stop, statuses = threading.Event(), Counter[int]()
    try:
        # 32 connections, each request held 0.5 s: some 30 in flight, 4 per replica wanted: max.
        threads = load(gateway, 32, stop, statuses)
        try:
            running(svc, 4, lambda: log.read_text())
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        stopped = time.monotonic()
        running(svc, 1, lambda: log.read_text())
        # Not before the cool-down: the last pass that saw the load may have come up to 0.5 s before it ended.
        assert time.monotonic() - stopped >= down_window - 0.5, log.read_text()
        assert status_of(spec(client, stack)["Labels"])["kind"] == "down"
    finally:
        loop.terminate()  # SIGTERM, as `docker stop` sends it: the loop ends cleanly
        code = loop.wait(30)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert code == 0, log.read_text()
    scales = [(e["current"], e["desired"]) for e in events if e["event"] == "scale"]
    # Up to max; down to min, in one step or several: the down-window holds the highest recommendation of its
    # last seconds, and a pass whose samples straddle the load's end recommends some count in between.
    assert scales[0][0] == 1 and max(d for _, d in scales) == 4 and scales[-1][1] == 1, events
    downs = scales[[d for _, d in scales].index(4) + 1:]
    assert downs and all(d < c for c, d in downs), events
    assert all(1 <= e.get("desired", 1) <= 4 for e in events)
    assert statuses[200] > 32, statuses
