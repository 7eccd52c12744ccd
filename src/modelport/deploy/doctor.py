"""``modelport doctor``: is the engine there, what holds the ports, why a service is not serving."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from modelport.container import engine
from modelport.deploy import containers as svc
from modelport.deploy.stack import STACK
from modelport.errors import ModelportError

OK, WARNING, PROBLEM = "ok", "warning", "problem"


@dataclass
class Finding:
    status: str  # OK, WARNING (worth knowing, not broken) or PROBLEM
    title: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, ok: bool, title: str, detail: str = "") -> None:
        self.findings.append(Finding(OK if ok else PROBLEM, title, detail))

    @property
    def healthy(self) -> bool:
        """No problem: warnings (a port someone else holds) do not make the setup unhealthy."""
        return all(f.status != PROBLEM for f in self.findings)


@dataclass
class PortHolder:
    """A container publishing a host port, as its labels describe it."""

    container: str
    labels: dict[str, str]


def owner(labels: dict[str, str]) -> str | None:
    """The modelport service or stack a container belongs to (from its labels), or None when it is not modelport's."""
    if labels.get(svc.MANAGED) == "true" and labels.get(svc.SERVICE):
        return f"modelport service {labels[svc.SERVICE]}"
    if labels.get(STACK):
        return f"modelport stack {labels[STACK]}"
    return None


def port_finding(port: int, holders: list[PortHolder], bound_elsewhere: bool) -> Finding:
    """What a port's holders mean: the user's own modelport service holding its port is how it should be
    (its health is judged with the containers); a holder modelport does not know is worth a warning."""
    strangers = sorted({h.container for h in holders if owner(h.labels) is None})
    if strangers:
        return Finding(WARNING, f"Port {port} is published by container(s) {', '.join(strangers)}",
                       "pick another --port, or stop that container")
    if holders:
        return Finding(OK, f"Port {port} is in use by {', '.join(sorted({owner(h.labels) or '' for h in holders}))}")
    if bound_elsewhere:
        return Finding(WARNING, f"Port {port} is in use by a process on this host", "pick another --port")
    return Finding(OK, f"Port {port} is free")


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError:
            return True


def diagnose(ports: list[int]) -> Report:
    import docker.errors

    report = Report()
    try:
        client = engine.client()
    except ModelportError as e:
        report.add(False, "Docker Engine unreachable", str(e))
        return report
    version = client.version()
    report.add(True, f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')}) is reachable")

    # Who publishes which host port, across every container (not only modelport's).
    published: dict[int, list[PortHolder]] = {}
    for c in client.containers.list(ignore_removed=True):
        for _, b in engine.published(c):
            published.setdefault(int(b["HostPort"]), []).append(PortHolder(c.name, c.labels or {}))
    for port in ports:
        holders = published.get(port, [])
        report.findings.append(port_finding(port, holders, not holders and _port_in_use("0.0.0.0", port)))

    rows = svc.containers()
    if not rows:
        report.add(True, "No modelport containers")
    for c in rows:
        try:
            c.reload()
        except docker.errors.NotFound:  # removed since it was listed: nothing to diagnose
            continue
        state = c.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if state["Status"] == "running" and health in ("healthy", None):
            report.add(True, f"{c.name} ({c.labels.get(svc.ROLE)} of {c.labels.get(svc.SERVICE)}) is running and healthy")
        else:
            report.add(False, f"{c.name} ({c.labels.get(svc.ROLE)} of {c.labels.get(svc.SERVICE)}) is not serving", svc.explain(c))
    return report
