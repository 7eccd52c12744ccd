"""``modelport build``: a model version → a build context → an image, through the Docker Engine."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import modelport
from modelport import defaults
from modelport.api import get_store
from modelport.container import engine
from modelport.container.context import (
    BUILD_LABEL,
    Progress,
    build_time_labels,
    read_requirements_file,
    source_digest,
    write_context,
)
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


def default_tag(mv: ModelVersion, platform: str | None = None) -> str:
    """``modelport/NAME:VERSION``; an image for another platform (``build --platform linux/arm64``)
    gets a tag of its own (``NAME:VERSION-arm64``), so it never stands in for the one ``run`` serves."""
    platform = target_platform(platform) if platform else DEFAULT_PLATFORM
    suffix = "" if platform == DEFAULT_PLATFORM else f"-{platform.split('/')[1]}"
    return f"modelport/{mv.name}:{mv.version}{suffix}"


def push_reference(target: str, mv: ModelVersion) -> str:
    """``--push REGISTRY/REPOSITORY[:TAG]``: the reference to push, the model's version as the default tag."""
    registry, slash, rest = target.partition("/")
    if not slash or not rest or not registry or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise ModelportError(f"--push {target!r}: expected REGISTRY/REPOSITORY[:TAG], e.g. registry.example.com:5000/"
                             f"{mv.name} (a registry's host name has a '.' or a ':PORT', or is localhost)")
    return target if ":" in rest.rsplit("/", 1)[-1] else f"{target}:{mv.version}"


def stale_image(tag: str, digest: str) -> str | None:
    """Why the image ``tag`` cannot serve the model with this sha256 as it is (so it must be
    built), or None when it can: a tag names a model and version, but another store may hold
    another model under the same name and version, and another modelport may have built it."""
    labels = engine.image_labels(tag)
    if labels is None:
        return "there is no image yet"
    if labels.get("io.modelport.sha256") != digest:
        return "the image holds another model of that name and version (another store's)"
    built_by = labels.get("io.modelport.modelport-version")
    if built_by != modelport.__version__:
        return f"the image was built by modelport {built_by}, this is {modelport.__version__}"
    if labels.get(BUILD_LABEL) != source_digest():
        return f"the image was built by another build of modelport {built_by} (changed or another checkout)"
    return None


def build_image(ref: str, *, tag: str | None = None, base_image: str = defaults.BASE_IMAGE,
                requirements: Path | None = None, nocache: bool = False, platform: str | None = None,
                store: ModelStore | None = None, progress: Progress = lambda _: None) -> BuiltImage:
    """``platform`` (``linux/arm64``): build for it, wheels and all; None: the engine's own, with linux/amd64 wheels."""
    require("docker", "Building an image")
    platform = target_platform(platform) if platform else None
    store = get_store(store)
    mv = store.resolve(ref)
    tag = tag or default_tag(mv, platform)
    extra = read_requirements_file(requirements) if requirements else []
    engine.client()  # fail before downloading anything if there is no engine
    if platform:
        check_base_platform(base_image, platform)
    start = time.monotonic()
    ctx = Path(tempfile.mkdtemp(prefix="modelport-build-"))
    try:
        write_context(mv, ctx / "context", store=store, base_image=base_image, extra_requirements=extra,
                      platform=platform, progress=progress)
        progress(f"Building {tag} from {base_image}" + (f" for {platform}" if platform else ""))
        image_id = engine.build(ctx / "context", tag, labels=build_time_labels(), nocache=nocache, platform=platform,
                                progress=progress)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    size = engine.client().images.get(image_id).attrs["Size"]
    return BuiltImage(tag, image_id, size, time.monotonic() - start, mv)


def check_base_platform(base_image: str, platform: str) -> None:
    """A local base image of another platform would fail the build late, or be pulled over (no
    registry: fail): say so before any download. An image not here is left to the engine to pull."""
    found = engine.image_platform(base_image)
    if found is not None and canonical_platform(found) != platform:
        raise ModelportError(f"The base image {base_image} is {found}, not {platform}: give a {platform} base image "
                             f"with --base-image (a multi-platform one such as python:3.11-slim is pulled for it)")


def write_build_context(ref: str, dest: Path, *, base_image: str = defaults.BASE_IMAGE, requirements: Path | None = None,
                        extra_requirements: list[str] | None = None, platform: str | None = None,
                        store: ModelStore | None = None, progress: Progress = lambda _: None) -> Path:
    """The same context ``build`` uses, left on disk for a user's own pipeline. ``extra_requirements``:
    pinned lines beside the file's (a stack's model servers add the PostgreSQL driver)."""
    require("docker", "Writing a build context")  # packaging pins the image's requirements
    store = get_store(store)
    extra = [*(read_requirements_file(requirements) if requirements else []), *(extra_requirements or [])]
    return write_context(store.resolve(ref), dest, store=store, base_image=base_image, extra_requirements=extra,
                         platform=platform, progress=progress)
