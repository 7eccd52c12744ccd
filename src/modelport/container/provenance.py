"""What an image is and who vouches for it: each build's SBOM, a statement binding the image to it,
and the statement's signature, kept beside the store and checked before an image runs.

The statement is a small JSON document: the image's tag and ID (the sha256 of its configuration, which
names every layer), the SBOM's sha256 (also in the image's label), and the model it serves (name,
version, sha256). The signature covers the statement's exact bytes. An image cannot carry its own ID,
so the ID is in the statement: a changed, rebuilt or replaced image under the same tag has another ID.

Records live in ``MODELPORT_HOME/images/<tag, quoted>/``: ``sbom.cdx.json``, ``statement.json`` and,
once signed, ``statement.sig.json``. ``modelport save`` ships them with the image; ``load`` puts them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from modelport import config
from modelport.container import signing
from modelport.container.sbom import SBOM_FILE, SBOM_LABEL, sha256_file
from modelport.errors import ModelportError, VerificationError

STATEMENT_FILE = "statement.json"
SIGNATURE_FILE = "statement.sig.json"
STATEMENT_TYPE = "modelport.image-statement/v1"


def record_dir(tag: str) -> Path:
    return config.home() / "images" / quote(tag, safe="")


@dataclass(frozen=True)
class Record:
    """An image's provenance files on disk."""

    dir: Path

    @property
    def sbom(self) -> Path:
        return self.dir / SBOM_FILE

    @property
    def statement(self) -> Path:
        return self.dir / STATEMENT_FILE

    @property
    def signature(self) -> Path:
        return self.dir / SIGNATURE_FILE

    def exists(self) -> bool:
        return self.statement.is_file() and self.sbom.is_file()

    def read_signature(self) -> signing.Signature | None:
        if not self.signature.is_file():
            return None
        return signing.Signature.from_json(_json(self.signature.read_bytes(), self.signature))


def has_record(tag: str) -> bool:
    return Record(record_dir(tag)).exists()


def find(tag: str) -> Record:
    rec = Record(record_dir(tag))
    if not rec.exists():
        raise VerificationError(f"{tag} has no provenance record here (no SBOM or statement in {rec.dir}): it was not "
                                "built by this modelport, or was loaded without its archive (`modelport load ARCHIVE`)")
    return rec


def make_statement(tag: str, image_id: str, labels: dict[str, str], sbom_sha256: str) -> bytes:
    data = {"type": STATEMENT_TYPE, "image": tag, "image_id": image_id, "sbom_sha256": sbom_sha256,
            "model": labels.get("io.modelport.model"), "version": labels.get("io.modelport.version"),
            "model_sha256": labels.get("io.modelport.sha256"),
            "modelport_version": labels.get("io.modelport.modelport-version")}
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def write_record(tag: str, statement: bytes, sbom: bytes, signature: signing.Signature | None) -> Record:
    """Replace ``tag``'s record: a record never mixes one build's statement with another's signature."""
    rec = Record(record_dir(tag))
    rec.dir.mkdir(parents=True, exist_ok=True)
    rec.signature.unlink(missing_ok=True)
    _write(rec.sbom, sbom)
    _write(rec.statement, statement)
    if signature is not None:
        _write(rec.signature, json.dumps(signature.to_json(), indent=2).encode() + b"\n")
    return rec


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def record_build(tag: str, image_id: str, labels: dict[str, str], sbom: Path, signing_key: Any | None) -> Record:
    """After a build: its SBOM and statement, signed with ``signing_key`` (a loaded private key) if given."""
    statement = make_statement(tag, image_id, labels, sha256_file(sbom))
    signature = signing.sign(signing_key, statement) if signing_key is not None else None
    return write_record(tag, statement, sbom.read_bytes(), signature)


@dataclass(frozen=True)
class Verified:
    image: str
    statement: dict[str, Any]
    key_id: str | None  # the key whose signature was checked; None when only the checksums were


def check_statement(statement: bytes, sbom_sha256: str, signature: signing.Signature | None,
                    public_key: Any | None, *, image: str) -> dict[str, Any]:
    """What needs no engine: the signature over the statement (when a public key is given; then an
    unsigned statement is refused) and the SBOM's sha256 against the statement's. → the statement."""
    if public_key is not None:
        expected = signing.key_id(public_key)
        if signature is None:
            raise VerificationError(f"{image} is not signed, and verification is configured (key {expected}): "
                                    "sign it (`modelport sign IMAGE --key SIGNING_KEY`, or build it with --sign-key)")
        if signature.key_id != expected:
            raise VerificationError(f"{image} is signed with key {signature.key_id}, not the configured key {expected}")
        if not signing.valid(public_key, statement, signature):
            raise VerificationError(f"{image}'s signature does not match its statement: the statement was changed "
                                    "after it was signed")
    data = _json(statement, STATEMENT_FILE)
    if not isinstance(data, dict) or data.get("type") != STATEMENT_TYPE:
        raise VerificationError(f"{image}'s statement is not a modelport image statement")
    if data.get("sbom_sha256") != sbom_sha256:
        raise VerificationError(f"{image}'s SBOM was changed: its sha256 is {sbom_sha256}, the statement names "
                                f"{data.get('sbom_sha256')}")
    return data


def check_image(data: dict[str, Any], image_id: str, labels: dict[str, str], *, image: str) -> None:
    """The image under the tag is the one the statement names: same ID, same SBOM and model labels."""
    if image_id != data.get("image_id"):
        raise VerificationError(f"{image} is not the image its statement names (image ID {_short(image_id)}, the "
                                f"statement's {_short(str(data.get('image_id')))}): it was changed, rebuilt or "
                                "replaced since; build (and sign) it again")
    if labels.get(SBOM_LABEL) != data["sbom_sha256"]:
        raise VerificationError(f"{image}'s label {SBOM_LABEL} ({labels.get(SBOM_LABEL)}) does not name its SBOM "
                                f"({data['sbom_sha256']})")
    if labels.get("io.modelport.sha256") != data.get("model_sha256"):
        raise VerificationError(f"{image} serves another model than its statement names")


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def verify(tag: str, public_key: Path | None = None) -> Verified:
    """Check the local image ``tag`` against its record; with ``public_key`` its signature too.
    Raises VerificationError saying what does not match."""
    from modelport.container import engine

    key = signing.load_public(public_key) if public_key is not None else None
    rec = find(tag)
    data = check_statement(rec.statement.read_bytes(), sha256_file(rec.sbom), rec.read_signature(), key, image=tag)
    image = _image(engine.client(), tag)
    check_image(data, image.id, image.labels or {}, image=tag)
    return Verified(tag, data, signing.key_id(key) if key is not None else None)


def verify_configured(tag: str, public_key: Path | None, progress: Callable[[str], None]) -> Verified | None:
    """What starts an image checks first: with a public key (``public_key``, else MODELPORT_VERIFY_KEY) ``verify``
    with it, saying so; without one, nothing (None)."""
    if (key := public_key or config.verify_key()) is None:
        return None
    progress(f"Verifying {tag}: signature, image ID and SBOM")
    return verify(tag, key)


def sign(tag: str, private_key: Path) -> signing.Signature:
    """Sign the local image ``tag``'s statement, once the image and SBOM are checked to be the ones it names."""
    key = signing.load_private(private_key)
    verify(tag)
    rec = find(tag)
    signature = signing.sign(key, rec.statement.read_bytes())
    write_record(tag, rec.statement.read_bytes(), rec.sbom.read_bytes(), signature)
    return signature


def _image(client: Any, tag: str) -> Any:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        raise ModelportError(f"No image {tag!r} on this Docker Engine") from None


def _json(data: bytes, where: object) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VerificationError(f"{where} is not valid JSON ({e}): damaged or changed") from None
