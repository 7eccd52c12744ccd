"""A stack on Docker Swarm: where it runs (stack.json's ``swarm`` section), the docker CLI's ``stack
deploy`` and the manager's view of the stack's services and tasks.

The stack file is rendered from the same stack.json as compose.yaml, by its own template
(templates/swarm-stack.yaml.j2: ``docker stack deploy`` takes no ``depends_on`` conditions, no
``build``). Images are built and pushed by the engine modelport talks to (DOCKER_HOST), and the
nodes pull them from the registry; the Swarm is driven through a manager's engine
(``SwarmSettings.manager``, by default that same engine).

This kernel has no IPVS, and many others lack it too: no service VIPs, no ingress routing mesh.
So every service uses ``endpoint_mode: dnsrr`` (its name resolves to its tasks' addresses, which is
how the gateway finds replicas under Compose as well) and only the gateway publishes a port, in
``host`` mode on each of the nodes chosen for it (``SwarmSettings.gateway_nodes``: a node label puts
one gateway task on each). Beside each gateway task, on its node, a ``keysync`` task hands it the keys,
versions and traffic split (deploy/keysync.py): a gateway task made anew gets them within a second.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.container import engine
from modelport.deploy.compose import run_tool
from modelport.errors import ModelportError

STACK_FILE = "swarm-stack.yaml"
NAMESPACE = "com.docker.stack.namespace"
SERVICE_NAME = "com.docker.swarm.service.name"
# Task states (swarmkit's): those a task goes through until it runs, and those it never leaves.
STARTING = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")
FAILED = ("failed", "rejected", "orphaned")
DOCKER_CLI = ("/usr/bin/docker", "docker")  # Debian's 20.10 client first: /usr/local/bin/docker may be another
DOCKER_SOCKET = "/var/run/docker.sock"


@dataclass
class SwarmSettings:
    """Where a stack runs on a Swarm: the manager it is driven through, the registry its images are
    pushed to (and pulled from by every node), the node that holds the gateway, the control
    service and the database (the database's volume is local to it), and the path of the managers'
    Docker socket, which the autoscaler mounts."""

    registry: str  # REGISTRY[/PREFIX]: images are pushed as REGISTRY/PREFIX/modelport/NAME:TAG
    manager: str = ""  # the manager engine's address; "" = the engine modelport talks to (DOCKER_HOST)
    node: str = ""  # the hostname of the node for the gateway, control and db; "" until `up` picks the manager's
    docker_socket: str = DOCKER_SOCKET  # on the managers' hosts: the engine's socket (several engines on one host differ)
    # The nodes (hostnames) that run a gateway, each publishing the port in host mode; [] = [node].
    # modelport reads the proxy's health checks through the one on the manager's node: keep that one among them.
    gateway_nodes: list[str] = field(default_factory=list)
    autoscale_every: float = 0.0  # seconds between two decisions of the autoscaler; 0 = its default (2 s)

    def __post_init__(self) -> None:
        if not 0 <= self.autoscale_every <= 3600:
            raise ModelportError(f"--autoscale-every {self.autoscale_every:g}: seconds between two decisions, "
                                 "above 0 (up to 3600)")
        self.registry = self.registry.rstrip("/")
        for n in self.gateway_nodes:
            if not n or any(c in n for c in " ,=\"'"):
                raise ModelportError(f"--gateway-node {n!r}: a node's hostname (`docker node ls`)")
        self.gateway_nodes = list(dict.fromkeys(self.gateway_nodes))
        if not self.registry or "://" in self.registry or " " in self.registry:
            raise ModelportError(f"--registry {self.registry!r}: expected HOST[:PORT][/PREFIX], e.g. "
                                 "registry.example.com:5000 (no scheme)")
        if not self.docker_socket.startswith("/") or ":" in self.docker_socket or " " in self.docker_socket:
            raise ModelportError(f"--docker-socket {self.docker_socket!r}: the absolute path of the managers' Docker "
                                 f"socket on their hosts, e.g. {DOCKER_SOCKET}")

    def image(self, local: str, digest: str = "") -> str:
        """The reference the nodes pull ``local`` by: its repository under the registry (a registry
        host already in ``local``, like docker.io/library/postgres, is replaced). ``digest``: a model's
        sha256, in the tag: another store's lin:1 pushed to the same registry must not replace this one."""
        first, slash, rest = local.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            local = rest
        return f"{self.registry}/{local}" + (f"-{digest[:12]}" if digest else "")


@functools.cache
def docker_cli() -> str:
    """A docker CLI with ``stack deploy``."""
    for candidate in DOCKER_CLI:
        path = shutil.which(candidate)
        if path and subprocess.run([path, "stack", "--help"], capture_output=True).returncode == 0:
            return path
    raise ModelportError("The docker CLI is not installed (`docker stack deploy` runs a Swarm stack): "
                         "install it (e.g. `apt-get install docker.io`)")


class SwarmProject:
    """A stack deployed by ``docker stack deploy``: its services are ``{name}_{service}``."""

    def __init__(self, directory: Path, name: str, settings: SwarmSettings) -> None:
        self.directory = directory
        self.name = name
        self.settings = settings

    @property
    def client(self) -> Any:
        return engine.client(self.settings.manager or None)

    def check_manager(self) -> str:
        """The hostname of the manager's node; an error unless the engine is a Swarm manager."""
        info = self.client.info()
        swarm = info.get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            where = self.settings.manager or os.environ.get("DOCKER_HOST") or "the local Docker Engine"
            state = swarm.get("LocalNodeState", "inactive")
            raise ModelportError(f"{where} is not a Swarm manager (its Swarm state: {state}): run `docker swarm init` "
                                 "there, or point --manager (or DOCKER_HOST) at a manager")
        return self.client.api.inspect_node(swarm["NodeID"])["Description"]["Hostname"]

    def _env(self) -> dict[str, str]:
        return {**os.environ, **({"DOCKER_HOST": self.settings.manager} if self.settings.manager else {})}

    def run(self, *args: str, capture: bool = True) -> str:
        """A docker CLI command against the manager; its output, or an error with the output's tail."""
        return run_tool([docker_cli(), *args], shown=f"docker {' '.join(args)}", cwd=self.directory, env=self._env(),
                        capture=capture)

    def start(self, *args: str) -> subprocess.Popen:
        """A docker CLI command against the manager, its output to ours (``docker service logs -f``)."""
        return subprocess.Popen([docker_cli(), *args], cwd=self.directory, env=self._env())

    def deploy(self) -> None:
        """Make the Swarm run what the stack file says. ``--resolve-image never``: the nodes pull the
        references as written (no digest lookup, which a plain-HTTP registry would fail); ``--prune``
        removes the services the file no longer has."""
        self.run("stack", "deploy", "--compose-file", STACK_FILE, "--resolve-image", "never", "--prune", self.name)

    def remove(self, timeout: float = 60) -> None:
        """``docker stack rm``, then wait (bounded) until the manager runs none of its containers and its
        networks are gone: a volume still in use cannot be removed, a network being removed cannot be made again."""
        self.run("stack", "rm", self.name)
        deadline = time.monotonic() + timeout
        label = {"label": f"{NAMESPACE}={self.name}"}
        while time.monotonic() < deadline and (self.client.api.containers(all=True, filters=label)  # no inspect: they go
                                               or self.client.api.networks(filters=label)):
            time.sleep(0.5)

    def service_name(self, service: str) -> str:
        return f"{self.name}_{service}"

    def services(self) -> dict[str, Any]:
        """The stack's services on the Swarm, by their name in the stack file."""
        found = self.client.api.services(filters={"label": f"{NAMESPACE}={self.name}"})
        return {s["Spec"]["Name"].removeprefix(f"{self.name}_"): s for s in found}

    def service_id(self, service: str) -> str | None:
        full = self.service_name(service)  # the name filter matches prefixes: lin-blue would find lin-blue-x
        return next((s["ID"] for s in self.client.api.services(filters={"name": full}) if s["Spec"]["Name"] == full), None)

    def tasks(self, service: str, *, current: bool = True) -> list[dict[str, Any]]:
        """The service's tasks, oldest first: those meant to run (``current``), or all it still lists."""
        sid = self.service_id(service)
        if sid is None:
            return []
        found = self.client.api.tasks(filters={"service": sid, **({"desired-state": "running"} if current else {})})
        return sorted(found, key=lambda t: t["CreatedAt"])

    def task(self, task_id: str) -> dict[str, Any] | None:
        import docker.errors

        try:
            return self.client.api.inspect_task(task_id)
        except docker.errors.NotFound:
            return None

    def container(self, service: str) -> Any | None:
        """The service's running container on the manager's own engine (where modelport can exec)."""
        found = self.client.containers.list(filters={"label": [f"{NAMESPACE}={self.name}",
                                                               f"{SERVICE_NAME}={self.service_name(service)}"]},
                                            ignore_removed=True)
        return found[0] if found else None

    def node_names(self) -> dict[str, str]:
        """Node id → hostname."""
        return {n["ID"]: n["Description"]["Hostname"] for n in self.client.api.nodes()}

    def label_gateway_nodes(self, hostnames: list[str]) -> None:
        """The gateway label on these nodes and on no other: the gateway's global service follows it."""
        api, label = self.client.api, gateway_label(self.name)
        nodes = {n["Description"]["Hostname"]: n for n in api.nodes()}
        if missing := [h for h in hostnames if h not in nodes]:
            raise ModelportError(f"--gateway-node {', '.join(missing)}: not a node of the Swarm "
                                 f"(its nodes: {', '.join(sorted(nodes))})")
        for hostname, n in nodes.items():
            spec = n["Spec"]
            labels = dict(spec.get("Labels") or {})
            wanted = hostname in hostnames
            if (labels.get(label) == "true") == wanted:
                continue
            labels.pop(label, None)
            if wanted:
                labels[label] = "true"
            api.update_node(n["ID"], n["Version"]["Index"], {**spec, "Labels": labels})

    def node_address(self, hostname: str) -> str | None:
        for n in self.client.api.nodes():
            if n["Description"]["Hostname"] == hostname:
                addr = n.get("Status", {}).get("Addr")
                manager = (n.get("ManagerStatus") or {}).get("Addr", "").rsplit(":", 1)[0]
                return manager if addr in (None, "", "0.0.0.0") else addr
        return None

    def logs(self, service: str, tail: int | None = 15) -> str:
        """The last lines of the service's logs, gathered from every node by the manager."""
        try:
            chunks = self.client.api.service_logs(self.service_name(service), stdout=True, stderr=True,
                                                  tail=tail if tail is not None else "all", timestamps=False)
            return b"".join(chunks).decode(errors="replace").strip()
        except Exception as e:  # explaining must not fail on a log that cannot be read (a node is down)
            return f"(no logs: {e})"


def gateway_label(stack: str) -> str:
    """The node label that puts a stack's gateway task (and its keysync task) on a node."""
    return f"io.modelport.{stack}.gateway"


def set_replicas(client: Any, service_id: str, replicas: int, labels: dict[str, str] | None = None) -> None:
    """Scale a replicated service (and set ``labels``, which replace the service's own), sending the spec as
    stored with the version read: one update that raced another is refused by the manager. Not the SDK's
    Service.scale: its fetch_current_spec reads the spec with the defaults inserted, a task template the
    manager takes for a new one, and it replaces every task."""
    from docker.types import ServiceMode

    service = client.services.get(service_id)
    spec = service.attrs["Spec"]
    client.api.update_service(
        service.id, service.version, task_template=spec["TaskTemplate"], name=spec["Name"],
        labels=spec.get("Labels") if labels is None else labels, mode=ServiceMode("replicated", replicas=replicas),
        update_config=spec.get("UpdateConfig"), rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"))


def address(task: dict[str, Any], network: str) -> str | None:
    """The task's address on ``network`` (without the prefix length), None until it has one."""
    for attachment in task.get("NetworksAttachments") or []:
        if attachment["Network"]["Spec"]["Name"] == network and attachment.get("Addresses"):
            return attachment["Addresses"][0].split("/")[0]
    return None


def state(task: dict[str, Any]) -> str:
    return task["Status"]["State"]


def describe(task: dict[str, Any]) -> str:
    """A task's state, error and exit code, as a person reads them."""
    status = task["Status"]
    parts = [status["State"]]
    if status.get("Message") and status["Message"] != status["State"]:
        parts.append(status["Message"])
    if status.get("Err"):
        parts.append(status["Err"])
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if code:
        parts.append(f"exit code {code}" + (" (killed: out of memory?)" if code == 137 else ""))
    return ", ".join(parts)
