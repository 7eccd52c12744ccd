"""A stack's gateway on the host: the rendered HAProxy configuration, run by a real HAProxy in front
of real model servers, its Runtime API over the stats socket. What the Python gateway did on the
request path, the proxy must do: routes, the path guard, API keys, request ids, the traffic split,
its own errors as JSON, and a log line for each prediction it answered itself."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

import modelport
from modelport.deploy import proxy
from modelport.deploy.proxy import Runtime
from modelport.keys import digest
from modelport.serving.http import DEFAULT_MAX_BODY
from tests.fixtures_paths import AMBIGUOUS, SAME_ROUTE, ambiguity, body_for, raw_post
from tests.fixtures_serving import FEATURES, ThreadServer, small_models
from tests.haproxy.host import EchoServer, FakeDNS, HostProxy, haproxy_binary, host_layout
from tests.helpers import free_port, wait_until

MODELS = ["lin", "forest", "echo", "ghost"]  # ghost: no replica anywhere
ADDRESSES = {"lin-blue": "127.0.0.2", "lin-green": "127.0.0.3", "forest-blue": "127.0.0.4", "echo-blue": "127.0.0.5"}
KEY, OTHER_KEY = "mpk_host-test-key", "mpk_host-test-other"
ROW = {"features": [0.5] * len(FEATURES)}


@dataclass
class Gateway:
    url: str
    port: int
    proxy: HostProxy
    runtime: Runtime  # prefix "": every backend, the keys and versions maps
    log: socket.socket  # where the proxy's log lines arrive

    def model(self, name: str) -> Runtime:
        return Runtime(self.proxy.transport, prefix=f"{name}-")

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {KEY}"}

    def log_lines(self) -> list[dict]:
        """The log lines received so far (waiting a moment for none more)."""
        lines = []
        with contextlib.suppress(TimeoutError):
            while True:
                lines.append(json.loads(self.log.recv(65536)))
        return lines


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    haproxy_binary()
    tmp = tmp_path_factory.mktemp("haproxy")
    store = small_models(tmp / "home")
    x = np.random.default_rng(1).normal(size=(40, 4))
    modelport.save_model(LinearRegression().fit(x, x @ [4.0, 3.0, 2.0, 1.0]), "lin", feature_names=FEATURES, store=store)
    port = free_port()
    log = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    log.bind(("127.0.0.1", 0))
    log.settimeout(0.5)
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        stack.callback(log.close)
        dns = FakeDNS({name: [address] for name, address in ADDRESSES.items()})
        stack.callback(dns.stop)
        for name, ref in (("lin-blue", "lin:1"), ("lin-green", "lin:2"), ("forest-blue", "forest")):
            stack.enter_context(ThreadServer(store, [ref], host=ADDRESSES[name], port=port))
        stack.callback(EchoServer(ADDRESSES["echo-blue"], port).stop)
        (tmp / "etc").mkdir()
        # With a Swarm gateway's second Runtime API socket (its node's keysync task's).
        layout = dataclasses.replace(host_layout(tmp / "etc", port, dns.address), admin_socket=str(tmp / "admin.sock"))
        files = proxy.stack_files("haproxy:2.6", MODELS, default="lin", syslog=f"127.0.0.1:{log.getsockname()[1]}",
                                  layout=layout)
        gw = HostProxy(files, layout)
        stack.callback(gw.stop)
        runtime = Runtime(gw.transport)
        runtime.set_keys({digest(KEY): "key_host"})
        for backend in ADDRESSES:
            runtime.set_version(backend, "2" if backend == "lin-green" else "1")
        wait_until(lambda: {s.slot for s in runtime.servers_all() if s.status == "UP"}, lambda up: up >= set(ADDRESSES),
                   timeout=20, interval=0.05, what=lambda up: f"UP: {sorted(up)}\n{gw.output()}")
        yield Gateway(gw.url, int(layout.bind.rsplit(":", 1)[1]), gw, runtime, log)


def test_routes_reach_the_named_model_and_the_default(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, headers=gateway.auth, timeout=10) as client:
        lin = client.post("/models/lin/predict", json=ROW)
        assert lin.status_code == 200, lin.text
        assert lin.headers["x-model"] == "lin" and lin.headers["x-model-version"] == "1"
        assert client.post("/predict", json=ROW).headers["x-model"] == "lin"  # the default
        forest = client.post("/models/forest/predict", json=ROW)
        assert forest.status_code == 200 and forest.headers["x-model"] == "forest", forest.text
        v2 = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [0.5] * 4}]}
        assert client.post("/v2/models/forest/infer", json=v2).headers["x-model"] == "forest"
        assert client.get("/v2/models/forest").json()["name"] == "forest"
        echo = client.get("/v2/models/echo/versions/3/ready").json()
        assert echo["path"] == "/v2/models/echo/versions/3/ready" and echo["method"] == "GET"
        unknown = client.post("/models/nope/predict", json=ROW)
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "Model 'nope' is not served here (served: lin, forest, echo, ghost)"}
    # Public: the API's description, without a key.
    assert httpx.get(f"{gateway.url}/openapi.json", timeout=10).status_code == 200


def echoed(r: httpx.Response) -> dict[str, list[str]]:
    """The headers the echo model received, by name (each name's values in order)."""
    headers: dict[str, list[str]] = {}
    for k, v in r.json()["headers"]:
        headers.setdefault(k, []).append(v)
    return headers


def test_requests_without_a_valid_key_get_the_gateways_401(gateway: Gateway) -> None:
    missing = "Missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
    invalid = "Invalid or revoked API key"
    for headers, message in (({}, missing), ({"authorization": "Basic a2V5"}, missing), ({"x-api-key": ""}, missing),
                             ({"authorization": "Bearer mpk_not-a-key"}, invalid), ({"x-api-key": "nope"}, invalid),
                             ({"authorization": f"Bearer {KEY}x"}, invalid)):
        r = httpx.post(f"{gateway.url}/predict", json=ROW, headers=headers, timeout=10)
        assert (r.status_code, r.json()) == (401, {"error": message}), headers
        assert r.headers["www-authenticate"] == "Bearer" and r.headers["content-type"] == "application/json"
    for headers in ({"x-api-key": KEY}, {"authorization": f"bearer   {KEY}"}, {"authorization": "Basic x", "x-api-key": KEY}):
        assert httpx.post(f"{gateway.url}/predict", json=ROW, headers=headers, timeout=10).status_code == 200, headers


def test_the_proxy_sets_the_key_id_and_drops_the_clients_copy(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/models/echo/predict", json=ROW, timeout=10,
                   headers={**gateway.auth, "x-modelport-key-id": "key_forged"})
    assert r.status_code == 200, r.text
    assert echoed(r)["x-modelport-key-id"] == ["key_host"]
    assert "authorization" in echoed(r)  # passed on: the model server may check it too
    public = httpx.get(f"{gateway.url}/docs", headers={"x-modelport-key-id": "key_forged"}, timeout=10)
    assert public.status_code == 200  # the model's own page: no key needed, none claimed


def _status(gateway: Gateway, key: str, client: httpx.Client | None = None) -> int:
    return (client or httpx).post(f"{gateway.url}/models/echo/predict", json=ROW, timeout=10,
                                  headers={"x-api-key": key}).status_code


def test_keys_change_at_run_time_without_a_reload_or_a_dropped_connection(gateway: Gateway) -> None:
    pid = gateway.proxy.proc.pid
    other = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)  # another client, kept alive
    try:
        other.request("GET", "/v2/models/echo", headers=gateway.auth)
        assert other.getresponse().read() and other.sock is not None
        sock = other.sock
        gateway.runtime.set_keys({digest(KEY): "key_host", digest(OTHER_KEY): "key_other"})
        wait_until(lambda: _status(gateway, OTHER_KEY), lambda s: s == 200, timeout=1, interval=0.02)
        r = httpx.post(f"{gateway.url}/models/echo/predict", json=ROW, headers={"x-api-key": OTHER_KEY}, timeout=10)
        assert echoed(r)["x-modelport-key-id"] == ["key_other"]
        gateway.runtime.set_keys({digest(OTHER_KEY): "key_other"})  # KEY revoked
        wait_until(lambda: _status(gateway, KEY), lambda s: s == 401, timeout=1, interval=0.02)
        other.request("GET", "/v2/models/echo", headers={"x-api-key": OTHER_KEY})
        assert other.getresponse().status == 200 and other.sock is sock  # the same connection
        assert gateway.runtime.keys() == {digest(OTHER_KEY): "key_other"}
        assert (Path(gateway.proxy.layout.config_dir) / "keys.map").read_text() == f"{digest(OTHER_KEY)} key_other\n"
        assert gateway.proxy.proc.poll() is None and gateway.proxy.proc.pid == pid  # no restart, no reload
    finally:
        other.close()
        gateway.runtime.set_keys({digest(KEY): "key_host"})


def test_replacing_many_keys_never_refuses_a_key_that_stays(gateway: Gateway) -> None:
    """Hundreds of keys (several Runtime API commands, one commit): a client using a key in both the
    old and the new map gets no 401 meanwhile. Its requests name no model: the proxy answers them
    (404) once the key passed, so they come fast, with no model server in this process to wait for."""
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                statuses.append(client.post(f"{gateway.url}/models/nope/predict", headers={"x-api-key": KEY}).status_code)

    many = {digest(f"mpk_{i}"): f"key_{i}" for i in range(350)}
    thread = threading.Thread(target=load)
    thread.start()
    replaced, deadline = 0, time.monotonic() + 30
    try:
        # Each replace drops 50 other keys; until the client has sent a few hundred requests.
        while (len(statuses) < 300 or replaced < 4) and time.monotonic() < deadline:
            gateway.runtime.set_keys({**dict(list(many.items())[replaced % 4 * 50:]), digest(KEY): "key_host"})
            replaced += 1
    finally:
        stop.set()
        thread.join()
    assert len(statuses) >= 300 and set(statuses) == {404}, f"{statuses.count(401)} of {len(statuses)} refused"
    assert len(gateway.runtime.keys()) == 350 - (replaced - 1) % 4 * 50 + 1
    assert _status(gateway, "mpk_349") == 200 and _status(gateway, "mpk_nope") == 401
    gateway.runtime.set_keys({digest(KEY): "key_host"})


def test_request_ids_are_kept_when_valid_generated_otherwise_and_on_every_answer(gateway: Gateway) -> None:
    url = f"{gateway.url}/models/echo/predict"
    r = httpx.post(url, json=ROW, headers={**gateway.auth, "x-request-id": "Abc-1.2:3_4"}, timeout=10)
    assert r.headers["x-request-id"] == "Abc-1.2:3_4" and echoed(r)["x-request-id"] == ["Abc-1.2:3_4"]
    for given in ("not valid!", "x" * 129, ""):
        r = httpx.post(url, json=ROW, headers={**gateway.auth, "x-request-id": given}, timeout=10)
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), given
        assert echoed(r)["x-request-id"] == [r.headers["x-request-id"]]
    assert httpx.post(url, json=ROW, headers=gateway.auth, timeout=10).headers["x-request-id"] != r.headers["x-request-id"]
    # The proxy's own answers carry it too.
    for method, path, headers, status in (("POST", "/predict", {}, 401), ("GET", "/nothing", {}, 404),
                                          ("GET", "/predict", {}, 405), ("POST", "//predict", gateway.auth, 400),
                                          ("POST", "/models/ghost/predict", gateway.auth, 503),
                                          ("GET", "/v2/health/live", {}, 200)):
        r = httpx.request(method, f"{gateway.url}{path}", json=ROW, headers={**headers, "x-request-id": "own-1"}, timeout=10)
        assert (r.status_code, r.headers["x-request-id"]) == (status, "own-1"), path
        assert r.headers["content-type"] == "application/json", path


def test_no_encoding_of_a_prediction_path_gets_past_the_proxy(gateway: Gateway) -> None:
    """The corpus of tests/fixtures_paths.py: each spelling of a route reaches its model; every
    other path is refused by the proxy, with 400 exactly where the Python gateway's guard says 400."""
    for path in SAME_ROUTE + AMBIGUOUS:
        body = body_for(path, len(FEATURES))
        anonymous, _ = raw_post(gateway.port, path, body)
        keyed, text = raw_post(gateway.port, path, body, gateway.auth)
        if path in SAME_ROUTE:
            assert (anonymous, keyed) == (401, 200), (path, anonymous, keyed, text)
            continue
        raw = path.split("?", 1)[0]
        expected = 400 if ambiguity(raw.encode(), unquote(raw)) else 404
        assert anonymous == keyed == expected, (path, anonymous, keyed, text)
        assert "error" in json.loads(text), path


def _raw_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_path_guard_agrees_with_the_python_gateways_on_generated_paths(gateway: Gateway) -> None:
    pieces = ["predict", "models", "lin", "v2", "infer", "%70", "%2f", "%2F", "%25", "%5c", "%5C", "\\", ";", "%3b",
              "%3B", ".", "..", "%2e", "%2E%2e", ".%2e", "%", "%zz", "%0", "%7f", "%09", "%1F", "%20", "a%41", "", "x.y"]
    rng = np.random.default_rng(11)
    for _ in range(400):
        path = "/" + "/".join(rng.choice(pieces, size=rng.integers(1, 5)))
        status = _raw_get(gateway.port, path)
        assert (status == 400) == (ambiguity(path.encode(), unquote(path)) is not None), (path, status)


def test_other_paths_methods_and_oversized_bodies_get_json_errors(gateway: Gateway) -> None:
    r = httpx.get(f"{gateway.url}/nothing/here", timeout=10)
    assert (r.status_code, r.json()) == (404, {"error": "No such endpoint: GET /nothing/here"})
    r = httpx.get(f"{gateway.url}/predict", headers=gateway.auth, timeout=10)
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    assert r.json() == {"error": "Method GET is not allowed on /predict; use POST"}
    r = httpx.post(f"{gateway.url}/v2/models/lin", headers=gateway.auth, timeout=10)
    assert (r.status_code, r.headers["allow"]) == (405, "GET, HEAD")
    assert httpx.post(f"{gateway.url}/v2/health/live", timeout=10).status_code == 405
    # Over the model server's limit: refused on the declared length, once the proxy's buffer is full.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(f"POST /models/lin/predict HTTP/1.1\r\nhost: x\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\n"
                  f"content-length: {DEFAULT_MAX_BODY + 1}\r\n\r\n".encode() + b" " * 65536)
        head, _, body = s.recv(65536).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"x-request-id: " in head
    assert json.loads(body) == {"error": f"Request body is {DEFAULT_MAX_BODY + 1} bytes; the limit is {DEFAULT_MAX_BODY} bytes"}


def test_health_is_answered_by_the_proxy(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/v2/health/live", timeout=10).json() == {"live": True}
    r = httpx.get(f"{gateway.url}/v2/health/ready", timeout=10)
    assert (r.status_code, r.json()) == (503, {"error": "Model service(s) not ready: ghost"})


def test_a_model_without_a_replica_gets_a_json_503_and_one_log_line(gateway: Gateway) -> None:
    gateway.log_lines()  # what earlier tests caused
    gateway.runtime.set_version("ghost-blue", "7")
    assert httpx.post(f"{gateway.url}/models/lin/predict", json=ROW, headers=gateway.auth, timeout=10).status_code == 200
    assert httpx.post(f"{gateway.url}/models/ghost/predict", json=ROW, timeout=10).status_code == 401
    assert httpx.get(f"{gateway.url}/v2/models/ghost", headers=gateway.auth, timeout=10).status_code == 503  # no prediction
    socket.create_connection(("127.0.0.1", gateway.port), timeout=10).close()  # no request at all
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:  # not HTTP
        s.sendall(b"HELLO\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    r = httpx.post(f"{gateway.url}/models/ghost/predict", json=ROW, headers={**gateway.auth, "x-request-id": "ghost-1"},
                   timeout=10)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.headers["x-request-id"] == "ghost-1"
    assert r.json() == {"error": "Model service 'ghost' is unavailable (no replica is up); it may be restarting, "
                                 "try again shortly"}
    (line,) = gateway.log_lines()
    assert {k: line[k] for k in ("request_id", "key_id", "model", "version", "status")} == \
        {"request_id": "ghost-1", "key_id": "key_host", "model": "ghost", "version": "7", "status": 503}
    assert isinstance(line["latency_ms"], int) and abs(line["time"] - time.time()) < 30


def test_a_replica_that_never_answers_gets_a_json_502_and_one_log_line(gateway: Gateway) -> None:
    gateway.log_lines()
    r = httpx.post(f"{gateway.url}/models/echo/predict?broken=1", json=ROW, headers=gateway.auth, timeout=10)
    assert (r.status_code, r.headers["retry-after"]) == (502, "1")
    assert r.json() == {"error": "Model service 'echo' is unavailable (it sent no valid answer); it may be restarting, "
                                 "try again shortly"}
    (line,) = gateway.log_lines()
    assert (line["model"], line["version"], line["status"], line["request_id"]) == \
        ("echo", "1", 502, r.headers["x-request-id"])


def test_the_traffic_split_follows_the_traffic_map(gateway: Gateway) -> None:
    lin = gateway.model("lin")
    assert lin.shares() == {"blue": 100, "green": 0}
    lin.set_share("green", 10)
    try:
        assert lin.shares() == {"blue": 90, "green": 10}
        # The whole file, every model's line: a restarted proxy keeps all of them.
        lines = (Path(gateway.proxy.layout.config_dir) / "traffic.map").read_text().splitlines()
        assert sorted(lines) == sorted(["lin-green 10", "forest-green 0", "echo-green 0", "ghost-green 0"])
        versions: list[str] = []
        with httpx.Client(base_url=gateway.url, headers=gateway.auth, timeout=10) as client:
            for _ in range(2000):
                versions.append(client.post("/models/lin/predict", json=ROW).headers["x-model-version"])
        assert 160 <= versions.count("2") <= 240, versions.count("2")
        assert versions.count("1") + versions.count("2") == 2000
    finally:
        lin.set_share("blue", 100)
    assert gateway.model("forest").shares() == {"blue": 100, "green": 0}


def test_the_runtime_sees_each_models_servers_under_its_prefix(gateway: Gateway) -> None:
    lin = gateway.model("lin")
    (green,) = [s for s in lin.servers("green") if s.address]
    assert (green.slot, green.address, green.status) == ("green", "127.0.0.3", "UP")
    assert {s.slot for s in lin.servers()} == {"blue", "green"}
    assert {s.slot for s in gateway.runtime.servers_all()} == {f"{m}-{slot}" for m in MODELS for slot in proxy.SLOTS}
    lin.set_state(green, "drain")
    try:
        assert next(s for s in lin.servers("green") if s.name == green.name).status == "DRAIN"
    finally:
        lin.set_state(green, "ready")
    versions = (Path(gateway.proxy.layout.config_dir) / "versions.map").read_text()
    assert "lin-green 2\n" in versions and "lin-blue 1\n" in versions


def test_keys_sync_follows_the_key_store_within_a_second(gateway: Gateway, tmp_path: Path) -> None:
    """What a Kubernetes gateway pod's keys sidecar runs (``stack keys sync``): a key created in the
    database is accepted, a revoked one refused, within 1 s each, by the proxy over its TCP Runtime
    API, with no reload; a proxy that lost its map (restarted) gets it back."""
    from modelport.deploy.keysync import sync_forever
    from modelport.keys import KeyStore
    from modelport.predlog.db import make_engine

    keys = KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"))
    runtime = Runtime(proxy.Transport.of_tcp("127.0.0.1", gateway.proxy.layout.admin_port,
                                             gateway.proxy.layout.config_dir))  # memory only, as from a ConfigMap
    pid = gateway.proxy.proc.pid
    stop = threading.Event()
    thread = threading.Thread(target=sync_forever, args=(keys, runtime, 0.2, stop), daemon=True)
    thread.start()
    try:
        key, token = keys.create("ci")
        wait_until(lambda: _status(gateway, token), lambda s: s == 200, timeout=1, interval=0.02)
        r = httpx.post(f"{gateway.url}/models/echo/predict", json=ROW, headers={"x-api-key": token}, timeout=10)
        assert echoed(r)["x-modelport-key-id"] == [key.id]
        assert _status(gateway, KEY) == 401  # the map is the database's: the fixture's key is not in it
        keys.revoke(key.id)
        wait_until(lambda: _status(gateway, token), lambda s: s == 401, timeout=1, interval=0.02)
        second, other = keys.create("batch")
        wait_until(lambda: _status(gateway, other), lambda s: s == 200, timeout=1, interval=0.02)
        gateway.runtime.set_keys({})  # as a restarted proxy starts, from an empty map
        wait_until(lambda: _status(gateway, other), lambda s: s == 200, timeout=1, interval=0.02)
        assert gateway.proxy.proc.poll() is None and gateway.proxy.proc.pid == pid  # no restart, no reload
    finally:
        stop.set()
        thread.join(5)
        gateway.runtime.set_keys({digest(KEY): "key_host"})


def test_keysync_over_the_unix_socket_holds_the_keys_and_the_maps_it_is_given(gateway: Gateway, tmp_path: Path) -> None:
    """What a Swarm gateway node's keysync task runs: over the gateway's Unix socket, the keys and the traffic
    and versions maps it is given (lin: all on green), ready once the proxy holds them; a proxy that lost
    them (a gateway task made anew starts with no key, all traffic on blue) has them back within a pass."""
    from modelport.deploy.keysync import sync_forever
    from modelport.deploy.proxy import KEYS, TRAFFIC, VERSIONS
    from modelport.keys import KeyStore
    from modelport.predlog.db import make_engine

    keys = KeyStore(make_engine(f"sqlite:///{tmp_path / 'keys.db'}"))
    _, token = keys.create("swarm")
    before = {name: gateway.runtime.entries(name) for name in (TRAFFIC, VERSIONS, KEYS)}
    maps = {TRAFFIC: {**before[TRAFFIC], "lin-green": "100"}, VERSIONS: {**before[VERSIONS], "lin-green": "7"}}
    runtime = Runtime(proxy.Transport.of_unix(gateway.proxy.layout.admin_socket, gateway.proxy.layout.config_dir))
    ready, stop = tmp_path / "ready", threading.Event()
    thread = threading.Thread(target=sync_forever, args=(keys, runtime, 0.2, stop),
                              kwargs={"maps": maps, "ready": ready}, daemon=True)

    def answer() -> tuple[int, str | None]:
        r = httpx.post(f"{gateway.url}/models/lin/predict", json={"features": [1, 2, 3, 4]}, timeout=10,
                       headers={"authorization": f"Bearer {token}"})
        return r.status_code, r.headers.get("x-model-version")

    thread.start()
    try:
        wait_until(ready.exists, bool, timeout=5, interval=0.05)
        assert answer() == (200, "2") and gateway.runtime.entries(VERSIONS)["lin-green"] == "7"
        assert _status(gateway, KEY) == 401  # the keys are the database's
        gateway.runtime.replace_map(TRAFFIC, before[TRAFFIC])  # as a new gateway task starts
        gateway.runtime.set_keys({})
        wait_until(answer, lambda a: a == (200, "2"), timeout=2, interval=0.05)
    finally:
        stop.set()
        thread.join(5)
        for name in (TRAFFIC, VERSIONS):
            gateway.runtime.replace_map(name, before[name])
        gateway.runtime.set_keys(before[KEYS])
    with pytest.raises(Exception, match="unix:/ABSOLUTE/PATH"):
        proxy.Transport.of_address("unix:relative.sock")
