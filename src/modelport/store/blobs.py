"""Content-addressed file storage: every artifact file lives under its sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from modelport.errors import IntegrityError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verified(data: bytes, digest: str, label: str, hint: str = "") -> bytes:
    """``data`` if its sha256 is ``digest``; else IntegrityError naming both (``hint``: what to do, after them)."""
    actual = sha256_bytes(data)
    if actual != digest:
        raise IntegrityError(f"The {label} is corrupted: its sha256 is {actual[:12]}… but {digest[:12]}… was recorded{hint}")
    return data


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
        if target.exists() and not target.is_file():
            raise IntegrityError(f"{target} should be an artifact file but is not a regular file: remove it and try again")
        present = target.exists()
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
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"The {label} is missing from the store (sha256 {digest[:12]}…). " + _RESTORE) from None
        except OSError as e:  # a directory in its place, unreadable permissions, an I/O error
            raise IntegrityError(
                f"The {label} cannot be read: {path}: {e.strerror}. If it is not a regular file, remove it; " + _RESTORE
            ) from None
        return verified(data, digest, label, hint=". " + _RESTORE)

    def digests(self) -> set[str]:
        return {p.name for p in self._files()}

    def count(self) -> int:
        return sum(1 for _ in self._files())

    def _files(self) -> Iterator[Path]:
        return (p for p in (self.root / "sha256").glob("*/*") if not p.name.startswith(".") and p.is_file())

    def unreferenced(self, referenced: set[str], *, min_age_s: float = 3600) -> dict[str, float]:
        """Blobs no version points to and older than ``min_age_s`` (younger ones may belong to a save in
        progress), with their modification times."""
        now = time.time()
        mtimes = {p.name: p.stat().st_mtime for p in self._files() if p.name not in referenced}
        return {d: mtime for d, mtime in mtimes.items() if now - mtime >= min_age_s}

    def remove(self, digests: Iterable[str], *, min_age_s: float = 3600) -> list[str]:
        """Delete these blobs, and temporary files left by saves that were killed."""
        removed = []
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)
            removed.append(digest)
        now = time.time()
        for p in (self.root / "sha256").glob("*/.incoming-*"):
            if now - p.stat().st_mtime >= min_age_s:
                p.unlink(missing_ok=True)
        return removed
