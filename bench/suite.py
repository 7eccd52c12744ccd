"""A suite is one table: a workload (model + request) and the systems that serve it.

A second table (e.g. image classification) is a new module defining its own
``prepare`` and systems, added to ``SUITES`` in ``bench/run.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.systems.base import System, Workload


@dataclass(frozen=True)
class Suite:
    key: str  # also a name for --only/--skip, and the work dir under bench/.work/
    title: str
    prepare: Callable[[Path], Workload]  # trains and saves the model into the given dir
    systems: tuple[System, ...]
    baseline: str = "modelport"  # the row the "ratio to" column divides by
