"""The autoscaler's metrics from a real HAProxy: the stack's gateway configuration on the host, a
model server that holds its requests until told to answer (host.HeldServer), so the requests in
flight are known exactly; what the exporter says of them is what the autoscaler decides on."""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from modelport.deploy import proxy
from modelport.deploy.autoscale import Autoscale, Autoscaler, Decision, GatewayMetrics, Scrape, observe
from modelport.deploy.proxy import Runtime
from modelport.errors import ModelportError
from modelport.keys import digest
from tests.haproxy.host import FakeDNS, HeldServer, HostProxy, haproxy_binary, host_layout
from tests.helpers import free_port, wait_until

KEY = "mpk_autoscale-test-key"
ADDRESS = "127.0.0.2"
BACKEND = "lin-blue"


@dataclass
class Gateway:
    url: str
    server: HeldServer
    proxy: HostProxy


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    haproxy_binary()
    tmp = tmp_path_factory.mktemp("haproxy-autoscale")
    port = free_port()
    with contextlib.ExitStack() as stack:
        dns = FakeDNS({BACKEND: [ADDRESS]})
        stack.callback(dns.stop)
        server = HeldServer(ADDRESS, port)
        stack.callback(server.stop)
        layout = host_layout(tmp, port, dns.address)
        gw = HostProxy(proxy.stack_files("haproxy:2.6", ["lin"], default="lin", syslog="127.0.0.1:9", layout=layout), layout)
        stack.callback(gw.stop)
        runtime = Runtime(gw.transport)
        runtime.set_keys({digest(KEY): "key_autoscale"})
        wait_until(lambda: [s.status for s in runtime.servers_all() if s.slot == BACKEND and s.address],
                   lambda up: "UP" in up, timeout=20, interval=0.05, what=lambda up: f"{up}\n{gw.output()}")
        yield Gateway(gw.url, server, gw)


def _send(url: str, count: int) -> tuple[list[threading.Thread], list[int]]:
    """``count`` requests at once, each on its own connection; their statuses arrive in the list."""
    statuses: list[int] = []

    def one() -> None:
        statuses.append(httpx.get(f"{url}/v2/models/lin", headers={"authorization": f"Bearer {KEY}"}, timeout=30).status_code)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    return threads, statuses


def _sessions(scrape: Scrape) -> float:
    return scrape.backends[BACKEND].sessions


def test_in_flight_and_rps_come_from_the_gateways_exporter(gateway: Gateway) -> None:
    metrics = GatewayMetrics([gateway.url])
    try:
        first = metrics.scrape()
        assert _sessions(first) == 0 and {"lin-blue", "lin-green"} <= first.backends.keys()
        gateway.server.gate.clear()
        threads, statuses = _send(gateway.url, 6)
        held = wait_until(metrics.scrape, lambda s: _sessions(s) == 6, timeout=20, interval=0.05,
                          what=lambda s: f"sessions {_sessions(s)}")
        assert observe("in_flight", BACKEND, held, first) == 6
        gateway.server.gate.set()
        for t in threads:
            t.join(30)
        assert statuses == [200] * 6
        done = wait_until(metrics.scrape, lambda s: _sessions(s) == 0, timeout=20, interval=0.05,
                          what=lambda s: f"sessions {_sessions(s)}")
        # The counter counts the requests forwarded (the proxy's own answers and health checks are not).
        assert done.backends[BACKEND].requests - first.backends[BACKEND].requests == 6
        assert observe("rps", BACKEND, done, first) == pytest.approx(6 / (done.time - first.time))
    finally:
        gateway.server.gate.set()
        metrics.close()


class RecordingScaler:
    def __init__(self) -> None:
        self.slots = {"blue": 1}

    def replicas(self, model: str) -> dict[str, int]:
        return dict(self.slots)

    def apply(self, model: str, slot: str, decision: Decision, when: str) -> None:
        self.slots[slot] = decision.desired


def test_the_loop_scales_on_the_requests_the_gateway_holds(gateway: Gateway) -> None:
    policy = Autoscale.from_json({"min": 1, "max": 4, "target": {"in_flight": 2}, "down_window": 0})
    metrics, scaler, out = GatewayMetrics([gateway.url]), RecordingScaler(), io.StringIO()
    autoscaler = Autoscaler({"lin": policy}, metrics, scaler, out=out)
    try:
        gateway.server.gate.clear()
        threads, statuses = _send(gateway.url, 6)
        wait_until(metrics.scrape, lambda s: _sessions(s) == 6, timeout=20, interval=0.05, what=lambda s: f"{_sessions(s)}")
        assert autoscaler.step()["lin"].desired == 3  # 6 in flight, 2 per replica
        gateway.server.gate.set()
        for t in threads:
            t.join(30)
        wait_until(metrics.scrape, lambda s: _sessions(s) == 0, timeout=20, interval=0.05, what=lambda s: f"{_sessions(s)}")
        assert autoscaler.step()["lin"].desired == 1
        assert scaler.slots == {"blue": 1} and statuses == [200] * 6
        assert [(e["event"], e["desired"]) for e in map(json.loads, out.getvalue().splitlines())] == [("scale", 3), ("scale", 1)]
    finally:
        gateway.server.gate.set()
        metrics.close()


def test_an_unreachable_gateway_is_an_error_that_names_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    metrics = GatewayMetrics([url], timeout=1)
    try:
        with pytest.raises(ModelportError, match=f"Cannot read the gateway's metrics at {url}/proxy/metrics"):
            metrics.scrape()
    finally:
        metrics.close()
