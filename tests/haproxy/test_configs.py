"""Both gateway configurations as HAProxy reads them: `modelport run`'s service gateway and a stack's,
rendered as their images get them, checked by ``haproxy -c``; and the service gateway run on the host,
driven through the same Runtime methods deploy/containers.py and deploy/rollout.py use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport.deploy import proxy
from modelport.deploy.proxy import Runtime
from tests.fixtures_serving import ThreadServer, small_models
from tests.haproxy.host import FakeDNS, HostProxy, check_config, haproxy_binary, host_layout
from tests.helpers import free_port, wait_until


def written(files: dict[str, str], directory: Path) -> Path:
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory / "haproxy.cfg"


def test_the_kubernetes_stack_gateway_configuration_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's haproxy.cfg: the pod's resolvers, each model's headless Service by its full
    name, the namespace from the environment (as the pod sets POD_NAMESPACE)."""
    from modelport.k8s.stack import PodLayout

    haproxy_binary()
    files = proxy.stack_files("haproxy:2.6", ["iris", "Big_model"], default="iris", syslog="127.0.0.1:5140",
                              layout=PodLayout(config_dir=str(tmp_path)))
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    checked = check_config(written(files, tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = files["haproxy.cfg"]
    assert "parse-resolv-conf" in config and "nameserver dns" not in config
    assert "server-template r 1-16 big-model.${POD_NAMESPACE}.svc.cluster.local:8080\n" in config


def test_the_service_gateway_configuration_is_valid_and_unchanged_in_shape(tmp_path: Path) -> None:
    haproxy_binary()
    files = proxy.service_files("haproxy:2.6", proxy.Layout(config_dir=str(tmp_path)))
    checked = check_config(written(files, tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = files["haproxy.cfg"]
    assert "\nbackend blue\n" in config and "\nbackend green\n" in config and "str(green),map_str_int(" in config
    assert "server-template r 1-16 replicas-green:8080\n" in config and "nameserver dns 127.0.0.11:53\n" in config
    assert files["traffic.map"] == "green 0\n"
    # As the image has it: the production paths, and only the files the service needs.
    production = proxy.service_files("haproxy:2.6")
    assert f"map_str_int({proxy.CONFIG_DIR}/traffic.map,0)" in production["haproxy.cfg"]
    assert "COPY haproxy.cfg traffic.map /usr/local/etc/haproxy/\n" in production["Dockerfile"]
    assert production["haproxy.cfg"] == config.replace(str(tmp_path), proxy.CONFIG_DIR)


def test_the_stack_gateway_configuration_is_valid(tmp_path: Path) -> None:
    """As rendered for the image but for the map directory and the log target: `control` resolves only
    inside the stack's network, and haproxy -c resolves a log target's name."""
    haproxy_binary()
    files = proxy.stack_files("haproxy:2.6", ["lin", "ridge"], default="lin", syslog="127.0.0.1:5140",
                              layout=proxy.Layout(config_dir=str(tmp_path)))
    checked = check_config(written(files, tmp_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(files) == ["Dockerfile", "haproxy.cfg", "keys.map", "traffic.map", "versions.map"]
    assert files["traffic.map"] == "lin-green 0\nridge-green 0\n" and files["keys.map"] == files["versions.map"] == ""
    config = files["haproxy.cfg"]
    for backend in ("lin-blue", "lin-green", "ridge-blue", "ridge-green"):
        assert f"\nbackend {backend}\n" in config and f"server-template r 1-16 {backend}:8080\n" in config
    production = proxy.stack_files("haproxy:2.6", ["lin", "ridge"], default="lin")
    assert f"log {proxy.SYSLOG} format raw" in production["haproxy.cfg"]
    assert "COPY haproxy.cfg traffic.map versions.map keys.map /usr/local/etc/haproxy/\n" in production["Dockerfile"]
    assert proxy.files_tag(production) != proxy.files_tag(proxy.service_files("haproxy:2.6"))
    assert proxy.files_tag(production) == proxy.files_tag(proxy.stack_files("haproxy:2.6", ["lin", "ridge"], "lin"))


@pytest.mark.parametrize("models, default", [([], None), (["lin"], "ridge"), (["a b"], None), (["x,y"], None)])
def test_a_stack_gateway_needs_names_it_can_use(models: list[str], default: str | None) -> None:
    from modelport.errors import ModelportError

    with pytest.raises(ModelportError):
        proxy.stack_files("haproxy:2.6", models, default)


@pytest.fixture
def service_gateway(tmp_path: Path) -> Iterator[tuple[HostProxy, Runtime]]:
    """A service's gateway on the host, its blue slot one model server (replicas-blue → 127.0.0.6)."""
    haproxy_binary()
    store = small_models(tmp_path / "home")
    port = free_port()
    dns = FakeDNS({"replicas-blue": ["127.0.0.6"]})
    try:
        with ThreadServer(store, ["lin"], host="127.0.0.6", port=port):
            layout = host_layout(tmp_path, port, dns.address)
            gw = HostProxy(proxy.service_files("haproxy:2.6", layout), layout)
            try:
                yield gw, Runtime(gw.transport)
            finally:
                gw.stop()
    finally:
        dns.stop()
        store.close()


def test_the_service_gateway_runs_with_the_generalised_runtime(service_gateway: tuple[HostProxy, Runtime]) -> None:
    gw, runtime = service_gateway
    wait_until(lambda: [s.status for s in runtime.servers("blue") if s.address], lambda s: s == ["UP"], timeout=20,
               interval=0.05)
    assert {s.slot for s in runtime.servers()} == {"blue", "green"}
    r = httpx.post(f"{gw.url}/predict", json={"features": [0.5] * 4}, timeout=10)
    assert r.status_code == 200 and r.headers["x-model"] == "lin", r.text
    assert runtime.shares() == {"blue": 100, "green": 0}
    runtime.set_share("green", 30)
    assert runtime.shares() == {"blue": 70, "green": 30}
    assert (Path(gw.layout.config_dir) / "traffic.map").read_text() == "green 30\n"
    runtime.set_share("blue", 100)
    assert (Path(gw.layout.config_dir) / "traffic.map").read_text() == "green 0\n"


class _StartingReplica:
    """A stand-in replica as a real server starts (serving.startup.Starting): live at once, its readiness
    check and every other request 503 until ``ready`` is set, then 200; its report (``reported_ready``, a replica's ``Startup:`` line) says so from then on."""

    def __init__(self, host: str, port: int) -> None:
        import http.server
        import threading

        from tests.haproxy.host import _Background

        self.ready, self.host = threading.Event(), host
        ready = self.ready

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status = 200 if ready.is_set() or self.path == "/v2/health/live" else 503
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Background(host, port, Handler, name=f"starting-{host}")

    # rollout.Replicas, for the one replica "r"
    def address(self, replica: str) -> str:
        return self.host

    def failure(self, replicas: list[str]) -> None:
        return None

    def explain(self, replicas: list[str]) -> str:
        return "still starting"

    def reported_ready(self, replicas: list[str]) -> set[str]:
        return set(replicas) if self.ready.is_set() else set()

    def stop(self) -> None:
        self._server.stop()


def test_wait_ready_tells_the_proxy_of_a_replica_once_it_reports_ready_and_not_before(tmp_path: Path) -> None:
    """deploy/rollout.wait_ready: while the replica is starting the proxy keeps it out; once the replica says
    it is ready, the proxy is told at once (``set server ... health up``, not two more checks) and the
    wait ends with the server UP and answering."""
    import threading

    from modelport.deploy.proxy import Transport
    from modelport.deploy.rollout import wait_ready

    haproxy_binary()
    port = free_port()
    dns = FakeDNS({"replicas-blue": ["127.0.0.8"]})
    replica = _StartingReplica("127.0.0.8", port)
    try:
        layout = host_layout(tmp_path, port, dns.address)
        gw = HostProxy(proxy.service_files("haproxy:2.6", layout), layout)
        sent: list[str] = []

        def send(line: str) -> str:
            sent.append(line)
            return gw.transport.send(line)

        runtime = Runtime(Transport(send, gw.transport.write, gw.transport.config_dir))
        try:
            wait_until(lambda: [s.status for s in runtime.servers("blue") if s.address], lambda s: s == ["DOWN"],
                       timeout=20, interval=0.05)
            outcome: list[BaseException | None] = []

            def wait() -> None:
                try:
                    wait_ready(replica, runtime, "blue", ["r"], timeout=60)
                    outcome.append(None)
                except BaseException as e:  # noqa: BLE001 (reported by the test's thread)
                    outcome.append(e)

            sent.clear()
            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            wait_until(lambda: sent, bool, timeout=10, interval=0.02)  # it looked at the proxy: DOWN
            assert waiter.is_alive() and not any("health" in line for line in sent), sent
            replica.ready.set()
            waiter.join(30)
            assert outcome == [None], outcome
            assert any(line.startswith("set server blue/") and line.endswith(" health up") for line in sent), sent
            assert [s.status for s in runtime.servers("blue") if s.address] == ["UP"]
            assert httpx.get(f"{gw.url}/v2/health/ready", timeout=5).status_code == 200
        finally:
            gw.stop()
    finally:
        replica.stop()
        dns.stop()


def test_wait_answering_waits_out_a_proxy_that_closes_connections_unanswered() -> None:
    """A proxy just started can take a connection and close it with no answer: the Runtime waits for a real
    one (``show info`` names HAProxy) before a map change could misread an empty answer, and says so when none comes."""
    from modelport.deploy.proxy import Runtime, Transport
    from modelport.errors import ModelportError

    answers = ["", "", "Name: HAProxy\nVersion: 2.6\n"]
    sent: list[str] = []

    def send(line: str) -> str:
        sent.append(line)
        return answers.pop(0) if answers else ""

    Runtime(Transport(send, lambda name, text: None, name="the test proxy")).wait_answering(5)
    assert sent == ["show info"] * 3
    with pytest.raises(ModelportError, match="the test proxy does not answer its Runtime API: its answer was ''"):
        Runtime(Transport(lambda line: "", lambda name, text: None, name="the test proxy")).wait_answering(0.3)
