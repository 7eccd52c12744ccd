"""Benchmark modelport against other serving stacks: ``python -m bench.run``.

Trains the model(s), builds each peer's venv (cached in bench/.venvs), then per
round starts every system, checks its answer, drives it with wrk and stops it;
prints a table per round and writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench import envs
from bench.check import post_json, verify, wait_ready
from bench.deployed import DEPLOYED
from bench.errors import BenchError
from bench.load import check_wrk, write_script, wrk
from bench.procs import Server, free_port
from bench.report import Measurement, Round, round_tables, write_results
from bench.suite import Suite
from bench.systems.base import Context, Row, System, Workload
from bench.tabular import TABULAR

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
SUITES: list[Suite] = [TABULAR, DEPLOYED]  # the extension point: a second table is one more Suite here


@dataclass(frozen=True)
class Options:
    connections: list[int]
    duration: float
    warmup: float
    rounds: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", default="", help="comma-separated systems/rows/suites to run (default: all)")
    p.add_argument("--skip", default="", help="comma-separated systems/rows/suites to leave out")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 10, --quick 2)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up before each measurement (default 3, --quick 1)")
    p.add_argument(
        "--connections", type=_int_list, default=[32, 64], help="comma-separated wrk concurrencies (default 32,64)"
    )
    p.add_argument("--rounds", type=int, help="repeat the whole round to show noise (default 2, --quick 1)")
    p.add_argument("--quick", action="store_true", help="short smoke run; writes bench/.work/RESULTS-quick.md")
    p.add_argument("--output", type=Path, help="results file (default bench/RESULTS.md)")
    return p.parse_args(argv)


def _int_list(arg: str) -> list[int]:
    try:
        values = [int(v) for v in arg.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {arg!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {arg!r}")
    return values


def _names(arg: str) -> set[str]:
    return {n.strip() for n in arg.split(",") if n.strip()}


def _keys(suite: Suite, system: System, row: Row) -> set[str]:
    return {suite.key, system.name, row.name}


def select(only: set[str], skip: set[str]) -> dict[str, list[tuple[System, list[Row]]]]:
    """Which rows of which systems run, by suite key, system name or row name."""
    known = {k for s in SUITES for x in s.systems for r in x.rows for k in _keys(s, x, r)}
    unknown = (only | skip) - known
    if unknown:
        raise BenchError(f"unknown name(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    chosen: dict[str, list[tuple[System, list[Row]]]] = {}
    for suite in SUITES:
        for system in suite.systems:
            keys = [(r, _keys(suite, system, r)) for r in system.rows]
            rows = [r for r, k in keys if (not only or k & only) and not k & skip]
            if rows:
                chosen.setdefault(suite.key, []).append((system, rows))
    if not chosen:
        raise BenchError("--only/--skip left nothing to run")
    return chosen


def measure(
    suite: Suite, system: System, rows: list[Row], workload: Workload, opts: Options, rnd: int, out: list[Measurement]
) -> None:
    """Start the system, check every row's answer, time each row at each concurrency, stop it."""
    ctx = Context(python=system.python(), work=WORK / suite.key / system.name, workload=workload)
    ctx.work.mkdir(parents=True, exist_ok=True)
    system.prepare(ctx)
    port = free_port()
    launch = system.launch(ctx, port)
    log = WORK / suite.key / "logs" / f"{system.name}-round{rnd}.log"
    started = time.monotonic()
    with Server(system.name, launch, log) as server:
        published = f"http://127.0.0.1:{port}"
        wait_ready(server, published + rows[0].path, rows[0], workload, system.startup_timeout)
        bases = {row.name: system.base_url(ctx, port, row.via) for row in rows}
        for row in rows:
            verify(row, workload, post_json(bases[row.name] + row.path, row.body(workload))[1])
        print(f"  {system.name}: up and correct after {time.monotonic() - started:.1f}s", flush=True)
        for row in rows:
            base = bases[row.name]
            script = write_script(row.body(workload), WORK / suite.key / "lua" / f"{row.name}.lua")
            for c in opts.connections:
                if opts.warmup > 0:
                    wrk(base + row.path, script, c, opts.warmup)
                load = wrk(base + row.path, script, c, opts.duration)
                print(
                    f"  {row.name:<14} c={c:<3} {load.rps:>9,.0f} req/s  p50 {load.p50_ms:7.2f} ms  "
                    f"p99 {load.p99_ms:7.2f} ms  errors {load.errors}",
                    flush=True,
                )
                out.append(Measurement(suite.key, row.name, c, load))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # same cleanup path as Ctrl-C: context managers stop the servers


IMAGES = "images"  # the image-classification table: bench/images.py, run after the tables above


def run(args: argparse.Namespace) -> int:
    """Both tables, one command: the serving stacks (SUITES), then image classification."""
    quick = args.quick
    opts = Options(
        connections=sorted(args.connections),
        duration=args.duration or (2.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 3.0),
        rounds=args.rounds or (1 if quick else 2),
    )
    output = args.output or (WORK / "RESULTS-quick.md" if quick else BENCH / "RESULTS.md")
    requested, skip = _names(args.only), _names(args.skip)
    images = IMAGES not in skip and (not requested or IMAGES in requested)
    only = requested - {IMAGES}
    status = run_tables(args, opts, only, skip - {IMAGES}, output) if not requested or only else 0
    if images:
        from bench.images import run_image_bench, table

        rows = run_image_bench(opts.duration, opts.rounds, warmup=opts.warmup)
        section = ("\n## Image classification: MobileNetV2 (ONNX), 32 concurrent JPEG uploads\n\n"
                   "See `python -m bench.images --help` for what each row measures.\n\n" + table(rows) + "\n")
        print(section, flush=True)
        with output.open("a" if output.exists() and (not requested or only) else "w") as f:
            f.write(section)
    return status


def run_tables(args: argparse.Namespace, opts: Options, only: set[str], skip: set[str], output: Path) -> int:
    chosen = select(only, skip)
    suites = [s for s in SUITES if s.key in chosen]

    # Everything that can fail for a reason the user must fix, before minutes of work.
    check_wrk()
    for pairs in chosen.values():
        for system, _ in pairs:
            system.preflight()

    workloads = {s.key: s.prepare(WORK / s.key) for s in suites}
    setup_errors: dict[str, str] = {}
    started = time.monotonic()
    for pairs in chosen.values():
        for system, _ in pairs:
            if system.venv:
                try:
                    envs.ensure(system.venv)
                except BenchError as e:
                    setup_errors[system.name] = str(e)
                    print(f"error: {e}", file=sys.stderr)
    print(f"[venv] all environments ready in {time.monotonic() - started:.0f}s", flush=True)

    command = "python -m bench.run" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    method = (
        f"`wrk -t2 -c{{{','.join(map(str, opts.connections))}}} -d{opts.duration:g}s --latency` with a Lua script "
        "that POSTs the row's JSON body (Content-Type: application/json, one row per request); a "
        f"{opts.warmup:g} s warm-up at the same concurrency precedes every measurement. Each round starts every "
        "server afresh on a free 127.0.0.1 port, checks its prediction against `model.predict` (within 1e-6; "
        "the constant asgi-limit row is checked for HTTP 200 + JSON only), measures, and stops it. "
        "non-2xx+err = HTTP responses >= 400 plus wrk socket errors (connect/read/write/timeout; wrk's 2 s "
        "timeout). wrk runs on the same 2 cores as the servers, and the machine may carry other work (see the "
        "load averages per round): compare ratios within a round rather than absolute numbers across machines."
    )
    selected = {system.name for pairs in chosen.values() for system, _ in pairs}
    rounds: list[Round] = []
    failed = False
    for n in range(1, opts.rounds + 1):
        rnd = Round(n, os.getloadavg())
        print(f"\n== round {n}/{opts.rounds}", flush=True)
        for suite in suites:
            for system, rows in chosen[suite.key]:
                try:
                    if system.name in setup_errors:
                        raise BenchError(setup_errors[system.name])
                    measure(suite, system, rows, workloads[suite.key], opts, n, rnd.measurements)
                except BenchError as e:
                    failed = True
                    print(f"  {system.name}: FAILED: {e}", file=sys.stderr, flush=True)
                    done = {(m.row, m.connections) for m in rnd.measurements}
                    rnd.measurements += [
                        Measurement(suite.key, r.name, c, None, str(e))
                        for r in rows
                        for c in opts.connections
                        if (r.name, c) not in done
                    ]
        rnd.loadavg_after = os.getloadavg()
        rounds.append(rnd)
        print("\n" + round_tables(suites, rnd), flush=True)
        # Written after every round, so an interrupted run keeps what it measured.
        write_results(
            output, command=command, date=date, method=method, suites=suites, selected=selected, rounds=rounds
        )
    print(f"results written to {output}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        return run(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; all servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
