"""Model services on one Docker Engine: run, inspect, stop/start, replace with no downtime, roll back.

A service is a gateway container that owns the published port and routes to a model container on
the service's private network. Replacing the model starts the new container, waits until it is
healthy, switches the gateway's route (requests already on the old one finish there), then removes
the old one. Everything is found by labels, never by name patterns.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from modelport.api import get_store
from modelport.container import engine
from modelport.container.build import build_image, default_tag, stale_image
from modelport.container.context import DEFAULT_BASE_IMAGE
from modelport.errors import ModelportError, NotFoundError
from modelport.ports import check_port
from modelport.store import ModelStore, parse_ref

MANAGED = "io.modelport.managed"
SERVICE = "io.modelport.service"
ROLE = "io.modelport.role"
PREVIOUS = "io.modelport.previous-version"
SETTINGS = "io.modelport.settings"
MODEL_PORT = 8080
Progress = Callable[[str], None]


@dataclass
class RunSettings:
    """What a model container is started with; kept on it (as a label) so a replacement gets the same."""

    cpus: float | None = None
    memory: str | None = None
    restart: str = "unless-stopped"
    env: dict[str, str] | None = None

    def docker_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"environment": self.env or {}}
        if self.cpus:
            kwargs["nano_cpus"] = int(self.cpus * 1e9)
        if self.memory:
            kwargs["mem_limit"] = self.memory
        if self.restart != "no":
            kwargs["restart_policy"] = {"Name": self.restart}
        return kwargs


@dataclass
class ServiceInfo:
    service: str
    url: str | None
    model: str
    version: str
    container: str


# -- finding things --------------------------------------------------------------------------

def containers(service: str | None = None, *, role: str | None = None, all: bool = True) -> list[Any]:
    filters = [f"{MANAGED}=true"] + ([f"{SERVICE}={service}"] if service else []) + ([f"{ROLE}={role}"] if role else [])
    return engine.client().containers.list(all=all, filters={"label": filters})


def service_containers(service: str) -> list[Any]:
    found = containers(service)
    if not found:
        known = sorted({c.labels[SERVICE] for c in containers()})
        raise NotFoundError(f"No modelport service named {service!r} (services: {', '.join(known) or 'none'})")
    return found


def _model_container(service: str) -> Any:
    running = [c for c in containers(service, role="model") if c.status == "running"]
    if not running:
        raise ModelportError(f"Service {service!r} has no running model container: modelport start {service}")
    return running[0]


def _gateway(service: str) -> Any:
    found = containers(service, role="gateway")
    if not found:
        raise ModelportError(f"Service {service!r} has no gateway container")
    return found[0]


def network_name(service: str) -> str:
    return f"modelport-{service}"


# -- ports -----------------------------------------------------------------------------------

def _overlaps(a: str, b: str) -> bool:
    wildcard = ("", "0.0.0.0", "::")
    return a == b or a in wildcard or b in wildcard


def describe(container: Any) -> str:
    """A container as a person knows it: the modelport service or stack it belongs to, by its labels."""
    if SERVICE in container.labels:
        return f"the modelport service {container.labels[SERVICE]!r} (container {container.name})"
    if "io.modelport.stack" in container.labels:
        return f"the modelport stack {container.labels['io.modelport.stack']!r} (container {container.name})"
    return f"the container {container.name}"


def check_publishable(host_ip: str, port: int, *, option: str = "--port",
                      own: Callable[[Any], bool] = lambda _: False) -> None:
    """Fail before any build or container start when ``host_ip:port`` cannot be published, naming what
    holds it. A container for which ``own`` is true (the stack's own gateway) may hold it already."""
    holders = [c for c in engine.client().containers.list()
               if any(_overlaps(b.get("HostIp", ""), host_ip) and int(b["HostPort"]) == port
                      for bs in (c.attrs["NetworkSettings"].get("Ports") or {}).values() for b in bs or [])]
    others = [c for c in holders if not own(c)]
    if others:
        check_port(host_ip, port, option=option, holder=describe(others[0]))
    if not holders:  # one of ours holds it through Docker's proxy: no bind test then
        check_port(host_ip, port, option=option, only_conflicts=True)


# -- images ----------------------------------------------------------------------------------

def resolve_image(target: str, *, base_image: str, store: ModelStore, progress: Progress) -> tuple[str, str, str]:
    """``target`` is a model reference (its image built when missing or stale) or a local image.
    → (image tag, model name, model version)."""
    try:
        mv = store.resolve(parse_ref(target))
    except (NotFoundError, ModelportError):
        mv = None
    if mv is not None:
        tag = default_tag(mv)
        why = stale_image(tag, mv.digest)
        if why is not None:
            progress(f"Building {tag} for {mv.ref}: {why}")
            build_image(mv.ref, tag=tag, base_image=base_image, store=store, progress=progress)
        return tag, mv.name, str(mv.version)
    labels = engine.image_labels(target)
    if labels is None:
        raise NotFoundError(f"{target!r} is neither a model in the store nor a local image")
    if "io.modelport.model" not in labels:
        raise ModelportError(f"Image {target!r} was not built by modelport (it has no io.modelport.model label)")
    return target, labels["io.modelport.model"], labels["io.modelport.version"]


# -- health ----------------------------------------------------------------------------------

def wait_healthy(container: Any, timeout: float) -> None:
    """Return once the container's healthcheck passes; otherwise raise with the reason."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        health = (state.get("Health") or {}).get("Status")
        healthy = health == "healthy" or (health is None and _no_healthcheck(container))
        if state["Status"] == "running" and healthy:
            return
        if state["Status"] in ("exited", "dead") or state.get("Restarting") or container.attrs.get("RestartCount", 0) > 0:
            raise ModelportError(f"{container.name} did not start: {explain(container)}")
        if time.monotonic() > deadline:
            raise ModelportError(f"{container.name} was not healthy after {timeout:.0f}s: {explain(container)}")
        time.sleep(0.25)


def wait_answering(container: Any, host: str, port: int, timeout: float) -> None:
    """Wait for a published container to answer its readiness endpoint from here: sooner than its
    healthcheck, which only runs every few seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{host}:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        container.reload()
        if container.status in ("exited", "dead"):
            break
        time.sleep(0.1)
    raise ModelportError(f"{container.name} is not answering on {host}:{port}: {explain(container)}")


def _no_healthcheck(container: Any) -> bool:
    return not container.attrs["Config"].get("Healthcheck")


def explain(container: Any, lines: int = 15) -> str:
    """Why a container is not serving: exit code, OOM kill, healthcheck output, last log lines."""
    container.reload()
    state = container.attrs["State"]
    parts = [f"status {state['Status']}"]
    if state["Status"] in ("exited", "dead") or container.attrs.get("RestartCount", 0):
        parts.append(f"exit code {state.get('ExitCode')}")
    if state.get("OOMKilled"):
        parts.append("killed for running out of memory (OOMKilled): raise --memory")
    if state.get("Error"):
        parts.append(state["Error"])
    if container.attrs.get("RestartCount", 0):
        parts.append(f"restarted {container.attrs['RestartCount']} time(s)")
    health = state.get("Health") or {}
    if health.get("Status") not in (None, "healthy") and health.get("Log"):
        parts.append(f"healthcheck {health['Status']}: {health['Log'][-1].get('Output', '').strip()[:200]}")
    logs = container.logs(tail=lines).decode(errors="replace").strip()
    return "; ".join(parts) + (f"\nLast log lines:\n{logs}" if logs else "")


# -- lifecycle -------------------------------------------------------------------------------

def _start_model(service: str, image: str, model: str, version: str, settings: RunSettings, previous: str | None) -> Any:
    labels = {MANAGED: "true", SERVICE: service, ROLE: "model", SETTINGS: json.dumps(settings.__dict__)}
    if previous:
        labels[PREVIOUS] = previous
    name = f"{service}-v{version}-{uuid.uuid4().hex[:6]}"
    return engine.client().containers.run(image, name=name, detach=True, labels=labels, network=network_name(service),
                                          **settings.docker_kwargs())


def run(target: str, *, port: int = 8080, name: str | None = None, host_ip: str = "127.0.0.1",
        settings: RunSettings | None = None, base_image: str = DEFAULT_BASE_IMAGE, wait: float = 120,
        store: ModelStore | None = None, progress: Progress = lambda _: None) -> ServiceInfo:
    import docker.errors

    settings = settings or RunSettings()
    check_publishable(host_ip, port)
    image, model, version = resolve_image(target, base_image=base_image, store=get_store(store), progress=progress)
    service = name or model
    if containers(service):
        raise ModelportError(f"A service named {service!r} exists already (modelport ps --all): "
                             f"use `modelport deploy {target} --replace {service}` or `modelport rm {service}`")
    client = engine.client()
    client.networks.create(network_name(service), driver="bridge", labels={MANAGED: "true", SERVICE: service})
    try:
        progress(f"Starting {model}:{version} from {image}")
        backend = _start_model(service, image, model, version, settings, None)
        wait_healthy(backend, wait)
        progress(f"{backend.name} is healthy; starting the gateway on {host_ip}:{port}")
        gateway_labels = {MANAGED: "true", SERVICE: service, ROLE: "gateway"}
        try:
            gw = client.containers.run(
                image, ["gateway", "--host", "0.0.0.0", "--port", str(MODEL_PORT),
                        "--route", f"{model}=http://{backend.name}:{MODEL_PORT}@{version}"],
                name=service, detach=True, labels=gateway_labels, network=network_name(service),
                ports={f"{MODEL_PORT}/tcp": (host_ip, port)}, restart_policy={"Name": settings.restart} if settings.restart != "no" else None)
        except docker.errors.APIError as e:
            if "allocated" in str(e) or "in use" in str(e):  # taken since the check at the start
                check_publishable(host_ip, port)
                check_port(host_ip, port, holder="another process")
            raise ModelportError(f"Could not start the gateway: {e.explanation or e}") from None
        wait_answering(gw, "127.0.0.1" if host_ip in ("0.0.0.0", "") else host_ip, port, wait)
    except BaseException:
        _remove_service(service)
        raise
    return ServiceInfo(service, f"http://{host_ip}:{port}", model, version, backend.name)


def deploy(target: str, *, replace: str, base_image: str = DEFAULT_BASE_IMAGE, wait: float = 120,
           store: ModelStore | None = None, progress: Progress = lambda _: None) -> ServiceInfo:
    """Replace the model behind ``replace`` with ``target``, with no failed request."""
    current = _model_container(replace)
    image, model, version = resolve_image(target, base_image=base_image, store=get_store(store), progress=progress)
    if model != current.labels["io.modelport.model"]:
        raise ModelportError(f"Service {replace!r} serves {current.labels['io.modelport.model']!r}, not {model!r}: "
                             f"deploy a version of it, or `modelport run {target}` as a new service")
    settings = RunSettings(**json.loads(current.labels.get(SETTINGS, "{}")))
    progress(f"Starting {model}:{version} next to {current.name}")
    new = _start_model(replace, image, model, version, settings, previous=current.labels["io.modelport.version"])
    try:
        wait_healthy(new, wait)
    except ModelportError as e:
        new.remove(force=True)
        raise ModelportError(f"{e}\nThe current version ({current.labels['io.modelport.version']}) keeps serving.") from None
    progress(f"{new.name} is healthy; switching the gateway")
    result = _gateway(replace).exec_run(["modelport", "gateway-admin", "set-route", model,
                                         f"http://{new.name}:{MODEL_PORT}", "--version", version])
    if result.exit_code != 0:
        new.remove(force=True)
        raise ModelportError(f"Switching the gateway failed; the current version keeps serving:\n{result.output.decode()}")
    progress(f"Switched; removing {current.name}")
    current.stop(timeout=15)
    current.remove()
    return ServiceInfo(replace, published_url(replace), model, version, new.name)


def rollback(service: str, *, to: int | None = None, base_image: str = DEFAULT_BASE_IMAGE, wait: float = 120,
             store: ModelStore | None = None, progress: Progress = lambda _: None) -> ServiceInfo:
    current = _model_container(service)
    model, version = current.labels["io.modelport.model"], int(current.labels["io.modelport.version"])
    if to is None:
        previous = current.labels.get(PREVIOUS)
        older = [v.version for v in get_store(store).list_versions(model) if v.version < version]
        if previous is None and not older:
            raise ModelportError(f"{model}:{version} has no earlier version to roll back to")
        to = int(previous) if previous is not None else max(older)
    if to == version:
        raise ModelportError(f"Service {service!r} already serves {model}:{version}")
    return deploy(f"{model}:{to}", replace=service, base_image=base_image, wait=wait, store=store, progress=progress)


def published_url(service: str) -> str | None:
    gw = _gateway(service)
    gw.reload()
    bindings = (gw.attrs["NetworkSettings"].get("Ports") or {}).get(f"{MODEL_PORT}/tcp") or []
    return f"http://{bindings[0]['HostIp'] or '0.0.0.0'}:{bindings[0]['HostPort']}" if bindings else None


def stop(service: str, timeout: int = 15) -> list[str]:
    found = sorted(service_containers(service), key=lambda c: c.labels[ROLE] != "gateway")  # gateway first
    for c in found:
        c.stop(timeout=timeout)
    return [c.name for c in found]


def start(service: str, wait: float = 120) -> list[str]:
    found = sorted(service_containers(service), key=lambda c: c.labels[ROLE] == "gateway")  # models first
    for c in found:
        c.start()
    for c in found:
        wait_healthy(c, wait)
    return [c.name for c in found]


def restart(service: str, wait: float = 120) -> list[str]:
    stop(service)
    return start(service, wait)


def remove(service: str, *, force: bool = False) -> list[str]:
    found = service_containers(service)
    running = [c.name for c in found if c.status == "running"]
    if running and not force:
        raise ModelportError(f"Service {service!r} is running ({', '.join(running)}): stop it first, or pass --force")
    return _remove_service(service)


def _remove_service(service: str) -> list[str]:
    import docker.errors

    removed = []
    for c in containers(service):
        c.remove(force=True)
        removed.append(c.name)
    for net in engine.client().networks.list(filters={"label": [f"{MANAGED}=true", f"{SERVICE}={service}"]}):
        with contextlib.suppress(docker.errors.APIError):  # still in use by a container being removed
            net.remove()
    return removed


def logs(service: str, *, tail: int | None = None, follow: bool = False) -> Iterator[bytes]:
    model = [c for c in service_containers(service) if c.labels[ROLE] == "model"]
    if not model:
        raise ModelportError(f"Service {service!r} has no model container")
    if follow:
        yield from model[0].logs(stream=True, follow=True, tail=tail if tail is not None else "all")
    else:
        yield model[0].logs(tail=tail if tail is not None else "all")


def exec_in(service: str, command: list[str]) -> tuple[int, bytes]:
    result = _model_container(service).exec_run(command)
    return result.exit_code, result.output


def _gateway_version(gateway: Any) -> str | None:
    """The version a gateway routes to now: its label holds the one it started with, before any deploy."""
    code, out = gateway.exec_run(["modelport", "gateway-admin", "routes"])
    try:
        versions = sorted({r["version"] for r in json.loads(out)["routes"] if r.get("version")}) if code == 0 else []
    except (ValueError, KeyError, TypeError):
        versions = []
    return ",".join(versions) or gateway.labels.get("io.modelport.version")


def status(all: bool = False) -> list[dict[str, Any]]:
    """One row per container, for ``ps``."""
    rows = []
    for c in containers(all=all):
        state = c.attrs["State"]
        ports = [f"{b['HostIp']}:{b['HostPort']}->{p}" for p, bs in (c.attrs["NetworkSettings"].get("Ports") or {}).items() for b in bs or []]
        started = state.get("StartedAt", "")
        rows.append({
            "service": c.labels.get(SERVICE), "role": c.labels.get(ROLE), "name": c.name,
            "model": c.labels.get("io.modelport.model"),
            "version": _gateway_version(c) if c.labels.get(ROLE) == "gateway" and state["Status"] == "running"
            else c.labels.get("io.modelport.version"),
            "image": (c.image.tags or [c.image.short_id])[0], "status": state["Status"],
            "health": (state.get("Health") or {}).get("Status", "-"), "ports": ports,
            "started_at": started if state["Status"] == "running" else None,
        })
    return sorted(rows, key=lambda r: (r["service"] or "", r["role"] != "gateway"))
