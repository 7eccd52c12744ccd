"""``modelport build``: a model version → a build context → an image, through the Docker Engine."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import modelport
from modelport import config, defaults
from modelport.api import get_store
from modelport.container import engine, provenance, signing
from modelport.container.context import (
    BUILD_LABEL,
    NATIVE,
    PREDICTION_LOG_LABEL,
    RUNTIME_LABEL,
    Progress,
    build_time_labels,
    check_runtime,
    read_requirements_file,
    source_digest,
    write_context,
)
from modelport.container.sbom import SBOM_FILE
from modelport.container.wheelhouse import DEFAULT_PLATFORM, canonical_platform, target_platform
from modelport.errors import ModelportError
from modelport.extras import require
from modelport.store import ModelStore, ModelVersion


@dataclass
class BuiltImage:
    tag: str
    id: str
    size: int
    seconds: float
    model: ModelVersion
    sbom: Path  # the image's CycloneDX SBOM, in its provenance record
    signed_by: str | None  # the id of the key that signed it, if one did


def default_tag(mv: ModelVersion, runtime: str = NATIVE, platform: str | None = None) -> str:
    """``modelport/NAME:VERSION``. An image converted to ONNX is another image of the same version (…:VERSION-onnx),
    and so is one for another platform (``build --platform linux/arm64``: …:VERSION-arm64), so that neither ever
    stands in for the one ``run`` serves."""
    platform = target_platform(platform) if platform else DEFAULT_PLATFORM
    suffix = ("" if runtime == NATIVE else f"-{runtime}") + ("" if platform == DEFAULT_PLATFORM else f"-{platform.split('/')[1]}")
    return f"modelport/{mv.name}:{mv.version}{suffix}"


def image_tag(target: str, store: ModelStore | None = None) -> str:
    """The image a model reference (NAME, NAME:3, NAME@alias) is built as, or ``target`` itself: an image tag."""
    from modelport.store import parse_ref

    try:
        return default_tag(get_store(store).resolve(parse_ref(target)))
    except ModelportError:
        return target


def push_reference(target: str, built_tag: str) -> str:
    """``--push REGISTRY/REPOSITORY[:TAG]``: the reference to push the image built as ``built_tag``; its tag
    is the default (VERSION, VERSION-onnx, VERSION-arm64: default_tag's, or the one given to build)."""
    name, _, tag = built_tag.rsplit("/", 1)[-1].partition(":")
    registry, slash, rest = target.partition("/")
    if not slash or not rest or not registry or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise ModelportError(f"--push {target!r}: expected REGISTRY/REPOSITORY[:TAG], e.g. registry.example.com:5000/"
                             f"{name} (a registry's host name has a '.' or a ':PORT', or is "
                             "localhost)")
    return target if ":" in rest.rsplit("/", 1)[-1] else f"{target}:{tag or 'latest'}"


def stale_image(tag: str, digest: str, runtime: str = NATIVE, *, prediction_log: bool = False) -> str | None:
    """Why the image ``tag`` cannot serve the model with this sha256 as it is (so it must be
    built), or None when it can: a tag names a model and version, but another store may hold
    another model under the same name and version, and another modelport may have built it.
    ``prediction_log``: the image must also write the prediction log (a stack's: same tag as `build`'s)."""
    labels = engine.image_labels(tag)
    if labels is None:
        return "there is no image yet"
    if labels.get("io.modelport.sha256") != digest:
        return "the image holds another model of that name and version (another store's)"
    if prediction_log and labels.get(PREDICTION_LOG_LABEL) != "true":
        return "the image cannot write the prediction log (built without --prediction-log)"
    if labels.get(RUNTIME_LABEL, NATIVE) != runtime:
        return f"the image serves it with the {labels.get(RUNTIME_LABEL, NATIVE)} runtime, not {runtime}"
    built_by = labels.get("io.modelport.modelport-version")
    if built_by != modelport.__version__:
        return f"the image was built by modelport {built_by}, this is {modelport.__version__}"
    if labels.get(BUILD_LABEL) != source_digest():
        return f"the image was built by another build of modelport {built_by} (changed or another checkout)"
    return None


def build_image(ref: str, *, tag: str | None = None, base_image: str = defaults.BASE_IMAGE,
                requirements: Path | None = None, nocache: bool = False, store: ModelStore | None = None,
                runtime: str = NATIVE, platform: str | None = None, build_base_image: str | None = None,
                sign_key: Path | None = None, warmup: Path | None = None, prediction_log: bool = False,
                progress: Progress = lambda _: None) -> BuiltImage:
    """``runtime="onnx"``: the model converted to ONNX and served by onnxruntime (frameworks.convert).
    ``platform`` (``linux/arm64``): build for it, wheels and all; None: the engine's own, with linux/amd64 wheels.
    ``build_base_image`` (with ``platform``): cross-build, the build stage natively on this image of the
    engine's platform (context.write_context); ``base_image`` must then be a local image of ``platform``.
    The SBOM and statement go to the image's provenance record, signed with ``sign_key`` (default: the
    configured MODELPORT_SIGNING_KEY, if any). ``warmup``: the v2 request the image's server warms up with
    (its first prediction, before it is ready; default: inputs generated from the model's signature).
    ``prediction_log``: the image can write the prediction log (``serve --log-db``: context.prediction_log_requirements)."""
    require("docker", "Building an image")
    check_runtime(runtime)
    platform = target_platform(platform) if platform else None
    store = get_store(store)
    mv = store.resolve(ref)
    tag = tag or default_tag(mv, runtime, platform)
    extra = read_requirements_file(requirements) if requirements else []
    sign_key = sign_key or config.signing_key()
    key = signing.load_private(sign_key) if sign_key else None  # a bad key fails before the build, not after
    engine.client()  # fail before downloading anything if there is no engine
    if platform:
        check_base_platform(base_image, platform, local=bool(build_base_image))
    start = time.monotonic()
    ctx = Path(tempfile.mkdtemp(prefix="modelport-build-"))
    try:
        write_context(mv, ctx / "context", store=store, base_image=base_image, extra_requirements=extra,
                      runtime=runtime, platform=platform, build_base_image=build_base_image,
                      warmup=warmup, prediction_log=prediction_log, progress=progress)
        progress(f"Building {tag} from {base_image}" + (f" for {platform}" if platform else "")
                 + (f", its build stage on {build_base_image}" if build_base_image else ""))
        # Cross-built: no platform for the engine. Engine 20.10's classic builder refuses a COPY --from a stage
        # of another platform than the one asked for; the image takes its platform from its (local) base.
        image_id = engine.build(ctx / "context", tag, labels=build_time_labels(), nocache=nocache,
                                platform=None if build_base_image else platform, progress=progress)
        image = engine.client().images.get(image_id)
        record = provenance.record_build(tag, image_id, image.labels or {}, ctx / "context" / SBOM_FILE, key)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return BuiltImage(tag, image_id, image.attrs["Size"], time.monotonic() - start, mv, record.sbom,
                      signing.key_id(key.public_key()) if key else None)


def check_base_platform(base_image: str, platform: str, local: bool = False) -> None:
    """A local base image of another platform would fail the build late, or be pulled over (no
    registry: fail): say so before any download. An image not here is left to the engine to pull,
    unless it must be ``local`` (a cross-build: the engine would pull it for its own platform)."""
    found = engine.image_platform(base_image)
    if found is None and local:
        raise ModelportError(f"The base image {base_image} is not here: a cross-build needs it local, "
                             f"e.g. `docker pull --platform {platform} {base_image}` first")
    if found is not None and canonical_platform(found) != platform:
        raise ModelportError(f"The base image {base_image} is {found}, not {platform}: give a {platform} base image "
                             f"with --base-image (a multi-platform one such as python:3.11-slim is pulled for it)")


def write_build_context(ref: str, dest: Path, *, base_image: str = defaults.BASE_IMAGE, requirements: Path | None = None,
                        prediction_log: bool = False, store: ModelStore | None = None,
                        runtime: str = NATIVE, platform: str | None = None, build_base_image: str | None = None,
                        warmup: Path | None = None,
                        progress: Progress = lambda _: None) -> Path:
    """The same context ``build`` uses, left on disk for a user's own pipeline."""
    require("docker", "Writing a build context")  # packaging pins the image's requirements
    store = get_store(store)
    extra = read_requirements_file(requirements) if requirements else []
    return write_context(store.resolve(ref), dest, store=store, base_image=base_image, extra_requirements=extra,
                         runtime=runtime, platform=platform, build_base_image=build_base_image, warmup=warmup,
                         prediction_log=prediction_log, progress=progress)
