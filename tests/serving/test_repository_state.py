"""The unloaded-model state the worker processes share (a directory of marker files)."""

from __future__ import annotations

import os
import time

from modelport.serving.repository import Availability


def test_workers_see_every_unload_and_load_at_once(tmp_path) -> None:
    worker_a, worker_b = Availability(tmp_path), Availability(tmp_path)
    for _ in range(200):  # back to back: a directory's mtime may not change between two of these
        worker_a.set_loaded("m/odd name", False)
        assert not worker_b.is_loaded("m/odd name") and worker_b.is_loaded("other")
        worker_a.set_loaded("m/odd name", True)
        assert worker_b.is_loaded("m/odd name")
    worker_b.set_loaded("other", False)
    assert worker_a.unloaded() == {"other"}


def test_a_coarse_clock_does_not_hide_a_change(tmp_path) -> None:
    """Two changes within one clock tick leave the directory's mtime unchanged (older kernels'
    timestamps are tick-grained): emulated by setting the mtime back after each change."""
    tick = time.time_ns()
    worker_a, worker_b = Availability(tmp_path), Availability(tmp_path)

    def change(loaded: bool) -> None:
        worker_a.set_loaded("m", loaded)
        os.utime(tmp_path, ns=(tick, tick))

    change(False)
    assert not worker_b.is_loaded("m")
    change(True)
    assert worker_b.is_loaded("m")


def test_one_process_keeps_it_in_memory() -> None:
    state = Availability()
    state.set_loaded("m", False)
    state.set_loaded("m", False)
    assert state.unloaded() == {"m"}
    state.set_loaded("m", True)
    assert state.is_loaded("m") and state.unloaded() == set()
