"""Provenance without an engine: the SBOM tool's output, keys and signatures, statements and their checks,
and image archives (docker save output made here) refused when anything in them changed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from modelport.container import archive, provenance, signing
from modelport.container.sbom import SBOM_LABEL, write_sbom
from modelport.errors import ModelportError, VerificationError
from tests.helpers import run_in_process

LABELS = {"io.modelport.model": "houses", "io.modelport.version": "1", "io.modelport.sha256": "ab" * 32,
          "io.modelport.modelport-version": "0.1.0"}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "keys" / "signing.pem", tmp_path / "keys" / "signing.pub.pem"
    signing.generate(private, public)
    return private, public


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    """A wheelhouse of two (fake) wheels: the SBOM reads names, versions and bytes, never the contents."""
    d = tmp_path / "wheels"
    d.mkdir()
    (d / "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"numpy bytes")
    (d / "scikit_learn-1.9.1-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"sklearn bytes")
    (d / "requirements.lock").write_text("numpy==2.4.6\nscikit-learn==1.9.1\n")
    return d


def test_the_sbom_is_valid_cyclonedx_naming_every_wheel_with_its_sha256(wheels: Path, tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    digest = write_sbom(wheels, tmp_path / "a.json")
    text = (tmp_path / "a.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None  # None: no validation error
    assert digest == hashlib.sha256(text.encode()).hexdigest()
    bom = json.loads(text)
    assert bom["bomFormat"] == "CycloneDX"
    found = {(c["name"], c["version"], c["purl"]): c["externalReferences"][0]["hashes"][0]["content"] for c in bom["components"]}
    assert found == {("numpy", "2.4.6", "pkg:pypi/numpy@2.4.6"): hashlib.sha256(b"numpy bytes").hexdigest(),
                     ("scikit-learn", "1.9.1", "pkg:pypi/scikit-learn@1.9.1"): hashlib.sha256(b"sklearn bytes").hexdigest()}
    assert write_sbom(wheels, tmp_path / "b.json") == digest  # reproducible: the label keeps Docker's cache


def test_keys_are_pem_files_the_private_one_for_its_owner_only(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(ModelportError, match="does not overwrite"):
        signing.generate(private, private.with_name("other.pub.pem"))
    with pytest.raises(ModelportError, match="not a PEM public key"):
        signing.load_public(private)
    with pytest.raises(ModelportError, match="No such public key file"):
        signing.load_public(private.with_name("missing.pem"))


def test_keygen_command(tmp_path: Path) -> None:
    out = run_in_process("keygen", str(tmp_path / "k.pem"))
    assert (tmp_path / "k.pem").is_file() and (tmp_path / "k.pub.pem").is_file() and "MODELPORT_VERIFY_KEY" in out.stdout
    again = run_in_process("keygen", str(tmp_path / "k.pem"), check=False)
    assert again.returncode == 1 and "does not overwrite" in again.stderr


def _statement(image_id: str = "sha256:" + "1" * 64, sbom: str = "2" * 64) -> bytes:
    return provenance.make_statement("modelport/houses:1", image_id, LABELS, sbom)


def test_a_signed_statement_verifies_and_every_change_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = (signing.load_private(keys[0]), signing.load_public(keys[1]))
    statement = _statement()
    sig = signing.sign(private, statement)
    data = provenance.check_statement(statement, "2" * 64, sig, public, image="img")
    assert data["model"] == "houses" and data["image_id"] == "sha256:" + "1" * 64
    assert provenance.check_statement(statement, "2" * 64, None, None, image="img")  # no key configured: checksums only

    with pytest.raises(VerificationError, match="is not signed"):
        provenance.check_statement(statement, "2" * 64, None, public, image="img")
    with pytest.raises(VerificationError, match="SBOM was changed"):
        provenance.check_statement(statement, "3" * 64, sig, public, image="img")
    forged = statement.replace(b"2222", b"3333")  # the SBOM changed and the statement edited to match it
    with pytest.raises(VerificationError, match="statement was changed"):
        provenance.check_statement(forged, "3" * 64, sig, public, image="img")
    signing.generate(tmp_path / "other.pem", tmp_path / "other.pub.pem")
    other = signing.load_private(tmp_path / "other.pem")
    with pytest.raises(VerificationError, match="not the configured key"):
        provenance.check_statement(statement, "2" * 64, signing.sign(other, statement), public, image="img")
    # A signature that claims the configured key's id but was made with another key.
    impostor = signing.Signature(sig.key_id, signing.sign(other, statement).value)
    with pytest.raises(VerificationError, match="statement was changed"):
        provenance.check_statement(statement, "2" * 64, impostor, public, image="img")


def test_the_image_must_be_the_one_the_statement_names() -> None:
    data = json.loads(_statement())
    labels = {**LABELS, SBOM_LABEL: "2" * 64}
    provenance.check_image(data, "sha256:" + "1" * 64, labels, image="img")
    with pytest.raises(VerificationError, match="changed, rebuilt or replaced"):
        provenance.check_image(data, "sha256:" + "9" * 64, labels, image="img")
    with pytest.raises(VerificationError, match="does not name its SBOM"):
        provenance.check_image(data, "sha256:" + "1" * 64, {**labels, SBOM_LABEL: "4" * 64}, image="img")


def _docker_save(config: bytes = b'{"config": {}}') -> tuple[bytes, str]:
    """What `docker save` writes for one image, in miniature; → (the tar's bytes, the image's ID)."""
    image_id = hashlib.sha256(config).hexdigest()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in ((f"{image_id}.json", config),
                           ("manifest.json", json.dumps([{"Config": f"{image_id}.json", "RepoTags": ["modelport/houses:1"],
                                                          "Layers": []}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), f"sha256:{image_id}"


@pytest.fixture
def saved(home: Path, tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    """A signed archive of a (miniature) image with its record."""
    image, image_id = _docker_save()
    (tmp_path / "image.tar").write_bytes(image)
    sbom = b'{"bomFormat": "CycloneDX"}\n'
    statement = provenance.make_statement("modelport/houses:1", image_id, LABELS, hashlib.sha256(sbom).hexdigest())
    rec = provenance.write_record("modelport/houses:1", statement, sbom, signing.sign(signing.load_private(keys[0]), statement))
    out = archive.write_archive(tmp_path / "model.tar", "modelport/houses:1", tmp_path / "image.tar", rec)
    assert out.signed and out.sha256 == hashlib.sha256(out.path.read_bytes()).hexdigest()
    return out.path


def test_a_whole_archive_passes_its_checks(saved: Path, keys: tuple[Path, Path]) -> None:
    checked = archive.check(saved, keys[1])
    assert checked.statement["image"] == "modelport/houses:1" and checked.key_id == signing.key_id(signing.load_public(keys[1]))
    with tarfile.open(saved) as tar:
        assert tar.getnames()[0] == archive.MANIFEST


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def _write_members(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _rewrite(path: Path, change: dict[str, bytes]) -> None:
    """Change members of an archive and its manifest's checksums to match (someone who knows the format)."""
    members = _members(path) | change
    manifest = json.loads(members[archive.MANIFEST])
    for name in change:
        manifest["files"][name] = {"size": len(members[name]), "sha256": hashlib.sha256(members[name]).hexdigest()}
    members[archive.MANIFEST] = json.dumps(manifest).encode()
    _write_members(path, members)


def test_a_flipped_byte_is_refused(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    offset = data.index(b'{"config"')  # inside image.tar
    data[offset + 2] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"damaged or was changed, refused: image.tar has sha256"):
        archive.check(saved)


def test_a_truncated_or_foreign_file_is_refused(saved: Path, tmp_path: Path) -> None:
    saved.write_bytes(saved.read_bytes()[:3000])
    with pytest.raises(VerificationError, match="damaged or was changed"):
        archive.check(saved)
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(VerificationError, match="not a readable tar archive"):
        archive.check(tmp_path / "notes.txt")


def test_a_changed_sbom_is_refused_even_with_a_manifest_to_match(saved: Path, keys: tuple[Path, Path]) -> None:
    _rewrite(saved, {"sbom.cdx.json": b'{"bomFormat": "CycloneDX", "components": []}\n'})
    with pytest.raises(VerificationError, match="SBOM was changed"):
        archive.check(saved, keys[1])


def test_another_image_inside_is_refused(saved: Path, keys: tuple[Path, Path]) -> None:
    _rewrite(saved, {"image.tar": _docker_save(b'{"config": {"Cmd": ["sh"]}}')[0]})
    with pytest.raises(VerificationError, match="the image inside .* is not the one its statement names"):
        archive.check(saved, keys[1])


def test_an_unsigned_archive_is_refused_when_a_key_is_configured(saved: Path, keys: tuple[Path, Path]) -> None:
    members = _members(saved)
    del members["statement.sig.json"]
    manifest = json.loads(members[archive.MANIFEST])
    del manifest["files"]["statement.sig.json"]
    members[archive.MANIFEST] = json.dumps(manifest).encode()
    _write_members(saved, members)
    assert archive.check(saved).signature is None  # no key configured: the checksums suffice
    with pytest.raises(VerificationError, match="is not signed"):
        archive.check(saved, keys[1])
    out = run_in_process("load", str(saved), "--verify-key", str(keys[1]), check=False)
    assert out.returncode == 1 and "is not signed" in out.stderr and "Traceback" not in out.stderr


def test_an_image_without_a_record_is_refused_clearly(home: Path, keys: tuple[Path, Path]) -> None:
    for args in (["verify", "modelport/elsewhere:1"], ["sign", "modelport/elsewhere:1", "--key", str(keys[0])],
                 ["save", "modelport/elsewhere:1", "-o", str(home / "x.tar")]):
        out = run_in_process(*args, check=False)
        assert out.returncode == 1 and "has no provenance record here" in out.stderr and "Traceback" not in out.stderr
    assert not (home / "x.tar").exists()
