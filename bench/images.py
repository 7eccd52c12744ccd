"""Image classification benchmark: MobileNetV2 on real photos, images/s under 32 concurrent uploads.

``python -m bench.images [--duration S] [--rounds N] [--connections C] [--only a,b] [--wait-quiet S]``

Rows, measured one after the other on the same machine:

* ``modelport``: ``modelport serve`` with its defaults for an image model (one worker per core, one onnxruntime
  thread each, adaptive batching from the model's stored defaults), multipart uploads to ``/predict``;
* ``modelport-1w``: the same with ``--workers 1`` (one process, onnxruntime using every core);
* ``flask``: the tutorial's Flask app (``app.run`` dev server, one onnxruntime call per image, no batching);
* ``ort-batch``: onnxruntime in-process on already preprocessed images, best of batch sizes 1..32 and of one
  call on all cores vs. one call per core: the physical limit of the model on this CPU;
* ``ort-decode``: onnxruntime in-process including JPEG decoding and preprocessing of every image
  (``modelport.images.decode.preprocess_bytes``), all cores busy: the limit for anything that receives JPEGs.

HTTP rows are driven by wrk (C, so the load generator takes little CPU from the server) with a Lua script that
cycles through multipart bodies of three scikit-image photos (chelsea, coffee, astronaut), upscaled to 1800 px
on the long side and saved as JPEG q90 (300-400 KB, a typical upload). For the in-process rows, latency is per
model call (a batch), not per image. Each row also reports the CPU time the system used per image and how many
cores other processes kept busy meanwhile (``other load``): on a shared machine, compare rows with a low one.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelport.images.decode import preprocess_bytes
from modelport.images.pretrained import IMAGENET_PREPROCESS

WORK = Path(__file__).resolve().parent / ".work" / "images"
PHOTOS = ("chelsea", "coffee", "astronaut")
LONG_SIDE = 1800
MODEL = "bench-mobilenet"
CATS = range(281, 286)  # ImageNet's domestic cat classes
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
BUSY = 0.25  # cores used by other processes during a measurement that make it worth repeating
BOUNDARY = "modelportbench0b7c1e"

LUA = """\
local files = {files}
local requests = {{}}
local n = 0

init = function(args)
  for i, path in ipairs(files) do
    local f = assert(io.open(path, "rb"))
    local data = f:read("*a")
    f:close()
    local body = "--{boundary}\\r\\nContent-Disposition: form-data; name=\\"image\\"; filename=\\"photo.jpg\\"\\r\\n"
      .. "Content-Type: image/jpeg\\r\\n\\r\\n" .. data .. "\\r\\n--{boundary}--\\r\\n"
    requests[i] = wrk.format("POST", nil, {{["Content-Type"] = "multipart/form-data; boundary={boundary}"}}, body)
  end
end

request = function()
  n = n + 1
  return requests[(n % #requests) + 1]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests":%d,"duration_us":%d,"errors":%d,"p50_us":%f,"p99_us":%f}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

FLASK_APP = '''\
"""The tutorial's Flask image classifier, with onnxruntime instead of torch: one image per request."""

import os
import sys

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request
from PIL import Image

app = Flask(__name__)
session = ort.InferenceSession(os.environ["MODEL_PATH"], providers=["CPUExecutionProvider"])
labels = open(os.environ["LABELS_PATH"]).read().splitlines()
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def transform(img):
    # transforms.Resize(256), CenterCrop(224), ToTensor(), Normalize(mean, std)
    w, h = img.size
    scale = 256 / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) / 255 - MEAN) / STD
    return x.transpose(2, 0, 1)[None]


@app.route("/predict", methods=["POST"])
def predict():
    if "image" not in request.files:
        return jsonify({"error": "No image provided"}), 400
    image = Image.open(request.files["image"].stream).convert("RGB")
    logits = session.run(None, {"input": transform(image)})[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    top = probs.argsort()[::-1][:3]
    return jsonify({"prediction": [{"class": labels[i], "confidence": float(probs[i])} for i in top]})


if __name__ == "__main__":
    app.run(host=sys.argv[1], port=int(sys.argv[2]))
'''


# -- inputs ------------------------------------------------------------------------------------


def photos(work: Path) -> list[Path]:
    """The JPEG uploads, written once."""
    import skimage.data
    from PIL import Image

    paths = []
    for name in PHOTOS:
        path = work / f"{name}-{LONG_SIDE}.jpg"
        if not path.exists():
            img = Image.fromarray(getattr(skimage.data, name)())
            scale = LONG_SIDE / max(img.size)
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
            img.save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def model_files(work: Path) -> tuple[Path, Path]:
    """MobileNetV2 exported to ONNX (in a subprocess: torch stays out of this process) and its labels."""
    onnx_path, labels = work / "mobilenet_v2.onnx", work / "labels.txt"
    if not onnx_path.exists():
        print("[images] exporting MobileNetV2 to ONNX (torch)", flush=True)
        code = f"from modelport.images.pretrained import export_onnx; export_onnx(None, {str(onnx_path)!r})"
        subprocess.run([sys.executable, "-c", code], check=True)
    if not labels.exists():
        from modelport.images.pretrained import load_labels

        labels.write_text("\n".join(load_labels()) + "\n")
    return onnx_path, labels


def register(work: Path, onnx_path: Path, labels: Path) -> dict[str, str]:
    """A store of its own holding the model as an image classifier; returns the env that points at it."""
    env = {"MODELPORT_HOME": str(work / "home")}
    probe = subprocess.run(
        [sys.executable, "-m", "modelport", "models", "show", MODEL], env={**os.environ, **env}, capture_output=True
    )
    if probe.returncode != 0:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "modelport",
                "import",
                MODEL,
                str(onnx_path),
                "--task",
                "image-classification",
                "--labels",
                str(labels),
                "--preprocess",
                "imagenet",
            ],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    return env


# -- HTTP systems ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- CPU accounting: this machine may be shared, so every row says how much CPU others took meanwhile ------------

_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU-seconds spent by all processes since boot (everything but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / _TICK


def group_cpu(pgid: int) -> float:
    """CPU-seconds used so far by the live processes of a process group (a server and its workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (11), stime (12)
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def wait_quiet(max_wait: float, threshold: float = 0.2) -> None:
    """Wait (up to ``max_wait`` s) until other processes use less than ``threshold`` cores for 2 s in a row."""
    deadline, quiet = time.monotonic() + max_wait, 0
    while time.monotonic() < deadline and quiet < 2:
        before = machine_busy()
        time.sleep(1)
        quiet = quiet + 1 if machine_busy() - before < threshold else 0
    if max_wait > 0 and quiet < 2:
        print("[images] the machine is still busy; measuring anyway", flush=True)


class CpuMeter:
    """CPU used by the measured system vs. by everything else on the machine, over one measurement."""

    def __init__(self, own: Callable[[], float]) -> None:
        self.own = own

    def __enter__(self) -> CpuMeter:
        self.t0, self.m0, self.o0 = time.perf_counter(), machine_busy(), self.own()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.used = self.own() - self.o0
        self.others = max(0.0, machine_busy() - self.m0 - self.used - getattr(self, "exclude", 0.0))

    def fields(self, images: float) -> dict:
        return {"cpu_ms_per_image": 1000 * self.used / max(images, 1), "other_load": self.others / self.seconds}


@contextmanager
def server(argv: list[str], env: dict[str, str], log: Path, url: str, check: Path) -> Iterator[int]:
    """Start ``argv`` in its own process group, wait until it classifies ``check`` as a cat, always stop it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=log.parent,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:4]} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                top = upload(url, check.read_bytes())["prediction"][0]["class"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[:4]} not ready after 120 s:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        from modelport.images.pretrained import load_labels

        if load_labels().index(top) not in CATS:
            raise RuntimeError(f"{argv[:4]} says the cat photo is {top!r}")
        yield proc.pid  # = its process group
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def upload(url: str, data: bytes) -> dict:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def wrk(url: str, script: Path, connections: int, duration: float, warmup: float, pgid: int) -> dict:
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk")

    def run(seconds: float) -> str:
        argv = [
            exe,
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url,
        ]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout

    if warmup > 0:
        run(warmup)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with CpuMeter(lambda: group_cpu(pgid)) as meter:
        out = run(duration)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter.exclude = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)  # wrk itself
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    r = json.loads(line.removeprefix("BENCH "))
    return {
        "images_per_s": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "errors": r["errors"],
        **meter.fields(r["requests"]),
    }


def bench_http(
    name: str,
    argv: list[str],
    env: dict[str, str],
    url: str,
    work: Path,
    files: list[Path],
    connections: int,
    duration: float,
    warmup: float,
) -> dict:
    script = work / "upload.lua"
    script.write_text(LUA.format(files="{" + ", ".join(json.dumps(str(f)) for f in files) + "}", boundary=BOUNDARY))
    with server(argv, env, work / f"{name}.log", url, files[0]) as pgid:
        return {"system": name, **wrk(url, script, connections, duration, warmup, pgid)}


# -- in-process onnxruntime ----------------------------------------------------------------------


def _session(onnx_path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


def _lanes(step: Callable[[int], int], lanes: int, seconds: float) -> dict:
    """Run ``step(lane)`` (returns images done) in ``lanes`` threads for ``seconds``: images/s, call latency."""
    for lane in range(lanes):
        step(lane)  # warm-up: allocations, thread pool start
    deadline = time.perf_counter() + seconds
    times: list[float] = []
    images = [0] * lanes

    def loop(lane: int) -> None:
        while (now := time.perf_counter()) < deadline:
            images[lane] += step(lane)
            times.append(time.perf_counter() - now)

    with CpuMeter(time.process_time) as meter, ThreadPoolExecutor(lanes) as pool:
        start = time.perf_counter()
        list(pool.map(loop, range(lanes)))
        elapsed = time.perf_counter() - start
    return {
        "images_per_s": sum(images) / elapsed,
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
        "errors": 0,
        **meter.fields(sum(images)),
    }


def _configs() -> list[tuple[int, int]]:
    """(threads calling onnxruntime, onnxruntime threads per call): one call using every core, or one per core."""
    cores = len(os.sched_getaffinity(0))
    return [(1, cores), (cores, 1)] if cores > 1 else [(1, 1)]


def bench_ort(onnx_path: Path, files: list[Path], seconds: float) -> tuple[dict, int]:
    """onnxruntime alone on preprocessed images: every batch size and thread layout; -> the best row, its batch."""
    xs = [preprocess_bytes(f.read_bytes(), IMAGENET_PREPROCESS) for f in files]
    results = {}
    for lanes, threads in _configs():
        sess = _session(onnx_path, threads)
        for bs in BATCH_SIZES:
            batch = np.stack([xs[i % len(xs)] for i in range(bs)])
            row = _lanes(lambda _lane, batch=batch, sess=sess: len(sess.run(None, {"input": batch})[0]), lanes, seconds)
            results[(bs, lanes, threads)] = row
            print(
                f"[images]   ort batch {bs:>2}, {lanes} x {threads} threads: {row['images_per_s']:.1f} images/s",
                flush=True,
            )
    bs, lanes, threads = max(results, key=lambda key: results[key]["images_per_s"])
    return {"system": f"ort-batch (batch {bs}, {lanes}x{threads} threads)", **results[(bs, lanes, threads)]}, bs


def _decode_then_run(sess, data: list[bytes], bs: int) -> Callable[[int], int]:
    """Each calling thread decodes a batch, then runs it."""
    counter = itertools.count()

    def step(_lane: int) -> int:
        xs = [preprocess_bytes(data[next(counter) % len(data)], IMAGENET_PREPROCESS) for _ in range(bs)]
        return len(sess.run(None, {"input": np.stack(xs)})[0])

    return step


def _pipelined(sess, data: list[bytes], bs: int, pool: ThreadPoolExecutor) -> Callable[[int], int]:
    """One calling thread; a pool decodes the next batch while the model runs this one."""
    counter = itertools.count()

    def submit() -> list:
        return [pool.submit(preprocess_bytes, data[next(counter) % len(data)], IMAGENET_PREPROCESS) for _ in range(bs)]

    pending = [submit()]

    def step(_lane: int) -> int:
        futures, pending[0] = pending[0], submit()
        return len(sess.run(None, {"input": np.stack([f.result() for f in futures])})[0])

    return step


def bench_ort_decode(onnx_path: Path, files: list[Path], seconds: float) -> dict:
    """onnxruntime plus JPEG decoding and preprocessing of every image, every core busy (onnxruntime and Pillow
    release the GIL): the best of batch sizes 1/4/8 and both thread layouts."""
    data = [f.read_bytes() for f in files]
    results = {}
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        for lanes, threads in _configs():
            sess = _session(onnx_path, threads)
            for bs in (1, 4, 8):
                step = _pipelined(sess, data, bs, pool) if lanes == 1 else _decode_then_run(sess, data, bs)
                row = results[(bs, lanes, threads)] = _lanes(step, lanes, seconds)
                print(
                    f"[images]   ort+decode batch {bs:>2}, {lanes} x {threads} threads: "
                    f"{row['images_per_s']:.1f} images/s",
                    flush=True,
                )
    bs, lanes, threads = max(results, key=lambda key: results[key]["images_per_s"])
    return {"system": f"ort-decode (batch {bs}, {lanes}x{threads} threads)", **results[(bs, lanes, threads)]}


# -- the run -----------------------------------------------------------------------------------


SYSTEMS = ("modelport", "modelport-1w", "flask", "ort-batch", "ort-decode")


@dataclass(frozen=True)
class Setup:
    files: list[Path]  # the JPEG uploads
    onnx_path: Path
    labels: Path
    env: dict[str, str]  # points modelport at the store holding the model
    connections: int
    duration: float
    warmup: float


def measure(name: str, setup: Setup) -> dict:
    """One row: start the system if it is a server, load it, stop it."""
    if name in ("ort-batch", "ort-decode"):
        if name == "ort-batch":
            return bench_ort(setup.onnx_path, setup.files, max(1.0, setup.duration / 4))[0]
        return bench_ort_decode(setup.onnx_path, setup.files, max(1.0, setup.duration / 2))
    port = free_port()
    if name == "flask":
        argv = [sys.executable, "flask_app.py", "127.0.0.1", str(port)]
        env = {"MODEL_PATH": str(setup.onnx_path), "LABELS_PATH": str(setup.labels)}
    else:
        argv = [sys.executable, "-m", "modelport", "serve", MODEL, "--port", str(port)]
        argv += ["--workers", "1"] if name == "modelport-1w" else []  # plain "modelport": its defaults
        env = setup.env
    url = f"http://127.0.0.1:{port}/predict"
    return bench_http(name, argv, env, url, WORK, setup.files, setup.connections, setup.duration, setup.warmup)


def run_image_bench(
    duration: float = 10.0,
    rounds: int = 1,
    connections: int = 32,
    warmup: float = 3.0,
    only: set[str] | None = None,
    wait_quiet_s: float = 0.0,
) -> list[dict]:
    """Every system (or those in ``only``), ``rounds`` times.

    Rows: {round, system, images_per_s, p50_ms, p99_ms, errors, cpu_ms_per_image, other_load}; the last two are
    the CPU time the system used per image and the cores other processes kept busy meanwhile (0 on a quiet machine).
    """
    WORK.mkdir(parents=True, exist_ok=True)
    files = photos(WORK)
    onnx_path, labels = model_files(WORK)
    setup = Setup(files, onnx_path, labels, register(WORK, onnx_path, labels), connections, duration, warmup)
    print("[images] uploads: " + ", ".join(f"{f.name} {f.stat().st_size / 1e3:.0f} KB" for f in files), flush=True)
    (WORK / "flask_app.py").write_text(FLASK_APP)
    rows = []
    for r in range(1, rounds + 1):
        for name in [name for name in SYSTEMS if only is None or name in only]:
            # On a shared machine: measure again (within the wait budget) while other processes took CPU
            # during the run, and keep the least disturbed measurement.
            deadline, best = time.monotonic() + wait_quiet_s, None
            while True:
                wait_quiet(max(0.0, deadline - time.monotonic()))
                print(f"[images] round {r}: {name}", flush=True)
                row = measure(name, setup)
                best = row if best is None or row["other_load"] < best["other_load"] else best
                if best["other_load"] <= BUSY or time.monotonic() >= deadline:
                    break
                print(f"[images]   other processes used {row['other_load']:.2f} cores meanwhile: again", flush=True)
            rows.append({"round": r, **best})
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| round | system | images/s | p50 ms | p99 ms | errors | CPU ms/image | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['round']} | {r['system']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
        f"{r['errors']} | {r['cpu_ms_per_image']:.1f} | {r['other_load']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.images",
        description=textwrap.dedent(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement (default 3)")
    p.add_argument("--rounds", type=int, default=1, help="repeat everything (default 1)")
    p.add_argument("--connections", type=int, default=32, help="concurrent uploads (default 32)")
    p.add_argument("--only", default="", help=f"comma-separated systems (default all: {', '.join(SYSTEMS)})")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="shared machine: per row, wait up to S seconds for idle CPUs, re-measuring while others used CPU",
    )
    args = p.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()} or None
    if only and only - set(SYSTEMS):
        p.error(f"unknown system(s) {', '.join(sorted(only - set(SYSTEMS)))}; known: {', '.join(SYSTEMS)}")
    rows = run_image_bench(args.duration, args.rounds, args.connections, args.warmup, only, args.wait_quiet)
    print(table(rows))


if __name__ == "__main__":
    main()
