"""Build contexts: Dockerfile, the model version (an unpacked bundle), and a wheelhouse pinned exactly."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import jinja2

import modelport
from modelport import defaults
from modelport.container.sbom import SBOM_FILE, SBOM_LABEL, wheel_digests, write_sbom
from modelport.container.strip import strip_wheels
from modelport.container.wheelhouse import (
    DEFAULT_PLATFORM,
    PLATFORMS,
    build_wheelhouse,
    cached_wheelhouse,
    platform_tags,
    target_platform,
)
from modelport.errors import ModelportError
from modelport.frameworks import get_adapter
from modelport.frameworks.base import IMAGE_CLASSIFICATION, Packed
from modelport.frameworks.onnx import OnnxAdapter
from modelport.progress import Progress
from modelport.serving.swagger import SWAGGER_UI_ENV, SWAGGER_UI_FILES, swagger_ui_dir
from modelport.store import FileEntry, ModelStore, ModelVersion
from modelport.store.blobs import sha256_bytes
from modelport.store.bundle import write_directory
from modelport.store.version import manifest_digest

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



# How an image serves its model: with the framework it was saved with, or converted to ONNX at build time
# (frameworks.convert: scikit-learn, XGBoost and LightGBM models, served by onnxruntime without those libraries).
NATIVE, ONNX = "native", "onnx"
RUNTIMES = (NATIVE, ONNX)
RUNTIME_LABEL = "io.modelport.runtime"


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ModelportError(f"Unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")


def labels_for(mv: ModelVersion, runtime: str = NATIVE) -> dict[str, str]:
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
        RUNTIME_LABEL: runtime,
    }


# The extra of modelport's that is all an image needs of it: serving, not the command line (its Typer, Rich,
# Jinja2, httpx). The image installs modelport itself without its dependencies (--no-deps, from the lock).
SERVE_EXTRA = "serve"

PLATFORM_LABEL = "io.modelport.platform"
# "true" on an image built to write the prediction log (its SQLAlchemy and PostgreSQL driver): what a stack needs.
PREDICTION_LOG_LABEL = "io.modelport.prediction-log"


def requirements_for(mv: ModelVersion, modelport_requires: list[str], extra: list[str]) -> list[str]:
    """modelport's serving dependencies and the model's framework, each pinned: the framework to the
    versions the model was saved with, the rest to this environment's."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for text in modelport_requires:
        req = Requirement(text)
        if req.marker is not None and req.marker.evaluate({"extra": SERVE_EXTRA}) and not req.marker.evaluate({"extra": ""}):
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


def write_model_dir(mv: ModelVersion, store: ModelStore, dest: Path, converted: Packed | None = None) -> ModelVersion:
    """The version for the image to serve, as an unpacked bundle (store.bundle: its manifest and files, read
    without the registry's database); ``converted``: the model converted to ONNX (frameworks.convert) in place of
    its files. → the version the image serves (its aliases stay in the store: the image serves NAME:VERSION)."""
    if converted is None:
        files, framework, libraries, extra = store.read_files(mv), mv.framework, mv.libraries, mv.extra
    else:
        files, framework, libraries, extra = converted.files, OnnxAdapter.name, converted.libraries, converted.extra
    entries = {name: FileEntry(sha256_bytes(data), len(data)) for name, data in files.items()}
    served = dataclasses.replace(mv, framework=framework, files=entries, digest=manifest_digest(entries),
                                 libraries=libraries, extra=extra, aliases=())
    write_directory(served, files, dest)  # the same bytes every build: Docker's layer cache holds
    return served


SWAGGER_UI_DIR = "swagger-ui"  # in the context, and /opt/modelport-swagger-ui in the image
STRIPPED_DIR = "stripped"  # the wheels' shared libraries stripped on the host (container.strip), by site-packages path
WARMUP_DIR, IMAGE_WARMUP_DIR, WARMUP_FILE = "warmup", "/opt/modelport-warmup", "warmup.json"  # build --warmup


def copy_swagger_ui(dest: Path) -> bool:
    """Swagger UI's files for the image's /docs, from this environment's swagger-ui-bundle (the two /docs
    loads, about 1 MB, not the package); False when it is not installed here (the image's /docs then says so)."""
    source = swagger_ui_dir()
    if source is None:
        return False
    dest.mkdir()
    for name in SWAGGER_UI_FILES:
        shutil.copy2(Path(source) / name, dest / name)
    return True


def prediction_log_requirements() -> list[str]:
    """SQLAlchemy and the PostgreSQL driver, pinned to the versions installed here: what a model server that
    writes the prediction log itself (``serve --log-db``: a stack's, the Helm chart's behind its gateway)
    needs besides serving. A plain model image has neither."""
    from modelport.extras import require

    for extra in ("store", "postgres"):
        require(extra, "An image that writes the prediction log")
    return [f"SQLAlchemy=={metadata.version('sqlalchemy')}", f"psycopg[binary]=={metadata.version('psycopg')}"]


def write_context(mv: ModelVersion, dest: Path, *, store: ModelStore, base_image: str = defaults.BASE_IMAGE,
                  extra_requirements: list[str] | None = None, runtime: str = NATIVE, platform: str | None = None,
                  build_base_image: str | None = None, warmup: Path | None = None, prediction_log: bool = False,
                  progress: Progress = lambda _: None) -> Path:
    """``platform`` (``linux/arm64``): the image's, whose wheels the context holds; None: linux/amd64
    wheels for an image of the engine's own platform. ``build_base_image``: cross-build, the build stage
    on this image of the build host's platform (same Python 3.11 as ``base_image``), installing the
    platform's wheels by their tags; only the final stage's few steps (and the load check) run emulated.
    ``warmup``: a v2 inference request (JSON) the image's server predicts before it is ready
    (``serve --warmup``), instead of inputs from the signature. ``prediction_log``: the image can write the
    prediction log (prediction_log_requirements), and its label says so."""
    check_runtime(runtime)
    if build_base_image and not platform:
        raise ModelportError("A build base image (a cross-build) needs a --platform to build for")
    if warmup is not None:
        from modelport.serving.startup import read_warmup

        read_warmup(warmup)  # not a v2 request: refused before anything is downloaded
    log_pins = prediction_log_requirements() if prediction_log else []  # the drivers missing here: refused now too
    target = target_platform(platform or DEFAULT_PLATFORM)
    machine = PLATFORMS[target]
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ModelportError(f"{dest} is not empty: give an empty or new directory for the build context")
    converted = None
    if runtime == ONNX:
        from modelport.frameworks.convert import convert

        progress(f"Converting {mv.ref} ({mv.framework}) to ONNX and checking it against the native model")
        conversion = convert(mv, store.read_files(mv))
        progress(conversion.summary())
        converted = conversion.packed
    progress(f"Writing {mv.ref} (sha256 {mv.digest[:12]}…) into the context" + (" as ONNX" if converted else ""))
    served = write_model_dir(mv, store, dest / "model", converted)
    wheels = dest / "wheels"
    wheels.mkdir()
    requirements = requirements_for(served, modelport_wheel(wheels, progress), [*(extra_requirements or []), *log_pins])
    progress(f"Downloading wheels for Python 3.11 / linux {machine}: {', '.join(requirements)}")
    cached_wheelhouse(requirements, wheels, platform=machine, progress=progress)
    pins = lock(wheels)
    progress(f"Wheelhouse: {len(pins)} wheels, {sum(f.stat().st_size for f in wheels.glob('*.whl')) / 1e6:.0f} MB")
    digests = wheel_digests(wheels)
    strip_wheels(wheels, dest / STRIPPED_DIR, machine, progress, digests)
    progress(f"Writing the CycloneDX SBOM of those wheels ({SBOM_FILE}, beside the Dockerfile)")
    labels = {**labels_for(mv, runtime), PLATFORM_LABEL: target, SBOM_LABEL: write_sbom(wheels, dest / SBOM_FILE, digests),
              **({PREDICTION_LOG_LABEL: "true"} if prediction_log else {})}
    swagger_ui = copy_swagger_ui(dest / SWAGGER_UI_DIR)
    if warmup is not None:
        (dest / WARMUP_DIR).mkdir()
        shutil.copyfile(warmup, dest / WARMUP_DIR / WARMUP_FILE)
    dockerfile = TEMPLATES.get_template("Dockerfile.j2").render(
        model=served, base_image=base_image, build_base_image=build_base_image, labels=labels,
        cross={"machine": machine, "tags": platform_tags(machine)} if build_base_image else None, modelport_version=modelport.__version__,
        port=SERVING_PORT, ready_path=READY_PATH, uid=RUN_AS, workdir=WRITABLE_PATH, swagger_ui=swagger_ui,
        swagger_ui_env=SWAGGER_UI_ENV, warmup=f"{IMAGE_WARMUP_DIR}/{WARMUP_FILE}" if warmup is not None else None,
        warmup_dir=WARMUP_DIR, image_warmup_dir=IMAGE_WARMUP_DIR)
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
