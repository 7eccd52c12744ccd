"""``modelport train --in-container``: the same training, in a container.

The image is built from the serving base image with a wheelhouse of modelport and its training
dependencies, pinned to the versions installed here, so a container run and a local run with the
same seed compute the same model and metrics. The CSV is mounted read-only, the network is off,
and the container exports the trained version as a bundle to a mounted directory; the host then
imports it into its own store.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import modelport
from modelport import defaults
from modelport.container.context import (
    TEMPLATES,
    Progress,
    build_time_labels,
    lock,
    modelport_wheel,
)
from modelport.errors import DataError, ModelportError
from modelport.extras import require
from modelport.store import ModelStore
from modelport.training.trainer import TrainResult, check_options

TRAIN_EXTRAS = ("sklearn", "train")
BUNDLE = "model.tar.gz"
RESULT = "result.json"


def pinned_requirements(modelport_requires: list[str], extras: tuple[str, ...]) -> list[str]:
    """modelport's dependencies and those of ``extras``, each pinned to the version installed here.
    A requirement on modelport itself (``modelport[serve,cli]``, the core; ``modelport[sklearn]`` in an
    extra) stands for the requirements of the extras it names."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from modelport.container.wheelhouse import host_requirement

    reqs = [Requirement(text) for text in modelport_requires]
    wanted = {"", *extras}

    def applies(req: Requirement) -> bool:
        return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted)

    while grown := {e for r in reqs if canonicalize_name(r.name) == "modelport" and applies(r) for e in r.extras} - wanted:
        wanted |= grown
    pins = {}
    for req in reqs:
        if canonicalize_name(req.name) == "modelport":
            continue
        if applies(req):
            name, _, version = host_requirement(req.name).partition("==")
            pins[canonicalize_name(req.name)] = f"{name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}=={version}"
    return sorted(pins.values())


def training_image(base_image: str = defaults.BASE_IMAGE, progress: Progress = lambda _: None) -> str:
    """The training image's tag, built when missing. The tag is a digest of what goes in, so an
    unchanged environment reuses the image and a changed one builds a new one."""
    from modelport.container import engine
    from modelport.container.wheelhouse import build_wheelhouse

    engine.client()
    ctx = Path(tempfile.mkdtemp(prefix="modelport-train-"))
    try:
        wheels = ctx / "wheels"
        wheels.mkdir()
        pins = pinned_requirements(modelport_wheel(wheels, progress), TRAIN_EXTRAS)
        (whl,) = wheels.glob("modelport-*.whl")
        digest = hashlib.sha256("\n".join([base_image, *pins]).encode() + whl.read_bytes()).hexdigest()
        tag = f"modelport-train:{modelport.__version__}-{digest[:12]}"
        if engine.image_exists(tag):
            return tag
        progress(f"Downloading wheels for the training image: {', '.join(pins)}")
        build_wheelhouse(pins, wheels, progress=progress)
        lock(wheels)
        (ctx / "Dockerfile").write_text(TEMPLATES.get_template("train.Dockerfile.j2").render(
            base_image=base_image, modelport_version=modelport.__version__))
        progress(f"Building {tag} from {base_image}")
        engine.build(ctx, tag, labels=build_time_labels(), progress=progress)
        return tag
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def train_in_container(data: str | Path, target: str, name: str, *, model: str = "linear-regression",
                       test_size: float = 0.2, seed: int = 42, base_image: str | None = None,
                       store: ModelStore | None = None, progress: Progress = lambda _: None) -> TrainResult:
    from modelport.api import get_store
    from modelport.container import engine
    from modelport.store.bundle import import_bundle

    require("docker", "Training in a container")
    data = Path(data).resolve()
    if not data.is_file():
        raise DataError(f"No such file: {data}")
    check_options(name, model, test_size)
    tag = training_image(base_image or defaults.BASE_IMAGE, progress)
    out = Path(tempfile.mkdtemp(prefix="modelport-trained-"))
    command = ["--data", f"/data/{data.name}", "--target", target, "--name", name, "--model", model,
               "--test-size", str(test_size), "--seed", str(seed), "--out", "/out"]
    container = engine.client().containers.run(
        tag, command, detach=True, network_disabled=True, user=f"{os.getuid()}:{os.getgid()}",
        labels={"io.modelport.role": "train"},
        volumes={str(data): {"bind": f"/data/{data.name}", "mode": "ro"}, str(out): {"bind": "/out", "mode": "rw"}})
    try:
        progress(f"Training in container {container.short_id} ({tag})")
        lines: list[str] = []
        for chunk in container.logs(stream=True, follow=True):
            for line in chunk.decode(errors="replace").splitlines():
                lines.append(line)
                progress(line)
        status = container.wait()["StatusCode"]
        if status != 0:
            errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
            raise ModelportError(errors[-1] if errors else
                                 f"Training in the container failed (exit status {status}):\n" + "\n".join(lines[-20:]))
        result = json.loads((out / RESULT).read_text())
        # Every training run is a new version, even when it reproduces an earlier one byte for byte.
        version = import_bundle(get_store(store), out / BUNDLE, name=name, reuse_existing=False).version
    finally:
        container.remove(force=True)
        shutil.rmtree(out, ignore_errors=True)
    return TrainResult(version, result["metrics"], result["n_train"], result["n_test"])


def main(argv: list[str] | None = None) -> int:
    """Inside the container: train into a store of its own, export the version to ``--out``."""
    from modelport.store.bundle import export_version
    from modelport.training.trainer import train

    p = argparse.ArgumentParser(prog="modelport-train-in-container")
    for opt in ("--data", "--target", "--name", "--model", "--out"):
        p.add_argument(opt, required=True)
    p.add_argument("--test-size", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    args = p.parse_args(argv)
    store = ModelStore()
    try:
        result = train(args.data, args.target, args.name, model=args.model, test_size=args.test_size, seed=args.seed,
                       store=store, progress=print)
        export_version(store, result.version.ref, Path(args.out) / BUNDLE)
    except ModelportError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    (Path(args.out) / RESULT).write_text(json.dumps({"metrics": result.metrics, "n_train": result.n_train,
                                                     "n_test": result.n_test}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
