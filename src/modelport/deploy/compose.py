"""Docker Compose, whichever is installed (v2's ``docker compose`` or v1.29's ``docker-compose``),
and the engine's view of a compose project: its containers and whether they are healthy.

Health is read from the engine rather than asked of Compose: v1.29 has no ``up --wait``, and
v2's does not say which service failed or why.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from modelport.container import engine
from modelport.errors import ModelportError
from modelport.progress import Progress

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
ONE_OFF = "com.docker.compose.oneoff"



@functools.cache
def compose_command() -> tuple[str, ...]:
    """``docker compose`` when the Compose v2 plugin is there, else ``docker-compose``."""
    for cmd in (("docker", "compose"), ("docker-compose",)):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True).returncode == 0:
            return cmd
    raise ModelportError("Docker Compose is not installed: install the Compose plugin (`docker compose`) "
                         "or docker-compose (e.g. `apt-get install docker-compose`)")


def run_tool(argv: list[str], *, shown: str, cwd: Path, env: dict[str, str] | None = None, capture: bool = True) -> str:
    """Run a Docker command-line tool to its end; its output, or an error naming the command as ``shown``
    with the output's tail (``capture=False``: the output goes to ours, as it comes)."""
    proc = subprocess.run(argv, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").strip().splitlines()[-25:])
        raise ModelportError(f"`{shown}` failed (exit status {proc.returncode})" + (f":\n{tail}" if tail else ""))
    return proc.stdout or ""


class Project:
    """A compose project: a directory with ``compose.yaml`` (and what it refers to), and its name."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return [*compose_command(), "--project-name", self.name, "--file", "compose.yaml", *args]

    def run(self, *args: str, capture: bool = True) -> str:
        """Run a compose command to its end; its output, or an error carrying the output's tail."""
        return run_tool(self._argv(args), shown=f"{' '.join(compose_command())} {' '.join(args)}", cwd=self.directory,
                        capture=capture)

    def start(self, *args: str, output: IO[str]) -> subprocess.Popen:
        return subprocess.Popen(self._argv(args), cwd=self.directory, stdout=output, stderr=subprocess.STDOUT, text=True)

    def containers(self, service: str | None = None) -> list[Any]:
        """The project's service containers (not one-off `run` ones), newest first, inspected."""
        labels = [f"{PROJECT}={self.name}"] + ([f"{SERVICE}={service}"] if service else [])
        client = engine.client()
        # list() inspects each one; ignore_removed: one removed meanwhile is not an error
        found = client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        found = [c for c in found if c.labels.get(ONE_OFF, "False") == "False"]
        return sorted(found, key=lambda c: c.attrs["Created"], reverse=True)

    def container(self, service: str) -> Any | None:
        found = self.containers(service)
        return found[0] if found else None


def health(container: Any) -> str:
    """``healthy``, ``starting``, ``unhealthy``, ``running`` (no healthcheck), or the container's status."""
    state = container.attrs["State"]
    if state.get("Restarting"):
        return "restarting"
    if state["Status"] != "running":
        return state["Status"]
    return (state.get("Health") or {}).get("Status", "running")


def explain(container: Any, lines: int = 15) -> str:
    """Why a container is not serving: its status, exit code, OOM kill, healthcheck output, last log lines."""
    container.reload()
    state = container.attrs["State"]
    parts = [health(container)]
    if state["Status"] in ("exited", "dead") or state.get("Restarting"):
        parts.append(f"exit code {state.get('ExitCode')}")
    if state.get("OOMKilled"):
        parts.append("killed for using more memory than its limit (OOMKilled)")
    if state.get("Error"):
        parts.append(state["Error"])
    if container.attrs.get("RestartCount"):
        parts.append(f"restarted {container.attrs['RestartCount']} time(s)")
    checks = (state.get("Health") or {}).get("Log") or []
    if checks and checks[-1].get("ExitCode"):
        parts.append(f"last healthcheck: {checks[-1].get('Output', '').strip()[:300] or 'failed'}")
    logs = container.logs(tail=lines).decode(errors="replace").strip()
    return ", ".join(parts) + (f"\nLast log lines of {container.name}:\n{logs}" if logs else "")


def wait_healthy(project: Project, services: list[str], timeout: float, *, progress: Progress = lambda _: None,
                 compose: subprocess.Popen | None = None, compose_output: Path | None = None) -> None:
    """Return once every service's container is healthy (or running, if it has no healthcheck).
    Fail as soon as one exits, restarts or turns unhealthy, or after ``timeout``, naming it and
    saying why. ``compose``: a running ``compose up``, which must also end well."""
    _wait({s: functools.partial(project.container, s) for s in services}, timeout, progress, compose, compose_output)


def wait_container(container: Any, timeout: float) -> None:
    """The same for one container, found by the caller."""
    def inspected() -> Any:
        container.reload()
        return container

    _wait({container.name: inspected}, timeout, lambda _: None, None, None)


def _wait(targets: dict[str, Callable[[], Any | None]], timeout: float, progress: Progress,
          compose: subprocess.Popen | None, compose_output: Path | None) -> None:
    deadline = time.monotonic() + timeout
    restarts: dict[str, int] = {}
    ready: set[str] = set()
    while True:
        waiting = []
        # Read before the containers: one seen exited while `up` still runs may be about to be started
        # by it (a stopped service of a running stack); only one still exited once `up` ended has failed.
        done = compose is None or compose.poll() is not None
        for name, find in targets.items():
            c = find()
            if c is None:
                waiting.append(name)
                continue
            status = health(c)
            first = restarts.setdefault(c.id, c.attrs.get("RestartCount", 0))
            if status in ("exited", "created") and not done:
                waiting.append(name)
                continue
            if status in ("exited", "dead", "restarting", "unhealthy") or c.attrs.get("RestartCount", 0) > first:
                _stop(compose)
                raise ModelportError(f"Service {name!r} is not healthy: {explain(c)}")
            if status in ("healthy", "running"):
                if name not in ready:
                    ready.add(name)
                    progress(f"{name}: {status}")
            else:
                waiting.append(name)
        if compose is not None and done and compose.returncode != 0:
            output = compose_output.read_text(errors="replace").strip() if compose_output else ""
            tail = "\n".join(output.splitlines()[-20:])
            raise ModelportError(f"Compose failed (exit status {compose.returncode})"
                                 + (f" while {', '.join(waiting)} not healthy" if waiting else "") + f":\n{tail}")
        if not waiting and done:
            return
        if time.monotonic() > deadline:
            _stop(compose)
            reasons = [f"{n}: {explain(c)}" if (c := targets[n]()) else f"{n}: no container" for n in waiting]
            raise ModelportError(f"Not healthy after {timeout:.0f}s: {', '.join(waiting)}\n" + "\n".join(reasons))
        time.sleep(0.5)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(30)
