"""Results: markdown tables per round, the machine description, and bench/RESULTS.md."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Load
from bench.suite import Suite


@dataclass(frozen=True)
class Measurement:
    suite: str
    row: str
    connections: int
    load: Load | None
    error: str | None = None


@dataclass
class Round:
    number: int
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float] | None = None
    measurements: list[Measurement] = field(default_factory=list)


def machine() -> dict[str, str]:
    def first(path: str, key: str) -> str:
        try:
            with open(path) as f:
                return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), "?")
        except OSError:
            return "?"

    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        wrk = "?"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": first("/proc/cpuinfo", "model name"),
        "memory": f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else "?",
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "wrk": wrk.split(" Copyright")[0],
    }


def _fmt_load(avg: tuple[float, float, float] | None) -> str:
    return "?" if avg is None else " / ".join(f"{x:.2f}" for x in avg)


def table(suite: Suite, measurements: list[Measurement]) -> str:
    rows = [m for m in measurements if m.suite == suite.key]
    base = {m.connections: m.load.rps for m in rows if m.row == suite.baseline and m.load}
    lines = [
        f"| system | conns | req/s | p50 ms | p99 ms | non-2xx+err | ratio to {suite.baseline} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        if m.load is None:
            reason = (m.error or "failed").splitlines()[0][:100].replace("|", "/")
            lines.append(f"| {m.row} | {m.connections} | FAILED: {reason} | | | | |")
            continue
        b = base.get(m.connections)
        ratio = f"{m.load.rps / b:.2f}" if b else "n/a"
        lines.append(
            f"| {m.row} | {m.connections} | {m.load.rps:,.0f} | {m.load.p50_ms:.2f} | {m.load.p99_ms:.2f} "
            f"| {m.load.errors} | {ratio} |"
        )
    return "\n".join(lines)


def round_tables(suites: list[Suite], rnd: Round) -> str:
    parts = [
        f"### Round {rnd.number}",
        "",
        f"Load average (1/5/15 min) before: {_fmt_load(rnd.loadavg_before)}; after: {_fmt_load(rnd.loadavg_after)}",
        "",
    ]
    for suite in suites:
        parts += [f"**{suite.title}**", "", table(suite, rnd.measurements), ""]
    return "\n".join(parts)


def legend(suite: Suite, selected: set[str]) -> str:
    lines = [f"**{suite.title}**", ""]
    for system in suite.systems:
        if system.name not in selected:
            continue
        if system.venv:
            installed = ", ".join(system.venv.all_pins())
        else:
            installed = "the project's environment: " + ", ".join(f"{d}=={_version(d)}" for d in system.harness_dists)
        lines.append(f"- `{system.name}`: {system.about}. Installed: {installed}")
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def write_results(
    path: Path, *, command: str, date: str, method: str, suites: list[Suite], selected: set[str], rounds: list[Round]
) -> None:
    info = machine()
    parts = [
        "# modelport benchmark results",
        "",
        f"- date: {date}",
        f"- command: `{command}`",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
        "## Method",
        "",
        method,
        "",
        "## Systems",
        "",
        *(legend(s, selected) + "\n" for s in suites),
        "## Results",
        "",
        *(round_tables(suites, r) for r in rounds),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts).rstrip() + "\n")
