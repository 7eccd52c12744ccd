"""Cold start: ``modelport run`` with the image present → the first answered prediction, median of N runs.

    python -m bench.coldstart                       # 5 runs of the bench's linear model
    python -m bench.coldstart --runs 9 --image modelport/bench-linear:1 --output bench/RESULTS-coldstart.md
    python -m bench.coldstart --against /work/main/src:modelport/bench-linear:old   # before/after, interleaved
    python -m bench.coldstart --runtime onnx        # the same model's onnxruntime image (modelport/bench-linear:1-onnx)
    python -m bench.coldstart --tutorial            # beside the tutorial's Flask image run its way, interleaved

The model is the tabular table's (``LinearRegression`` on ``make_regression(1000, 8)``), saved to a store under
``bench/.work/coldstart/`` and built once on ``MODELPORT_BENCH_BASE_IMAGE`` (default ``python:3.11-slim``); the
gateway uses ``MODELPORT_PROXY_IMAGE`` (default ``haproxy:2.6``). ``--image`` times an image built elsewhere
(e.g. by another modelport), with the modelport on this PYTHONPATH running the command; ``--tag`` builds the
bench model's image under another tag (beside another tree's); ``--runtime onnx`` times its onnxruntime image. Each run starts
``python -m modelport run IMAGE`` as a user would, and times from its launch until a prediction this harness
sends right after the command returns is answered; the service is removed between runs (not timed). The
breakdown is the one ``run`` prints (its stages since the command's start), kept from each run.
``--against SRC:IMAGE`` also times IMAGE with the modelport of source tree SRC running the command (another
version's, e.g. before a change), alternating run by run so both see the same machine load. ``--tutorial``
also times the tutorial's single-stage Flask image (bench.sizes, the same model pickled; built when missing) run
the tutorial's way, ``docker run -d -p PORT:5000 IMAGE``, from that command's launch until a prediction is
answered (polled every 20 ms: it has no readiness to wait for), alternating with the other runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from bench.procs import free_port
from bench.report import machine

WORK = Path(__file__).resolve().parent / ".work" / "coldstart"
MODEL = "bench-linear"


def prepare(base_image: str, runtime: str = "native", tag: str | None = None) -> str:
    """The bench model's image (``runtime``'s; as ``tag``, default modelport's), built when missing or stale → its tag."""
    import modelport
    from bench.tabular import train_linear
    from modelport.container.build import build_image, default_tag, stale_image
    from modelport.errors import NotFoundError

    os.environ["MODELPORT_HOME"] = str(WORK / "home")
    store = modelport.get_store()
    try:
        store.list_versions(MODEL)
    except NotFoundError:
        import pickle

        with train_linear(WORK / "tabular").model_path.open("rb") as f:
            modelport.save_model(pickle.load(f), MODEL, store=store)
    mv = store.resolve(f"{MODEL}:1")
    image = tag or default_tag(mv, runtime)
    if why := stale_image(image, mv.digest, runtime):
        print(f"Building {image}: {why}")
        build_image(mv.ref, tag=image, base_image=base_image, store=store, runtime=runtime, progress=print)
    return image


def one_run(image: str, env: dict[str, str]) -> tuple[float, str]:
    """→ (seconds from launching ``modelport run`` to an answered prediction, the breakdown it printed)."""
    name, port = f"bench-cold-{uuid.uuid4().hex[:6]}", free_port()
    command = [sys.executable, "-m", "modelport", "run", image, "--name", name, "--port", str(port)]
    started = time.perf_counter()
    try:
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"`{' '.join(command)}` failed:\n{out.stdout}{out.stderr}")
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": [0.0] * 8}, timeout=10)
        answer.raise_for_status()
        seconds = time.perf_counter() - started
    finally:
        subprocess.run([sys.executable, "-m", "modelport", "rm", "--force", name], env=env, capture_output=True)
    breakdown = next((ln.strip() for ln in out.stdout.splitlines() if ln.strip().startswith("Cold start:")), "(none printed)")
    return seconds, breakdown


def tutorial_run(image: str, env: dict[str, str]) -> tuple[float, str]:
    """→ (seconds from launching ``docker run`` of the tutorial's image to its first answered prediction, "")."""
    name, port = f"bench-cold-{uuid.uuid4().hex[:6]}", free_port()
    command = ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:5000", image]
    started = time.perf_counter()
    try:
        subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
        deadline = started + 120
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"features": [0.0] * 8}, timeout=5)
                if r.status_code == 200:
                    return time.perf_counter() - started, ""
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                raise SystemExit(f"{image} answered no prediction within 120 s")
            time.sleep(0.02)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--image", help="time this image (default: the bench model's, built when missing)")
    p.add_argument("--runtime", choices=("native", "onnx"), default="native", help="the bench model's image with this runtime")
    p.add_argument("--tag", help="build the bench model's image under this tag (default modelport/bench-linear:1[-onnx])")
    p.add_argument("--output", type=Path, help="also write the results (markdown) to this file")
    p.add_argument("--against", metavar="SRC:IMAGE", help="also time IMAGE run by the modelport in source tree SRC, alternating")
    p.add_argument("--tutorial", action="store_true", help="also time the tutorial's Flask image, `docker run` its way, alternating")
    args = p.parse_args(argv)
    base = os.environ.get("MODELPORT_BENCH_BASE_IMAGE", "python:3.11-slim")
    image = args.image or prepare(base, args.runtime, args.tag)
    env = {**os.environ, "MODELPORT_HOME": str(WORK / "home"),
           "MODELPORT_PROXY_IMAGE": os.environ.get("MODELPORT_PROXY_IMAGE", "haproxy:2.6")}
    configs = [("this", image, env)]
    if args.against:
        src, _, other = args.against.partition(":")
        configs.append((src, other, {**env, "PYTHONPATH": src}))
    if args.tutorial:
        from bench.sizes import WORK as SIZES_WORK
        from bench.sizes import tutorial_linear
        from modelport.container import engine

        SIZES_WORK.mkdir(parents=True, exist_ok=True)
        tutorial = "modelport-bench/size-tutorial:1"
        if not engine.image_exists(tutorial):
            tutorial_linear(base)
        configs.append(("tutorial", tutorial, env))
    rows: dict[str, list[tuple[float, float, str]]] = {name: [] for name, _, _ in configs}
    for i in range(args.runs):
        for name, img, run_env in configs:
            load = os.getloadavg()[0]
            seconds, breakdown = (tutorial_run if name == "tutorial" else one_run)(img, run_env)
            rows[name].append((seconds, load, breakdown))
            print(f"{name} run {i + 1}: {seconds:.2f}s (load {load:.2f})  {breakdown}", flush=True)
    info = machine()
    lines = ["# Cold start: `modelport run` → first answered prediction", "",
             f"`{' '.join(['python -m bench.coldstart', *(argv if argv is not None else sys.argv[1:])])}`, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {info['nproc']} CPUs ({info['CPU']}), "
             f"gateway image {env['MODELPORT_PROXY_IMAGE']}", ""]
    ours = statistics.median(s for s, _, _ in rows["this"])
    for (name, img, _), runs in zip(configs, rows.values(), strict=True):
        times = [s for s, _, _ in runs]
        what = ("the tutorial's Flask image, `docker run -d -p PORT:5000`" if name == "tutorial"
                else f"modelport: {'this tree' if name == 'this' else name}")
        ratio = "" if name == "this" else f", {statistics.median(times) / ours:.2f}× this tree's"
        lines += [f"## {img} ({what})", "",
                  f"**Median of {len(runs)}: {statistics.median(times):.2f}s{ratio}** (min {min(times):.2f}s, max {max(times):.2f}s)", "",
                  "| run | seconds | load (1 min) | breakdown (`run`'s, since the command started) |", "|---|---|---|---|",
                  *[f"| {i + 1} | {s:.2f} | {load:.2f} | {b} |" for i, (s, load, b) in enumerate(runs)], ""]
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
