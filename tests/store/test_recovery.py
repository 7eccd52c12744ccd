"""A damaged, emptied or replaced registry, and damaged artifact paths: messages and a way back, never a traceback
or a silent loss (issue 10 item 9)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

import modelport
from modelport.errors import IntegrityError, RegistryDamagedError, RegistryLostError
from modelport.store import ModelStore
from modelport.store.bundle import export_version
from tests.helpers import run_in_process


def _fit(seed: int) -> LinearRegression:
    x = np.random.default_rng(seed).normal(size=(30, 3))
    return LinearRegression().fit(x, x @ [1.0, 2.0, 3.0] + seed)


def _two_models(home: Path, bundle: Path) -> tuple[ModelStore, dict[str, str]]:
    """A store with models h and g (h exported to ``bundle``), closed so registry.db holds everything."""
    store = ModelStore()
    blobs = {name: next(iter(modelport.save_model(_fit(i), name, store=store).files.values())).sha256
             for i, name in enumerate(("h", "g"))}
    export_version(store, "h:1", bundle)
    store.close()
    assert not (home / "registry.db-wal").exists()
    return store, blobs


def _refused(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "sqlalchemy" not in r.stderr
    flat = " ".join(r.stderr.split())
    for w in words:
        assert w in flat, flat


@pytest.mark.parametrize("keep", [4096, 50, "half"])
def test_a_truncated_registry_is_reported_with_a_way_to_recover(home: Path, tmp_path: Path, keep: int | str) -> None:
    _, blobs = _two_models(home, tmp_path / "h.tar.gz")
    db = home / "registry.db"
    os.truncate(db, db.stat().st_size // 2 if keep == "half" else keep)
    with pytest.raises(RegistryDamagedError):
        ModelStore().check()
    for command in (["models", "list"], ["serve", "h", "--port", "1"], ["models", "gc"]):
        _refused(run_in_process(*command, check=False), "is damaged", "modelport models new-registry")
    assert {p.name for p in (home / "blobs").rglob("*") if p.is_file()} == set(blobs.values())


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_a_lost_registry_is_not_recreated_over_the_artifacts(home: Path, tmp_path: Path, how: str) -> None:
    _, blobs = _two_models(home, tmp_path / "h.tar.gz")
    db = home / "registry.db"
    db.write_bytes(b"") if how == "emptied" else db.unlink()
    for command in (["models", "list"], ["models", "gc"], ["models", "import", str(tmp_path / "h.tar.gz")]):
        _refused(run_in_process(*command, check=False), "is empty or missing", "holds 2 artifact file(s)",
                 "modelport models new-registry")
    with pytest.raises(RegistryLostError):
        ModelStore()
    assert {p.name for p in (home / "blobs").rglob("*") if p.is_file()} == set(blobs.values())


def test_new_registry_recovers_and_gc_keeps_what_it_forgot(home: Path, tmp_path: Path) -> None:
    """Damaged registry -> new-registry (the damaged file kept aside) -> import the export -> the model loads;
    gc refuses to delete the files the new registry never knew (g's) until --force."""
    bundle = tmp_path / "h.tar.gz"
    _, blobs = _two_models(home, bundle)
    old = time.time() - 7200  # older than gc's minimum age
    for p in (home / "blobs").rglob("*"):
        os.utime(p, (old, old))
    db = home / "registry.db"
    os.truncate(db, 4096)

    r = run_in_process("models", "new-registry", check=False)
    assert r.returncode == 0, r.stderr
    aside = [p for p in home.iterdir() if p.name.startswith("registry.db.damaged-")]
    assert len(aside) == 1 and aside[0].stat().st_size == 4096
    assert "2 artifact file(s) kept" in r.stdout
    assert run_in_process("models", "import", str(bundle), check=False).returncode == 0
    np.testing.assert_array_equal(modelport.load_model("h").predict(np.ones((1, 3))), _fit(0).predict(np.ones((1, 3))))

    _refused(run_in_process("models", "gc", check=False), "Not deleting 1 artifact file(s) that predate this registry",
             "--force")
    assert (home / "blobs" / "sha256" / blobs["g"][:2] / blobs["g"]).is_file()
    r = run_in_process("models", "gc", "--force", check=False)
    assert (r.returncode, r.stdout.strip()) == (0, "Removed 1 unreferenced artifact file(s)")
    assert {p.name for p in (home / "blobs").rglob("*") if p.is_file()} == {blobs["h"]}
    modelport.load_model("h")
    _refused(run_in_process("models", "new-registry", check=False), "readable (1 version(s)): nothing to recover")


def test_a_new_store_and_a_healthy_one_need_no_recovery(home: Path) -> None:
    store = ModelStore()
    modelport.save_model(_fit(0), "h", store=store)
    store.close()
    store = ModelStore()  # reopened: not "lost", gc works as before
    store.delete("h")
    assert len(store.gc(min_age_s=0)) == 1


def test_a_directory_in_place_of_an_artifact_file(store: ModelStore, tmp_path: Path) -> None:
    mv = modelport.save_model(_fit(0), "h", store=store)
    blob = store.blobs.path(next(iter(mv.files.values())).sha256)
    data = blob.read_bytes()
    blob.unlink()
    blob.mkdir()
    with pytest.raises(IntegrityError, match="cannot be read: .*Is a directory. If it is not a regular file, remove it"):
        modelport.load_model("h", store=store)
    _refused(run_in_process("models", "export", "h:1", str(tmp_path / "h.tar.gz"), check=False), "Is a directory")
    with pytest.raises(IntegrityError, match="is not a regular file: remove it"):
        store.blobs.write(data)
    assert store.gc(min_age_s=0) == [] and blob.is_dir()  # not an artifact file: gc leaves it alone
    blob.rmdir()
    assert store.blobs.write(data)[1] is False
    modelport.load_model("h", store=store)


def test_gc_refuses_when_the_registry_belongs_to_another_store(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another store's (valid) registry copied over this one: gc would delete this store's files it does not
    know; it refuses while the registry refers to files this store does not have."""
    _, blobs = _two_models(home, tmp_path / "h.tar.gz")
    other = tmp_path / "other-home"
    monkeypatch.setenv("MODELPORT_HOME", str(other))
    other_store = ModelStore()
    modelport.save_model(_fit(7), "x", store=other_store)
    other_store.close()
    monkeypatch.setenv("MODELPORT_HOME", str(home))
    (home / "registry.db").write_bytes((other / "registry.db").read_bytes())
    old = time.time() - 7200  # older than gc's minimum age
    for p in (home / "blobs").rglob("*"):
        os.utime(p, (old, old))

    _refused(run_in_process("models", "gc", check=False), "Not deleting anything", "may not be this store's registry",
             "--force")
    assert all((home / "blobs" / "sha256" / d[:2] / d).is_file() for d in blobs.values())
    r = run_in_process("models", "gc", "--force", check=False)
    assert (r.returncode, r.stdout.strip()) == (0, "Removed 2 unreferenced artifact file(s)")
