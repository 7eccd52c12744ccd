"""Model services on one Docker Engine: run, scale, inspect, stop/start, release with no downtime
(at once or as a canary), promote, roll back.

A service is a gateway (HAProxy, deploy/proxy.py) that owns the published port and balances over the
model replicas on the service's private network. Replicas of one release share a slot (blue or
green); a release starts in the idle slot and deploy/rollout.py shifts traffic to it. Everything is
found by labels, never by name patterns.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport import defaults
from modelport.container import engine
from modelport.deploy import coldstart, proxy, rollout
from modelport.deploy.proxy import Runtime
from modelport.errors import ModelportError, NotFoundError
from modelport.ports import check_port
from modelport.progress import Progress

if TYPE_CHECKING:  # the store (SQLAlchemy) and the image build are imported when used: `run IMAGE` needs neither
    from modelport.store import ModelStore

MANAGED = "io.modelport.managed"
SERVICE = "io.modelport.service"
ROLE = "io.modelport.role"
PREVIOUS = "io.modelport.previous-version"
SETTINGS = "io.modelport.settings"
SLOT = "io.modelport.slot"
RELEASE = "io.modelport.release"  # when the release started: tells a candidate from the serving one


RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
# What the Docker Engine takes as a memory limit: bytes, or a number with b, k, m or g (kb, mb, gb too).
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)(?:[bkmg]|[kmg]b)?", re.IGNORECASE)


@dataclass
class RunSettings:
    """What a model container is started with; kept on it (as a label) so a replacement gets the same.
    Checked when made, so a bad value fails before any build or container start."""

    cpus: float | None = None
    memory: str | None = None
    restart: str = "unless-stopped"
    env: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.cpus is not None and not self.cpus > 0:
            raise ModelportError(f"Invalid CPU limit {self.cpus!r} (--cpus): expected a positive number, e.g. 1.5")
        size = None if self.memory is None else _MEMORY.fullmatch(self.memory)
        if self.memory is not None and not (size and float(size.group(1)) > 0):  # 0 would mean no limit
            raise ModelportError(f"Invalid memory limit {self.memory!r} (--memory): expected a size such as 512m or 2g")
        if self.restart not in RESTART_POLICIES:
            raise ModelportError(f"Invalid restart policy {self.restart!r} (--restart): "
                                 f"{', '.join(RESTART_POLICIES[:-1])} or {RESTART_POLICIES[-1]}")
        for key in self.env or {}:
            check_env_name(key)

    @classmethod
    def parse(cls, *, cpus: float | None = None, memory: str | None = None, restart: str = "unless-stopped",
              env: Iterable[str] = ()) -> RunSettings:
        """Settings from their command-line form: ``env`` as ``KEY=VALUE`` items."""
        return cls(cpus=cpus, memory=memory, restart=restart, env=parse_env(env))

    def docker_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"environment": self.env or {}}
        if self.cpus:
            kwargs["nano_cpus"] = int(self.cpus * 1e9)
        if self.memory:
            kwargs["mem_limit"] = self.memory
        if self.restart != "no":
            kwargs["restart_policy"] = {"Name": self.restart}
        return kwargs


def check_env_name(key: str) -> str:
    """An environment variable's name: not empty, no '=' (the container's environment could not hold it)."""
    if not key or "=" in key or "\0" in key:
        raise ModelportError(f"Invalid environment variable name {key!r} (--env KEY=VALUE)")
    return key


def parse_env(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` items → a mapping (a later KEY wins, as with ``docker run -e``)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ModelportError(f"Invalid environment variable {item!r} (--env): expected KEY=VALUE")
        pairs[key] = value
    return pairs


@dataclass
class Spec:
    """A release as the Docker Engine runs it: every replica of it gets the same."""

    image: str
    version: str
    settings: RunSettings
    previous: str | None
    release: str

    @classmethod
    def of(cls, replica: Any) -> Spec:
        labels = replica.labels
        return cls(replica.attrs["Config"]["Image"], labels["io.modelport.version"],
                   RunSettings(**json.loads(labels.get(SETTINGS, "{}"))), labels.get(PREVIOUS), labels[RELEASE])


@dataclass
class ServiceInfo:
    service: str
    url: str | None
    model: str
    version: str
    replicas: list[str]
    coldstart: coldstart.ColdStart | None = None  # `run`'s: from the command to the first prediction


# -- finding things --------------------------------------------------------------------------

def containers(service: str | None = None, *, role: str | None = None, all: bool = True) -> list[Any]:
    filters = [f"{MANAGED}=true"] + ([f"{SERVICE}={service}"] if service else []) + ([f"{ROLE}={role}"] if role else [])
    # ignore_removed: a container removed between the engine's list and its inspect is not an error
    return engine.client().containers.list(all=all, filters={"label": filters}, ignore_removed=True)


def service_containers(service: str) -> list[Any]:
    found = containers(service)
    if not found:
        known = sorted({c.labels[SERVICE] for c in containers()})
        raise NotFoundError(f"No modelport service named {service!r} (services: {', '.join(known) or 'none'})")
    return found


def _gateway(service: str) -> Any:
    found = containers(service, role="gateway")
    if not found:
        raise ModelportError(f"Service {service!r} has no gateway container")
    return found[0]


def _runtime(service: str) -> Runtime:
    gw = _gateway(service)
    if gw.status != "running":
        raise ModelportError(f"Service {service!r} is stopped: modelport start {service}")
    return Runtime.of_container(gw)


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
    holders = [c for c in engine.client().containers.list(ignore_removed=True)
               if any(_overlaps(b.get("HostIp", ""), host_ip) and int(b["HostPort"]) == port for _, b in engine.published(c))]
    others = [c for c in holders if not own(c)]
    if others:
        check_port(host_ip, port, option=option, holder=describe(others[0]))
    if not holders:  # one of ours holds it through Docker's proxy: no bind test then
        check_port(host_ip, port, option=option, only_conflicts=True)


# -- images ----------------------------------------------------------------------------------

def resolve_image(target: str, *, base_image: str, store: ModelStore | None, progress: Progress,
                  verify_key: Path | None = None) -> tuple[str, str, str]:
    """``target`` is a model reference (its image built when missing or stale) or a local image
    (``store``: default the configured one, opened only for a target that can be a model reference).
    With a public key (``verify_key``, else MODELPORT_VERIFY_KEY) the image must be the one signed with
    it, its SBOM unchanged. → (the image to start, model name, model version): the tag, or once verified
    the image ID the signature names, so a tag moved after the check cannot start another image (a
    replica added later by ``scale`` or a restart starts the same one: it is the replicas' Config.Image)."""
    from modelport.container import provenance

    tag, model, version = _resolve_image(target, base_image=base_image, store=store, progress=progress)
    verified = provenance.verify_configured(tag, verify_key, progress)
    return (verified.statement["image_id"] if verified else tag), model, version


def _resolve_image(target: str, *, base_image: str, store: ModelStore | None, progress: Progress) -> tuple[str, str, str]:
    mv = None
    if "/" not in target:  # a repository path (modelport/NAME:VERSION) is an image tag, never a model reference
        from modelport.api import get_store
        from modelport.store import parse_ref

        store = get_store(store)
        with contextlib.suppress(NotFoundError, ModelportError):
            mv = store.resolve(parse_ref(target))
    if mv is not None:
        from modelport.container.build import build_image, default_tag, stale_image

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
        time.sleep(0.02)
    raise ModelportError(f"{container.name} is not answering on {host}:{port}: {explain(container)}")


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
    import docker.errors

    try:
        logs = container.logs(tail=lines).decode(errors="replace").strip()
    except docker.errors.APIError:  # gone, or being removed: the engine keeps no logs to show
        logs = ""
    return "; ".join(parts) + (f"\nLast log lines:\n{logs}" if logs else "")


# -- replicas on the Docker Engine -----------------------------------------------------------

def failed(container: Any) -> bool:
    """Exited, or restarting or restarted: not a replica the proxy should wait for."""
    state = container.attrs["State"]
    return state["Status"] in ("exited", "dead") or bool(state.get("Restarting")) or container.attrs.get("RestartCount", 0) > 0


class ContainerReplicas:
    """rollout.Replicas whose replicas are containers: a subclass says which containers a slot holds
    (``of``), how it starts more, and the network the proxy reaches them on."""

    network: str

    @functools.cached_property
    def _started(self) -> dict[str, float]:
        """Replica → when its container started, seconds since the epoch (reported_ready)."""
        return {}

    def of(self, slot: str) -> list[Any]:
        """The slot's containers, oldest first."""
        raise NotImplementedError

    def members(self, slot: str, *, running: bool = True) -> list[str]:
        return [c.id for c in self.of(slot) if c.status == "running" or not running]

    def address(self, replica: str) -> str | None:
        return engine.address(engine.client().containers.get(replica), self.network)

    def failure(self, replicas: list[str]) -> str | None:
        for replica in replicas:
            c = engine.client().containers.get(replica)
            if failed(c):
                return f"{c.name} did not start: {self.why(c)}"
        return None

    def explain(self, replicas: list[str]) -> str:
        return "\n".join(f"{c.name}: {self.why(c)}" for c in map(engine.client().containers.get, replicas))

    def reported_ready(self, replicas: list[str]) -> set[str]:
        """Those whose server logged its ``Startup:`` line (serving.startup: once it is ready) since the
        container's current start: a restarted container's log still holds its previous start's."""
        import docker.errors

        api, found = engine.client().api, set()
        for replica in replicas:
            with contextlib.suppress(docker.errors.APIError):  # gone: failure() says why
                if replica not in self._started:  # a start's time stays until a restart, which failure() reports
                    self._started[replica] = coldstart.engine_time(api.inspect_container(replica)["State"]["StartedAt"])
                if self._started[replica] > 0 and coldstart.reported_ready(api.logs(replica, since=self._started[replica])):
                    found.add(replica)
        return found

    def why(self, container: Any) -> str:
        """Why a replica is not serving, for a person."""
        return explain(container)

    def remove(self, replicas: list[str]) -> None:
        remove_containers(replicas)


class EngineReplicas(ContainerReplicas):
    """Replicas on one Docker Engine: a replica is a container found by its labels, and its slot a
    network alias on the service's network (the proxy resolves it)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.network = network_name(service)

    def of(self, slot: str) -> list[Any]:
        found = [c for c in containers(self.service, role="model") if c.labels.get(SLOT) == slot]
        return sorted(found, key=lambda c: c.attrs["Created"])

    def start(self, slot: str, spec: Spec, count: int) -> list[str]:
        client = engine.client()
        labels = {MANAGED: "true", SERVICE: self.service, ROLE: "model", SLOT: slot, RELEASE: spec.release,
                  SETTINGS: json.dumps(spec.settings.__dict__)}
        if spec.previous:
            labels[PREVIOUS] = spec.previous
        endpoint = {self.network: client.api.create_endpoint_config(aliases=[proxy.alias(slot)])}
        return [client.containers.run(spec.image, name=f"{self.service}-v{spec.version}-{uuid.uuid4().hex[:6]}",
                                      detach=True, labels=labels, network=self.network, networking_config=endpoint,
                                      **spec.settings.docker_kwargs()).id
                for _ in range(count)]


def remove_containers(ids: list[str]) -> None:
    """Stop (each one's graceful stop lets its requests finish) and remove, all at once."""
    import docker.errors

    def remove(replica: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            c = engine.client().containers.get(replica)
            c.stop(timeout=15)
            c.remove(force=True)

    threads = [threading.Thread(target=remove, args=(r,)) for r in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _slots(service: str) -> tuple[str, str | None]:
    """The slot of the serving release, and the candidate's while a canary runs (the newer release)."""
    models = containers(service, role="model")
    if any(SLOT not in c.labels for c in models):
        raise ModelportError(f"Service {service!r} was started by an earlier modelport (before its HAProxy gateway): "
                             f"`modelport rm --force {service}`, then `modelport run` it again")
    releases = {c.labels[SLOT]: int(c.labels[RELEASE]) for c in models}
    if not releases:
        service_containers(service)  # no such service: says so
        raise ModelportError(f"Service {service!r} has no model container")
    if len(releases) == 1:
        return next(iter(releases)), None
    serving = min(releases, key=releases.__getitem__)
    return serving, proxy.other(serving)


def _serving(service: str, slot: str) -> Any:
    replicas = EngineReplicas(service).of(slot)
    running = [c for c in replicas if c.status == "running"]
    if not running:
        raise ModelportError(f"Service {service!r} has no running model container: modelport start {service}")
    return running[0]


def check_replicas(count: int, option: str = "--replicas") -> None:
    if not 1 <= count <= proxy.MAX_REPLICAS:
        raise ModelportError(f"Invalid {option} {count}: from 1 to {proxy.MAX_REPLICAS}")


def _info(service: str, slot: str) -> ServiceInfo:
    replicas = EngineReplicas(service).of(slot)
    labels = replicas[0].labels
    return ServiceInfo(service, published_url(service), labels["io.modelport.model"], labels["io.modelport.version"],
                       [c.name for c in replicas])


# -- lifecycle -------------------------------------------------------------------------------

def run(target: str, *, port: int = defaults.PORT, name: str | None = None, host_ip: str = "127.0.0.1", replicas: int = 1,
        settings: RunSettings | None = None, base_image: str = defaults.BASE_IMAGE, proxy_image: str = defaults.PROXY_IMAGE,
        wait: float = defaults.HEALTHY_WAIT, store: ModelStore | None = None, verify_key: Path | None = None,
        progress: Progress = lambda _: None, origin: float | None = None) -> ServiceInfo:
    """Start ``target`` as a service and return once it answered a first prediction through its gateway;
    its ``coldstart`` says when each stage happened since ``origin`` (default: this call)."""
    import docker.errors

    origin = origin or time.time()
    settings = settings or RunSettings()
    check_replicas(replicas)
    check_publishable(host_ip, port)
    image, model, version = resolve_image(target, base_image=base_image, store=store, progress=progress,
                                          verify_key=verify_key)
    service = name or model
    if service in map(proxy.alias, proxy.SLOTS):
        raise ModelportError(f"{service!r} is a name modelport uses inside a service: choose another --name")
    if containers(service):
        raise ModelportError(f"A service named {service!r} exists already (modelport ps --all): "
                             f"use `modelport deploy {target} --replace {service}` or `modelport rm {service}`")
    client = engine.client()
    client.networks.create(network_name(service), driver="bridge", labels={MANAGED: "true", SERVICE: service})
    try:
        progress(f"Starting {replicas} replica(s) of {model}:{version} from {image}, and the gateway on {host_ip}:{port}")
        backend = EngineReplicas(service)
        # The replicas and the gateway at once: a replica's start is the long one, the gateway's (its image
        # found or built first) need not add to it. Leaving the block waits for the replicas' start: a failure
        # here removes them with the service.
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(backend.start, proxy.SLOTS[0], Spec(image, version, settings, None, str(time.time_ns())),
                                   replicas)
            gateway_image = proxy.gateway_image(proxy_image, progress)
            try:
                # dns: the proxy only looks up replicas; names Docker does not know stay on this host.
                gw = client.containers.run(
                    gateway_image, name=service, detach=True, labels={MANAGED: "true", SERVICE: service, ROLE: "gateway"},
                    network=network_name(service), ports={f"{proxy.PORT}/tcp": (host_ip, port)}, dns=["127.0.0.1"],
                    restart_policy={"Name": settings.restart} if settings.restart != "no" else None)
            except docker.errors.APIError as e:
                starting.exception()  # the replicas are started (then removed with the service) before this fails
                if "allocated" in str(e) or "in use" in str(e):  # taken since the check at the start
                    check_publishable(host_ip, port)
                    check_port(host_ip, port, holder="another process")
                raise ModelportError(f"Could not start the gateway: {e.explanation or e}") from None
            started = starting.result()
        rollout.wait_ready(backend, Runtime.of_container(gw), proxy.SLOTS[0], started, wait)
        proxied = time.time()
        local = "127.0.0.1" if host_ip in ("0.0.0.0", "") else host_ip
        wait_answering(gw, local, port, wait)
        answered = coldstart.first_prediction(f"http://{local}:{port}", model)
        # The service is as ready as its last replica: that one's start is the service's.
        measured = [coldstart.measure(origin, engine.client().containers.get(r), proxied, answered) for r in started]
    except BaseException:
        _remove_service(service)
        raise
    info = _info(service, proxy.SLOTS[0])
    info.coldstart = max(measured, key=lambda c: c.stages.get("ready", 0.0))
    return info


def deploy(target: str, *, replace: str, canary: int | None = None, base_image: str = defaults.BASE_IMAGE,
           wait: float = defaults.HEALTHY_WAIT, store: ModelStore | None = None, verify_key: Path | None = None,
           progress: Progress = lambda _: None) -> ServiceInfo:
    """Release ``target`` in ``replace`` with no failed request: all traffic once it is healthy, or
    ``canary`` percent of it until ``promote`` (or ``rollback``)."""
    if canary is not None and not 1 <= canary <= 99:
        raise ModelportError(f"Invalid --canary {canary}: a percent of requests from 1 to 99")
    serving, candidate = _slots(replace)
    if candidate is not None:
        raise ModelportError(f"Service {replace!r} runs a canary: `modelport promote {replace}` or "
                             f"`modelport rollback {replace}` first")
    runtime = _runtime(replace)
    current = _serving(replace, serving)
    image, model, version = resolve_image(target, base_image=base_image, store=store, progress=progress,
                                          verify_key=verify_key)
    if model != current.labels["io.modelport.model"]:
        raise ModelportError(f"Service {replace!r} serves {current.labels['io.modelport.model']!r}, not {model!r}: "
                             f"deploy a version of it, or `modelport run {target}` as a new service")
    count = len(EngineReplicas(replace).members(serving))
    old = current.labels["io.modelport.version"]
    spec = Spec(image, version, Spec.of(current).settings, old, str(time.time_ns()))
    progress(f"Starting {count} replica(s) of {model}:{version} beside version {old}")
    slot = proxy.other(serving)
    try:
        rollout.release(EngineReplicas(replace), runtime, slot=slot, spec=spec, count=count, canary=canary, wait=wait,
                        progress=progress)
    except ModelportError as e:
        raise ModelportError(f"{e}\nThe current version ({old}) keeps serving.") from None
    return _info(replace, slot)


def promote(service: str, *, progress: Progress = lambda _: None) -> ServiceInfo:
    """Send all traffic to the canary, then retire the version it replaces."""
    _, candidate = _slots(service)
    if candidate is None:
        raise ModelportError(f"Service {service!r} runs no canary (modelport deploy REF --replace {service} --canary 10)")
    rollout.switch(EngineReplicas(service), _runtime(service), candidate, progress)
    return _info(service, candidate)


def rollback(service: str, *, to: int | None = None, base_image: str = defaults.BASE_IMAGE, wait: float = defaults.HEALTHY_WAIT,
             store: ModelStore | None = None, progress: Progress = lambda _: None) -> ServiceInfo:
    """Back to an earlier version with no failed request; during a canary, all traffic back to the
    serving version (and the canary retired)."""
    serving, candidate = _slots(service)
    if candidate is not None:
        if to is not None:
            raise ModelportError(f"Service {service!r} runs a canary: `modelport rollback {service}` (without --to) ends it")
        rollout.switch(EngineReplicas(service), _runtime(service), serving, progress)
        return _info(service, serving)
    current = _serving(service, serving)
    model, version = current.labels["io.modelport.model"], int(current.labels["io.modelport.version"])
    if to is None:
        previous = current.labels.get(PREVIOUS)
        from modelport.api import get_store

        older = [v.version for v in get_store(store).list_versions(model) if v.version < version]
        if previous is None and not older:
            raise ModelportError(f"{model}:{version} has no earlier version to roll back to")
        to = int(previous) if previous is not None else max(older)
    if to == version:
        raise ModelportError(f"Service {service!r} already serves {model}:{version}")
    return deploy(f"{model}:{to}", replace=service, base_image=base_image, wait=wait, store=store, progress=progress)


def scale(service: str, count: int, *, wait: float = defaults.HEALTHY_WAIT, progress: Progress = lambda _: None) -> ServiceInfo:
    """``count`` running replicas of the serving release (during a canary too; the canary keeps its own).
    Replicas that exited and stay down (stopped or killed by hand) are replaced."""
    check_replicas(count, option="replica count")
    serving, _ = _slots(service)
    current = _serving(service, serving)
    backend = EngineReplicas(service)
    if down := [c.id for c in backend.of(serving) if c.status in ("exited", "dead")]:
        progress(f"Removing {len(down)} replica(s) that are down")
        backend.remove(down)
    rollout.scale(backend, _runtime(service), slot=serving, spec=Spec.of(current), count=count, wait=wait,
                  progress=progress)
    return _info(service, serving)


def published_url(service: str) -> str | None:
    gw = _gateway(service)
    gw.reload()
    bindings = [b for port, b in engine.published(gw) if port == f"{proxy.PORT}/tcp"]
    return f"http://{bindings[0]['HostIp'] or '0.0.0.0'}:{bindings[0]['HostPort']}" if bindings else None


def stop(service: str, timeout: int = 15) -> list[str]:
    found = sorted(service_containers(service), key=lambda c: c.labels[ROLE] != "gateway")  # gateway first
    for c in found:
        c.stop(timeout=timeout)
    return [c.name for c in found]


def start(service: str, wait: float = defaults.HEALTHY_WAIT) -> list[str]:
    found = sorted(service_containers(service), key=lambda c: c.labels[ROLE] == "gateway")  # models first
    for c in found:
        c.start()
    backend, runtime = EngineReplicas(service), _runtime(service)
    for slot in proxy.SLOTS:
        if replicas := backend.members(slot):
            rollout.wait_ready(backend, runtime, slot, replicas, wait)
    return [c.name for c in found]


def restart(service: str, wait: float = defaults.HEALTHY_WAIT) -> list[str]:
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
    """The model replicas' logs; with several, each line starts with the replica's name."""
    replicas = sorted((c for c in service_containers(service) if c.labels[ROLE] == "model"), key=lambda c: c.attrs["Created"])
    if not replicas:
        raise ModelportError(f"Service {service!r} has no model container")
    tail_arg = tail if tail is not None else "all"
    if len(replicas) == 1:
        c = replicas[0]
        yield from c.logs(stream=True, follow=True, tail=tail_arg) if follow else [c.logs(tail=tail_arg)]
        return
    if not follow:
        for c in replicas:
            yield b"".join(f"{c.name} | ".encode() + line for line in c.logs(tail=tail_arg).splitlines(keepends=True))
        return
    lines: queue.Queue[bytes] = queue.Queue()

    def pump(c: Any) -> None:
        for chunk in c.logs(stream=True, follow=True, tail=tail_arg):
            lines.put(b"".join(f"{c.name} | ".encode() + line for line in chunk.splitlines(keepends=True)))

    for c in replicas:
        threading.Thread(target=pump, args=(c,), daemon=True).start()
    while True:
        yield lines.get()


def exec_in(service: str, command: list[str]) -> tuple[int, bytes]:
    serving, _ = _slots(service)
    result = _serving(service, serving).exec_run(command)
    return result.exit_code, result.output


def _proxy_view(gateway: Any) -> tuple[list[proxy.Server], dict[str, int]] | None:
    """What a running gateway's proxy sees: its servers and the traffic split (None if it does not answer)."""
    if gateway.status != "running":
        return None
    runtime = Runtime.of_container(gateway)
    try:
        return runtime.servers(), runtime.shares()
    except ModelportError:
        return None


def status(all: bool = False) -> list[dict[str, Any]]:
    """One row per container, for ``ps``: every replica with what the proxy sees of it (its check,
    the percent of the service's requests it gets)."""
    found = containers(all=all)
    views = {c.labels.get(SERVICE): _proxy_view(c) for c in found if c.labels.get(ROLE) == "gateway"}
    rows = []
    for c in found:
        state, service, role = c.attrs["State"], c.labels.get(SERVICE), c.labels.get(ROLE)
        ports = [f"{b['HostIp']}:{b['HostPort']}->{p}" for p, b in engine.published(c)]
        row = {
            "service": service, "role": role, "name": c.name, "model": c.labels.get("io.modelport.model"),
            "version": c.labels.get("io.modelport.version"), "slot": c.labels.get(SLOT),
            "image": (c.image.tags or [c.image.short_id])[0], "status": state["Status"],
            "health": (state.get("Health") or {}).get("Status", "-"), "proxy": None, "weight": None, "ports": ports,
            "started_at": state.get("StartedAt", "") if state["Status"] == "running" else None,
        }
        view = views.get(service)
        if view and role == "gateway":
            models = [m for m in found if m.labels.get(SERVICE) == service and m.labels.get(ROLE) == "model"]
            row["model"] = next((m.labels.get("io.modelport.model") for m in models), None)
            row["version"] = ",".join(sorted({m.labels["io.modelport.version"] for m in models
                                              if view[1].get(m.labels.get(SLOT, ""), 0) > 0}, key=int)) or None
        elif view and role == "model":
            servers, shares = view
            address = engine.address(c, network_name(service))
            row["proxy"], row["weight"] = proxy.replica_view([s for s in servers if s.slot == row["slot"]],
                                                             shares.get(row["slot"], 0), address)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["service"] or "", r["role"] != "gateway", r["slot"] or "", r["name"]))
