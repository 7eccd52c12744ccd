"""Test helpers: real servers on free loopback ports, started and always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], *, timeout: float, interval: float = 0.2,
               what: Callable[[T], str] = repr) -> T:
    """Call ``probe`` until ``done(result)`` holds, and return that result; after ``timeout``
    seconds fail with ``what(last result)``: what is still missing, not just "timed out"."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout:.0f}s: {what(result)}")
        time.sleep(interval)


def run_in_process(*args: str, env: dict[str, str] | None = None, check: bool = True,
                   input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``modelport ARGS`` as ``run_cli`` runs it, without the process: the real entry point (its error
    handling and exit status), stdout and stderr kept apart, ``env`` and ``input`` (stdin) for this call
    only. For commands that only prepare state or print: what needs a process boundary (signals,
    servers, imports of a fresh interpreter) stays with ``run_cli``."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from modelport.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with pytest.MonkeyPatch.context() as patch:
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        patch.setattr(sys, "stdin", io.StringIO(input or ""))
        before = dict(os.environ)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code
            finally:  # what a command sets for the processes it would start (serve's thread count) ends with it
                for key in os.environ.keys() - before.keys():
                    del os.environ[key]
                os.environ.update(before)
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return _checked(subprocess.CompletedProcess(["modelport", *args], returncode, out.getvalue(), err.getvalue()), check)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``modelport ARGS`` as a user would, in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "modelport", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, input=input)
    return _checked(proc, check)


def _checked(proc: subprocess.CompletedProcess[str], check: bool) -> subprocess.CompletedProcess[str]:
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, proc.args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def python_with_only(dest: Path, extras: tuple[str, ...] = (), script: str = "from modelport.cli.main import main; main()") -> list[str]:
    """A Python command that sees modelport (this source tree) with its core dependencies and ``extras``
    only: what ``pip install 'modelport[EXTRAS]'`` gives a fresh environment. The distributions are
    linked from this Python's site-packages into ``dest``; ``-S`` keeps the rest of them out of reach.
    It runs ``script``: by default the ``modelport`` command, its arguments those given after it."""
    from importlib import metadata

    link_dependencies(dest, extras)
    # Its installed metadata (the extras) only: the code is this tree's. (Not an egg-info a `pip install -e`
    # leaves in src/, as tests/container/test_fresh_venv.py does while it runs: that one has no METADATA.)
    info = next(Path(d.locate_file(f)).parent for d in metadata.distributions(name="modelport") for f in d.files or []
                if f.name == "METADATA")
    (dest / info.name).symlink_to(info)
    src = Path(__file__).resolve().parents[1] / "src"
    return [sys.executable, "-S", "-c", f"import sys; sys.path[:0] = [{str(dest)!r}, {str(src)!r}]; "
            + script]


def link_dependencies(dest: Path, extras: tuple[str, ...] = ()) -> set[str]:
    """Link into ``dest`` (a site-packages directory) every distribution ``modelport[EXTRAS]`` requires,
    transitively, from this Python's site-packages: the same versions, metadata included. Returns their names."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def wanted(text: str, extra: str) -> Requirement | None:
        req = Requirement(text)
        return req if req.marker is None or req.marker.evaluate({"extra": extra}) else None

    seen: set[str] = set()
    todo = [r for e in ("", *extras) for t in metadata.requires("modelport") or [] if (r := wanted(t, e))]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "modelport":  # its own extras: modelport[serve,cli] (the core), modelport[sklearn] (train's)
            extras_seen = {e for e in req.extras if f"modelport[{e}]" not in seen}
            seen.update(f"modelport[{e}]" for e in extras_seen)
            todo += [r for e in extras_seen for t in metadata.requires("modelport") or [] if (r := wanted(t, e))]
            continue
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        todo += [r for e in ("", *req.extras) for t in dist.requires or [] if (r := wanted(t, e))]
        _link_distribution(dist, dest)
    return {n for n in seen if not n.startswith("modelport[")}


def _link_distribution(dist, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    root = Path(dist.locate_file("")).resolve()
    for f in dist.files or []:
        top = f.parts[0]
        if top in ("..", "") or (dest / top).exists():
            continue
        (dest / top).symlink_to(root / top)


class Server:
    """``modelport serve ...`` (or any command that serves) in its own process group."""

    def __init__(self, args: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen([sys.executable, "-m", "modelport", *args], stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)

    def wait_ready(self, timeout: float = 120, path: str = "/v2/health/ready") -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log_file.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Load:
    """Requests in a loop on one keep-alive connection (at most ``limit``), counting every failure and
    which version answered each one."""

    def __init__(self, url: str, limit: int = 50_000) -> None:
        self.url, self.limit, self.ok, self.failed = url, limit, 0, []
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def versions(self) -> set[str]:
        return set(self.counts)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(self.limit):
                if self._stop.is_set():
                    break
                try:
                    r = client.post(self.url + "/predict", json={"features": [0.5] * 8})
                    if r.status_code == 200:
                        self.ok += 1
                        self.counts[r.headers["x-model-version"]] += 1
                    else:
                        self.failed.append(f"{r.status_code} {r.text}")
                except httpx.HTTPError as e:
                    self.failed.append(repr(e))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
