"""The three-node test Swarm (``scripts/swarm-cluster.sh``): the session fixture ``swarm_cluster``.

The cluster is shared by every test (and other tools on the machine): three Docker Engines in network
namespaces of their own, node1 the manager, node2 and node3 workers, and a registry at
``10.213.0.1:5000`` that the host engine pushes to and the nodes pull from. ``scripts/test-env.sh``
brings it up; the fixture brings it up itself when it is not (it needs root), and fails the run when
it cannot and ``MODELPORT_REQUIRE_DOCKER`` is set (scripts/test.sh, CI); elsewhere it skips.

No IPVS in the kernel here: services need ``endpoint_mode="dnsrr"`` and host-mode published ports.
Mark tests using it ``docker`` and ``swarm``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "swarm-cluster.sh"


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> object:
    """Polls ``condition`` until it returns something truthy (returned), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except docker.errors.APIError:  # the manager between elections, a node restarting: ask again
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def _script_env() -> dict[str, str]:
    out = _script("env").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@dataclass
class SwarmNode:
    name: str  # its hostname, and its name in `docker node ls`
    addr: str  # on the bridge mpsw0 (10.213.0.0/24)
    url: str  # unix:///run/modelport-swarm/NAME/docker.sock
    netns: str  # its network namespace (/run/netns/NETNS)

    @property
    def socket(self) -> str:
        return self.url.removeprefix("unix://")

    def client(self, timeout: int = 30) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)


@dataclass
class SwarmCluster:
    manager_url: str
    registry: str  # host:port, plain HTTP
    nodes: dict[str, SwarmNode]
    manager_name: str = "node1"
    docker_cli: str = "/usr/bin/docker"  # Debian's 20.10 client (/usr/local/bin/docker is 28.x)
    _clients: dict[str, docker.DockerClient] = field(default_factory=dict, repr=False)
    _stopped: set[str] = field(default_factory=set, repr=False)

    @property
    def manager(self) -> docker.DockerClient:
        return self.client(self.manager_name)

    def client(self, node: str) -> docker.DockerClient:
        """A docker SDK client of ``node``'s engine (kept; a new one after the node restarts)."""
        if node not in self._clients:
            self._clients[node] = self.nodes[node].client()
        return self._clients[node]

    def cli(self, node: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` (Debian's CLI) against ``node``'s engine."""
        return subprocess.run([self.docker_cli, "-H", self.nodes[node].url, *args], capture_output=True,
                              text=True, check=check, timeout=timeout)

    def node_states(self) -> dict[str, tuple[str, str]]:
        """Each node's (state, role) as the manager sees it: ("ready" | "down" | ..., "manager" | "worker")."""
        return {n.attrs["Description"]["Hostname"]: (n.attrs["Status"]["State"], n.attrs["Spec"]["Role"])
                for n in self.manager.nodes.list()}

    def node_id(self, node: str) -> str:
        return next(n.id for n in self.manager.nodes.list() if n.attrs["Description"]["Hostname"] == node)

    def wait_node_state(self, node: str, state: str, timeout: float = 60) -> None:
        wait_for(lambda: self.node_states().get(node, ("",))[0] == state, timeout, f"{node} {state} in the swarm")

    def stop_node(self, node: str, *, kill: bool = False, timeout: float = 60) -> None:
        """Stops ``node``'s engine (``kill``: every process of it at once, like a power failure) and waits
        until the manager marks it Down."""
        if node == self.manager_name:
            raise ValueError("stopping the only manager ends the swarm")
        self._stopped.add(node)
        self._clients.pop(node, None)
        _check(_script("stop-node", node, *(["--kill"] if kill else [])), f"stop-node {node}")
        self.wait_node_state(node, "down", timeout)

    def start_node(self, node: str, timeout: float = 60) -> None:
        """Starts ``node``'s engine again and waits until the manager marks it Ready."""
        _check(_script("start-node", node), f"start-node {node}")
        self.wait_node_state(node, "ready", timeout)
        self._stopped.discard(node)

    def ready(self) -> bool:
        try:
            states = self.node_states()
        except docker.errors.DockerException:
            return False
        return sorted(states) == sorted(self.nodes) and all(s == "ready" for s, _ in states.values())


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise AssertionError(f"swarm-cluster.sh {what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _cluster() -> SwarmCluster:
    env = _script_env()
    nodes = {}
    for i, name in enumerate(env["MODELPORT_SWARM_NODES"].split(","), start=1):
        nodes[name] = SwarmNode(name, env[f"MODELPORT_SWARM_NODE{i}_ADDR"], env[f"MODELPORT_SWARM_NODE{i}_HOST"],
                                env[f"MODELPORT_SWARM_NODE{i}_NETNS"])
    return SwarmCluster(env["MODELPORT_SWARM_MANAGER"], env["MODELPORT_SWARM_REGISTRY"], nodes,
                        docker_cli=env.get("MODELPORT_SWARM_DOCKER", "/usr/bin/docker"))


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[SwarmCluster]:
    """The shared three-node Swarm, up (brought up here if need be); nodes a test stopped are restarted
    at the end of the session. The cluster itself stays up (scripts/test.sh removes it)."""
    cluster = _cluster()
    if not cluster.ready():
        if os.geteuid() == 0:
            up = _script("up")
            problem = f"not Ready after `{SCRIPT} up`:\n{up.stdout}{up.stderr}"
        else:
            problem = f"not up, and `{SCRIPT} up` needs root"
        if not cluster.ready():
            message = f"the test Swarm is {problem}"
            if os.environ.get("MODELPORT_REQUIRE_DOCKER"):  # scripts/test.sh, CI: nothing is skipped there
                pytest.fail(message)
            pytest.skip(message)
    yield cluster
    for node in sorted(cluster._stopped):
        cluster.start_node(node)
    for client in cluster._clients.values():
        client.close()
