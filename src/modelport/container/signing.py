"""Ed25519 keys the user holds (PEM files) and signatures made with them, through ``cryptography``.

The private key signs on the build machine; the public key, given to ``run`` or ``load`` anywhere,
verifies. A key's id (the first 16 hex digits of its raw public key's sha256) tells keys apart in
messages without showing the key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.errors import ModelportError
from modelport.extras import require

ALGORITHM = "ed25519"


@dataclass(frozen=True)
class Signature:
    key_id: str
    value: bytes

    def to_json(self) -> dict[str, str]:
        return {"algorithm": ALGORITHM, "key_id": self.key_id, "signature": base64.b64encode(self.value).decode()}

    @classmethod
    def from_json(cls, data: Any) -> Signature:
        try:
            if data["algorithm"] != ALGORITHM:
                raise ModelportError(f"Unsupported signature algorithm {data['algorithm']!r} (modelport signs with {ALGORITHM})")
            return cls(str(data["key_id"]), base64.b64decode(data["signature"], validate=True))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelportError(f"The signature file is not a modelport signature ({e})") from None


def _crypto() -> Any:
    require("docker", "Signing and verifying images")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def key_id(public_key: Any) -> str:
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate(private_path: Path, public_path: Path) -> str:
    """A new key pair: the private key readable by its owner only. → the key id. Never overwrites."""
    serialization, ed25519 = _crypto()
    for path in (private_path, public_path):
        if path.exists():
            raise ModelportError(f"{path} exists already: modelport does not overwrite keys (give another path)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(key.public_key())


def _read(path: Path, what: str) -> bytes:
    if not Path(path).is_file():
        raise ModelportError(f"No such {what} file: {path}")
    return Path(path).read_bytes()


def load_private(path: Path) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(_read(path, "signing key"), password=None)
    except (ValueError, TypeError) as e:
        raise ModelportError(f"{path} is not an unencrypted PEM private key ({e}); make one with `modelport keygen`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ModelportError(f"{path} is not an Ed25519 key; modelport signs with Ed25519 (`modelport keygen`)")
    return key


def load_public(path: Path) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(_read(path, "public key"))
    except (ValueError, TypeError) as e:
        raise ModelportError(f"{path} is not a PEM public key ({e}); `modelport keygen` writes one beside the signing key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ModelportError(f"{path} is not an Ed25519 public key; modelport verifies Ed25519 signatures")
    return key


def sign(private_key: Any, data: bytes) -> Signature:
    return Signature(key_id(private_key.public_key()), private_key.sign(data))


def valid(public_key: Any, data: bytes, signature: Signature) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signature.value, data)
        return True
    except InvalidSignature:
        return False
