"""When each stage of a server's start happened: the ``Startup:`` line a server logs once it is ready
(serving.startup), and its parsing (``modelport run`` reads it from a replica's log). Standard library
only: the command-line side imports this too."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

# After "process" (the server's main process), in order; "worker" only when it runs several.
STAGES = ("worker", "imports", "loaded", "warmup", "ready")
LINE = re.compile(r"Startup: process=(?P<process>[0-9.]+)(?P<rest>(?: [a-z]+=\+[0-9.]+s)+)")


def process_start(pid: int | str = "self") -> float:
    """When process ``pid`` started (seconds since the epoch, to the kernel's 10 ms tick; now if unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime: ticks after boot
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


class Timings:
    """The stages of one server process's start, as seconds since the epoch."""

    def __init__(self, process: float, worker: float | None = None) -> None:
        self.process = process
        self.marks: dict[str, float] = {"worker": worker} if worker is not None else {}

    def mark(self, stage: str) -> None:
        self.marks[stage] = time.time()

    def line(self) -> str:
        return f"Startup: process={self.process:.3f} " + " ".join(
            f"{k}=+{v - self.process:.3f}s" for k, v in self.marks.items())


def parse_line(text: str) -> dict[str, float] | None:
    """The first ``Startup:`` line in ``text`` → {stage: seconds since the epoch}, "process" first."""
    found = LINE.search(text)
    if found is None:
        return None
    process = float(found["process"])
    stages = {"process": process}
    for item in found["rest"].split():
        key, _, value = item.partition("=")
        stages[key] = process + float(value.strip("+s"))
    return stages
