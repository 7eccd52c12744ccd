"""``build --platform linux/arm64``: an arm64 image cross-built on this amd64 host (wheels for manylinux
aarch64 installed by a native build stage; the final stage's RUN steps and the model's load check under qemu
through binfmt_misc) that runs here under emulation and answers the model's own predictions. Its base image, a
linux/arm64 stand-in for python:3.11-slim, is built once by ``scripts/test-env.sh --arm64`` (minutes of
emulation; scripts/test.sh runs it first, and the fixture when it is missing)."""

from __future__ import annotations

import os
import subprocess
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

# The emulated build and first start take minutes, far more on a busy machine.
pytestmark = [pytest.mark.docker, pytest.mark.arm64, pytest.mark.timeout(2400)]

ARM64_BASE_IMAGE = os.environ.get("MODELPORT_TEST_ARM64_BASE_IMAGE", "modelport-test/python:3.11-slim-arm64")
TEST_ENV = Path(__file__).resolve().parents[2] / "scripts" / "test-env.sh"
X = np.random.default_rng(1).normal(size=(6, 4))


@pytest.fixture(scope="session")
def arm64_base_image() -> str:
    """The linux/arm64 base image, built here if it is missing (needs root, as scripts/test-env.sh does)."""
    import docker

    client = docker.from_env()
    try:
        if not client.images.list(name=ARM64_BASE_IMAGE):
            if os.geteuid() != 0:
                problem = f"missing, and `{TEST_ENV} --arm64` needs root"
            else:
                proc = subprocess.run(["bash", str(TEST_ENV), "--arm64"], capture_output=True, text=True, timeout=1800)
                problem = f"not built by `{TEST_ENV} --arm64`:\n{proc.stdout}{proc.stderr}"
            if not client.images.list(name=ARM64_BASE_IMAGE):
                if os.environ.get("MODELPORT_REQUIRE_DOCKER"):  # scripts/test.sh, CI: nothing is skipped there
                    pytest.fail(f"the arm64 base image {ARM64_BASE_IMAGE} is {problem}")
                pytest.skip(f"the arm64 base image {ARM64_BASE_IMAGE} is {problem}")
        assert client.images.get(ARM64_BASE_IMAGE).attrs["Architecture"] == "arm64"
    finally:
        client.close()
    return ARM64_BASE_IMAGE


@pytest.fixture
def arm64_container(arm64_base_image: str, tmp_path: Path) -> Iterator[tuple[Any, Any, Any, int]]:
    """A linear model, its arm64 image built by ``modelport build``'s code, and a container of it
    published on 127.0.0.1: (model, image, container, port). All removed afterwards."""
    import docker
    from sklearn.linear_model import LinearRegression

    import modelport
    from modelport.container.build import build_image

    store = ModelStore(tmp_path / "home")
    name = f"arm-{uuid.uuid4().hex[:6]}"
    x = np.random.default_rng(0).normal(size=(80, 4))
    model = LinearRegression().fit(x, x @ [1.0, -2.0, 0.5, 3.0] + 1)
    modelport.save_model(model, name, store=store)
    client = docker.from_env()
    image = container = None
    try:
        # Cross-built (the build stage natively on the amd64 test base, the same Debian Python 3.11): only the
        # final stage's steps and the model's load check run emulated.
        image = build_image(f"{name}:1", base_image=arm64_base_image, platform="linux/arm64",
                            build_base_image=TEST_BASE_IMAGE, store=store)
        port = free_port()
        # The image's own command with one worker: uvicorn's supervisor kills a worker that does not answer
        # its ping within 5 s, and under qemu on a busy host importing SciPy can hold the GIL longer than
        # that (a restart loop, seen here). On an arm64 device the image's default 2 workers start natively.
        command = [*client.images.get(image.id).attrs["Config"]["Cmd"], "--workers", "1"]
        container = client.containers.run(image.id, command=command, detach=True, name=f"modelport-arm64-test-{name}",
                                          ports={"8080/tcp": ("127.0.0.1", port)})
        yield model, image, container, port
    finally:
        if container is not None:
            container.remove(force=True)
        if image is not None:
            client.images.remove(image.id, force=True)
        client.close()
        store.close()


def test_arm64_image_answers_the_models_predictions_under_emulation(arm64_container) -> None:
    model, image, container, port = arm64_container
    attrs = container.client.images.get(image.id).attrs
    assert (attrs["Os"], attrs["Architecture"]) == ("linux", "arm64")
    assert attrs["Config"]["Labels"]["io.modelport.platform"] == "linux/arm64"
    assert image.tag.endswith(":1-arm64")  # never mistaken for the host's image of the same version

    def ready() -> int | str:
        container.reload()
        if container.status != "running":
            return f"container {container.status}: {container.logs(tail=20).decode(errors='replace')}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code
        except httpx.TransportError as e:
            return repr(e)

    # Importing scikit-learn under qemu takes tens of seconds; bounded, far above that.
    wait_until(ready, lambda r: r == 200, timeout=600, interval=1)
    r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": X.tolist()}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], model.predict(X), rtol=1e-9)

    # The server really is aarch64 code: the interpreter and the compiled wheels it loaded.
    code, out = container.exec_run(["python3", "-c", "import platform, numpy.linalg._umath_linalg as m; "
                                    "print(platform.machine(), open(m.__file__, 'rb').read(20)[18])"])
    assert code == 0, out
    machine, e_machine = out.decode().split()
    assert (machine, e_machine) == ("aarch64", "183")  # ELF e_machine 183: EM_AARCH64
