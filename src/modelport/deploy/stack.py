"""A stack: model services, a gateway and PostgreSQL, run by Docker Compose from one directory.

``init`` writes ``stack.json`` (what the stack serves), ``compose.yaml`` (rendered from it),
``.env`` (the project name), ``secrets/db-password`` (generated) and the build contexts.

The data plane is HAProxy (the ``gateway`` service, deploy/proxy.py): it checks API keys against
their hashes, routes each request to its model's replicas and balances over the healthy ones. Each
model runs as one Compose service per release slot (``lin-blue``; ``lin-green`` beside it while a
release is under way), with ``replicas`` containers; the model servers write the prediction log
themselves. The ``control`` service (modelport with the PostgreSQL driver) is on no request path: it
records the answers the proxy gave itself (no replica could take the request) and runs the
``stack keys`` and ``stack predictions`` commands, where the database is reachable.

Releases go through deploy/rollout.py, as for ``modelport run``: the new release starts in the idle
slot's service, the proxy checks it healthy, traffic moves (all of it, or a canary's share), the old
slot drains and its service goes. The compose file is the truth at every step, so ``up`` after a
deploy changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jinja2

import modelport
from modelport import config, defaults
from modelport.api import get_store
from modelport.container import engine, provenance, signing
from modelport.container.build import default_tag, stale_image, write_build_context
from modelport.container.context import Progress, build_time_labels, lock, modelport_wheel
from modelport.container.sbom import SBOM_FILE
from modelport.deploy import proxy, rollout, swarm
from modelport.deploy.compose import PROJECT, SERVICE, Project, explain, health, wait_healthy
from modelport.deploy.containers import ContainerReplicas, RunSettings, check_publishable, check_replicas
from modelport.deploy.proxy import TRAFFIC, VERSIONS, Layout, Runtime, Transport
from modelport.deploy.swarm import SwarmProject, SwarmSettings
from modelport.errors import ModelportError, NotFoundError
from modelport.extras import require
from modelport.store import ModelStore, ModelVersion, parse_ref

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("modelport.deploy", "templates"),
                               keep_trailing_newline=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
STATE_FILE = "stack.json"
STACK = "io.modelport.stack"
ROLE = "io.modelport.role"
SLOT = "io.modelport.slot"
RESERVED = ("db", "gateway", "control", "keysync", "autoscaler")
_VERSION = re.compile(r"[0-9]+")  # MODEL=3: a version number (ASCII digits: str.isdigit takes '²')
MODEL_PORT = defaults.PORT
SPOOL_DIR = "/var/lib/modelport/spool"
DB_URL = "postgresql+psycopg://modelport@db:5432/predictions"
PASSWORD_SECRET = "/run/secrets/db_password"
PROXY_LOG_PORT = 5140  # the control service's syslog port, where the proxy sends its own 5xx answers
ADMIN_DIR = "/run/modelport-admin"  # a Swarm gateway's second Runtime API socket, in a volume its keysync task mounts
ADMIN_SOCKET = f"{ADMIN_DIR}/haproxy.sock"
KEYSYNC_READY = "/tmp/modelport-keysync-ready"
CONTROL_EXTRAS = ("postgres", "docker")  # docker: a Swarm stack's autoscaler runs from this image
# The database password, a Compose secret (a bind mount at /run/secrets/db_password, with Compose v2 as
# with docker-compose 1.29, no Swarm): never an environment variable, which `docker inspect` and
# /proc/PID/environ show. The mount keeps the host file's owner and mode, and the containers' users
# (postgres, modelport's 10001) are not its owner: the file is 0644 and the directory holding it
# 0700, so the containers read it and no other user of the host does (chown would need root).
PASSWORD_FILE = Path("secrets") / "db-password"


@dataclass
class Release:
    """One version of a model as a slot's service runs it."""

    version: int
    digest: str
    image: str
    context: str  # its build context: build/<context>

    @classmethod
    def of(cls, mv: ModelVersion) -> Release:
        return cls(mv.version, mv.digest, default_tag(mv), f"{mv.name}-{mv.version}")


@dataclass
class ModelService:
    name: str
    slots: dict[str, Release]  # the slots holding a release: one, or two while a canary runs
    serving: str  # the slot with the traffic (during a canary: the most of it)
    replicas: int = 1
    cpus: float = 1.0
    memory: str = "1g"
    canary: int | None = None  # the percent of requests the other slot gets
    previous: Release | None = None  # what rollback returns to
    autoscale: dict[str, Any] | None = None  # a Swarm stack's policy, as written (deploy/autoscale.py checks it)

    @classmethod
    def of(cls, mv: ModelVersion, **settings: Any) -> ModelService:
        return cls(mv.name, {proxy.SLOTS[0]: Release.of(mv)}, proxy.SLOTS[0], **settings)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelService:
        data = dict(data)
        if "slots" not in data:  # a stack.json written before the slots (one release, no replicas)
            release = {k: data.pop(k) for k in ("version", "digest", "image", "context")}
            data = {**data, "slots": {proxy.SLOTS[0]: release}, "serving": proxy.SLOTS[0]}
        previous = data.pop("previous", None)
        return cls(**{**data, "slots": {s: Release(**r) for s, r in data["slots"].items()},
                      "previous": Release(**previous) if previous else None})

    @property
    def release(self) -> Release:
        return self.slots[self.serving]

    @property
    def version(self) -> int:
        return self.release.version

    @property
    def image(self) -> str:
        return self.release.image

    @property
    def context(self) -> str:
        return self.release.context

    @property
    def candidate(self) -> str | None:
        """The slot of a canary, if one runs."""
        other = proxy.other(self.serving)
        return other if other in self.slots else None

    def service(self, slot: str) -> str:
        """The slot's Compose service: also the name the proxy resolves its replicas by."""
        return f"{self.name}-{slot}"

    @property
    def services(self) -> list[str]:
        return [self.service(s) for s in proxy.SLOTS if s in self.slots]


def _stacks_below(directory: Path) -> str:
    """The stacks in ``directory``'s subdirectories, as a hint: a stack command is often run one level up."""
    try:
        found = sorted(p.parent.name for p in directory.glob(f"*/{STATE_FILE}") if p.is_file())
    except OSError:
        return ""
    return f" (stacks here: {', '.join(f'-C {name}' for name in found)})" if found else ""


@dataclass
class StackState:
    name: str
    db_image: str
    base_image: str
    gateway_image: str  # HAProxy with the stack's configuration
    gateway_host: str
    gateway_port: int
    control_image: str = ""  # modelport with the PostgreSQL driver and the Docker SDK (the autoscaler's)
    proxy_image: str = defaults.PROXY_IMAGE
    models: list[ModelService] = field(default_factory=list)
    modelport_version: str = modelport.__version__
    swarm: SwarmSettings | None = None  # runs on Docker Swarm (`stack up --swarm`), else on Compose
    # On a Swarm: the traffic and versions maps every gateway holds (map file → entries), as the stack
    # file hands them to the keysync tasks; `up` sets them from the models, a release step by step.
    gateway_maps: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        where = data.get("swarm")
        return cls(**{**data, "models": [ModelService.from_json(m) for m in data["models"]],
                      "swarm": SwarmSettings(**where) if where else None})

    def routes(self) -> dict[str, dict[str, str]]:
        """The traffic and versions maps the models' state means (what sync_proxy hands a gateway)."""
        traffic, versions = {}, {}
        for m in self.models:
            traffic[f"{m.name}-green"] = str(100 - (m.canary or 0) if m.serving == "green" else m.canary or 0)
            versions |= {f"{m.name}-{slot}": str(release.version) for slot, release in m.slots.items()}
        return {TRAFFIC: traffic, VERSIONS: versions}


class Stack:
    def __init__(self, directory: Path, state: StackState) -> None:
        self.directory = directory
        self.state = state
        self.project = Project(directory, state.name)

    @property
    def swarm(self) -> SwarmProject | None:
        """The stack on its Swarm, when it runs on one."""
        return SwarmProject(self.directory, self.state.name, self.state.swarm) if self.state.swarm else None

    @classmethod
    def load(cls, directory: Path | str = ".") -> Stack:
        directory = Path(directory).resolve()
        path = directory / STATE_FILE
        if not path.is_file():
            raise ModelportError(f"{directory} is not a modelport stack (no {STATE_FILE}): run the command in "
                                 f"the stack's directory or name it with -C DIR (--dir DIR){_stacks_below(directory)}; "
                                 "create one with `modelport stack init DIR --model REF`")
        stack = cls(directory, StackState.from_json(json.loads(path.read_text())))
        if not stack.state.control_image:
            raise ModelportError(f"The stack {stack.state.name!r} was written by an earlier modelport (its gateway was "
                                 "a Python process): `modelport stack down`, then `modelport stack init` it anew")
        return stack

    def model(self, name: str) -> ModelService:
        for m in self.state.models:
            if m.name == name:
                return m
        raise NotFoundError(f"The stack {self.state.name!r} serves no model {name!r} "
                            f"(it serves: {', '.join(m.name for m in self.state.models)})")

    @property
    def services(self) -> list[str]:
        """In the order they start; on a Swarm, the gateways' keysync, and the autoscaler last when a model has a policy."""
        autoscaler = ["autoscaler"] if self.state.swarm and any(m.autoscale for m in self.state.models) else []
        keysync = ["keysync"] if self.state.swarm else []
        return ["db", "control", *(s for m in self.state.models for s in m.services), "gateway", *keysync, *autoscaler]

    def save(self) -> None:
        _write_atomic(self.directory / STATE_FILE, json.dumps(dataclasses.asdict(self.state), indent=2) + "\n")
        if self.state.swarm:
            _write_atomic(self.directory / swarm.STACK_FILE, render_swarm(self.state))
        else:
            _write_atomic(self.directory / "compose.yaml", render_compose(self.state))

    def running(self, service: str) -> Any:
        """The service's running container (on a Swarm: on the manager's node, where modelport can exec)."""
        if self.swarm:
            c = self.swarm.container(service)
            if c is None and (tasks := self.swarm.tasks(service)):
                node = self.swarm.node_names().get(tasks[0].get("NodeID", ""), "another node")
                where = "--gateway-node MANAGER among its nodes" if service == "gateway" else "--node HOSTNAME"
                raise ModelportError(f"The stack's {service} runs on {node}, not on the manager modelport talks to: "
                                     f"put it there too (`stack up --swarm ... {where}`) or point --manager at its node")
        else:
            c = self.project.container(service)
        if c is None or c.status != "running":
            raise ModelportError(f"The stack {self.state.name!r} is not running ({service} is not): modelport stack up")
        return c

    def runtime(self, model: ModelService | None = None) -> Runtime:
        """The proxy's Runtime API, for one model's backends (or for what is not a model's); on a Swarm,
        the gateways' (SwarmRuntime)."""
        prefix = f"{model.name}-" if model else ""
        if self.swarm:
            return SwarmRuntime(self, Transport.of_container(self.running("gateway")), prefix)
        return Runtime.of_container(self.running("gateway"), prefix=prefix)


class SwarmRuntime(Runtime):
    """The gateways of a stack on a Swarm, one per gateway node: read through the one on the manager's
    node (the others check the same replicas by the same DNS names); their traffic and versions maps
    set in the stack file, whose keysync tasks hand them to every gateway (a new one included: see
    deploy/keysync.py), returning once every keysync task has."""

    def __init__(self, stack: Stack, transport: Transport, prefix: str = "") -> None:
        super().__init__(transport, prefix)
        self.stack = stack

    def set_entry(self, name: str, key: str, value: str) -> None:
        if name not in (TRAFFIC, VERSIONS):
            return super().set_entry(name, key, value)
        maps = self.stack.state.gateway_maps
        if maps.get(name, {}).get(key) == value:
            return None
        maps.setdefault(name, {})[key] = value
        self.stack.save()
        converge_gateways(self.stack)
        return None


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def serve_command(ref: str, db_url: str = DB_URL) -> list[str]:
    """A stack model server's arguments (the image's entry point is modelport.serving's, which takes `modelport serve`'s):
    it writes the prediction log itself, with the proxy's request and key ids."""
    return ["serve", ref, "--host", "0.0.0.0", "--port", str(MODEL_PORT),
            "--log-db", db_url, "--spool-dir", SPOOL_DIR, "--trust-proxy-headers"]


def _render(template: str, state: StackState, **more: Any) -> str:
    """A stack file: what both templates are given."""
    def labels(role: str, **extra: str) -> str:
        return json.dumps({STACK: state.name, ROLE: role, **{f"io.modelport.{k}": v for k, v in extra.items()}})

    def serve(m: ModelService, release: Release) -> list[str]:
        return serve_command(f"{m.name}:{release.version}")

    return TEMPLATES.get_template(template).render(
        stack=state, labels=labels, serve=serve, slots=proxy.SLOTS, password_file=f"./{PASSWORD_FILE}",
        db_url=DB_URL, spool_dir=SPOOL_DIR, proxy_log_port=PROXY_LOG_PORT, port=MODEL_PORT,
        modelport_version=modelport.__version__, **more)


def render_compose(state: StackState) -> str:
    return _render("compose.yaml.j2", state)


def render_swarm(state: StackState) -> str:
    """The Swarm stack file: the same services as compose.yaml, as ``docker stack deploy`` takes them,
    every image named as the nodes pull it from the registry; an autoscaler service when a model has a policy."""
    from modelport.deploy import autoscale

    assert state.swarm is not None
    command = autoscale.command(state.name, {m.name: m.autoscale for m in state.models},
                                every=state.swarm.autoscale_every or autoscale.EVERY)
    return _render("swarm-stack.yaml.j2", state, swarm=state.swarm, image=state.swarm.image,
                   autoscaler={"command": command} if command else None,
                   gateway_nodes=state.swarm.gateway_nodes or [state.swarm.node],
                   gateway_label=swarm.gateway_label(state.name), admin_dir=ADMIN_DIR,
                   keysync_command=keysync_command(state), keysync_ready=KEYSYNC_READY)


def gateway_files(state: StackState) -> dict[str, str]:
    """The stack's HAProxy image: its routes (one per model) never change, its maps change at run time
    (on a Swarm also through a Unix socket, for its node's keysync task)."""
    layout = Layout(admin_socket=ADMIN_SOCKET) if state.swarm else Layout()
    return proxy.stack_files(state.proxy_image, [m.name for m in state.models], default=state.models[0].name,
                             syslog=f"control:{PROXY_LOG_PORT}", layout=layout)


def keysync_command(state: StackState) -> list[str]:
    """A Swarm stack's keysync tasks' arguments: its gateway's socket, and the maps it must hold."""
    maps = state.gateway_maps or state.routes()
    return ["stack", "keys", "sync", "--admin", f"unix:{ADMIN_SOCKET}", "--every", "1", "--ready-file", KEYSYNC_READY,
            *(arg for name, entries in sorted(maps.items()) for key, value in sorted(entries.items())
              for arg in ("--map", f"{name}:{key}={value}"))]


def stack_name(text: str) -> str:
    """A Compose project name: lowercase letters, digits, '-' and '_'."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    if not name:
        raise ModelportError(f"Cannot make a stack name of {text!r}: pass --name")
    return name


# -- init -------------------------------------------------------------------------------------

def init(directory: Path, refs: list[str], *, name: str | None = None, db: str = "postgres",
         db_image: str = defaults.DB_IMAGE, gateway_host: str = "127.0.0.1", gateway_port: int = defaults.PORT,
         base_image: str = defaults.BASE_IMAGE, proxy_image: str = defaults.PROXY_IMAGE, cpus: float = 1.0,
         memory: str = "1g", replicas: int = 1, store: ModelStore | None = None,
         progress: Progress = lambda _: None) -> Stack:
    if db != "postgres":
        raise ModelportError(f"--db {db}: the prediction log's database is PostgreSQL (--db postgres)")
    require("docker", "A stack")
    for extra in CONTROL_EXTRAS:  # pinned in the images from what is installed here
        require(extra, "A stack (its control image has modelport with the postgres and docker extras)")
    if not refs:
        raise ModelportError("A stack needs at least one model: --model REF")
    RunSettings(cpus=cpus, memory=memory)  # checks them
    check_replicas(replicas)
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ModelportError(f"{directory} is not empty: give a new or empty directory for the stack")
    store = get_store(store)
    versions = [store.resolve(r) for r in refs]
    names = [mv.name for mv in versions]
    for n in names:
        if n in RESERVED:
            raise ModelportError(f"A model named {n!r} would clash with the stack's {n} service: register it under another name")
        if names.count(n) > 1:
            raise ModelportError(f"Model {n!r} is given twice: a stack serves one version of each model (stack deploy switches it)")
    state = StackState(name=stack_name(name or directory.name), db_image=db_image, base_image=base_image,
                       gateway_image="", gateway_host=gateway_host, gateway_port=gateway_port, proxy_image=proxy_image,
                       models=[ModelService.of(mv, cpus=cpus, memory=memory, replicas=replicas) for mv in versions])
    existed = directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        for mv, m in zip(versions, state.models, strict=True):
            progress(f"Writing the build context of {mv.ref}")
            write_model_context(directory, m.release, mv.ref, base_image, store, progress)
        state.control_image = write_control_context(directory / "build" / "control", base_image, progress)
        state.gateway_image = proxy.files_tag(gateway_files(state))
        (directory / PASSWORD_FILE.parent).mkdir()
        os.chmod(directory / PASSWORD_FILE.parent, 0o700)  # mkdir's mode is subject to the umask
        _write_atomic(directory / PASSWORD_FILE, secrets.token_hex(24), mode=0o644)
        (directory / ".env").write_text(f"COMPOSE_PROJECT_NAME={state.name}\n")
        (directory / ".gitignore").write_text(f"{PASSWORD_FILE.parent}/\nbuild/\n")
        stack = Stack(directory, state)
        stack.save()
    except BaseException:
        _clear(directory, keep=existed)
        raise
    return stack


def _clear(directory: Path, *, keep: bool) -> None:
    """Remove what a failed init wrote (and the directory, if init created it)."""
    if not keep:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for p in directory.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def write_model_context(directory: Path, release: Release, ref: str, base_image: str, store: ModelStore | None,
                        progress: Progress) -> None:
    write_build_context(ref, directory / "build" / release.context, base_image=base_image, store=store,
                        prediction_log=True, progress=progress)


def write_control_context(dest: Path, base_image: str, progress: Progress) -> str:
    """The control image's build context: modelport with the PostgreSQL driver and the Docker SDK (and
    pyarrow for Parquet exports when it is installed here); → the image tag, a digest of the context."""
    from importlib.metadata import PackageNotFoundError, version

    from modelport.container.training import pinned_requirements
    from modelport.container.wheelhouse import build_wheelhouse

    wheels = dest / "wheels"
    wheels.mkdir(parents=True)
    pins = pinned_requirements(modelport_wheel(wheels, progress), CONTROL_EXTRAS)
    with contextlib.suppress(PackageNotFoundError):
        pins.append(f"pyarrow=={version('pyarrow')}")
    progress(f"Downloading wheels for the control service: {', '.join(pins)}")
    build_wheelhouse(pins, wheels, progress=progress)
    locked = lock(wheels)
    dockerfile = TEMPLATES.get_template("control.Dockerfile.j2").render(base_image=base_image, spool_dir=SPOOL_DIR,
                                                                        modelport_version=modelport.__version__)
    (dest / "Dockerfile").write_text(dockerfile)
    (dest / ".dockerignore").write_text(TEMPLATES.get_template("dockerignore.j2").render())
    digest = hashlib.sha256("\n".join([dockerfile, *locked]).encode())
    digest.update(next(wheels.glob("modelport-*.whl")).read_bytes())
    return f"modelport/control:{modelport.__version__}-{digest.hexdigest()[:12]}"


# -- images -----------------------------------------------------------------------------------

def ensure_model_image(stack: Stack, m: ModelService, release: Release, store: ModelStore | None,
                       progress: Progress) -> None:
    """Build the release's image unless an image of that tag holds this very model and writes the prediction
    log (see stale_image), with its provenance record as `modelport build` writes it (signed with
    MODELPORT_SIGNING_KEY, if set); then check it (verify_model_image). One built before records were kept
    is built again when there is a key to verify it with."""
    verify_key = config.verify_key()
    why = stale_image(release.image, release.digest, prediction_log=True)
    if why is None and verify_key and not provenance.has_record(release.image):
        why = "it has no provenance record here to verify"
    if why is not None:
        signing_key = config.signing_key()
        if verify_key and signing_key is None:  # it would be built, then refused as unsigned
            raise ModelportError(f"{release.image} must be built ({why}), and MODELPORT_VERIFY_KEY refuses an unsigned "
                                 "image: set MODELPORT_SIGNING_KEY to the private key to sign it with")
        key = signing.load_private(signing_key) if signing_key else None  # a bad key: before the build
        context = stack.directory / "build" / release.context
        for fresh in (False, True):  # the context `stack init` wrote; written anew if an older modelport's was stale
            if fresh or not (context / "Dockerfile").is_file():
                shutil.rmtree(context, ignore_errors=True)
                write_model_context(stack.directory, release, f"{m.name}:{release.version}", stack.state.base_image,
                                    store, progress)
            progress(f"Building {release.image}: {why}")
            image_id = engine.build(context, release.image, labels={**build_time_labels(), STACK: stack.state.name},
                                    progress=progress)
            if (why := stale_image(release.image, release.digest, prediction_log=True)) is None:
                break
        provenance.record_build(release.image, image_id, engine.image_labels(image_id) or {}, context / SBOM_FILE, key)
    verify_model_image(release, progress)


def verify_model_image(release: Release, progress: Progress) -> None:
    """With MODELPORT_VERIFY_KEY: the release's image must be signed with it, its SBOM unchanged, before a
    replica of it starts (or, on a Swarm, it is pushed). Compose and Swarm then start it by its tag."""
    provenance.verify_configured(release.image, None, progress)


def ensure_images(stack: Stack, store: ModelStore | None = None, progress: Progress = lambda _: None) -> None:
    for m in stack.state.models:
        for release in m.slots.values():
            ensure_model_image(stack, m, release, store, progress)
    if not engine.image_exists(stack.state.control_image):
        progress(f"Building {stack.state.control_image}")
        engine.build(stack.directory / "build" / "control", stack.state.control_image,
                     labels={**build_time_labels(), STACK: stack.state.name}, progress=progress)
    tag = proxy.build_gateway(gateway_files(stack.state), progress)
    if tag != stack.state.gateway_image:  # another modelport renders the configuration differently
        stack.state.gateway_image = tag
        stack.save()
    if stack.state.swarm:
        publish(stack, [r for m in stack.state.models for r in m.slots.values()], progress)


def publish(stack: Stack, releases: list[Release], progress: Progress, *, all: bool = True) -> None:
    """Push the releases' images (and unless ``all`` is false the control, gateway and database images) to
    the stack's registry, where the Swarm's nodes pull them by the names the stack file gives them. The
    database's image is pulled first when this engine lacks it."""
    import docker.errors

    settings = stack.state.swarm
    assert settings is not None
    images = {r.image: settings.image(r.image, r.digest) for r in releases}
    if all:
        images |= {i: settings.image(i) for i in (stack.state.control_image, stack.state.gateway_image, stack.state.db_image)}
    for image, pushed in images.items():
        if image == stack.state.db_image and not engine.image_exists(image):
            progress(f"Pulling {image}")
            try:
                engine.client().images.pull(image)
            except docker.errors.APIError as e:
                raise ModelportError(f"Cannot pull the database image {image!r} ({e.explanation or e}): pull it "
                                     "yourself, or pass --db-image to `stack init`") from None
        engine.push(image, pushed, progress)


# -- replicas under Compose ---------------------------------------------------------------------

class ComposeReplicas(ContainerReplicas):
    """rollout.Replicas for one model of a stack: a slot is the model's Compose service of that slot
    (its name is what the proxy resolves), a replica one of its containers."""

    def __init__(self, stack: Stack, model: ModelService) -> None:
        self.stack = stack
        self.model = model
        self.network = f"{stack.state.name}_backend"

    def of(self, slot: str) -> list[Any]:
        return sorted(self.stack.project.containers(self.model.service(slot)), key=lambda c: c.attrs["Created"])

    def start(self, slot: str, spec: Release, count: int) -> list[str]:
        """``count`` more replicas of ``spec`` in ``slot``: the compose file says so first."""
        before = {c.id for c in self.of(slot)}
        self.model.slots[slot] = spec
        self.stack.save()
        service = self.model.service(slot)
        self.stack.project.run("up", "--detach", "--no-deps", "--no-build", "--no-recreate", "--scale",
                               f"{service}={len(before) + count}", service)
        return [c.id for c in self.of(slot) if c.id not in before]

    def why(self, container: Any) -> str:
        return explain(container)  # Compose's wording: names the service's memory limit

    def down(self, slot: str) -> list[str]:
        """Replicas stopped or killed by hand: Compose's restart policy leaves them down."""
        return [r for r in self.members(slot, running=False) if r not in self.members(slot)]


class SwarmReplicas:
    """rollout.Replicas for one model of a stack on a Swarm: a slot is the Swarm service
    ``{stack}_{model}-{slot}`` (the proxy resolves its short name, ``{model}-{slot}``, to its tasks), a
    replica one of its tasks. The stack file says how many each slot runs, and is deployed at every step."""

    def __init__(self, stack: Stack, model: ModelService) -> None:
        assert stack.swarm is not None
        self.stack = stack
        self.model = model
        self.swarm = stack.swarm
        self.network = f"{stack.state.name}_backend"
        self._addresses: dict[str, str] = {}  # a task keeps its address

    def start(self, slot: str, spec: Release, count: int) -> list[str]:
        """``count`` more tasks of ``spec`` in ``slot``'s service: the stack file says so, then it is deployed."""
        service = self.model.service(slot)
        before = {t["ID"] for t in self.swarm.tasks(service)}
        if slot in self.model.slots:  # more replicas of the slot's release (the file's count is the model's)
            self.model.replicas = len(self.members(slot)) + count
        self.model.slots[slot] = spec
        self.stack.save()
        self.swarm.deploy()
        deadline = time.monotonic() + 60  # the orchestrator makes the tasks within a second or two
        while len(new := [t["ID"] for t in self.swarm.tasks(service) if t["ID"] not in before]) < count:
            if time.monotonic() > deadline:
                raise ModelportError(f"The Swarm made {len(new)} of {count} task(s) of {service} in 60s")
            time.sleep(0.25)
        return new[:count]

    def members(self, slot: str, *, running: bool = True) -> list[str]:
        """The tasks meant to run (Swarm replaces a failed one by itself); ``running``: those that run."""
        return [t["ID"] for t in self.swarm.tasks(self.model.service(slot))
                if not running or swarm.state(t) == "running"]

    def address(self, replica: str) -> str | None:
        if replica not in self._addresses:
            task = self.swarm.task(replica)
            if task is None or (found := swarm.address(task, self.network)) is None:
                return None
            self._addresses[replica] = found
        return self._addresses[replica]

    def failure(self, replicas: list[str]) -> str | None:
        for replica in replicas:
            task = self.swarm.task(replica)
            if task is None:
                return f"Task {replica[:12]} is gone"
            if swarm.state(task) in swarm.FAILED or task["DesiredState"] != "running":
                return f"{self._name(task)} did not start: {swarm.describe(task)}\n{self._logs(task)}"
        return None

    def explain(self, replicas: list[str]) -> str:
        tasks = [t for t in map(self.swarm.task, replicas) if t is not None]
        nodes = self.swarm.node_names()
        lines = [f"{self._name(t)} on {nodes.get(t.get('NodeID', ''), 'no node yet')}: {swarm.describe(t)}" for t in tasks]
        return "\n".join(lines + ([self._logs(tasks[0])] if tasks else []))

    def remove(self, replicas: list[str]) -> None:
        """Swarm cannot remove a chosen task: a slot losing all its tasks loses its service; one losing some
        is scaled down and Swarm picks which go. Either way each gets SIGTERM and its grace period (the
        server finishes its requests), and the proxy retries a request that finds one gone on another."""
        tasks = [t for t in map(self.swarm.task, replicas) if t is not None]
        remaining: dict[str, int] = {}
        for slot in proxy.SLOTS:
            service = self.model.service(slot)
            sid = self.swarm.service_id(service)
            leaving = {t["ID"] for t in tasks if t["ServiceID"] == sid}
            if sid is None or not leaving:
                continue
            remaining[service] = len([t for t in self.swarm.tasks(service) if t["ID"] not in leaving])
            if remaining[service]:
                swarm.set_replicas(self.swarm.client, sid, remaining[service])  # the others keep running as they are
            else:
                self.swarm.client.api.remove_service(sid)
        deadline = time.monotonic() + 40  # past the grace period
        while time.monotonic() < deadline and any(
                sum(swarm.state(t) in ("running", *swarm.STARTING) for t in self.swarm.tasks(service, current=False)) > n
                for service, n in remaining.items()):
            time.sleep(0.5)

    def down(self, slot: str) -> list[str]:
        return []  # Swarm replaces a task that stopped: none stays down

    def _name(self, task: dict[str, Any]) -> str:
        return f"{self.model.service(task['Spec']['ContainerSpec']['Labels'][SLOT])}.{task.get('Slot', '?')}"

    def _logs(self, task: dict[str, Any]) -> str:
        service = self.model.service(task["Spec"]["ContainerSpec"]["Labels"][SLOT])
        return f"Last log lines of {service}:\n{self.swarm.logs(service)}"


def replicas_of(stack: Stack, model: ModelService) -> ComposeReplicas | SwarmReplicas:
    """The model's replicas where the stack runs."""
    return SwarmReplicas(stack, model) if stack.state.swarm else ComposeReplicas(stack, model)


# -- lifecycle --------------------------------------------------------------------------------

def up(stack: Stack, *, wait: float = defaults.STACK_WAIT, gateway_port: int | None = None,
       swarm_settings: SwarmSettings | None = None, store: ModelStore | None = None,
       progress: Progress = lambda _: None) -> None:
    """Build what is missing, start everything, return once every service is healthy and the proxy
    checks every replica UP. ``gateway_port``: publish the gateway there from now on (saved in the stack's files).
    ``swarm_settings``: run the stack on that Swarm from now on (see up_swarm)."""
    current = stack.state.swarm
    if swarm_settings is not None and swarm_settings != current:
        if current and swarm_settings.manager == current.manager and swarm_settings.node in ("", current.node):
            stack.state.swarm = dataclasses.replace(  # the same Swarm, set anew
                swarm_settings, node=current.node, gateway_nodes=swarm_settings.gateway_nodes or current.gateway_nodes,
                autoscale_every=swarm_settings.autoscale_every or current.autoscale_every)
        else:
            _move_to_swarm(stack, swarm_settings)
    if stack.state.swarm:
        return up_swarm(stack, wait=wait, gateway_port=gateway_port, store=store, progress=progress)
    port = gateway_port or stack.state.gateway_port
    # Before any build or container: the stack's own gateway may hold the port already (up again).
    check_publishable(stack.state.gateway_host, port, option="--gateway-port",
                      own=lambda c: c.labels.get(PROJECT) == stack.state.name)
    if port != stack.state.gateway_port:
        stack.state.gateway_port = port
        stack.save()
    ensure_images(stack, store, progress)
    progress(f"Starting the stack {stack.state.name}")
    with tempfile.NamedTemporaryFile("w+", prefix="modelport-compose-", suffix=".log") as output:
        proc = stack.project.start("up", "--detach", "--no-build", "--remove-orphans", output=output)
        wait_healthy(stack.project, stack.services, wait, progress=progress, compose=proc, compose_output=Path(output.name))
    sync_proxy(stack)
    wait_proxy(stack, wait)


def _move_to_swarm(stack: Stack, settings: SwarmSettings) -> None:
    """Record that the stack runs on a Swarm (stack.json's ``swarm``): the next commands act there."""
    running = stack.project.containers() if not stack.state.swarm else stack.swarm.services() if stack.swarm else []
    if running:
        where = "on Compose" if not stack.state.swarm else f"on the Swarm of {stack.state.swarm.manager or 'this engine'}"
        raise ModelportError(f"The stack {stack.state.name!r} runs {where}: `modelport stack down` it first")
    stack.state.swarm = settings
    stack.save()
    (stack.directory / "compose.yaml").unlink(missing_ok=True)  # stack.json renders the stack file now


def up_swarm(stack: Stack, *, wait: float = defaults.STACK_WAIT, gateway_port: int | None = None,
             store: ModelStore | None = None, progress: Progress = lambda _: None) -> None:
    """Build what is missing (here), push every image to the registry, ``docker stack deploy`` the stack
    file through the manager, and return once every service runs its tasks healthy and the proxy checks
    every replica UP. The gateway, control and database go to the manager's node unless told otherwise."""
    project, settings = stack.swarm, stack.state.swarm
    assert project is not None and settings is not None
    manager_node = project.check_manager()
    if not settings.node:
        settings.node = manager_node
    if gateway_port:
        stack.state.gateway_port = gateway_port
    project.label_gateway_nodes(settings.gateway_nodes or [settings.node])
    adopt_autoscaled(stack)
    stack.state.gateway_maps = stack.state.routes()  # a release interrupted half-way is over
    stack.save()
    ensure_images(stack, store, progress)
    before = {t["ID"] for service in stack.services for t in project.tasks(service, current=False)}
    progress(f"Deploying the stack {stack.state.name} to the Swarm (manager {settings.manager or 'this engine'})")
    project.deploy()
    wait_tasks(stack, before, wait, progress)
    sync_proxy(stack)
    wait_proxy(stack, wait)


def converge_gateways(stack: Stack, wait: float = defaults.HEALTHY_WAIT) -> None:
    """Deploy the stack file after a change of the gateways' maps; return once every gateway node's
    keysync task runs with the new maps and is healthy (its gateway holds them), and none with the old."""
    project = stack.swarm
    assert project is not None
    project.deploy()

    def converged(service: dict[str, Any] | None, running: list[dict[str, Any]]) -> bool:
        gateways = {t.get("NodeID") for t in project.tasks("gateway") if swarm.state(t) == "running"}
        return service is not None and gateways <= {t.get("NodeID") for t in running}

    _wait_rolled(project, "keysync", wait, converged, "The gateways' keysync tasks do not run the new maps")


def _wait_rolled(project: SwarmProject, name: str, wait: float,
                 done: Callable[[dict[str, Any] | None, list[dict[str, Any]]], bool], failure: str) -> None:
    """After a deploy that changes service ``name``'s arguments: until none of its tasks runs (or starts)
    with others than the service's, and ``done(service, running)`` holds (``running``: its tasks that
    run with them); else ``failure``, after ``wait``, with its tasks' states and last log lines."""
    deadline = time.monotonic() + wait
    while True:
        service = project.services().get(name)
        args = service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Args") if service else None
        tasks = project.tasks(name, current=False) if service else []
        leaving = [t for t in tasks if t["Spec"]["ContainerSpec"].get("Args") != args
                   and swarm.state(t) in ("running", *swarm.STARTING)]
        running = [t for t in tasks if t["Spec"]["ContainerSpec"].get("Args") == args and swarm.state(t) == "running"
                   and t["DesiredState"] == "running"]
        if not leaving and done(service, running):
            return
        if time.monotonic() > deadline:
            states = "; ".join(swarm.describe(t) for t in tasks) or "no task"
            raise ModelportError(f"{failure} after {wait:.0f}s ({states})\nLast log lines:\n{project.logs(name)}")
        time.sleep(0.25)


# A task that fails this often since the deploy is not going to run: a few failures are how services
# that start before what they need (the gateway before control's name resolves) come up on a Swarm.
FAILURES = 3


def wait_tasks(stack: Stack, before: set[str], timeout: float, progress: Progress = lambda _: None) -> None:
    """Until every service of the stack runs as many tasks as it wants (running: healthy, on a Swarm);
    fail when one fails over and over, or after ``timeout``, saying why."""
    project = stack.swarm
    assert project is not None
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    while True:
        waiting: dict[str, list[dict[str, Any]]] = {}
        services = project.services()
        for name in stack.services:
            tasks = project.tasks(name, current=False) if name in services else []
            failed = [t for t in tasks if t["ID"] not in before and swarm.state(t) in (*swarm.FAILED, "complete", "shutdown")
                      and t["Status"].get("Err")]
            if len(failed) >= FAILURES:
                raise ModelportError(f"Service {name!r} is not healthy: its tasks fail ({len(failed)} times): "
                                     f"{swarm.describe(failed[-1])}\nLast log lines:\n{project.logs(name)}")
            mode = services.get(name, {}).get("Spec", {}).get("Mode", {})
            current = [t for t in tasks if t["DesiredState"] == "running"]
            # A global service (the gateway, keysync): a task on each node it may run on, at least one.
            wanted = max(1, len(current)) if "Global" in mode else (mode.get("Replicated") or {}).get("Replicas", 1)
            if sum(swarm.state(t) == "running" for t in current) < wanted:
                waiting[name] = current
            elif name not in ready:
                ready.add(name)
                progress(f"{name}: running")
        if not waiting:
            return
        if time.monotonic() > deadline:
            nodes = project.node_names()
            reasons = [f"{name}: " + ("; ".join(f"{nodes.get(t.get('NodeID', ''), 'no node')}: {swarm.describe(t)}"
                                                for t in tasks) or "no task")
                       for name, tasks in waiting.items()]
            raise ModelportError(f"Not running after {timeout:.0f}s: {', '.join(waiting)}\n" + "\n".join(reasons))
        time.sleep(1)


def sync_proxy(stack: Stack) -> None:
    """Give the proxy what lives outside its image: the active keys' hashes, each slot's version and the
    traffic split (a proxy container made anew by ``up`` starts from its image's files)."""
    runtime = stack.runtime()
    runtime.wait_answering(defaults.HEALTHY_WAIT)
    sync_keys(stack)
    for name, entries in stack.state.routes().items():
        for key, value in entries.items():
            runtime.set_entry(name, key, value)


def down(stack: Stack, *, volumes: bool = False) -> None:
    """Remove the stack's containers (on a Swarm: its services, networks and secret). ``volumes``: its
    volumes too (on a Swarm: those on the manager's node, the database's among them)."""
    if stack.swarm is None:
        stack.project.run("down", "--remove-orphans", *(["--volumes"] if volumes else []))
        return
    stack.swarm.remove()
    stack.swarm.label_gateway_nodes([])
    if volumes:
        for volume in stack.swarm.client.volumes.list(filters={"label": f"{swarm.NAMESPACE}={stack.state.name}"}):
            volume.remove(force=True)


def _service_names(stack: Stack, name: str) -> list[str]:
    """A service, or a model's services (``lin``: ``lin-blue``, and ``lin-green`` during a canary)."""
    for m in stack.state.models:
        if name == m.name:
            return m.services
    if name in stack.services:
        return [name]
    raise NotFoundError(f"No service {name!r} in the stack (services: {', '.join(stack.services)}; "
                        f"models: {', '.join(m.name for m in stack.state.models)})")


def restart(stack: Stack, service: str, *, wait: float = defaults.HEALTHY_WAIT) -> None:
    """Restart a service, or a model's replicas; return once the proxy checks them UP again."""
    services = _service_names(stack, service)
    if stack.swarm is None:
        stack.project.run("restart", *services)
        wait_healthy(stack.project, services, wait)
        wait_proxy(stack, wait)
        return
    # Failures before the restart (a task killed earlier, Swarm replaced it) are not this restart's.
    before = {t["ID"] for name in stack.services for t in stack.swarm.tasks(name, current=False)}
    for name in services:  # new tasks, by each service's update_config (a model's: start-first)
        stack.swarm.run("service", "update", "--force", "--quiet", stack.swarm.service_name(name))
    wait_tasks(stack, before, wait)
    sync_proxy(stack)  # a gateway task made anew starts from its image's maps
    wait_proxy(stack, wait)


def wait_proxy(stack: Stack, wait: float) -> None:
    """Until the proxy checks every replica of every model UP (sooner than Docker's healthchecks)."""
    for m in stack.state.models:
        replicas, runtime = replicas_of(stack, m), stack.runtime(m)
        for slot in m.slots:
            rollout.wait_ready(replicas, runtime, slot, replicas.members(slot), wait)


def ps(stack: Stack) -> list[dict[str, Any]]:
    """One row per container (on a Swarm: per task, with its node); a model's replicas with what the
    proxy sees of them (its check, the percent of the model's requests each gets)."""
    try:
        servers = stack.runtime().servers_all()
        shares = {m.name: stack.runtime(m).shares() for m in stack.state.models}
    except ModelportError:  # the gateway is not running
        servers, shares = [], {}
    rows = _swarm_rows(stack) if stack.swarm else _compose_rows(stack)
    for row in rows:
        if row["model"] and row["model"] in shares:
            backend = [s for s in servers if s.slot == f"{row['model']}-{row['slot']}"]
            row["proxy"], row["weight"] = proxy.replica_view(backend, shares[row["model"]].get(row["slot"], 0),
                                                             row.pop("address"))
        row.pop("address", None)
    order = {s: i for i, s in enumerate(stack.services)}
    return sorted(rows, key=lambda r: (order.get(r["service"], len(order)), r["container"]))


def _compose_rows(stack: Stack) -> list[dict[str, Any]]:
    rows = []
    for c in stack.project.containers():
        ports = [f"{b['HostIp']}:{b['HostPort']}->{p}" for p, b in engine.published(c)]
        rows.append({"service": c.labels.get(SERVICE, ""), "container": c.name, "node": None,
                     "image": c.attrs["Config"]["Image"], "state": health(c), "ports": ", ".join(ports),
                     "model": c.labels.get("io.modelport.model"), "version": c.labels.get("io.modelport.version"),
                     "slot": c.labels.get(SLOT, ""), "proxy": None, "weight": None, "autoscale": None,
                     "address": engine.address(c, f"{stack.state.name}_backend")})
    return rows


def _swarm_rows(stack: Stack) -> list[dict[str, Any]]:
    from modelport.deploy.autoscale import status_of

    project = stack.swarm
    assert project is not None
    nodes = project.node_names()
    rows = []
    for service, spec in project.services().items():
        decided = status_of(spec["Spec"].get("Labels"))  # the autoscaler's last decision for the service
        for t in project.tasks(service):
            labels = t["Spec"]["ContainerSpec"].get("Labels") or {}
            ports = [f"{p.get('PublishedPort')}->{p.get('TargetPort')} ({p.get('PublishMode')})"
                     for p in (t.get("Status", {}).get("PortStatus") or {}).get("Ports") or []]
            rows.append({"service": service, "container": f"{service}.{t.get('Slot', t['ID'][:12])}",
                         "node": nodes.get(t.get("NodeID", ""), "-"), "image": t["Spec"]["ContainerSpec"]["Image"],
                         "state": swarm.state(t), "ports": ", ".join(dict.fromkeys(ports)), "model": labels.get("io.modelport.model"),
                         "version": labels.get("io.modelport.version"), "slot": labels.get(SLOT, ""),
                         "proxy": None, "weight": None, "address": swarm.address(t, f"{stack.state.name}_backend"),
                         "autoscale": decided})
    return rows


def autoscaling(stack: Stack, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each autoscaled model as ``stack ps`` shows it (from its ``rows``): the policy, the serving
    service's tasks (running, and meant to run) and the autoscaler's last decision (its label)."""
    from modelport.deploy.autoscale import Autoscale, describe

    found = []
    for m in stack.state.models:
        if m.autoscale:
            mine = [r for r in rows if r["service"] == m.service(m.serving)]
            found.append({"model": m.name, "service": m.service(m.serving),
                          "policy": Autoscale.from_json(m.autoscale, m.name).summary(),
                          "running": sum(r["state"] == "running" for r in mine), "tasks": len(mine),
                          "last": describe(next((r["autoscale"] for r in mine if r.get("autoscale")), None))})
    return found


def logs(stack: Stack, service: str | None, *, follow: bool = False, tail: int | None = None) -> None:
    if stack.swarm is None:
        args = ["logs", "--no-color", *(["--follow"] if follow else []), *(["--tail", str(tail)] if tail is not None else [])]
        stack.project.run(*args, *(_service_names(stack, service) if service else []), capture=False)
        return
    names = _service_names(stack, service) if service else [s for s in stack.services if s in stack.swarm.services()]
    args = ["service", "logs", *(["--follow"] if follow else []), *(["--tail", str(tail)] if tail is not None else [])]
    if not follow:
        for name in names:
            stack.swarm.run(*args, stack.swarm.service_name(name), capture=False)
        return
    procs = [stack.swarm.start(*args, stack.swarm.service_name(name)) for name in names]  # all at once
    try:
        for proc in procs:
            proc.wait()
    finally:  # interrupted: a SIGINT to modelport alone (not its process group) must not leave them following
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


# -- releases ---------------------------------------------------------------------------------

def parse_deploy_target(text: str) -> str:
    """What ``stack deploy`` takes → the reference to deploy: ``REF`` as it is, or ``MODEL=REF`` where
    REF is a version of MODEL (``iris=iris:2``, ``iris=iris@production``, or just ``iris=2``)."""
    model, sep, ref = text.partition("=")
    if not sep:
        return text
    if not model or not ref:
        raise ModelportError(f"Invalid deploy target {text!r}: expected MODEL=REF (e.g. iris=iris:2 or iris=2) or REF")
    parsed = parse_ref(f"{model}:{ref}" if _VERSION.fullmatch(ref) else ref)
    if parsed.name != model:
        raise ModelportError(f"{text}: {parsed} is not a version of {model}")
    return str(parsed)


def deploy(stack: Stack, ref: str, *, canary: int | None = None, wait: float = defaults.HEALTHY_WAIT,
           store: ModelStore | None = None, progress: Progress = lambda _: None) -> ModelService:
    """Serve ``ref`` (a version of a model the stack serves, or ``MODEL=REF``: see parse_deploy_target)
    instead of the current version: all traffic once it is healthy, or ``canary`` percent of it
    until ``promote`` (or ``rollback``)."""
    if canary is not None and not 1 <= canary <= 99:
        raise ModelportError(f"Invalid --canary {canary}: a percent of requests from 1 to 99")
    store = get_store(store)
    mv = store.resolve(parse_deploy_target(ref))
    m = stack.model(mv.name)
    if m.candidate is not None:
        raise ModelportError(f"{m.name} runs a canary: `modelport stack promote {m.name}` or "
                             f"`modelport stack rollback {m.name}` first")
    if (mv.version, mv.digest) == (m.version, m.release.digest):
        raise ModelportError(f"The stack already serves {mv.ref}")
    return _release(stack, m, Release.of(mv), canary=canary, store=store, wait=wait, progress=progress)


def _release(stack: Stack, m: ModelService, new: Release, *, canary: int | None, store: ModelStore | None,
             wait: float, progress: Progress) -> ModelService:
    runtime = stack.runtime(m)
    ensure_model_image(stack, m, new, store, progress)
    if stack.state.swarm:
        publish(stack, [new], progress, all=False)
        adopt_autoscaled(stack)  # the new version starts with as many replicas as the autoscaler runs now
    slot, old = proxy.other(m.serving), m.release
    runtime.set_version(slot, str(new.version))
    progress(f"Starting {m.replicas} replica(s) of {m.name}:{new.version} beside version {old.version}")
    try:
        rollout.release(replicas_of(stack, m), runtime, slot=slot, spec=new, count=m.replicas, canary=canary,
                        wait=wait, progress=progress)
    except BaseException as e:
        m.slots.pop(slot, None)
        stack.save()
        if not isinstance(e, ModelportError):
            raise
        raise ModelportError(f"{e}\nThe stack still serves {m.name}:{old.version}.") from None
    if canary is not None:
        m.canary = canary
        stack.save()
        return m
    _retired(stack, m, serving=slot)
    return m


def _retired(stack: Stack, m: ModelService, *, serving: str) -> None:
    """``serving`` has all of ``m``'s traffic and the other slot's replicas are gone: the files say so."""
    retired = m.slots.pop(proxy.other(serving))
    if serving != m.serving:
        m.previous = retired
    m.serving, m.canary = serving, None
    stack.save()


def promote(stack: Stack, model: str, *, progress: Progress = lambda _: None) -> ModelService:
    """All of the model's traffic to its canary, then the version it replaces retired."""
    m = stack.model(model)
    if m.candidate is None:
        raise ModelportError(f"{model} runs no canary (modelport stack deploy {model}=REF --canary 10)")
    slot = m.candidate
    rollout.switch(replicas_of(stack, m), stack.runtime(m), slot, progress)
    _retired(stack, m, serving=slot)
    return m


def rollback(stack: Stack, model: str, *, wait: float = defaults.HEALTHY_WAIT, store: ModelStore | None = None,
             progress: Progress = lambda _: None) -> ModelService:
    """Go back to the version served before the last deploy (twice: forward again); during a canary,
    all traffic back to the serving version and the canary retired."""
    m = stack.model(model)
    if m.candidate is not None:
        rollout.switch(replicas_of(stack, m), stack.runtime(m), m.serving, progress)
        _retired(stack, m, serving=m.serving)
        return m
    if m.previous is None:
        raise ModelportError(f"{model}:{m.version} has not replaced another version: nothing to roll back to")
    return _release(stack, m, m.previous, canary=None, store=store, wait=wait, progress=progress)


def scale(stack: Stack, model: str, count: int | None, *, autoscale: dict[str, Any] | None = None,
          wait: float = defaults.HEALTHY_WAIT, progress: Progress = lambda _: None) -> ModelService:
    """``count`` replicas of the model's serving release (a canary keeps its own): new ones get traffic
    once checked healthy, leaving ones are drained first. Or, on a Swarm, ``autoscale``: a policy
    (deploy/autoscale.py: min, max, target, windows) for the stack's autoscaler service, the replicas
    first brought within its bounds. A count ends the model's autoscaling."""
    from modelport.deploy.autoscale import Autoscale

    m = stack.model(model)
    policy = None
    if autoscale is not None:
        if stack.swarm is None:
            raise ModelportError("Autoscaling runs on Docker Swarm (the stack's autoscaler service): this stack runs on "
                                 "Compose; `modelport stack up --swarm ...` first, or give a replica count")
        policy = Autoscale.from_json(autoscale, model)
    elif count is None:
        raise ModelportError("scale: a replica count, or an autoscale policy")
    runtime = stack.runtime(m)  # the stack runs
    replicas = replicas_of(stack, m)

    def wanted() -> int:  # a policy's: the count now, within its bounds (read again once the autoscaler let go)
        return count if policy is None else policy.clamp(len(replicas.members(m.serving)) or m.replicas)

    if m.autoscale and (policy is None or wanted() != len(replicas.members(m.serving))):
        adopt_autoscaled(stack)  # the autoscaler lets go of the model first: it would scale against this
        m.autoscale = None
        if stack.swarm:
            deploy_autoscaler(stack, wait, progress)
    count = wanted()
    check_replicas(count, option="replica count")
    if down := replicas.down(m.serving):
        progress(f"Removing {len(down)} replica(s) that are down")  # stopped or killed by hand: replaced
        replicas.remove(down)
    verify_model_image(m.release, progress)
    rollout.scale(replicas, runtime, slot=m.serving, spec=m.release, count=count, wait=wait, progress=progress)
    m.replicas = count
    stack.save()
    if policy is not None:
        m.autoscale = policy.to_json()
        deploy_autoscaler(stack, wait, progress)
    return m


def adopt_autoscaled(stack: Stack) -> None:
    """An autoscaled model's replica count is its autoscaler's: stack.json takes the count its serving
    service runs now (within the policy's bounds), so that deploying the stack file again keeps it."""
    from modelport.deploy.autoscale import Autoscale

    if stack.swarm is None or not any(m.autoscale for m in stack.state.models):
        return
    services = stack.swarm.services()
    for m in stack.state.models:
        if m.autoscale:
            spec = services.get(m.service(m.serving), {}).get("Spec", {})
            current = (spec.get("Mode", {}).get("Replicated") or {}).get("Replicas")
            m.replicas = Autoscale.from_json(m.autoscale, m.name).clamp(current or m.replicas)


def deploy_autoscaler(stack: Stack, wait: float, progress: Progress = lambda _: None) -> None:
    """Deploy the stack file after a change of the models' policies; return once the autoscaler service
    runs the new ones (or, when no model has one, once it is gone)."""
    project = stack.swarm
    assert project is not None
    adopt_autoscaled(stack)
    stack.save()
    wanted = "autoscaler" in stack.services
    progress("Deploying the stack file: " + ("the autoscaler with the new policies" if wanted else "no autoscaler"))
    project.deploy()
    _wait_rolled(project, "autoscaler", wait, lambda service, running: bool(running) if wanted else service is None,
                 f"The autoscaler is not {'running' if wanted else 'gone'}")


# -- the control service: where the database is reachable ------------------------------------

def exec_in_control(stack: Stack, argv: list[str], stdout: IO[bytes] | None = None) -> int:
    """Run ``modelport ARGV`` in the control service, streaming its output here; → its exit status."""
    control = stack.running("control")
    api = control.client.api  # the engine it runs on (a Swarm manager's)
    exec_id = api.exec_create(control.id, ["modelport", *argv], stdout=True, stderr=True)["Id"]
    out = stdout or sys.stdout.buffer
    for chunk_out, chunk_err in api.exec_start(exec_id, stream=True, demux=True):
        if chunk_out:
            out.write(chunk_out)
        if chunk_err:
            sys.stderr.buffer.write(chunk_err)
    out.flush()
    sys.stderr.buffer.flush()
    return api.exec_inspect(exec_id)["ExitCode"]


def key_digests(stack: Stack) -> dict[str, str]:
    """The active API keys' sha256 → key id, read from the database in the control service."""
    result = stack.running("control").exec_run(["modelport", "stack", "keys", "digests"], demux=True)
    out, err = result.output
    if result.exit_code != 0:
        raise ModelportError(f"Could not read the API keys from the database: {(err or out or b'').decode(errors='replace').strip()}")
    return json.loads(out)


def sync_keys(stack: Stack) -> None:
    """The proxy checks keys against the active ones' hashes: hand it those the database has now."""
    stack.runtime().set_keys(key_digests(stack))
