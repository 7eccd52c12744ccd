"""Image sizes: modelport's model images beside the tutorial's single-stage image, on the same base image.

``python -m bench.sizes [--rounds N] [--output PATH] [--base-image IMAGE]``  (default: 2 rounds, bench/RESULTS.md)

Rows, built one after the other in each round (interleaved), each on ``--base-image`` (default
``MODELPORT_BENCH_BASE_IMAGE``, else ``python:3.11-slim``):

* ``modelport-linear``: ``modelport build`` of a scikit-learn ``LinearRegression`` (the tabular table's model:
  ``make_regression(n_samples=1000, n_features=8, random_state=0)``), native runtime;
* ``modelport-linear-onnx``: the same model, ``modelport build --runtime onnx`` (converted to ONNX, served by
  onnxruntime without scikit-learn and SciPy);
* ``modelport-mobilenet``: ``modelport build`` of MobileNetV2 (ONNX) registered as an image classifier (bench/images.py);
* ``tutorial-linear``: the tutorial's way: one stage, ``pip install --no-cache-dir flask scikit-learn numpy`` into a
  venv, the pickled model and a Flask app copied in. The build has no network, so its wheels are copied into the
  image first (from modelport's host wheelhouse, the versions the host has): that layer is left out of its size
  (with the network it would not exist) and shown beside it.

Each row: the image's size as the engine reports it (MB = 10^6 bytes), its base image's, and the ten largest
entries of its site-packages. For modelport's images also what their server loads to serve the model (its
``--check`` start, traced in the image: the shared libraries mapped from site-packages and the bytecode of the
modules imported): no cut of unused files can bring an image below its base plus that. Round 2 rebuilds with the engine's layer cache: the same context gives the same size.
The section replaces the ``## Image sizes`` section of ``--output`` (or is appended)."""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work" / "sizes"
SECTION = "## Image sizes"
TUTORIAL_PACKAGES = ("flask==3.1.3", f"scikit-learn=={metadata.version('scikit-learn')}", f"numpy=={metadata.version('numpy')}")
SITE = {"modelport": "/opt/venv/lib/python3.11/site-packages", "tutorial": "/opt/venv/lib/python3.11/site-packages"}

TUTORIAL_APP = '''\
import pickle

import numpy as np
from flask import Flask, jsonify, request

app = Flask(__name__)
model = pickle.load(open("model.pkl", "rb"))


@app.route("/predict", methods=["POST"])
def predict():
    features = np.array(request.json["features"]).reshape(1, -1)
    return jsonify({"prediction": float(model.predict(features)[0])})


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
'''

TUTORIAL_DOCKERFILE = """\
FROM {base}
WORKDIR /app
# Only because the build has no network: the tutorial's pip install downloads these.
COPY wheels /wheels
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels {packages}
COPY model.pkl app.py ./
EXPOSE 5000
CMD ["/opt/venv/bin/python", "app.py"]
"""


@dataclass
class Built:
    row: str
    round: int
    mb: float
    note: str
    seconds: float
    largest: list[tuple[str, float]]
    loaded: tuple[float, float] | None = None  # MB the server maps (shared libraries) and imports (bytecode)


def _linear_model():
    from sklearn.datasets import make_regression
    from sklearn.linear_model import LinearRegression

    x, y = make_regression(n_samples=1000, n_features=8, random_state=0)
    return LinearRegression().fit(x, y)


def _store(home: Path):
    os.environ["MODELPORT_HOME"] = str(home)
    os.environ.pop("MODELPORT_DB_URL", None)
    from modelport.store import ModelStore

    return ModelStore()


def modelport_linear(base: str, runtime: str = "native") -> tuple[str, str]:
    import modelport
    from modelport.container.build import build_image
    from modelport.errors import NotFoundError

    store = _store(WORK / "home")
    try:
        try:
            store.resolve("bench-linear:1")
        except NotFoundError:
            modelport.save_model(_linear_model(), "bench-linear", store=store)
        tag = "modelport-bench/size-linear:1" + ("" if runtime == "native" else f"-{runtime}")
        return build_image("bench-linear:1", tag=tag, base_image=base, store=store, runtime=runtime).tag, ""
    finally:
        store.close()


def modelport_linear_onnx(base: str) -> tuple[str, str]:
    return modelport_linear(base, runtime="onnx")


def modelport_mobilenet(base: str) -> tuple[str, str]:
    from bench.images import MODEL, model_files, register
    from bench.images import WORK as IMAGES_WORK
    from modelport.container.build import build_image

    IMAGES_WORK.mkdir(parents=True, exist_ok=True)
    env = register(IMAGES_WORK, *model_files(IMAGES_WORK))
    store = _store(Path(env["MODELPORT_HOME"]))
    try:
        return build_image(f"{MODEL}:1", tag="modelport-bench/size-mobilenet:1", base_image=base, store=store).tag, ""
    finally:
        store.close()


def tutorial_linear(base: str) -> tuple[str, str]:
    from modelport.container import engine
    from modelport.container.wheelhouse import cached_wheelhouse

    tag = "modelport-bench/size-tutorial:1"
    ctx = Path(tempfile.mkdtemp(prefix="bench-sizes-"))
    try:
        cached_wheelhouse(list(TUTORIAL_PACKAGES), ctx / "wheels")
        (ctx / "model.pkl").write_bytes(pickle.dumps(_linear_model()))
        (ctx / "app.py").write_text(TUTORIAL_APP)
        packages = " ".join(p.split("==")[0] for p in TUTORIAL_PACKAGES)
        (ctx / "Dockerfile").write_text(TUTORIAL_DOCKERFILE.format(base=base, packages=packages))
        engine.build(ctx, tag)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    image = engine.client().images.get(tag)
    wheels = sum(h["Size"] for h in image.history() if re.search(r"COPY dir:\S+ in /wheels", h.get("CreatedBy", "")))
    return tag, f"{wheels / 1e6:.0f}"


ROWS: dict[str, Callable[[str], tuple[str, str]]] = {
    "modelport-linear": modelport_linear, "modelport-linear-onnx": modelport_linear_onnx,
    "modelport-mobilenet": modelport_mobilenet, "tutorial-linear": tutorial_linear}


def largest(tag: str, site: str) -> list[tuple[str, float]]:
    from modelport.container import engine

    out = engine.client().containers.run(tag, ["sh", "-c", f"du -sk {site}/*"], entrypoint="", remove=True).decode()
    sizes = [(line.split("\t")[1].rsplit("/", 1)[1], int(line.split("\t")[0]) / 1000) for line in out.splitlines() if "\t" in line]
    return sorted(sizes, key=lambda s: -s[1])[:10]


# Run in the image, as its server: what `serve REF --check` (load the model, answer nothing) maps and imports.
LOADED_TRACE = """
import atexit, os, runpy, sys
site = sys.argv[1]
def report():
    maps = {l.split()[5] for l in open("/proc/self/maps") if len(l.split()) >= 6 and l.split()[5].startswith(site)}
    pyc = {getattr(m, "__file__", None) or "" for m in list(sys.modules.values())}
    pyc = {p for p in pyc if p.startswith(site) and p.endswith(".pyc")}
    print("LOADED", sum(os.stat(p).st_size for p in maps), sum(os.stat(p).st_size for p in pyc), file=sys.stderr)
atexit.register(report)
sys.argv = ["modelport.serving", "serve", sys.argv[2], "--check"]
runpy.run_module("modelport.serving", run_name="__main__")
"""


def loaded(tag: str, site: str) -> tuple[float, float]:
    """MB of shared libraries and of bytecode the image's server loads from ``site`` to serve its model."""
    from modelport.container import engine

    client = engine.client()
    ref = client.images.get(tag).attrs["Config"]["Cmd"][1]  # CMD ["serve", REF, ...]
    out = client.containers.run(tag, ["python3", "-c", LOADED_TRACE, site, ref], entrypoint="", remove=True,
                                stdout=False, stderr=True).decode()
    mapped, pyc = next(line.split()[1:] for line in out.splitlines() if line.startswith("LOADED"))
    return int(mapped) / 1e6, int(pyc) / 1e6


def measure(row: str, rnd: int, base: str) -> Built:
    from modelport.container import engine

    start = time.monotonic()
    tag, wheels = ROWS[row](base)
    seconds = time.monotonic() - start
    size = engine.client().images.get(tag).attrs["Size"]
    if wheels:  # the tutorial's: without the wheels copied in for want of a network
        mb = size / 1e6 - float(wheels)
        note = f"{size / 1e6:.0f} MB with the {wheels} MB wheels layer"
    else:
        mb, note = size / 1e6, ""
    site = SITE["tutorial" if row.startswith("tutorial") else "modelport"]
    built = Built(row, rnd, mb, note, seconds, largest(tag, site), loaded(tag, site) if row.startswith("modelport") else None)
    print(f"  round {rnd} {row:<20} {built.mb:6.0f} MB  ({seconds:.0f} s) {note}", flush=True)
    return built


def table(results: list[Built], base: str, base_mb: float) -> str:
    lines = [SECTION, "", f"`python -m bench.sizes` ({time.strftime('%Y-%m-%d')}), base image `{base}` ({base_mb:.0f} MB). "
             "MB = 10^6 bytes as the engine reports them.", "",
             "| round | image | size | build (s) | loaded by its server | floor | note |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.round} | {r.row} | {r.mb:.0f} MB | {r.seconds:.0f} | "
              + (f"{r.loaded[0]:.0f} MB libraries + {r.loaded[1]:.0f} MB bytecode | {base_mb + sum(r.loaded):.0f} MB"
                 if r.loaded else "| ") + f" | {r.note} |" for r in results]
    lines += ["", "Floor: the base image plus what the server loads (a cut of files it never reads cannot go below it).",
              "", "Largest entries of each image's site-packages (MB, last round):", ""]
    last = {r.row: r for r in results}
    for r in last.values():
        lines.append(f"- {r.row}: " + ", ".join(f"{name} {mb:.1f}" for name, mb in r.largest))
    return "\n".join(lines) + "\n"


def write_section(output: Path, section: str) -> None:
    text = output.read_text() if output.exists() else ""
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else ""
        text = head + section + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    output.write_text(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sizes", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--base-image", default=os.environ.get("MODELPORT_BENCH_BASE_IMAGE", "python:3.11-slim"))
    p.add_argument("--only", help="Comma-separated rows: " + ", ".join(ROWS))
    args = p.parse_args(argv)
    from modelport.container import engine

    rows = [r.strip() for r in args.only.split(",")] if args.only else list(ROWS)
    WORK.mkdir(parents=True, exist_ok=True)
    base_mb = engine.client().images.get(args.base_image).attrs["Size"] / 1e6
    results = [measure(row, rnd, args.base_image) for rnd in range(1, args.rounds + 1) for row in rows]
    section = table(results, args.base_image, base_mb)
    print("\n" + section, flush=True)
    write_section(args.output, section)


if __name__ == "__main__":
    main()
