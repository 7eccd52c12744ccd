"""Workers serve the versions resolved when the server started, whatever the store does meanwhile
(issue 10, defect 7): a version removed, a newer one trained, a worker replaced."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers import run_in_process, wait_until


def workers_of(pid: int) -> set[int]:
    """uvicorn's worker processes under the server process ``pid`` (forked from it: its command line)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    found = set()
    for child in map(int, children):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == command:
                found.add(child)
        except FileNotFoundError:
            pass
    return found


@pytest.mark.long
def test_a_replacement_worker_loads_the_version_the_server_started_with(home, regression_csv, serve) -> None:
    path, x, _ = regression_csv
    train = ["train", "--data", str(path), "--target", "target", "--name", "c"]
    run_in_process(*train)
    server = serve("c", workers=2)
    run_in_process(*train, "--model", "ridge")  # c:2, now the latest
    removed = run_in_process("models", "rm", "c:1")  # the version being served
    assert "Deleted c:1" in removed.stdout
    assert f"c:1 is being served by modelport serve (pid {server.proc.pid})" in removed.stderr

    before = wait_until(lambda: workers_of(server.proc.pid), lambda w: len(w) == 2, timeout=30)
    os.kill(min(before), signal.SIGKILL)
    started = server.output().count("Application startup complete")
    # The supervisor starts a replacement; it loads its models before its startup is complete (the server
    # was ready: the other worker serves meanwhile), and listens only then.
    wait_until(lambda: (workers_of(server.proc.pid), server.output().count("Application startup complete")),
               lambda s: len(s[0]) == 2 and s[0] != before and s[1] > started, timeout=60,
               what=lambda s: f"workers {s[0]}, log:\n{server.output()[-2000:]}")

    versions = []
    for i in range(30):  # a new connection each: both workers answer
        r = httpx.post(server.url + "/predict", json={"features": x[i].tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        versions.append(r.headers["x-model-version"])
    assert set(versions) == {"1"}
    assert [(m["name"], m["version"]) for m in httpx.get(server.url + "/models", timeout=5).json()["models"]] == [("c", "1")]
    assert server.proc.poll() is None
