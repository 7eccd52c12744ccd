"""The manifests describe the image as it really is: the container spec that ``k8s export`` writes,
run on the real Docker Engine exactly as the Deployment says (its image, port, user, read-only root
filesystem with tmpfs on the emptyDir paths, capabilities dropped, no privilege escalation, CPU and
memory limits), answers its probes and ``/v2/models/NAME/infer``. No cluster runs here: this is
the part of a pod that can be checked without one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.store import ModelStore
from tests.conftest import TEST_BASE_IMAGE
from tests.helpers import free_port, wait_until
from tests.k8s.validation import documents, validate

# An image build takes minutes; on a busy machine far more than the suite's 600 s default.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

X = np.random.default_rng(1).normal(size=(5, 4))
UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9, "": 1}


def quantity(text: str) -> float:
    """A Kubernetes quantity (2, 500m, 1Gi) as a number (cores or bytes)."""
    number, unit = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|k|M|G|)", text).groups()
    return float(number) / 1000 if unit == "m" else float(number) * UNITS[unit]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelStore, Any]]:
    """A scikit-learn model and its image, built once for the module by ``modelport build``'s code."""
    import docker
    from sklearn.linear_model import LinearRegression

    import modelport
    from modelport.container.build import build_image

    store = ModelStore(tmp_path_factory.mktemp("k8s-image-home"))
    name = f"k8s-{uuid.uuid4().hex[:6]}"
    x = np.random.default_rng(0).normal(size=(80, 4))
    modelport.save_model(LinearRegression().fit(x, x @ [1.0, -2.0, 0.5, 3.0] + 1), name, store=store)
    image = build_image(f"{name}:1", base_image=TEST_BASE_IMAGE, store=store)
    try:
        yield store, image
    finally:
        client = docker.from_env()
        client.images.remove(image.id, force=True)
        client.close()
        store.close()


def run_as_the_deployment_says(client: Any, deployment: dict[str, Any], port: int) -> Any:
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc, psc = c["securityContext"], pod["securityContext"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmpfs = {}
    for mount in c["volumeMounts"]:
        empty_dir = volumes[mount["name"]]["emptyDir"]  # every writable path is an emptyDir
        tmpfs[mount["mountPath"]] = f"size={int(quantity(empty_dir['sizeLimit']))}"
    assert psc["runAsNonRoot"] and sc["runAsNonRoot"] and psc["seccompProfile"]["type"] == "RuntimeDefault"
    return client.containers.run(
        c["image"], command=c.get("args"), entrypoint=c.get("command"), detach=True,
        name=f"modelport-k8s-test-{uuid.uuid4().hex[:8]}",
        user=f"{psc['runAsUser']}:{psc['runAsGroup']}", group_add=[str(psc["fsGroup"])],
        read_only=sc["readOnlyRootFilesystem"], tmpfs=tmpfs, cap_drop=sc["capabilities"]["drop"],
        security_opt=[] if sc["allowPrivilegeEscalation"] else ["no-new-privileges"],  # Docker's default seccomp profile: RuntimeDefault
        nano_cpus=int(quantity(c["resources"]["limits"]["cpu"]) * 1e9),
        mem_limit=int(quantity(c["resources"]["limits"]["memory"])),
        environment={e["name"]: e["value"] for e in c.get("env", [])},
        ports={f"{c['ports'][0]['containerPort']}/tcp": ("127.0.0.1", port)})


def test_the_exported_container_spec_runs_and_serves_on_its_probes_and_port(built: tuple[ModelStore, Any],
                                                                              tmp_path: Path) -> None:
    import docker

    from modelport.k8s.manifests import Options, release

    store, image = built
    # Two CPUs: two workers, so the server's multi-worker state (the pinned model, the metrics) is in /tmp too.
    files = release(image.model.ref, Options(cpu="2", memory="1Gi"), store=store).manifests()
    validate(documents(files["deployment.yaml"]))
    (deployment,) = documents(files["deployment.yaml"])
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    assert c["image"] == image.tag
    client = docker.from_env()
    config = client.images.get(c["image"]).attrs["Config"]
    pod_sc = deployment["spec"]["template"]["spec"]["securityContext"]
    assert config["User"] == f"{pod_sc['runAsUser']}:{pod_sc['runAsGroup']}"  # the image's own user is the manifest's
    assert f"{c['ports'][0]['containerPort']}/tcp" in config["ExposedPorts"]
    assert config["Labels"]["io.modelport.sha256"] == deployment["metadata"]["annotations"]["modelport.io/sha256"]
    port = free_port()
    container = run_as_the_deployment_says(client, deployment, port)
    try:
        url = f"http://127.0.0.1:{port}"

        def probe(path: str) -> int | str:
            container.reload()
            if container.status != "running":
                return f"container {container.status}: {container.logs(tail=30).decode(errors='replace')}"
            try:
                return httpx.get(url + path, timeout=2).status_code
            except httpx.HTTPError as e:
                return repr(e)

        def answered(status: int | str) -> bool:
            if isinstance(status, str) and status.startswith("container"):
                raise AssertionError(status)
            return status == 200

        wait_until(lambda: probe(c["startupProbe"]["httpGet"]["path"]), answered, timeout=120, interval=0.5)
        for kind in ("readinessProbe", "livenessProbe"):
            assert probe(c[kind]["httpGet"]["path"]) == 200, kind
        model = deployment["metadata"]["annotations"]["modelport.io/model"]
        body = {"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP64", "data": X.ravel().tolist()}]}
        r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"][0]["data"], X @ [1.0, -2.0, 0.5, 3.0] + 1, rtol=1e-9)
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200  # what the ServiceMonitor scrapes
        # the root filesystem really is read-only, and /tmp (the emptyDir) really is where it writes
        cant = container.exec_run(["python3", "-c", "open('/opt/modelport/x', 'w')"])
        assert cant.exit_code != 0 and b"Read-only file system" in cant.output
        assert container.exec_run(["sh", "-c", "ls /tmp | grep -q modelport-serve"]).exit_code == 0
    finally:
        container.remove(force=True)
        client.close()
