"""Content-addressed file storage: every artifact file lives under its sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from modelport.errors import IntegrityError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its digest. Readers never see a partial file."""
        digest = sha256_bytes(data)
        target = self.path(digest)
        if target.exists() and target.stat().st_size == len(data):
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            # mkstemp creates 0600; artifacts are read by other users (e.g. an image's server user).
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str, *, label: str = "artifact") -> bytes:
        """Read a blob and check its digest, so a tampered or truncated file is never loaded."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"The {label} is missing from the store (sha256 {digest[:12]}…)") from None
        actual = sha256_bytes(data)
        if actual != digest:
            raise IntegrityError(
                f"The {label} is corrupted: its sha256 is {actual[:12]}… but {digest[:12]}… was recorded. "
                "Restore it from an export or save the model again."
            )
        return data

    def digests(self) -> set[str]:
        return {p.name for p in (self.root / "sha256").glob("*/*") if not p.name.startswith(".")}

    def remove_unreferenced(self, referenced: set[str], *, min_age_s: float = 3600) -> list[str]:
        """Delete blobs no version points to. Young blobs may belong to a save in progress."""
        removed = []
        now = time.time()
        for digest in self.digests() - referenced:
            p = self.path(digest)
            if now - p.stat().st_mtime >= min_age_s:
                p.unlink(missing_ok=True)
                removed.append(digest)
        for p in (self.root / "sha256").glob("*/.incoming-*"):
            if now - p.stat().st_mtime >= min_age_s:
                p.unlink(missing_ok=True)
        return removed
