"""Readiness and correctness: a server counts as up once it answers the row's request right."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from bench.errors import BenchError
from bench.procs import Server
from bench.systems.base import Row, Workload


def post_json(url: str, body: Any, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(server: Server, url: str, row: Row, workload: Workload, timeout: float) -> None:
    """Poll with the real request until HTTP 200 (startups differ: bind first, load later), then verify."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        code = server.exit_code()
        if code is not None:
            raise BenchError(
                f"{server.name} exited with code {code} while starting ({server.log_path}):\n{server.tail()}"
            )
        try:
            status, raw = post_json(url, row.body(workload))
            if status == 200:
                verify(row, workload, raw)
                return
            last = f"HTTP {status}: {raw[:200]!r}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise BenchError(
                f"{server.name} not ready after {timeout:.0f}s ({last}); {server.log_path}:\n{server.tail()}"
            )
        time.sleep(0.25)


def verify(row: Row, workload: Workload, raw: bytes) -> None:
    try:
        answer = json.loads(raw)
        got = None if row.read is None else row.read(answer)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise BenchError(f"{row.name}: unexpected answer {raw[:300]!r} ({e!r})") from None
    if got is not None and abs(got - workload.expected) > workload.tolerance:
        raise BenchError(f"{row.name}: predicted {got!r}, model.predict gives {workload.expected!r}")
