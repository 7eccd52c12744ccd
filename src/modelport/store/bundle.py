"""Moving a version between stores: a tar.gz holding ``modelport.json`` and the artifact files; and the
same, unpacked, as the version a model image serves (``write_directory``, ``BundleDirectory``: read without
the registry's database, so an image needs no SQLAlchemy)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelport.errors import IntegrityError, ModelportError, NotFoundError
from modelport.store.blobs import sha256_bytes, verified
from modelport.store.refs import Ref, parse_ref
from modelport.store.version import FileEntry, ModelVersion, manifest_digest

if TYPE_CHECKING:
    from modelport.store.registry import ModelStore

MANIFEST = "modelport.json"
FILES = "files"  # the artifact files, by name, beside the manifest
FORMAT = "modelport-bundle/1"


def manifest(mv: ModelVersion) -> bytes:
    return json.dumps({"format": FORMAT, **mv.to_dict()}, indent=2).encode()


def export_version(store: ModelStore, ref: str, dest: str | Path) -> ModelVersion:
    mv = store.resolve(ref)
    files = store.read_files(mv)
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent if str(dest.parent) else ".", prefix=".export-")
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp's 0600 is for temporary files; an export is the user's file
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add(tar, MANIFEST, manifest(mv))
            for name, data in files.items():
                _add(tar, f"{FILES}/{name}", data)
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
            meta = json.loads(tar.extractfile(members[MANIFEST]).read())  # type: ignore[union-attr]
            files = {}
            for fname, entry in meta["files"].items():
                member = members.get(f"{FILES}/{fname}")
                if member is None:
                    raise IntegrityError(f"{path.name} is incomplete: file {fname!r} is missing")
                files[fname] = _checked(tar.extractfile(member).read(), entry["sha256"], f"{path.name}: file {fname!r}")  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError, KeyError) as e:
        raise ModelportError(f"Cannot read bundle {path}: {e}") from None
    name = name or meta["name"]
    repaired = tuple(fname for fname, data in files.items() if store.blobs.write(data)[1])
    if reuse_existing:
        entries = {fname: FileEntry(sha256_bytes(data), len(data)) for fname, data in files.items()}
        existing = store.find_digest(name, manifest_digest(entries))
        if existing is not None:
            return Imported(existing, created=False, repaired=repaired)
    mv = store.save(
        name, files, framework=meta["framework"], task=meta["task"],
        signature=meta["signature"], metrics=meta.get("metrics"),
        tags={**meta.get("tags", {}), "imported_from": f"{meta['name']}:{meta['version']}"},
        libraries=meta.get("libraries"), extra=meta.get("extra"), description=meta.get("description", ""),
    )
    return Imported(mv, created=True, repaired=repaired)


def _checked(data: bytes, sha256: str, what: str) -> bytes:
    if sha256_bytes(data) != sha256:
        raise IntegrityError(f"{what} does not match its recorded sha256")
    return data


# -- a version unpacked: what a model image holds and serves --------------------------------------

def write_directory(mv: ModelVersion, files: dict[str, bytes], dest: Path) -> None:
    """``dest/modelport.json`` (the bundle's manifest) and ``dest/files/NAME``: ``mv`` must record these files."""
    if {name: FileEntry(sha256_bytes(data), len(data)) for name, data in files.items()} != mv.files:
        raise IntegrityError(f"The files given for {mv.ref} are not the ones it records")
    (dest / FILES).mkdir(parents=True)
    for name, data in files.items():
        (dest / FILES / name).write_bytes(data)
    (dest / MANIFEST).write_bytes(manifest(mv))


class BundleDirectory:
    """The version ``write_directory`` wrote, read as a store of that one version (``resolve`` and ``read_files``
    as ModelStore's), each file checked against its recorded sha256 on every read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self.version = ModelVersion.from_dict(json.loads((root / MANIFEST).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelportError(f"Cannot read the model version in {root}: {type(e).__name__}: {e}") from None
        if manifest_digest(self.version.files) != self.version.digest:
            raise IntegrityError(f"{root / MANIFEST}: the files it lists are not those of {self.version.ref}'s sha256")

    def resolve(self, ref: str | Ref) -> ModelVersion:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        mv = self.version
        if ref.name != mv.name or ref.version not in (None, mv.version) or (ref.alias is not None and ref.alias not in mv.aliases):
            raise NotFoundError(f"No {ref} here: this image serves {mv.ref}")
        return mv

    def read_files(self, mv: ModelVersion) -> dict[str, bytes]:
        files = {}
        for name, entry in mv.files.items():
            path = self.root / FILES / name
            try:
                data = path.read_bytes()
            except OSError as e:
                raise IntegrityError(f"The artifact file {name!r} of {mv.ref} cannot be read: {path}: {e.strerror}") from None
            files[name] = verified(data, entry.sha256, f"artifact file {name!r} of {mv.ref}", hint=f" ({path})")
        return files

    def close(self) -> None:
        pass
