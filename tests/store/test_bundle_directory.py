"""A version as a model image holds it: an unpacked bundle, read without the registry's database."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.errors import IntegrityError, NotFoundError
from modelport.store import ModelStore
from modelport.store.bundle import FILES, MANIFEST, BundleDirectory, write_directory


@pytest.fixture
def written(tmp_path: Path) -> tuple[ModelStore, Path]:
    store = ModelStore(tmp_path / "home")
    mv = store.save("m", {"model.bin": b"weights", "labels.txt": b"a\nb\n"}, framework="onnx", task="tensor",
                    signature={"kind": "tensor"}, metrics={"r2": 0.5})
    store.set_alias(mv.ref, "production")
    mv = store.resolve("m:1")
    write_directory(mv, store.read_files(mv), tmp_path / "model")
    return store, tmp_path / "model"


def test_the_directory_serves_its_version_like_the_store(written: tuple[ModelStore, Path]) -> None:
    store, root = written
    models = BundleDirectory(root)
    for ref in ("m", "m:1", "m@production"):
        assert models.resolve(ref) == store.resolve("m:1")  # every field, the dates and aliases too
    assert models.read_files(models.resolve("m")) == {"model.bin": b"weights", "labels.txt": b"a\nb\n"}
    for ref in ("m:2", "other", "m@staging"):
        with pytest.raises(NotFoundError, match="this image serves m:1"):
            models.resolve(ref)


def test_a_changed_file_or_manifest_is_refused(written: tuple[ModelStore, Path]) -> None:
    _, root = written
    (root / FILES / "model.bin").write_bytes(b"weightz")  # same size
    models = BundleDirectory(root)
    with pytest.raises(IntegrityError, match="'model.bin' of m:1 is corrupted: its sha256 is"):
        models.read_files(models.resolve("m"))
    (root / MANIFEST).write_text((root / MANIFEST).read_text().replace('"size": 7', '"size": 8'))
    BundleDirectory(root)  # sizes are not in the digest; a file's sha256 is:
    (root / MANIFEST).write_text((root / MANIFEST).read_text().replace(f'"sha256": "{_sha(b"weights")}"', f'"sha256": "{_sha(b"weightz")}"'))
    with pytest.raises(IntegrityError, match="not those of m:1's sha256"):
        BundleDirectory(root)


def test_write_directory_refuses_files_the_version_does_not_record(written: tuple[ModelStore, Path], tmp_path: Path) -> None:
    store, _ = written
    mv = store.resolve("m:1")
    with pytest.raises(IntegrityError, match="not the ones it records"):
        write_directory(mv, {"model.bin": b"other"}, tmp_path / "again")


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
