"""The health wait after `compose up` (issue 12 item 4): a service container that was stopped
(`docker stop`) is seen exited before `up` starts it again; that is not a failure."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest

from modelport.deploy.compose import Project, wait_healthy
from tests.conftest import TEST_BASE_IMAGE

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.docker

SERVICE = {"image": TEST_BASE_IMAGE, "command": ["sleep", "infinity"], "restart": "unless-stopped", "init": True,
           "healthcheck": {"test": ["CMD", "true"], "interval": "1s", "retries": 3}}


def _up(project: Project) -> None:
    """What `stack up` does: `compose up` in the background and the health wait on it."""
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as output:
        proc = project.start("up", "--detach", "--no-build", output=output)
        wait_healthy(project, ["m"], 120, compose=proc, compose_output=Path(output.name))


def test_up_waits_for_a_stopped_service_that_compose_starts_again(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(json.dumps({"services": {"m": SERVICE}}))  # JSON is YAML
    project = Project(tmp_path, f"mpw-{uuid.uuid4().hex[:6]}")
    try:
        _up(project)
        project.container("m").stop(timeout=5)
        assert project.container("m").status == "exited"
        _up(project)
        c = project.container("m")
        assert c.status == "running" and c.attrs["State"]["Health"]["Status"] == "healthy"
    finally:
        project.run("down", "--remove-orphans", "--timeout", "1")
