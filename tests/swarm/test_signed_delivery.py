"""Provenance on real engines: a signed build, `run` refusing an image or SBOM that changed, and
`save` → `load` into a clean engine (the test Swarm's node3, which has never seen the image nor its
base image) where the image serves.

One image serves the module (built with the host engine, signed with a key made here). node3 is only
used as a plain engine: the test loads an image there, runs a container and removes both.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.container import provenance, signing
from modelport.container.sbom import SBOM_LABEL, sha256_file
from tests.conftest import TEST_BASE_IMAGE, TEST_PROXY_IMAGE
from tests.fixtures_swarm import SwarmCluster
from tests.helpers import free_port, run_cli, wait_until

docker = pytest.importorskip("docker")

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.timeout(1800)]


@dataclass
class Built:
    name: str
    tag: str
    env: dict[str, str]
    private: Path
    public: Path
    record: provenance.Record
    build_output: str
    x: np.ndarray
    y: np.ndarray
    tmp: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    from sklearn.linear_model import LinearRegression

    import modelport
    from modelport.store import ModelStore

    tmp = tmp_path_factory.mktemp("signed")
    name = f"sig-{uuid.uuid4().hex[:6]}"
    env = {"MODELPORT_HOME": str(tmp / "home"), "MODELPORT_PROXY_IMAGE": TEST_PROXY_IMAGE}
    x = np.random.default_rng(3).normal(size=(40, 3))
    model = LinearRegression().fit(x, x @ [1.5, -2.0, 0.5] + 4)
    store = ModelStore(tmp / "home")
    try:
        modelport.save_model(model, name, store=store)
    finally:
        store.close()
    private, public = tmp / "keys" / "signing.pem", tmp / "keys" / "signing.pub.pem"
    signing.generate(private, public)
    host = docker.from_env()
    try:
        out = run_cli("build", f"{name}:1", "--sign-key", str(private), "--base-image", TEST_BASE_IMAGE, env=env,
                      timeout=1500).stdout
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MODELPORT_HOME", env["MODELPORT_HOME"])
            record = provenance.Record(provenance.record_dir(f"modelport/{name}:1"))
        yield Built(name, f"modelport/{name}:1", env, private, public, record, out, x[:4], model.predict(x[:4]), tmp)
    finally:
        run_cli("rm", name, "--force", env=env, check=False)
        for image in host.images.list(name=f"modelport/{name}"):
            host.images.remove(image.id, force=True)
        host.close()


def _refused(built: Built, *args: str, env: dict[str, str] | None = None) -> str:
    """``modelport run`` that must fail before any container starts; → its error."""
    out = run_cli("run", f"{built.name}:1", "--port", str(free_port()), *args, "--base-image", TEST_BASE_IMAGE,
                  env={**built.env, **(env or {})}, check=False, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert not docker.from_env().containers.list(all=True, filters={"label": f"io.modelport.service={built.name}"})
    return out.stderr


def test_a_build_writes_its_sbom_labels_the_image_with_it_and_signs_it(built: Built) -> None:
    labels = docker.from_env().images.get(built.tag).labels
    sbom = built.record.sbom.read_bytes()
    assert labels[SBOM_LABEL] == hashlib.sha256(sbom).hexdigest()
    components = {c["name"]: c["version"] for c in json.loads(sbom)["components"]}
    from importlib.metadata import version

    assert components["scikit-learn"] == version("scikit-learn") and "modelport" in components and "torch" not in components
    key_id = signing.key_id(signing.load_public(built.public))
    assert f"SBOM: {built.record.sbom} (signed with key {key_id})" in built.build_output
    statement = json.loads(built.record.statement.read_bytes())
    assert statement["image_id"] == docker.from_env().images.get(built.tag).id and statement["model"] == built.name


def test_run_with_a_public_key_serves_the_signed_image(built: Built) -> None:
    port = free_port()
    try:
        out = run_cli("run", f"{built.name}:1", "--port", str(port), "--verify-key", str(built.public),
                      "--base-image", TEST_BASE_IMAGE, env=built.env, timeout=600)
        assert "Verifying modelport/" in out.stdout
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": built.x.tolist()}, timeout=10)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], built.y, rtol=1e-9)
        # Started by the ID the signature names, not by the tag it was checked under: a tag moved after
        # the check (or before a later `scale`) cannot start another image.
        signed = json.loads(built.record.statement.read_bytes())["image_id"]
        replicas = docker.from_env().containers.list(filters={"label": [f"io.modelport.service={built.name}",
                                                                         "io.modelport.role=model"]})
        assert replicas and {c.attrs["Config"]["Image"] for c in replicas} == {signed}
    finally:
        run_cli("rm", built.name, "--force", env=built.env, check=False)


def test_run_refuses_a_changed_sbom_an_unsigned_image_and_another_image_under_the_tag(built: Built) -> None:
    key = ["--verify-key", str(built.public)]
    sbom = built.record.sbom.read_bytes()
    built.record.sbom.write_bytes(sbom.replace(b'"name": "numpy"', b'"name": "numpy-patched"', 1))
    try:
        assert "SBOM was changed" in _refused(built, *key)
    finally:
        built.record.sbom.write_bytes(sbom)

    signature = built.record.signature.read_bytes()
    built.record.signature.unlink()
    try:  # configured through the environment this time
        assert "is not signed" in _refused(built, env={"MODELPORT_VERIFY_KEY": str(built.public)})
    finally:
        built.record.signature.write_bytes(signature)

    # Someone changes a file in the image and puts the result under the same tag (its labels come along).
    host = docker.from_env()
    original = host.images.get(built.tag).id
    container = host.containers.create(built.tag, command=["true"])
    repository, _, tag = built.tag.rpartition(":")
    changed = None
    try:
        container.put_archive("/tmp", _tar_of("extra.py", b"print('not what was signed')\n"))
        changed = container.commit(repository, tag)
        assert host.images.get(built.tag).id == changed.id != original
        assert "not the image its statement names" in _refused(built, *key)
        out = run_cli("verify", built.tag, env=built.env, check=False)  # no key: the checksums alone tell
        assert out.returncode == 1 and "changed, rebuilt or replaced" in out.stderr
    finally:
        container.remove(force=True)
        host.images.get(original).tag(repository, tag)
        if changed is not None:
            host.images.remove(changed.id, force=True)
    assert run_cli("verify", built.tag, "--key", str(built.public), env=built.env).returncode == 0


def _tar_of(name: str, data: bytes) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_save_then_load_into_a_clean_engine_where_it_serves(built: Built, swarm_cluster: SwarmCluster) -> None:
    archive = built.tmp / "out" / "model.tar"
    out = run_cli("save", f"{built.name}:1", "-o", str(archive), env=built.env, timeout=600).stdout
    assert f"MB, signed), sha256 {sha256_file(archive)}" in out

    node = swarm_cluster.nodes["node3"]
    engine = node.client(timeout=300)
    # The other machine: its own engine, an empty modelport home, only the public key.
    there = {"DOCKER_HOST": node.url, "MODELPORT_HOME": str(built.tmp / "elsewhere")}
    assert not engine.images.list(name=f"modelport/{built.name}")
    with open(archive, "r+b") as f:  # damage in transit: one byte in the middle of the image's layers
        f.seek(archive.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    damaged = run_cli("load", str(archive), env=there, check=False, timeout=600)
    assert damaged.returncode == 1 and "is damaged or was changed, refused: image.tar has sha256" in damaged.stderr
    assert not engine.images.list(name=f"modelport/{built.name}")  # nothing reached the engine
    with open(archive, "r+b") as f:
        f.seek(archive.stat().st_size // 2)
        f.write(byte)

    container = None
    try:
        out = run_cli("load", str(archive), "--verify-key", str(built.public), env=there, timeout=900).stdout
        assert f"Loaded {built.tag} serving {built.name}:1, signed with key" in out
        assert engine.images.get(built.tag).id == docker.from_env().images.get(built.tag).id
        assert "signed with key" in run_cli("verify", built.tag, "--key", str(built.public), env=there).stdout
        port = free_port()
        container = engine.containers.run(built.tag, detach=True, ports={"8080/tcp": port},
                                          labels={"io.modelport.test": "signed-delivery"})
        url = f"http://{node.addr}:{port}/predict"

        def predict() -> httpx.Response | None:
            try:
                return httpx.post(url, json={"instances": built.x.tolist()}, timeout=5)
            except httpx.HTTPError:
                return None

        r = wait_until(predict, lambda r: r is not None and r.status_code == 200, timeout=180,
                       what=lambda r: f"{url}: {r and r.text}")
        np.testing.assert_allclose(r.json()["predictions"], built.y, rtol=1e-9)
    finally:
        if container is not None:
            container.remove(force=True)
        for image in engine.images.list(name=f"modelport/{built.name}"):
            engine.images.remove(image.id, force=True)
        engine.close()
