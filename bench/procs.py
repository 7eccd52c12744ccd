"""Server processes: free ports, start in their own process group, always stop the whole group."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections import deque
from pathlib import Path
from types import TracebackType

from bench.errors import BenchError
from bench.systems.base import Launch

_live: set[Server] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A started server; use as a context manager so it is stopped on any exit path."""

    def __init__(self, name: str, launch: Launch, log_path: Path) -> None:
        self.name = name
        self.launch = launch
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.launch.env}
        with self.log_path.open("wb") as log:
            # A new session = a new process group we can kill as a whole, and one
            # that the terminal's Ctrl-C does not reach before our cleanup does.
            try:
                self.proc = subprocess.Popen(
                    self.launch.argv,
                    cwd=self.launch.cwd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:
                raise BenchError(f"cannot start {self.name}: {e}") from None
        _live.add(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def tail(self, lines: int = 25) -> str:
        try:
            with self.log_path.open(errors="replace") as f:
                return "".join(deque(f, maxlen=lines)).rstrip()
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader, or it stays in the group as a zombie
            if not _group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            _signal_group(pgid, signal.SIGKILL)
        self.proc.wait()
        _live.discard(self)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@atexit.register
def _stop_all() -> None:
    # Safety net for paths that skip context managers (e.g. a second Ctrl-C).
    for server in list(_live):
        server.stop(grace=3.0)
