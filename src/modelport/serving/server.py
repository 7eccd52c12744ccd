"""Running the inference server: checks up front, then uvicorn with one or more worker processes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from starlette.types import ASGIApp

from modelport.errors import ModelportError
from modelport.ports import check_port
from modelport.serving import metrics
from modelport.serving.batching import BatchConfig
from modelport.serving.http import DEFAULT_MAX_BODY
from modelport.serving.limits import ImageLimits, ReadLimits
from modelport.serving.logs import log_config
from modelport.serving.pinning import announced, pin
from modelport.serving.runtime import ModelSet, ServeSpec, TensorRequest, check_models, load_models
from modelport.serving.startup import ReadyMarks, Starting, read_warmup
from modelport.serving.timings import Timings, process_start
from modelport.store import ModelVersion, parse_ref

_CONFIG_ENV = "MODELPORT_SERVE_CONFIG"


def default_workers() -> int:
    """One worker per core this process may use: the CPU quota inside a container
    (``--cpus``), the affinity mask outside one."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, int(quota + 0.5)) if quota else cores)


def _cgroup_cpu_quota() -> float | None:
    try:  # cgroup v2
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def preload(frameworks: Iterable[str]) -> None:
    """Import what serving models of ``frameworks`` imports: the app, and what each framework's loading
    imports (an adapter's ``preload``, else its module). Before forking workers; and at image build, so
    the standard library's bytecode for all that is written once (some base images ship none)."""
    import importlib

    import modelport.serving.app  # noqa: F401 (imported for its imports)
    from modelport.frameworks import get_adapter

    for framework in sorted(set(frameworks)):
        adapter = get_adapter(framework)
        with contextlib.suppress(ImportError):  # a worker that cannot import it says why
            if hasattr(adapter, "preload"):
                adapter.preload()
            else:
                importlib.import_module(adapter.module)


@contextlib.contextmanager
def forked_workers(versions: Sequence[ModelVersion]) -> Iterator[None]:
    """uvicorn's workers forked from this process rather than spawned: a worker then starts with what this
    process has imported (the server, numpy, the models' frameworks, imported here first) instead of
    importing it all again, about 1.5 s of CPU per worker for a scikit-learn model, the largest part of a
    cold start. Only imports are shared: each worker still loads its own models (no thread pool or
    framework session exists before the fork)."""
    import multiprocessing

    # uvicorn's private API, the only place modelport uses it: its subprocess module makes every worker
    # with `spawn.Process` (tests/serving/test_server.py fails when that is no longer so).
    import uvicorn._subprocess

    preload({v.framework for v in versions})
    spawn = uvicorn._subprocess.spawn
    uvicorn._subprocess.spawn = multiprocessing.get_context("fork")
    try:
        yield
    finally:
        uvicorn._subprocess.spawn = spawn


def serve(specs: Sequence[ServeSpec], *, host: str = "127.0.0.1", port: int = 8080, workers: int | None = None,
          max_body: int = DEFAULT_MAX_BODY, log_format: str = "text", log_level: str = "info",
          access_log: bool = False, on_ready: str | None = None, log_db: str | None = None,
          spool_dir: str | None = None, trust_proxy_headers: bool = False, limits: ReadLimits = ReadLimits(),
          warmup: dict[str, str] | None = None, progress: Callable[[str], None] = lambda _: None) -> None:
    """Serve ``specs`` until interrupted. A model that cannot load stops the command with its reason.
    ``progress`` is told each start-up step; ``on_ready`` is printed once the server is ready.
    ``warmup``: served name → a file with the v2 request each model's warm-up prediction uses
    (default: inputs generated from its signature); the server is ready once every model answered one.

    References are resolved once, here, to exact versions. The server listens at once and loads in
    the background (startup.Starting: ready only after the warm-up). One worker: the models are loaded
    in this process and served from it. Several: this process checks them cheaply (found, artifacts intact,
    framework installed) and sets their files aside; the workers, replacements included, load those
    same files; a worker that still cannot load one reports why and stops the server."""
    import uvicorn

    from modelport.serving.protocol import uvicorn_options

    workers = workers or default_workers()
    limits.check(max_body)
    options = {"host": host, "port": port, "loop": "uvloop", "access_log": access_log,
               "log_config": log_config(log_format, log_level), "timeout_graceful_shutdown": 10,
               "server_header": False, "proxy_headers": False, **uvicorn_options(limits)}
    os.environ.setdefault("MODELPORT_THREADS_PER_WORKER", str(max(1, default_workers() // workers)))
    versions = check_models(list(specs))
    specs = [dataclasses.replace(s, ref=v.ref, name=s.name or parse_ref(s.ref).name) for s, v in zip(specs, versions, strict=True)]
    given = given_warmups(specs, warmup)  # a bad file fails now
    starting = f"Starting {workers} worker{'s' if workers > 1 else ''} on {host}:{port}…"
    with announced([v.ref for v in versions]):
        if workers == 1:
            failure: list[str] = []

            def build() -> tuple[ModelSet, ASGIApp]:
                from modelport.serving.app import create_app

                progress(f"Loading {', '.join(s.ref for s in specs)}")
                models = load_models(specs)
                return models, create_app(models, max_body=max_body, max_buffered=limits.max_buffered, log_db=log_db,
                                          spool_dir=spool_dir, trust_proxy_headers=trust_proxy_headers)

            def fail(why: str) -> None:  # the server stops; then this command says why
                failure.append(why)
                server.should_exit = True

            server = uvicorn.Server(uvicorn.Config(Starting(build, Timings(process_start()), warmup=given,
                                                            on_failure=fail, on_serving=announcer(on_ready)), **options))
            check_port(host, port)
            progress(starting)
            with contextlib.suppress(KeyboardInterrupt):
                server.run()  # uvicorn.run's one-process path, with a handle to stop it
            if failure:
                raise ModelportError(failure[0])
            if not server.started:  # it said why (e.g. the port): exit as uvicorn.run does
                raise SystemExit(3)
            return
        check_port(host, port)
        state = Path(tempfile.mkdtemp(prefix="modelport-serve-"))
        try:
            # Resolved once, here: every worker, a replacement included, loads exactly these artifacts.
            config = {"specs": [dataclasses.asdict(s) for s in pin(specs, state / "models")], "max_body": max_body,
                      "max_buffered": limits.max_buffered, "log_db": log_db, "spool_dir": spool_dir, "trust_proxy_headers": trust_proxy_headers,
                      "error_file": str(state / "startup-error"), "repository_state": str(state / "unloaded"),
                      "ready_dir": str(state / "ready"), "workers": workers, "warmup": warmup or {},
                      "on_ready": on_ready, "announced": str(state / "announced"), "serving_dir": str(state / "serving")}
            (state / "serving").mkdir()  # each worker's mark once requests reach its app: the last one announces
            (state / "unloaded").mkdir()
            (state / "ready").mkdir()  # each worker's mark once it has warmed up (startup.ReadyMarks)  # the workers agree on which models are unloaded through this
            os.environ[_CONFIG_ENV] = json.dumps(config)
            # Workers are separate processes: prometheus-client sums their metrics through files here.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state / "metrics")
            (state / "metrics").mkdir()
            progress(starting)
            with forked_workers(versions):
                uvicorn.run("modelport.serving.server:app_from_env", factory=True, workers=workers, **options)
            if (state / "startup-error").exists():
                raise ModelportError((state / "startup-error").read_text())
        finally:
            shutil.rmtree(state, ignore_errors=True)


def given_warmups(specs: Sequence[ServeSpec], warmup: dict[str, str] | None) -> dict[str, TensorRequest]:
    """``--warmup``'s files (served name → file) read as v2 requests; a name not served is refused."""
    names = [s.name or parse_ref(s.ref).name for s in specs]
    if unknown := sorted(set(warmup or {}) - set(names)):
        raise ModelportError(f"--warmup names {', '.join(map(repr, unknown))}, which is not served here "
                             f"(served: {', '.join(names)})")
    return {name: read_warmup(Path(path)) for name, path in (warmup or {}).items()}


def app_from_env() -> ASGIApp:
    """The app factory each uvicorn worker calls: the config comes through the environment. The worker
    answers at once (startup.Starting) and loads its models in the background."""
    timings = Timings(process_start(os.getppid()), process_start())
    config = json.loads(os.environ[_CONFIG_ENV])
    specs = [ServeSpec(ref=s["ref"], name=s["name"], batch=BatchConfig(**s["batch"]), images=ImageLimits(**s["images"]),
                       pinned=s["pinned"])
             for s in config["specs"]]
    marks = ReadyMarks(Path(config["ready_dir"]), config["workers"])

    def build() -> tuple[ModelSet, ASGIApp]:
        from modelport.serving.app import create_app

        models = load_models(specs)
        return models, create_app(models, max_body=config["max_body"], max_buffered=config["max_buffered"],
                                  log_db=config["log_db"], spool_dir=config["spool_dir"],
                                  trust_proxy_headers=config["trust_proxy_headers"], repository_state=config["repository_state"])

    def fail(why: str) -> None:
        # Tell the supervisor (our parent) why, and stop it, rather than start a crash loop of workers.
        Path(config["error_file"]).write_text(why)
        os.kill(os.getppid(), signal.SIGTERM)

    warmup = {name: read_warmup(Path(path)) for name, path in config["warmup"].items()}
    metrics.shared_across_workers()  # forked after the server imported prometheus-client
    # A replacement worker (the server was ready) loads before it listens: the other workers serve meanwhile.
    return Starting(build, timings, warmup=warmup, ready=marks, on_ready=marks.mark, on_failure=fail,
                    on_serving=announcer(config["on_ready"], once=Path(config["announced"]),
                                         serving=ReadyMarks(Path(config["serving_dir"]), config["workers"])),
                    before_listening=marks())


def announcer(message: str | None, once: Path | None = None, serving: ReadyMarks | None = None) -> Callable[[], None]:
    """What a server (a worker) does once requests reach its app: print ``message``. With several workers,
    ``serving``: their marks, so that the line comes once every one of them serves (whichever connection a
    request lands on is answered); ``once``: a file they share, so that one of them prints it, once."""
    def announce() -> None:
        if serving is not None:
            serving.mark()
            if not serving():
                return
        if not message:
            return
        if once is not None:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # another worker did, or this is a replacement worker
                return
        print(message, flush=True)

    return announce
