"""Build contexts: Dockerfile, the model as a read-only store, and a wheelhouse pinned exactly."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import jinja2

import modelport
from modelport import defaults
from modelport.container.wheelhouse import (
    DEFAULT_PLATFORM,
    PLATFORMS,
    build_wheelhouse,
    cached_wheelhouse,
    target_platform,
)
from modelport.errors import ModelportError
from modelport.frameworks import get_adapter
from modelport.frameworks.base import IMAGE_CLASSIFICATION
from modelport.progress import Progress
from modelport.store import ModelStore, ModelVersion

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("modelport.container", "templates"),
                               keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
IMAGE_REQUIREMENTS = ("pillow", "python-multipart")  # what image classifiers need beyond their framework
LOCK_FILE = "requirements.lock"
# What a model image serves and how it runs, for the Dockerfile and for whatever runs the image
# (Kubernetes manifests): the port, the probe paths, the user, and the one path it writes to.
SERVING_PORT = 8080
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
RUN_AS = 10001  # uid and gid of the image's modelport user
WRITABLE_PATH = "/tmp"  # temporary files, the workers' pinned models and metrics (its WORKDIR)



def labels_for(mv: ModelVersion) -> dict[str, str]:
    """Labels that let anyone find out from an image what it serves."""
    return {
        "org.opencontainers.image.title": f"{mv.name}",
        "org.opencontainers.image.version": str(mv.version),
        "org.opencontainers.image.description": mv.description or f"{mv.framework} {mv.task} model served by modelport",
        "io.modelport.model": mv.name,
        "io.modelport.version": str(mv.version),
        "io.modelport.sha256": mv.digest,
        "io.modelport.framework": mv.framework,
        "io.modelport.task": mv.task,
        "io.modelport.modelport-version": modelport.__version__,
    }


PLATFORM_LABEL = "io.modelport.platform"


def requirements_for(mv: ModelVersion, modelport_requires: list[str], extra: list[str]) -> list[str]:
    """modelport's own dependencies and the model's framework, each pinned: the framework to the
    versions the model was saved with, the rest to this environment's."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for text in modelport_requires:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
            pins[canonicalize_name(req.name)] = f"{req.name}{extras}=={_installed(req.name)}"
    task_needs = IMAGE_REQUIREMENTS if mv.task == IMAGE_CLASSIFICATION else ()
    for dist in (*get_adapter(mv.framework).requirements, *task_needs):
        version = mv.libraries.get(dist) or _installed(dist)
        pins[canonicalize_name(dist)] = f"{cpu_build(dist, version)}=={version}"
    for line in extra:
        pins[canonicalize_name(Requirement(line).name)] = line
    return sorted(pins.values())


# Images serve on CPU: where a library has a CPU-only build on PyPI, the image gets that one, with
# the same import name (xgboost's manylinux wheel pulls nvidia-nccl-cu12, about 300 MB).
CPU_BUILDS = {"xgboost": ("xgboost-cpu", "2.1.1")}  # → (the CPU build, its first version)


def cpu_build(dist: str, version: str) -> str:
    from packaging.version import Version

    build = CPU_BUILDS.get(dist)
    return build[0] if build and Version(version) >= Version(build[1]) else dist


def _installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise ModelportError(f"{dist} is not installed here, so modelport cannot pin it for the image; "
                             f"pip install {dist} or pass it with --requirements") from None


def read_requirements_file(path: Path) -> list[str]:
    if not path.is_file():
        raise ModelportError(f"No such requirements file: {path}")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def modelport_wheel(dest: Path, progress: Progress) -> list[str]:
    """modelport itself, built from this source tree or taken from the package index;
    → its requirements, read from the wheel that ships (not from what is installed here)."""
    root = Path(modelport.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        build_wheelhouse([f"modelport=={modelport.__version__}", "--no-deps"], dest, progress=progress)
        return _wheel_requires(dest)
    progress(f"Building the modelport {modelport.__version__} wheel from {root}")
    # A fixed timestamp makes the wheel byte-identical between builds, so Docker's layer cache holds.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}
    # This environment's own build tools when they can build the wheel (no download, works offline);
    # else pip's isolated build, which fetches the ones pyproject.toml asks for (a fresh venv has
    # setuptools 65 and no `wheel`: "invalid command 'bdist_wheel'").
    here = ["--no-build-isolation"] if _can_build_wheels_here() else []
    # From a copy of what the wheel is made of: setuptools writes build/ and an egg-info into the tree
    # it builds, and a user's checkout is not ours to litter.
    with tempfile.TemporaryDirectory(prefix="modelport-wheel-") as tmp:
        src = Path(tmp) / "modelport"
        shutil.copytree(root / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *here, "--quiet",
                               "--wheel-dir", str(dest), str(src)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ModelportError(f"Could not build the modelport wheel:\n{proc.stderr[-2000:]}")
    return _wheel_requires(dest)


def _can_build_wheels_here() -> bool:
    """setuptools is new enough for pyproject.toml (68) and has bdist_wheel (built in since 70.1, else the `wheel` package)."""
    from importlib.util import find_spec

    from packaging.version import Version

    try:
        setuptools = Version(metadata.version("setuptools"))
    except metadata.PackageNotFoundError:
        return False
    return setuptools >= Version("70.1") or (setuptools >= Version("68") and find_spec("wheel") is not None)


def _wheel_requires(wheels: Path) -> list[str]:
    import zipfile
    from email.parser import Parser

    (whl,) = wheels.glob("modelport-*.whl")
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or []


def lock(wheels: Path) -> list[str]:
    """Exact pins for every wheel in the wheelhouse: the image installs these and nothing else."""
    from packaging.utils import parse_wheel_filename

    pins = []
    for whl in sorted(wheels.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(whl.name)
        pins.append(f"{name}=={version}")
    (wheels / LOCK_FILE).write_text("\n".join(pins) + "\n")
    return pins


def write_model_store(mv: ModelVersion, store: ModelStore, dest: Path) -> None:
    """A store holding just this version, with the same number, for the image to serve read-only."""
    files = store.read_files(mv)
    copy = ModelStore(dest)
    try:
        copy.save(mv.name, files, framework=mv.framework, task=mv.task, signature=mv.signature, metrics=mv.metrics,
                  tags=mv.tags, libraries=mv.libraries, extra=mv.extra, description=mv.description, version=mv.version,
                  created_at=mv.created_at)  # the same bytes every build: Docker's layer cache holds
    finally:
        copy.close()
    # The image opens it immutable: no WAL, no journal files next to it.
    with sqlite3.connect(dest / "registry.db") as db:
        db.execute("PRAGMA journal_mode=DELETE")
    for leftover in dest.glob("registry.db-*"):
        leftover.unlink()


def write_context(mv: ModelVersion, dest: Path, *, store: ModelStore, base_image: str = defaults.BASE_IMAGE,
                  extra_requirements: list[str] | None = None, platform: str | None = None,
                  progress: Progress = lambda _: None) -> Path:
    """``platform`` (``linux/arm64``): the image's, whose wheels the context holds; None: linux/amd64
    wheels for an image of the engine's own platform."""
    target = target_platform(platform or DEFAULT_PLATFORM)
    machine = PLATFORMS[target]
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ModelportError(f"{dest} is not empty: give an empty or new directory for the build context")
    progress(f"Writing {mv.ref} (sha256 {mv.digest[:12]}…) into the context")
    write_model_store(mv, store, dest / "model")
    wheels = dest / "wheels"
    wheels.mkdir()
    requirements = requirements_for(mv, modelport_wheel(wheels, progress), extra_requirements or [])
    progress(f"Downloading wheels for Python 3.11 / linux {machine}: {', '.join(requirements)}")
    cached_wheelhouse(requirements, wheels, platform=machine, progress=progress)
    pins = lock(wheels)
    progress(f"Wheelhouse: {len(pins)} wheels, {sum(f.stat().st_size for f in wheels.glob('*.whl')) / 1e6:.0f} MB")
    dockerfile = TEMPLATES.get_template("Dockerfile.j2").render(
        model=mv, base_image=base_image, labels={**labels_for(mv), PLATFORM_LABEL: target},
        modelport_version=modelport.__version__, port=SERVING_PORT, ready_path=READY_PATH, uid=RUN_AS, workdir=WRITABLE_PATH)
    (dest / "Dockerfile").write_text(dockerfile)
    (dest / ".dockerignore").write_text(TEMPLATES.get_template("dockerignore.j2").render())
    return dest


def build_time_labels() -> dict[str, str]:
    return {"org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            BUILD_LABEL: source_digest()}


BUILD_LABEL = "io.modelport.modelport-build"


@functools.cache
def source_digest() -> str:
    """A digest of this modelport's own files: two checkouts (or an edited one) of the same
    version are different builds, and an image built by one is not reused by the other."""
    package = Path(modelport.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]
