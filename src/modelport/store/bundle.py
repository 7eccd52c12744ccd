"""Moving a version between stores: a tar.gz holding ``modelport.json`` and the artifact files."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelport.errors import IntegrityError, ModelportError
from modelport.store.blobs import sha256_bytes
from modelport.store.registry import FileEntry, ModelStore, ModelVersion, manifest_digest

MANIFEST = "modelport.json"
FORMAT = "modelport-bundle/1"


def export_version(store: ModelStore, ref: str, dest: str | Path) -> ModelVersion:
    mv = store.resolve(ref)
    files = store.read_files(mv)
    dest = Path(dest)
    manifest = {"format": FORMAT, **mv.to_dict()}
    fd, tmp = tempfile.mkstemp(dir=dest.parent if str(dest.parent) else ".", prefix=".export-")
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp's 0600 is for temporary files; an export is the user's file
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
            for name, data in files.items():
                _add(tar, f"files/{name}", data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return mv


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the process's umask (read by setting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class Imported:
    version: ModelVersion
    created: bool  # False: the store already had this exact version (same sha256), nothing was added
    repaired: tuple[str, ...] = ()  # files that were present but damaged, and were written again


def import_bundle(store: ModelStore, path: str | Path, *, name: str | None = None,
                  reuse_existing: bool = True) -> Imported:
    """Register the bundle's version. Its files are always written, replacing damaged copies, so an
    export restores a version whose files were corrupted. With ``reuse_existing``, a version of the
    same name with the same sha256 is reused instead of adding a duplicate."""
    path = Path(path)
    try:
        with tarfile.open(path, mode="r:*") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            if MANIFEST not in members:
                raise ModelportError(f"{path.name} is not a modelport bundle (no {MANIFEST} inside)")
            manifest = json.loads(tar.extractfile(members[MANIFEST]).read())  # type: ignore[union-attr]
            files = {}
            for fname, entry in manifest["files"].items():
                member = members.get(f"files/{fname}")
                if member is None:
                    raise IntegrityError(f"{path.name} is incomplete: file {fname!r} is missing")
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if sha256_bytes(data) != entry["sha256"]:
                    raise IntegrityError(f"{path.name}: file {fname!r} does not match its recorded sha256")
                files[fname] = data
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError, KeyError) as e:
        raise ModelportError(f"Cannot read bundle {path}: {e}") from None
    name = name or manifest["name"]
    repaired = tuple(fname for fname, data in files.items() if store.blobs.write(data)[1])
    if reuse_existing:
        entries = {fname: FileEntry(sha256_bytes(data), len(data)) for fname, data in files.items()}
        existing = store.find_digest(name, manifest_digest(entries))
        if existing is not None:
            return Imported(existing, created=False, repaired=repaired)
    mv = store.save(
        name, files, framework=manifest["framework"], task=manifest["task"],
        signature=manifest["signature"], metrics=manifest.get("metrics"),
        tags={**manifest.get("tags", {}), "imported_from": f"{manifest['name']}:{manifest['version']}"},
        libraries=manifest.get("libraries"), extra=manifest.get("extra"), description=manifest.get("description", ""),
    )
    return Imported(mv, created=True, repaired=repaired)
