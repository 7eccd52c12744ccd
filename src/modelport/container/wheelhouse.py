"""Wheels for an image's Python, resolved and downloaded on the host.

pip inside a build container may not reach an index (no network, a TLS-intercepting proxy), so
the host downloads binary wheels for the image's interpreter and platform, and the Dockerfile
installs them offline with ``pip install --no-index --find-links``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from modelport import config
from modelport.errors import ModelportError
from modelport.progress import ToolOutput

# PEP 600 legacy names of manylinux_2_N: older wheels may carry only these.
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_TAIL_LINES = 20
# The Docker platforms modelport builds images for → the machine in their wheels' platform tags.
PLATFORMS = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
DEFAULT_PLATFORM = "linux/amd64"  # whose wheels an image gets when no platform is asked for
_ALIASES = {"linux/x86_64": "linux/amd64", "linux/arm64/v8": "linux/arm64", "linux/aarch64": "linux/arm64"}


class WheelhouseError(ModelportError):
    """pip could not download a wheel for every requirement on the image's platform."""

    def __init__(self, message: str, *, requirement: str | None = None, output_tail: str = "") -> None:
        super().__init__(message)
        self.requirement = requirement  # the requirement pip found no wheel for, when it says which
        self.output_tail = output_tail


def canonical_platform(platform: str) -> str:
    """A platform as Docker names it: ``linux/arm64`` for linux/arm64/v8 or linux/aarch64."""
    name = platform.strip().lower()
    return _ALIASES.get(name, name)


def target_platform(platform: str) -> str:
    """``--platform`` as Docker names it (``linux/arm64``), or an error naming the ones supported."""
    name = canonical_platform(platform)
    if name not in PLATFORMS:
        raise ModelportError(f"Unsupported platform {platform!r}: modelport builds images for {', '.join(PLATFORMS)}")
    return name


def platform_tags(platform: str = "x86_64", glibc: tuple[int, int] = (2, 36)) -> list[str]:
    """Every platform tag a wheel may carry to run on an image with this glibc, newest first.

    pip 23 does not expand ``--platform manylinux_2_36_x86_64`` to the older glibc tags (it does
    only for manylinux2014/2010), so list them all, as packaging does for a running interpreter:
    x86_64 and i686 wheels go back to glibc 2.5, other architectures to 2.17.
    """
    major, minor = glibc
    oldest = 5 if platform in ("x86_64", "i686") else 17
    tags = []
    for m in range(minor, oldest - 1, -1):
        tags.append(f"manylinux_{major}_{m}_{platform}")
        if m in _LEGACY_MANYLINUX:
            tags.append(f"{_LEGACY_MANYLINUX[m]}_{platform}")
    # Not on PyPI (it refuses them), but a private index or --find-links may hold such wheels.
    tags.append(f"linux_{platform}")
    return tags


def build_wheelhouse(
    requirements: list[str],
    dest: Path,
    *,
    python_version: str = "3.11",
    platform: str = "x86_64",
    glibc: tuple[int, int] = (2, 36),
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download wheels for ``requirements`` and all their dependencies into ``dest``.

    The wheels are for CPython ``python_version`` on Linux ``platform`` with ``glibc`` (the
    defaults match python:3.11-slim on Debian bookworm), whatever the host runs. Each line pip
    prints goes to ``progress``. Returns every wheel in ``dest``, sorted.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tags = platform_tags(platform, glibc)
    cmd = [
        sys.executable, "-m", "pip", "download",
        # Binary wheels only: nothing is built on the host for another platform.
        "--only-binary=:all:",
        "--no-input", "--progress-bar", "off", "--disable-pip-version-check",
        # cp311 implies the abi3 and "none" ABIs and pure py3-none-any wheels (pip 23 `pip debug`).
        "--python-version", python_version, "--implementation", "cp",
        "--abi", f"cp{python_version.replace('.', '')}",
        *(arg for tag in tags for arg in ("--platform", tag)),
        # pip's HTTP cache in the modelport home: the next build reuses the wheels it downloaded
        # (when the index sends caching headers, as PyPI does).
        "--cache-dir", str(config.home() / "cache" / "pip"),
        "--dest", str(dest),
        *requirements,
    ]
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    # Unbuffered, so each line reaches `progress` as pip prints it, not in one block at the end.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if progress is not None:
                progress(ToolOutput(line))
    if proc.returncode != 0:
        output = "\n".join(tail)
        found = re.search(r"No matching distribution found for (.+)", output)
        target = f"CPython {python_version} on {tags[0]}"
        if found:
            requirement = found[1].strip()
            reason = f"no binary wheel of {requirement} for {target}"
        else:
            requirement, reason = None, f"pip download failed (exit status {proc.returncode}) for {target}"
        raise WheelhouseError(f"{reason}\npip's last lines:\n{output}", requirement=requirement, output_tail=output)
    return sorted(dest.glob("*.whl"))


def host_requirement(dist_name: str) -> str:
    """``name==version`` of a distribution installed here: the image gets what was tested."""
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise WheelhouseError(
            f"{dist_name} is not installed in this Python ({sys.executable}): install it, or name a version"
        ) from None
    return f"{dist.metadata['Name']}=={dist.version}"


def cached_wheelhouse(requirements: list[str], dest: Path, *, python_version: str = "3.11", platform: str = "x86_64",
                      glibc: tuple[int, int] = (2, 36), progress: Callable[[str], None] | None = None) -> list[Path]:
    """``build_wheelhouse``, kept per exact requirement set in the modelport home: pinned
    requirements resolve to the same wheels, so a rebuild copies them instead of asking the index."""
    import hashlib
    import shutil

    from modelport.container.cache import cached_dir

    key = hashlib.sha256("\n".join([python_version, platform, str(glibc), *sorted(requirements)]).encode()).hexdigest()[:24]
    dest.mkdir(parents=True, exist_ok=True)
    cache, found = cached_dir("wheelhouses", key, lambda d: build_wheelhouse(
        requirements, d, python_version=python_version, platform=platform, glibc=glibc, progress=progress))
    if found and progress is not None:
        progress(f"Using cached wheels for this exact requirement set ({cache})")
    for wheel in cache.glob("*.whl"):
        shutil.copy2(wheel, dest / wheel.name)
    return sorted(dest.glob("*.whl"))
