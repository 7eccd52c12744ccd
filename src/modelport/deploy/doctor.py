"""``modelport doctor``: is the engine there, what holds the ports, why a service is not serving."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from modelport.container import engine
from modelport.deploy import containers as svc
from modelport.errors import ModelportError


@dataclass
class Finding:
    ok: bool
    title: str
    detail: str = ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, ok: bool, title: str, detail: str = "") -> None:
        self.findings.append(Finding(ok, title, detail))

    @property
    def healthy(self) -> bool:
        return all(f.ok for f in self.findings)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError:
            return True


def diagnose(ports: list[int]) -> Report:
    report = Report()
    try:
        client = engine.client()
    except ModelportError as e:
        report.add(False, "Docker Engine unreachable", str(e))
        return report
    version = client.version()
    report.add(True, f"Docker Engine {version.get('Version')} (API {version.get('ApiVersion')}) is reachable")

    # Who publishes which host port, across every container (not only modelport's).
    published: dict[int, list[str]] = {}
    for c in client.containers.list():
        for bindings in (c.attrs["NetworkSettings"].get("Ports") or {}).values():
            for b in bindings or []:
                published.setdefault(int(b["HostPort"]), []).append(c.name)
    for port in ports:
        users = published.get(port)
        if users:
            report.add(False, f"Port {port} is published by container(s) {', '.join(sorted(set(users)))}",
                       "pick another --port, or stop that container")
        elif _port_in_use("0.0.0.0", port):
            report.add(False, f"Port {port} is in use by a process on this host", "pick another --port")
        else:
            report.add(True, f"Port {port} is free")

    rows = svc.containers()
    if not rows:
        report.add(True, "No modelport containers")
    for c in rows:
        c.reload()
        state = c.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        if state["Status"] == "running" and health in ("healthy", None):
            report.add(True, f"{c.name} ({c.labels.get(svc.ROLE)} of {c.labels.get(svc.SERVICE)}) is running and healthy")
        else:
            report.add(False, f"{c.name} ({c.labels.get(svc.ROLE)} of {c.labels.get(svc.SERVICE)}) is not serving", svc.explain(c))
    return report
