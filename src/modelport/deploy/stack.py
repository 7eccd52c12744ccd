"""A stack: model services, a gateway and PostgreSQL, run by Docker Compose from one directory.

``init`` writes ``stack.json`` (what the stack serves), ``compose.yaml`` (rendered from it),
``.env`` (the project name), ``secrets/db-password`` (generated) and the build contexts.
``deploy`` replaces a model's version with no failed request: a temporary container of the new
version starts, the gateway switches to it once it is healthy, Compose recreates the model's
service with the new image, the gateway switches back to the service, and the temporary
container goes. The compose file is the truth at every step, so ``up`` after a deploy changes
nothing.
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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jinja2

import modelport
from modelport import defaults
from modelport.api import get_store
from modelport.container import engine
from modelport.container.build import default_tag, stale_image, write_build_context
from modelport.container.context import Progress, build_time_labels, lock, modelport_wheel
from modelport.deploy.compose import Project, wait_container, wait_healthy
from modelport.errors import ModelportError, NotFoundError
from modelport.extras import require
from modelport.store import ModelStore, ModelVersion, parse_ref

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("modelport.deploy", "templates"),
                               keep_trailing_newline=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
STATE_FILE = "stack.json"
STACK = "io.modelport.stack"
ROLE = "io.modelport.role"
RESERVED = ("db", "gateway")
_VERSION = re.compile(r"[0-9]+")  # MODEL=3: a version number (ASCII digits: str.isdigit takes '²')
MODEL_PORT = defaults.PORT
SPOOL_DIR = "/var/lib/modelport/spool"
GATEWAY_EXTRAS = ("postgres",)
# The database password, a Compose secret (a bind mount at /run/secrets/db_password, with Compose v2 as
# with docker-compose 1.29, no Swarm): never an environment variable, which `docker inspect` and
# /proc/PID/environ show. The mount keeps the host file's owner and mode, and the containers' users
# (postgres, the gateway's 10001) are not its owner: the file is 0644 and the directory holding it
# 0700, so the containers read it and no other user of the host does (chown would need root).
PASSWORD_FILE = Path("secrets") / "db-password"
HEALTHCHECK = {"test": ["CMD", "python3", "-c", "import urllib.request; urllib.request.urlopen("
                        "'http://127.0.0.1:8080/v2/health/ready', timeout=2)"],
               "interval": 1_000_000_000, "timeout": 3_000_000_000, "retries": 3, "start_period": 60_000_000_000}


@dataclass
class ModelService:
    name: str
    version: int
    digest: str
    image: str
    context: str  # its build context: build/<context>
    cpus: float = 1.0
    memory: str = "1g"
    previous: dict[str, Any] | None = None  # the version before the last deploy: what rollback returns to

    @classmethod
    def of(cls, mv: ModelVersion, **limits: Any) -> ModelService:
        return cls(mv.name, mv.version, mv.digest, default_tag(mv), f"{mv.name}-{mv.version}", **limits)

    def release(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("version", "digest", "image", "context")}


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
    gateway_image: str
    gateway_host: str
    gateway_port: int
    models: list[ModelService] = field(default_factory=list)
    modelport_version: str = modelport.__version__

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        return cls(**{**data, "models": [ModelService(**m) for m in data["models"]]})


class Stack:
    def __init__(self, directory: Path, state: StackState) -> None:
        self.directory = directory
        self.state = state
        self.project = Project(directory, state.name)

    @classmethod
    def load(cls, directory: Path | str = ".") -> Stack:
        directory = Path(directory).resolve()
        path = directory / STATE_FILE
        if not path.is_file():
            raise ModelportError(f"{directory} is not a modelport stack (no {STATE_FILE}): run the command in "
                                 f"the stack's directory or name it with -C DIR (--dir DIR){_stacks_below(directory)}; "
                                 "create one with `modelport stack init DIR --model REF`")
        return cls(directory, StackState.from_json(json.loads(path.read_text())))

    def model(self, name: str) -> ModelService:
        for m in self.state.models:
            if m.name == name:
                return m
        raise NotFoundError(f"The stack {self.state.name!r} serves no model {name!r} "
                            f"(it serves: {', '.join(m.name for m in self.state.models)})")

    @property
    def services(self) -> list[str]:
        """In the order they start."""
        return ["db", *(m.name for m in self.state.models), "gateway"]

    def save(self) -> None:
        _write_atomic(self.directory / STATE_FILE, json.dumps(dataclasses.asdict(self.state), indent=2) + "\n")
        _write_atomic(self.directory / "compose.yaml", render_compose(self.state))

    def gateway(self) -> Any:
        c = self.project.container("gateway")
        if c is None or c.status != "running":
            raise ModelportError(f"The stack {self.state.name!r} is not running: modelport stack up")
        return c


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def render_compose(state: StackState) -> str:
    def labels(role: str, model: str | None = None) -> str:
        return json.dumps({STACK: state.name, ROLE: role, **({"io.modelport.model": model} if model else {})})

    command = ["gateway", "--host", "0.0.0.0", "--port", str(MODEL_PORT), "--default", state.models[0].name,
               "--require-keys", "--spool-dir", SPOOL_DIR]
    for m in state.models:  # by service name, not version: a deploy never changes the gateway's config
        command += ["--route", f"{m.name}=http://{m.name}:{MODEL_PORT}"]
    return TEMPLATES.get_template("compose.yaml.j2").render(
        stack=state, labels=labels, gateway_command=command, password_file=f"./{PASSWORD_FILE}",
        modelport_version=modelport.__version__)


def stack_name(text: str) -> str:
    """A Compose project name: lowercase letters, digits, '-' and '_'."""
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")
    if not name:
        raise ModelportError(f"Cannot make a stack name of {text!r}: pass --name")
    return name


# -- init -------------------------------------------------------------------------------------

def init(directory: Path, refs: list[str], *, name: str | None = None, db: str = "postgres",
         db_image: str = defaults.DB_IMAGE, gateway_host: str = "127.0.0.1", gateway_port: int = defaults.PORT,
         base_image: str = defaults.BASE_IMAGE, cpus: float = 1.0, memory: str = "1g",
         store: ModelStore | None = None, progress: Progress = lambda _: None) -> Stack:
    if db != "postgres":
        raise ModelportError(f"--db {db}: the prediction log's database is PostgreSQL (--db postgres)")
    require("docker", "A stack")
    for extra in GATEWAY_EXTRAS:  # pinned in the gateway image from what is installed here
        require(extra, "A stack's gateway (its prediction log is in PostgreSQL)")
    if not refs:
        raise ModelportError("A stack needs at least one model: --model REF")
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
                       gateway_image="", gateway_host=gateway_host, gateway_port=gateway_port,
                       models=[ModelService.of(mv, cpus=cpus, memory=memory) for mv in versions])
    existed = directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        for mv, m in zip(versions, state.models, strict=True):
            progress(f"Writing the build context of {mv.ref}")
            write_build_context(mv.ref, directory / "build" / m.context, base_image=base_image, store=store, progress=progress)
        state.gateway_image = write_gateway_context(directory / "build" / "gateway", base_image, progress)
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


def write_gateway_context(dest: Path, base_image: str, progress: Progress) -> str:
    """The gateway image's build context: modelport with the PostgreSQL driver (and pyarrow for
    Parquet exports when it is installed here); → the image tag, a digest of the context."""
    from importlib.metadata import PackageNotFoundError, version

    from modelport.container.training import pinned_requirements
    from modelport.container.wheelhouse import build_wheelhouse

    wheels = dest / "wheels"
    wheels.mkdir(parents=True)
    pins = pinned_requirements(modelport_wheel(wheels, progress), GATEWAY_EXTRAS)
    with contextlib.suppress(PackageNotFoundError):
        pins.append(f"pyarrow=={version('pyarrow')}")
    progress(f"Downloading wheels for the gateway: {', '.join(pins)}")
    build_wheelhouse(pins, wheels, progress=progress)
    locked = lock(wheels)
    dockerfile = TEMPLATES.get_template("gateway.Dockerfile.j2").render(base_image=base_image,
                                                                        modelport_version=modelport.__version__)
    (dest / "Dockerfile").write_text(dockerfile)
    (dest / ".dockerignore").write_text(TEMPLATES.get_template("dockerignore.j2").render())
    digest = hashlib.sha256("\n".join([dockerfile, *locked]).encode())
    digest.update(next(wheels.glob("modelport-*.whl")).read_bytes())
    return f"modelport/gateway:{modelport.__version__}-{digest.hexdigest()[:12]}"


# -- images -----------------------------------------------------------------------------------

def ensure_model_image(stack: Stack, m: ModelService, store: ModelStore | None, progress: Progress) -> None:
    """Build the model's image unless an image of that tag holds this very model (see stale_image)."""
    why = stale_image(m.image, m.digest)
    if why is None:
        return
    context = stack.directory / "build" / m.context
    if not (context / "Dockerfile").is_file():
        shutil.rmtree(context, ignore_errors=True)
        write_build_context(f"{m.name}:{m.version}", context, base_image=stack.state.base_image, store=store,
                            progress=progress)
    progress(f"Building {m.image}: {why}")
    engine.build(context, m.image, labels={**build_time_labels(), STACK: stack.state.name}, progress=progress)


def ensure_images(stack: Stack, store: ModelStore | None = None, progress: Progress = lambda _: None) -> None:
    for m in stack.state.models:
        ensure_model_image(stack, m, store, progress)
    if not engine.image_exists(stack.state.gateway_image):
        progress(f"Building {stack.state.gateway_image}")
        engine.build(stack.directory / "build" / "gateway", stack.state.gateway_image,
                     labels={**build_time_labels(), STACK: stack.state.name}, progress=progress)


# -- lifecycle --------------------------------------------------------------------------------

def up(stack: Stack, *, wait: float = defaults.STACK_WAIT, gateway_port: int | None = None, store: ModelStore | None = None,
       progress: Progress = lambda _: None) -> None:
    """Build what is missing, start everything, return once every service is healthy.
    ``gateway_port``: publish the gateway there from now on (saved in the stack's files)."""
    from modelport.deploy.compose import PROJECT
    from modelport.deploy.containers import check_publishable

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


def down(stack: Stack, *, volumes: bool = False) -> None:
    for c in _temporary(stack):
        c.remove(force=True)
    stack.project.run("down", "--remove-orphans", *(["--volumes"] if volumes else []))


def restart(stack: Stack, service: str, *, wait: float = defaults.HEALTHY_WAIT) -> None:
    if service not in stack.services:
        raise NotFoundError(f"No service {service!r} in the stack (services: {', '.join(stack.services)})")
    stack.project.run("restart", service)
    wait_healthy(stack.project, [service], wait)


def ps(stack: Stack) -> list[dict[str, Any]]:
    from modelport.deploy.compose import SERVICE, health

    rows = []
    for c in stack.project.containers() + _temporary(stack):
        ports = [f"{b['HostIp']}:{b['HostPort']}->{p}" for p, bs in (c.attrs["NetworkSettings"].get("Ports") or {}).items()
                 for b in bs or []]
        rows.append({"service": c.labels.get(SERVICE, c.labels.get("io.modelport.model", "")), "container": c.name,
                     "image": c.attrs["Config"]["Image"], "state": health(c), "ports": ", ".join(ports)})
    order = {s: i for i, s in enumerate(stack.services)}
    return sorted(rows, key=lambda r: (order.get(r["service"], len(order)), r["container"]))


def logs(stack: Stack, service: str | None, *, follow: bool = False, tail: int | None = None) -> None:
    args = ["logs", "--no-color", *(["--follow"] if follow else []), *(["--tail", str(tail)] if tail is not None else [])]
    stack.project.run(*args, *([service] if service else []), capture=False)


def _temporary(stack: Stack) -> list[Any]:
    """Containers a deploy started next to a service (left only by a deploy that failed half-way)."""
    return engine.client().containers.list(all=True, filters={"label": [f"{STACK}={stack.state.name}", f"{ROLE}=next"]})


# -- deploy and rollback ----------------------------------------------------------------------

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


def deploy(stack: Stack, ref: str, *, wait: float = defaults.HEALTHY_WAIT, store: ModelStore | None = None,
           progress: Progress = lambda _: None) -> ModelService:
    """Serve ``ref`` (a version of a model the stack serves, or ``MODEL=REF``: see parse_deploy_target)
    instead of the current version."""
    store = get_store(store)
    mv = store.resolve(parse_deploy_target(ref))
    current = stack.model(mv.name)
    if (mv.version, mv.digest) == (current.version, current.digest):
        raise ModelportError(f"The stack already serves {mv.ref}")
    new = ModelService.of(mv, cpus=current.cpus, memory=current.memory)
    return _switch(stack, current, new, store=store, wait=wait, progress=progress)


def rollback(stack: Stack, model: str, *, wait: float = defaults.HEALTHY_WAIT, store: ModelStore | None = None,
             progress: Progress = lambda _: None) -> ModelService:
    """Go back to the version served before the last deploy (twice: forward again)."""
    current = stack.model(model)
    if current.previous is None:
        raise ModelportError(f"{model}:{current.version} has not replaced another version: nothing to roll back to")
    new = ModelService(name=model, cpus=current.cpus, memory=current.memory, **current.previous)
    return _switch(stack, current, new, store=store, wait=wait, progress=progress)


def _switch(stack: Stack, current: ModelService, new: ModelService, *, store: ModelStore | None, wait: float,
            progress: Progress) -> ModelService:
    import docker.errors

    gateway = stack.gateway()
    ensure_model_image(stack, new, store, progress)
    name = f"{stack.state.name}-{new.name}-v{new.version}-{uuid.uuid4().hex[:6]}"
    progress(f"Starting {new.name}:{new.version} next to the running version ({name})")
    temporary = engine.client().containers.run(
        new.image, name=name, detach=True, network=f"{stack.state.name}_backend", healthcheck=HEALTHCHECK,
        labels={STACK: stack.state.name, ROLE: "next", "io.modelport.model": new.name},
        nano_cpus=int(new.cpus * 1e9), mem_limit=new.memory)
    switched = False
    try:
        wait_container(temporary, wait)
        progress(f"{name} is healthy: switching the gateway to it")
        _set_route(gateway, new.name, f"http://{name}:{MODEL_PORT}", new.version)
        switched = True
        new.previous = current.release()
        stack.state.models[stack.state.models.index(current)] = new
        stack.save()
        progress(f"Recreating the {new.name} service with {new.image}")
        stack.project.run("up", "--detach", "--no-deps", "--no-build", new.name)
        wait_healthy(stack.project, [new.name], wait)
        progress(f"Switching the gateway back to the {new.name} service")
        _set_route(gateway, new.name, f"http://{new.name}:{MODEL_PORT}", new.version)
        switched = False
    except Exception as e:
        if switched:  # the temporary container is the one serving: keep it, and say so
            raise ModelportError(f"{e}\n{name} serves {new.name}:{new.version} meanwhile; fix the cause and run "
                                 f"`modelport stack up`, or `modelport stack rollback {new.name}`") from None
        if not isinstance(e, ModelportError):
            raise
        raise ModelportError(f"{e}\nThe stack still serves {current.name}:{current.version}.") from None
    finally:
        if not switched:
            try:
                temporary.stop(timeout=15)
                temporary.remove(force=True)
            except docker.errors.NotFound:
                pass
    return new


def _set_route(gateway: Any, model: str, url: str, version: int) -> None:
    result = gateway.exec_run(["modelport", "gateway-admin", "set-route", model, url, "--version", str(version)])
    if result.exit_code != 0:
        raise ModelportError(f"The gateway did not switch {model} to {url}:\n{result.output.decode(errors='replace')}")


# -- commands run inside the gateway (where the database is reachable) -----------------------

def exec_in_gateway(stack: Stack, argv: list[str], stdout: IO[bytes] | None = None) -> int:
    """Run ``modelport ARGV`` in the gateway container, streaming its output here; → its exit status."""
    api = engine.client().api
    exec_id = api.exec_create(stack.gateway().id, ["modelport", *argv], stdout=True, stderr=True)["Id"]
    out = stdout or sys.stdout.buffer
    for chunk_out, chunk_err in api.exec_start(exec_id, stream=True, demux=True):
        if chunk_out:
            out.write(chunk_out)
        if chunk_err:
            sys.stderr.buffer.write(chunk_err)
    out.flush()
    sys.stderr.buffer.flush()
    return api.exec_inspect(exec_id)["ExitCode"]
