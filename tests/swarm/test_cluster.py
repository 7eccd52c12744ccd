"""Smoke test of the three-node test Swarm (scripts/swarm-cluster.sh, the ``swarm_cluster`` fixture).

A tiny image built on the host engine is pushed to the cluster's registry; a 3-replica dnsrr service
on an attachable overlay network pulls it on every node; a container on the manager reaches the
replicas on the other nodes over the overlay (``tasks.SERVICE``); a stopped worker shows Down and its
replica moves to a node that is up. The tests run in file order and share the module's service.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from docker.types import EndpointSpec, ServiceMode

from tests.fixtures_swarm import SwarmCluster, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.timeout(600)]

BASE_IMAGE = "modelport-test/debian:bookworm"
PORT = 7000
# Answers every TCP connection with the container's hostname (the service sets it to NODE-SLOT), then
# closes it: perl-base is in the minimal Debian image, no HTTP server is.
SERVER = (
    f'my $s = IO::Socket::INET->new(LocalPort => {PORT}, Listen => 16, ReuseAddr => 1) or die "listen: $!";'
    ' while (my $c = $s->accept) { open(my $f, "<", "/etc/hostname"); print $c scalar(<$f>); close $c }'
)
# From a container on the overlay: every address of tasks.SERVICE, and what each one answers.
PROBE = (
    "for ip in $(getent ahostsv4 tasks.$0 | awk '{print $1}' | sort -u); do"
    f" timeout 1 bash -c \"exec 3<>/dev/tcp/$ip/{PORT} && cat <&3\" || echo \"$ip unreachable\"; done"
)
LABEL = "io.modelport.test"


@dataclass
class Smoke:
    image: str  # REGISTRY/REPO:TAG
    service: docker.models.services.Service
    network: str


def running_tasks(service: docker.models.services.Service) -> list[dict]:
    return [t for t in service.tasks(filters={"desired-state": "running"}) if t["Status"]["State"] == "running"]


@pytest.fixture(scope="module")
def smoke(swarm_cluster: SwarmCluster) -> Iterator[Smoke]:
    host = docker.from_env(timeout=120)
    manager = swarm_cluster.manager
    run = uuid.uuid4().hex[:8]
    name = f"mp-smoke-{run}"
    image = f"{swarm_cluster.registry}/modelport-swarm-smoke:{run}"
    dockerfile = f"FROM {BASE_IMAGE}\nCMD {json.dumps(['perl', '-MIO::Socket::INET', '-e', SERVER])}\n"
    host.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=image, rm=True, labels={LABEL: "swarm-smoke"})
    network = service = None
    try:
        for line in host.images.push(image, stream=True, decode=True):
            assert "error" not in line, f"push to {swarm_cluster.registry} failed: {line}"
        network = manager.networks.create(name, driver="overlay", attachable=True, labels={LABEL: run})
        service = manager.services.create(
            image, name=name, labels={LABEL: run}, networks=[network.id], hostname="{{.Node.Hostname}}-{{.Task.Slot}}",
            mode=ServiceMode("replicated", replicas=3), endpoint_spec=EndpointSpec(mode="dnsrr"),
            preferences=[("spread", "node.id")],
            stop_signal="SIGKILL")  # perl as PID 1 ignores SIGTERM: no 10 s grace period on removal
        yield Smoke(image, service, name)
    finally:
        for s in manager.services.list(filters={"label": f"{LABEL}={run}"}):
            s.remove()
        if network is not None:
            network.remove()
        # Both go asynchronously: wait until no node runs a task and the manager has deleted the
        # network, so that the next test finds the cluster as it was.
        wait_for(lambda: _cleaned(swarm_cluster, name), 60, f"the tasks and network of {name} gone from every node")
        host.images.remove(image, force=True)
        host.close()


def _cleaned(swarm_cluster: SwarmCluster, name: str) -> bool:
    if swarm_cluster.manager.networks.list(names=[name]):
        return False
    return not any(swarm_cluster.client(n).containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={name}"})
                   for n in swarm_cluster.nodes)


def test_three_nodes_ready_one_manager(swarm_cluster: SwarmCluster) -> None:
    states = swarm_cluster.node_states()
    assert sorted(states) == ["node1", "node2", "node3"]
    assert {n: s for n, (s, _) in states.items()} == dict.fromkeys(states, "ready")
    assert [n for n, (_, role) in states.items() if role == "manager"] == ["node1"]
    for node in swarm_cluster.nodes.values():  # each engine answers on its own socket, in its own namespace
        assert swarm_cluster.client(node.name).info()["Name"] == node.name


def test_replicas_run_on_every_node_pulled_from_the_registry(swarm_cluster: SwarmCluster, smoke: Smoke) -> None:
    tasks = wait_for(lambda: len(t := running_tasks(smoke.service)) == 3 and t, 120, "3 running replicas")
    ids = {n.id: n.attrs["Description"]["Hostname"] for n in swarm_cluster.manager.nodes.list()}
    assert sorted(ids[t["NodeID"]] for t in tasks) == ["node1", "node2", "node3"]
    repo = smoke.image.rsplit(":", 1)[0]
    for node in swarm_cluster.nodes:
        pulled = swarm_cluster.client(node).images.get(smoke.image)
        assert any(d.startswith(repo + "@sha256:") for d in pulled.attrs["RepoDigests"]), pulled.attrs["RepoDigests"]


def probe(swarm_cluster: SwarmCluster, smoke: Smoke, node: str) -> list[str]:
    """What each address of tasks.SERVICE answers to a container on ``node`` attached to the service's
    overlay network: a replica's hostname (NODE-SLOT), or "ADDRESS unreachable"."""
    out = swarm_cluster.client(node).containers.run(
        smoke.image, ["bash", "-c", PROBE, smoke.service.name], network=smoke.network, remove=True,
        labels={LABEL: "swarm-smoke-probe"})
    return out.decode().splitlines()


def answering_nodes(swarm_cluster: SwarmCluster, smoke: Smoke, node: str) -> set[str] | None:
    """The nodes whose replicas answer a probe from ``node``; None while an address does not answer."""
    answers = probe(swarm_cluster, smoke, node)
    if any(a.endswith(" unreachable") for a in answers):
        return None
    return {a.rsplit("-", 1)[0] for a in answers}


def test_overlay_reaches_replicas_on_other_nodes(swarm_cluster: SwarmCluster, smoke: Smoke) -> None:
    wait_for(lambda: len(running_tasks(smoke.service)) == 3, 120, "3 running replicas")
    # The service's DNS catches up with its tasks within moments: ask until every address answers.
    for node in ("node1", "node3"):  # from the manager and from a worker
        wait_for(lambda n=node: answering_nodes(swarm_cluster, smoke, n) == {"node1", "node2", "node3"}, 60,
                 f"a container on {node} reaching the replicas on node1, node2 and node3 over the overlay")


def test_stopped_worker_goes_down_and_its_replica_moves(swarm_cluster: SwarmCluster, smoke: Smoke) -> None:
    wait_for(lambda: len(running_tasks(smoke.service)) == 3, 120, "3 running replicas")
    node3 = swarm_cluster.node_id("node3")
    swarm_cluster.stop_node("node3")  # waits until the manager shows it Down
    try:
        moved = wait_for(lambda: len(t := running_tasks(smoke.service)) == 3 and all(x["NodeID"] != node3 for x in t) and t,
                         90, "3 running replicas, none on node3")
        assert len({t["NodeID"] for t in moved}) == 2
        wait_for(lambda: answering_nodes(swarm_cluster, smoke, "node1") == {"node1", "node2"}, 60,
                 "the replicas on node1 and node2 answering, and only those")
    finally:
        swarm_cluster.start_node("node3")  # waits until it is Ready again
    assert swarm_cluster.node_states()["node3"][0] == "ready"
