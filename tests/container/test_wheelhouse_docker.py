"""The offline install path for real: host-downloaded wheels installed in an image without network."""

from __future__ import annotations

import uuid
from importlib.metadata import version
from pathlib import Path

import docker
import pytest

from modelport.container.wheelhouse import build_wheelhouse, host_requirement

pytestmark = pytest.mark.docker

BASE_IMAGE = "modelport-test/python:3.11-slim"  # built by scripts/test-env.sh
DOCKERFILE = f"""\
FROM {BASE_IMAGE}
LABEL modelport.test={{run}}
COPY wheels /wheels
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index --find-links /wheels numpy orjson
"""


def test_wheels_install_offline_and_match_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPORT_HOME", str(tmp_path / "home"))
    context = tmp_path / "context"
    build_wheelhouse([host_requirement("numpy"), host_requirement("orjson")], context / "wheels")
    run = uuid.uuid4().hex[:12]
    (context / "Dockerfile").write_text(DOCKERFILE.format(run=run))

    client = docker.from_env()
    tag = f"modelport-test/wheelhouse:{run}"
    try:
        client.images.get(BASE_IMAGE)  # a missing base would be pulled, and no registry is reachable
        # No network during the build: pip can only use the wheelhouse.
        try:
            client.images.build(path=str(context), tag=tag, network_mode="none", rm=True, forcerm=True)
        except docker.errors.BuildError as e:
            pytest.fail(f"{e.msg}\n" + "".join(chunk.get("stream", "") for chunk in e.build_log))
        script = "import numpy, orjson; print(numpy.__version__, orjson.__version__)"
        out = client.containers.run(tag, ["/opt/venv/bin/python", "-c", script], remove=True, network_disabled=True)
        assert out.decode().split() == [version("numpy"), version("orjson")]
    finally:
        # The image, or the layers of a build that failed half-way: all carry the label.
        client.images.prune(filters={"label": f"modelport.test={run}", "dangling": False})
        client.close()
