"""``modelport doctor`` on ports: the user's own service holding its port is fine (issue 12 item 10)."""

from __future__ import annotations

import uuid

import pytest

from modelport.deploy.doctor import OK, PROBLEM, WARNING, PortHolder, Report, port_finding
from tests.conftest import TEST_BASE_IMAGE
from tests.helpers import free_port, run_in_process

SERVICE = {"io.modelport.managed": "true", "io.modelport.service": "houses", "io.modelport.role": "gateway"}
STACK = {"io.modelport.stack": "shop", "io.modelport.role": "gateway", "com.docker.compose.project": "shop"}


def test_a_port_held_by_a_modelport_service_is_fine() -> None:
    f = port_finding(8080, [PortHolder("houses", SERVICE)], bound_elsewhere=False)
    assert (f.status, f.title) == (OK, "Port 8080 is in use by modelport service houses")


def test_a_port_held_by_a_modelport_stack_is_fine() -> None:
    f = port_finding(8080, [PortHolder("shop-gateway-1", STACK)], bound_elsewhere=False)
    assert (f.status, f.title) == (OK, "Port 8080 is in use by modelport stack shop")


def test_an_unknown_holder_is_a_warning() -> None:
    f = port_finding(8080, [PortHolder("nginx", {}), PortHolder("houses", SERVICE)], bound_elsewhere=False)
    assert (f.status, f.title) == (WARNING, "Port 8080 is published by container(s) nginx")
    assert "another --port" in f.detail
    f = port_finding(8080, [], bound_elsewhere=True)
    assert (f.status, f.title) == (WARNING, "Port 8080 is in use by a process on this host")
    assert port_finding(8080, [], bound_elsewhere=False).status == OK


def test_only_problems_make_the_report_unhealthy() -> None:
    report = Report([port_finding(8080, [PortHolder("nginx", {})], bound_elsewhere=False)])
    assert report.healthy
    report.add(False, "houses-model-1 (model of houses) is not serving")
    assert not report.healthy and report.findings[-1].status == PROBLEM


@pytest.mark.docker
def test_doctor_passes_with_a_service_on_its_port() -> None:
    """A container labelled as a modelport service publishing the port: ✔ and exit 0 (it said ✘, exit 1)."""
    import docker

    client, port, name = docker.from_env(), free_port(), f"mp-doctor-{uuid.uuid4().hex[:8]}"
    container = client.containers.run(TEST_BASE_IMAGE, ["sleep", "300"], name=name, detach=True,
                                       labels={**SERVICE, "io.modelport.service": name},
                                       ports={"8080/tcp": ("127.0.0.1", port)})
    try:
        out = run_in_process("doctor", "--port", str(port), check=False)
        assert f"✔ Port {port} is in use by modelport service {name}" in out.stdout, out.stdout
        # The engine is shared: other containers may be unwell, but nothing about this port is.
        problems = [line for line in out.stdout.splitlines() if line.startswith("✘")]
        assert not [p for p in problems if str(port) in p or name in p], out.stdout
        assert out.returncode == (1 if problems else 0), out.stdout
    finally:
        container.remove(force=True)
