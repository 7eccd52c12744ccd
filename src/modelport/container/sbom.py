"""The image's software bill of materials: CycloneDX JSON from the context's exact wheelhouse.

Made by the CycloneDX project's own tool (``cyclonedx-py requirements``, the cyclonedx-bom package) on
the host at build time, offline: it reads a requirements file and asks no index. The file it reads is
the image's lock with each wheel's sha256, so the SBOM names every distribution the image installs,
its version, and the hash of the very file installed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from modelport.errors import ModelportError

SBOM_FILE = "sbom.cdx.json"
SBOM_LABEL = "io.modelport.sbom-sha256"  # an image cannot hold its own digest; it names its SBOM's


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def wheel_digests(wheels: Path) -> dict[str, str]:
    """Wheel file name → sha256, for every wheel of the wheelhouse: read once per build, for its SBOM and
    for the cache of its stripped libraries (container.strip)."""
    return {whl.name: sha256_file(whl) for whl in sorted(wheels.glob("*.whl"))}


def hashed_requirements(wheels: Path, digests: dict[str, str] | None = None) -> str:
    """``name==version --hash=sha256:…`` for every wheel of the wheelhouse, sorted as the lock is
    (``digests``: wheel_digests's, when the caller has them)."""
    from packaging.utils import parse_wheel_filename

    digests = digests if digests is not None else wheel_digests(wheels)
    lines = []
    for whl in sorted(wheels.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(whl.name)
        lines.append(f"{name}=={version} --hash=sha256:{digests[whl.name]}")
    return "\n".join(lines) + "\n"


def write_sbom(wheels: Path, dest: Path, digests: dict[str, str] | None = None) -> str:
    """Write the SBOM of the wheelhouse ``wheels`` to ``dest``; → its sha256. The same wheels give the
    same bytes (``--output-reproducible``: no serial number or timestamp), so the label that names it
    keeps Docker's layer cache."""
    with tempfile.TemporaryDirectory(prefix="modelport-sbom-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(hashed_requirements(wheels, digests))
        # --no-validate: the tool's own output; validating it costs seconds of schema loading per build
        # (the tests validate it once).
        proc = subprocess.run([sys.executable, "-m", "cyclonedx_py", "requirements", "--output-reproducible",
                               "--no-validate", "--output-format", "JSON", "--output-file", str(dest), str(requirements)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-1500:]
        if "No module named cyclonedx_py" in tail:
            raise ModelportError("Writing the image's SBOM needs cyclonedx-bom, not installed in this Python "
                                 f"({sys.executable}): pip install 'modelport[docker]'")
        raise ModelportError(f"Could not write the image's SBOM (cyclonedx-py):\n{tail}")
    return sha256_file(dest)
