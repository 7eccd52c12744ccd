"""One Docker client per process and engine address: reused, closed, never cached when unreachable."""

from __future__ import annotations

import ipaddress
import uuid

import pytest

from modelport.container import engine


def test_an_unreachable_engine_is_explained_and_not_remembered(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for _ in range(2):  # the second call tries again rather than repeating a cached failure or client
        with pytest.raises(engine.EngineUnavailable, match="Cannot reach the Docker Engine at unix://.*no-engine.sock"):
            engine.client()


@pytest.mark.docker
def test_the_client_is_made_once_per_engine_and_closed() -> None:
    first = engine.client()
    assert engine.client() is first and first.ping()
    engine.close()
    second = engine.client()
    assert second is not first and second.ping()


@pytest.mark.docker
def test_a_containers_address_and_published_ports_are_read_from_its_attributes() -> None:
    from tests.conftest import TEST_BASE_IMAGE

    client = engine.client()
    network = client.networks.create(f"modelport-test-engine-{uuid.uuid4().hex[:6]}")
    try:
        container = client.containers.run(TEST_BASE_IMAGE, ["sleep", "60"], detach=True, network=network.name,
                                          ports={"8080/tcp": ("127.0.0.1", None)}, labels={"modelport-test": "engine"})
        try:
            container.reload()
            network.reload()
            address = engine.address(container, network.name)
            assert address and ipaddress.ip_address(address) in ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])
            assert engine.address(container, "no-such-network") is None
            assert engine.address(container) is None  # not on the default bridge
            ((port, binding),) = engine.published(container)
            assert port == "8080/tcp" and binding["HostIp"] == "127.0.0.1" and int(binding["HostPort"]) > 0
        finally:
            container.remove(force=True)
    finally:
        network.remove()
