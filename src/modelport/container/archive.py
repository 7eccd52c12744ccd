"""``modelport save`` / ``load``: a built image with its SBOM, statement and signature in one tar file,
for a machine without network.

The archive holds ``manifest.json`` (first), the engine's ``docker save`` output as ``image.tar``, and the
image's provenance record. The manifest names every other member with its size and sha256: ``load``
checks them all, and that the image inside is the one the statement names (the sha256 of its
configuration is its ID), before anything reaches the engine; with a public key it checks the
signature too. Nothing is extracted to disk: members are read from the tar as streams.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from modelport.container import provenance, signing
from modelport.container.sbom import SBOM_FILE, sha256_file
from modelport.errors import ModelportError, VerificationError
from modelport.progress import Progress

FORMAT = "modelport.image-archive/v1"
MANIFEST = "manifest.json"
IMAGE = "image.tar"
MEMBERS = (IMAGE, SBOM_FILE, provenance.STATEMENT_FILE, provenance.SIGNATURE_FILE)
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Saved:
    path: Path
    image: str
    sha256: str  # of the whole archive, to compare after copying it
    size: int
    signed: bool


@dataclass(frozen=True)
class Loaded:
    image: str
    image_id: str
    model: str
    version: str
    key_id: str | None  # the key the signature was checked with, if any


def save(tag: str, output: Path, *, progress: Progress = lambda _: None) -> Saved:
    """Write ``tag``'s image and provenance to ``output``, once the image is checked to be the recorded one."""
    from modelport.container import engine

    checked = provenance.verify(tag)  # checksums only: a record that does not match is not shipped
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    progress(f"Saving {tag} ({checked.statement['image_id'][:19]}…) from the Docker Engine")
    with tempfile.TemporaryDirectory(prefix=".modelport-save-", dir=output.parent) as tmp:
        image_tar = Path(tmp) / IMAGE
        engine.save(tag, image_tar)
        progress(f"Writing {output} ({image_tar.stat().st_size / 1e6:.0f} MB)")
        return write_archive(output, tag, image_tar, provenance.find(tag))


def write_archive(output: Path, tag: str, image_tar: Path, rec: provenance.Record) -> Saved:
    """The archive of ``docker save`` output and the image's record (written beside, then moved into place)."""
    files = {IMAGE: image_tar, SBOM_FILE: rec.sbom, provenance.STATEMENT_FILE: rec.statement}
    if rec.signature.is_file():
        files[provenance.SIGNATURE_FILE] = rec.signature
    statement = json.loads(rec.statement.read_bytes())
    manifest = {"format": FORMAT, "image": tag, "image_id": statement["image_id"],
                "files": {name: {"size": path.stat().st_size, "sha256": sha256_file(path)} for name, path in files.items()}}
    partial = output.with_name(f".{output.name}.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
        for name, path in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = path.stat().st_size, 0o644
            with open(path, "rb") as f:
                tar.addfile(info, f)
    os.replace(partial, output)
    return Saved(output, tag, sha256_file(output), output.stat().st_size, provenance.SIGNATURE_FILE in files)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def damaged(path: Path, why: str) -> VerificationError:
    return VerificationError(f"{path} is damaged or was changed, refused: {why}")


@dataclass
class Checked:
    """An archive whose every member matches its manifest, and whose image is the one its statement names."""

    manifest: dict[str, Any]
    statement: dict[str, Any]
    statement_bytes: bytes
    sbom: bytes
    signature: signing.Signature | None
    key_id: str | None


def check(path: Path, public_key: Path | None = None) -> Checked:
    """Everything ``load`` checks before the engine sees the image (VerificationError otherwise)."""
    key = signing.load_public(public_key) if public_key is not None else None
    path = Path(path)
    if not path.is_file():
        raise ModelportError(f"No such archive: {path}")
    try:
        with tarfile.open(path, "r:") as tar:
            return _check(tar, path, key)
    except (tarfile.TarError, EOFError, OSError) as e:  # truncated, or not a tar file at all
        raise damaged(path, f"not a readable tar archive ({e})") from None


def _check(tar: tarfile.TarFile, path: Path, key: Any | None) -> Checked:
    members = tar.getmembers()
    names = [m.name for m in members]
    if not names or names[0] != MANIFEST:
        raise damaged(path, f"not a modelport image archive (its first member is not {MANIFEST})")
    if len(set(names)) != len(names) or not all(m.isfile() for m in members):
        raise damaged(path, "members repeated, or not plain files")
    try:
        manifest = json.loads(_read(tar, MANIFEST))
        files = manifest["files"]
        if manifest.get("format") != FORMAT:
            raise damaged(path, f"not a modelport image archive (format {manifest.get('format')!r})")
    except (ValueError, KeyError, TypeError) as e:
        raise damaged(path, f"its manifest cannot be read ({e})") from None
    if set(names[1:]) != set(files) or not set(files) <= set(MEMBERS) or IMAGE not in files:
        raise damaged(path, f"its members ({', '.join(names[1:])}) are not the ones its manifest lists ({', '.join(files)})")
    for name, expected in files.items():
        size, digest = _digest(tar.extractfile(name))
        if size != expected.get("size") or digest != expected.get("sha256"):
            raise damaged(path, f"{name} has sha256 {digest} ({size} bytes), the manifest lists "
                                f"{expected.get('sha256')} ({expected.get('size')} bytes)")
    image = str(manifest.get("image"))
    statement = _read(tar, provenance.STATEMENT_FILE)
    sbom = _read(tar, SBOM_FILE)
    signature = (signing.Signature.from_json(json.loads(_read(tar, provenance.SIGNATURE_FILE)))
                 if provenance.SIGNATURE_FILE in files else None)
    data = provenance.check_statement(statement, hashlib.sha256(sbom).hexdigest(), signature, key, image=image)
    if data.get("image_id") != manifest.get("image_id") or data.get("image") != image:
        raise damaged(path, "its manifest names another image than its statement")
    config_id = _config_id(tar)
    if config_id != data["image_id"]:
        raise VerificationError(f"{path}: the image inside ({config_id[:19]}…) is not the one its statement names "
                                f"({data['image_id'][:19]}…), refused")
    return Checked(manifest, data, statement, sbom, signature, signing.key_id(key) if key is not None else None)


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None  # a plain file, checked
    return f.read()


def _digest(f: IO[bytes] | None) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    for chunk in _chunks(f):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def _config_id(tar: tarfile.TarFile) -> str:
    """The ID of the image in ``docker save`` output: the sha256 of the configuration its manifest names."""
    with tarfile.open(fileobj=tar.extractfile(IMAGE), mode="r:") as inner:
        try:
            (entry,) = json.loads(_read(inner, "manifest.json"))
            _, digest = _digest(inner.extractfile(entry["Config"]))
        except (KeyError, ValueError, TypeError) as e:
            raise VerificationError(f"The archive's image.tar is not `docker save` output of one image ({e})") from None
    return f"sha256:{digest}"


def load(path: Path, public_key: Path | None = None, *, progress: Progress = lambda _: None) -> Loaded:
    """Check the archive (and its signature, with ``public_key``), load its image into the engine, and
    put its provenance record back so that ``run`` can verify it here."""
    from modelport.container import engine

    path = Path(path)
    progress(f"Checking {path} ({path.stat().st_size / 1e6:.0f} MB)" if path.is_file() else f"Checking {path}")
    checked = check(path, public_key)
    tag, image_id = checked.statement["image"], checked.statement["image_id"]
    progress(f"Loading {tag} into the Docker Engine")
    with tarfile.open(path, "r:") as tar:
        engine.load(_chunks(tar.extractfile(IMAGE)))
    loaded = engine.client().images.get(image_id)
    if tag not in loaded.tags:  # an archive of an image saved by ID: tag it as its statement names it
        repository, _, version = tag.rpartition(":")
        loaded.tag(repository, version)
    provenance.write_record(tag, checked.statement_bytes, checked.sbom, checked.signature)
    return Loaded(tag, image_id, str(checked.statement.get("model")), str(checked.statement.get("version")), checked.key_id)


def _chunks(f: IO[bytes] | None) -> Iterator[bytes]:
    """A tar member as chunks: the engine gets it as it is read, never all in memory."""
    assert f is not None
    while chunk := f.read(_CHUNK):
        yield chunk
