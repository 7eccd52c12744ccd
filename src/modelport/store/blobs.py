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


# What to do about a damaged or missing file: importing an export writes every file of the
# version again (see BlobStore.write), whether or not the version is still registered.
_RESTORE = ("Restore it from an export of this version (modelport models import FILE) "
            "or save the model again.")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its digest. Readers never see a partial file."""
        return self.write(data)[0]

    def write(self, data: bytes) -> tuple[str, bool]:
        """Store ``data``: (digest, whether a damaged file under that digest was replaced).

        A file already present is kept only if its content hashes to the digest: a same-size
        corruption must not survive a restore from an export. The replacement is atomic."""
        digest = sha256_bytes(data)
        target = self.path(digest)
        present = target.is_file()
        if present and self.sha256_file(target) == digest:
            return digest, False
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
        return digest, present

    @staticmethod
    def sha256_file(path: Path) -> str:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def get(self, digest: str, *, label: str = "artifact") -> bytes:
        """Read a blob and check its digest, so a tampered or truncated file is never loaded."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"The {label} is missing from the store (sha256 {digest[:12]}…). " + _RESTORE) from None
        actual = sha256_bytes(data)
        if actual != digest:
            raise IntegrityError(
                f"The {label} is corrupted: its sha256 is {actual[:12]}… but {digest[:12]}… was recorded. "
                + _RESTORE
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
