from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

import modelport
from modelport.errors import IntegrityError, InvalidReferenceError, NotFoundError
from modelport.store import ModelStore, parse_ref
from modelport.store.bundle import export_version, import_bundle
from tests.helpers import run_in_process


def _fit(seed: int = 0) -> LinearRegression:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 3))
    return LinearRegression().fit(x, x @ [1.0, 2.0, 3.0] + seed)


def test_versions_are_numbered_and_references_resolve(store: ModelStore) -> None:
    v1 = modelport.save_model(_fit(0), "house", metrics={"r2": 0.9}, tags={"team": "a"}, description="first", store=store)
    v2 = modelport.save_model(_fit(1), "house", store=store)
    assert (v1.version, v2.version) == (1, 2)
    assert store.resolve("house").version == 2
    assert store.resolve("house:1").metrics == {"r2": 0.9}
    assert store.resolve("house:1").tags == {"team": "a"}
    assert store.resolve("house:1").description == "first"
    assert store.resolve("house:1").libraries["scikit-learn"]
    store.set_alias("house:1", "production")
    assert store.resolve("house@production").version == 1
    store.set_alias("house:2", "production")  # aliases move
    assert store.resolve("house@production").version == 2
    assert store.resolve("house:2").aliases == ("production",)
    store.remove_alias("house", "production")
    with pytest.raises(NotFoundError, match="no alias 'production'"):
        store.resolve("house@production")


@pytest.mark.parametrize("ref", ["House", "a b", "x:0", "x:abc", "x@1abc", "", "h:\u00b2", "h:\u0661", "h:\uff13", "h:+3", "h: 3", "h:99999999999"])
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_ref(ref)


def test_missing_things_have_clear_errors(store: ModelStore) -> None:
    with pytest.raises(NotFoundError, match="No model named 'nope'"):
        store.resolve("nope")
    modelport.save_model(_fit(), "m", store=store)
    with pytest.raises(NotFoundError, match=r"no version 7 \(versions: 1\)"):
        store.resolve("m:7")


def test_loaded_model_predicts_like_the_original(store: ModelStore) -> None:
    model = _fit()
    modelport.save_model(model, "m", store=store)
    x = np.random.default_rng(5).normal(size=(10, 3))
    np.testing.assert_array_equal(modelport.load_model("m", store=store).predict(x), model.predict(x))


def test_tampered_or_truncated_artifact_is_refused(store: ModelStore) -> None:
    mv = modelport.save_model(_fit(), "m", store=store)
    blob = store.blobs.path(next(iter(mv.files.values())).sha256)
    original = blob.read_bytes()
    blob.write_bytes(original[: len(original) // 2])
    with pytest.raises(IntegrityError, match="corrupted"):
        modelport.load_model("m", store=store)
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(IntegrityError, match="corrupted"):
        modelport.load_model("m", store=store)
    blob.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        modelport.load_model("m", store=store)


def test_delete_version_and_model(store: ModelStore) -> None:
    modelport.save_model(_fit(0), "m", store=store)
    modelport.save_model(_fit(1), "m", store=store)
    store.set_alias("m:2", "prod")
    store.delete("m:2")
    assert [v.version for v in store.list_versions("m")] == [1]
    with pytest.raises(NotFoundError):
        store.resolve("m@prod")
    assert modelport.save_model(_fit(2), "m", store=store).version == 2  # numbering continues from the latest left
    store.delete("m")
    assert store.list_models() == []


def test_gc_removes_only_unreferenced_blobs(store: ModelStore) -> None:
    keep = modelport.save_model(_fit(0), "keep", store=store)
    modelport.save_model(_fit(1), "drop", store=store)
    store.delete("drop")
    assert len(store.blobs.digests()) == 2
    store.gc(min_age_s=0)
    assert store.blobs.digests() == {e.sha256 for e in keep.files.values()}
    modelport.load_model("keep", store=store)


def test_export_import_roundtrip(store: ModelStore, tmp_path: Path) -> None:
    mv = modelport.save_model(_fit(), "m", metrics={"r2": 0.5}, store=store)
    bundle = tmp_path / "m.tar.gz"
    export_version(store, "m:1", bundle)
    other = ModelStore(tmp_path / "other-home")
    imported = import_bundle(other, bundle).version
    assert (imported.name, imported.version, imported.digest, imported.metrics) == ("m", 1, mv.digest, {"r2": 0.5})
    assert imported.tags["imported_from"] == "m:1"
    x = np.ones((1, 3))
    assert modelport.load_model("m", store=other).predict(x) == modelport.load_model("m", store=store).predict(x)


def _corrupt_same_size(blob: Path) -> None:
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_put_replaces_a_present_file_whose_content_does_not_match(store: ModelStore) -> None:
    digest = store.blobs.put(b"model bytes")
    _corrupt_same_size(store.blobs.path(digest))
    assert store.blobs.write(b"model bytes") == (digest, True)
    assert store.blobs.get(digest) == b"model bytes"
    assert store.blobs.write(b"model bytes") == (digest, False)
    assert not list(store.blobs.path(digest).parent.glob(".incoming-*"))


def test_restoring_from_an_export_repairs_a_corrupted_file(store: ModelStore, tmp_path: Path) -> None:
    """Save, export, corrupt a stored file (same size), load fails; follow the message's advice; load works."""
    model = _fit()
    mv = modelport.save_model(model, "h", store=store)
    bundle = tmp_path / "h-1.tar.gz"
    assert run_in_process("models", "export", "h:1", str(bundle), check=False).returncode == 0
    _corrupt_same_size(store.blobs.path(next(iter(mv.files.values())).sha256))
    with pytest.raises(IntegrityError, match="corrupted.*Restore it from an export") as failure:
        modelport.load_model("h:1", store=store)
    r = run_in_process("models", "import", str(bundle), check=False)  # the advice
    assert r.returncode == 0, r.stderr
    x = np.ones((2, 3))
    np.testing.assert_array_equal(modelport.load_model("h:1", store=store).predict(x), model.predict(x))
    assert "modelport models import FILE" in str(failure.value)
    assert "Repaired artifact file 'model.skops'" in r.stdout and "Already in the store as h:1" in r.stdout
    assert [v.version for v in store.list_versions("h")] == [1]


def test_reimporting_the_same_bundle_adds_no_duplicate_version(store: ModelStore, tmp_path: Path) -> None:
    modelport.save_model(_fit(0), "h", store=store)
    modelport.save_model(_fit(1), "h", store=store)
    bundle = tmp_path / "h-1.tar.gz"
    export_version(store, "h:1", bundle)
    r = run_in_process("models", "import", str(bundle), check=False)
    assert (r.returncode, r.stdout.strip()) == (0, "Already in the store as h:1 (same sha256): no version added")
    assert [v.version for v in store.list_versions("h")] == [1, 2]
    r = run_in_process("models", "import", str(bundle), "--name", "copy", check=False)  # another name is another model
    assert "Imported as copy:1" in r.stdout
    again = import_bundle(store, bundle, reuse_existing=False)
    assert (again.created, again.version.ref) == (True, "h:3")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)],
                         ids=["umask-022", "umask-027", "umask-077"])
def test_export_writes_a_normal_file_under_the_umask(store: ModelStore, tmp_path: Path, umask: int, mode: int) -> None:
    modelport.save_model(_fit(), "m", store=store)
    previous = os.umask(umask)
    try:
        export_version(store, "m:1", tmp_path / "m.tar.gz")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "m.tar.gz").stat().st_mode) == mode


def test_import_of_a_damaged_bundle_is_refused(store: ModelStore, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar file")
    with pytest.raises(modelport.errors.ModelportError, match="Cannot read bundle"):
        import_bundle(store, bad)


_SAVER = textwrap.dedent("""
    import sys, numpy as np
    from sklearn.ensemble import RandomForestRegressor
    import modelport
    rng = np.random.default_rng(int(sys.argv[1]))
    x = rng.normal(size=(300, 5))
    model = RandomForestRegressor(n_estimators=int(sys.argv[2]), random_state=0).fit(x, x.sum(axis=1))
    for _ in range(int(sys.argv[3])):
        print(modelport.save_model(model, "race").version, flush=True)
""")


@pytest.mark.long
def test_concurrent_saves_get_distinct_versions(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    procs = [subprocess.Popen([sys.executable, str(script), str(i), "5", "5"], stdout=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    versions = sorted(int(v) for out in outs for v in out)
    assert versions == list(range(1, 16))
    store = ModelStore()
    assert [v.version for v in store.list_versions("race")] == versions


@pytest.mark.long
def test_many_processes_opening_a_new_store_at_once(tmp_path: Path) -> None:
    """The first open creates the tables; racing openers wait for it instead of failing "database is locked".
    Each process imports first and opens on a signal, so the opens race each time (not their imports)."""
    code = ("import sys; from pathlib import Path; from modelport.store.registry import ModelStore; "
            "print('ready', flush=True); sys.stdin.readline(); ModelStore(Path(sys.argv[1])).list_models()")
    for attempt in range(2):
        home = tmp_path / f"home{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        assert [p.stdout.readline() for p in procs] == ["ready\n"] * 6  # type: ignore[union-attr]
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, "\n".join(errors)


@pytest.mark.long
def test_a_save_killed_midway_leaves_no_half_version(home: Path, tmp_path: Path) -> None:
    """SIGKILL a process while it saves large models: every version that exists is complete."""
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    printed: list[str] = []
    # Killed once a version is saved (not after a guessed start-up time, which may end it before any save),
    # at staggered moments into saving the next.
    for into in (0.0, 0.1, 0.25):
        proc = subprocess.Popen([sys.executable, str(script), "0", "200", "50"], stdout=subprocess.PIPE, text=True)
        printed.append(proc.stdout.readline().strip())  # type: ignore[union-attr]
        time.sleep(into)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert all(v.isdigit() for v in printed), printed
    store = ModelStore()
    versions = store.list_versions("race") if store.list_models() else []
    for mv in versions:
        store.read_files(mv)  # raises if any file is partial
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    assert {int(v) for v in printed} <= {v.version for v in versions}  # every save that finished is there


def test_postgresql_metadata_database(postgres_url: str, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "pg-home", db_url=postgres_url)
    try:
        for seed in range(3):
            modelport.save_model(_fit(seed), "pgmodel", store=store)
        store.set_alias("pgmodel:2", "production")
        assert store.resolve("pgmodel@production").version == 2
        assert [v.version for v in store.list_versions("pgmodel")] == [1, 2, 3]
        x = np.ones((2, 3))
        np.testing.assert_allclose(modelport.load_model("pgmodel:3", store=store).predict(x), _fit(2).predict(x))
    finally:
        store.delete("pgmodel")
        store.close()


@pytest.mark.long
def test_postgresql_concurrent_saves(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_HOME", str(tmp_path / "pg-home"))
    monkeypatch.setenv("MODELPORT_DB_URL", postgres_url)
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    procs = [subprocess.Popen([sys.executable, str(script), str(i), "3", "4"], stdout=subprocess.PIPE, text=True) for i in range(3)]
    versions = sorted(int(v) for p in procs for v in p.communicate(timeout=300)[0].split())
    assert versions == list(range(1, 13))
    ModelStore().delete("race")


def test_cli_refuses_a_non_ascii_version_without_a_traceback(home: Path) -> None:
    r = run_in_process("models", "show", "h:\u00b2", check=False)
    assert r.returncode == 1
    assert "Invalid version in 'h:²'" in r.stderr and "Traceback" not in r.stderr
