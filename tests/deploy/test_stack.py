"""A whole stack for real: two models, the HAProxy gateway, the control service and PostgreSQL under Docker Compose.

One stack serves the module; the tests run in file order against it (deploy and rollback near the
end, restart and down/up last). Everything it creates carries its stack's label and is removed
afterwards, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from tests.conftest import TEST_BASE_IMAGE
from tests.fixtures_paths import AMBIGUOUS, SAME_ROUTE, body_for, raw_post
from tests.fixtures_stack import POSTGRES_IMAGE, expected, remove_everything
from tests.helpers import free_port, run_cli, wait_until

docker = pytest.importorskip("docker")

# Image builds and stack start-ups take minutes; on a busy machine far more than the suite's 600 s default.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

FEATURES = [f"f{i}" for i in range(6)]
SERVICES = {"db", "control", "lin-blue", "ridge-blue", "gateway"}


@dataclass
class RunningStack:
    name: str
    directory: Path
    env: dict[str, str]
    url: str
    key: str
    x: np.ndarray
    client: object
    sent: list[str] = field(default_factory=list)  # request ids of every prediction asked for with a key

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def cli(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--dir", str(self.directory), env=self.env, **kwargs)

    def container(self, service: str):
        (c,) = self.client.containers.list(all=True, filters={"label": [f"com.docker.compose.project={self.name}",
                                                                         f"com.docker.compose.service={service}"]})
        return c

    def replicas(self, model: str) -> list:
        """The model's containers, whichever slot's service runs them."""
        return self.client.containers.list(all=True, filters={"label": [f"com.docker.compose.project={self.name}",
                                                                         f"io.modelport.model={model}"]})

    def predict(self, model: str, rows: np.ndarray, client: httpx.Client | None = None, timeout: float = 10) -> httpx.Response:
        request_id = uuid.uuid4().hex
        r = (client or httpx).post(f"{self.url}/models/{model}/predict", timeout=timeout,
                                   json={"instances": rows.tolist()} if rows.ndim == 2 else {"features": rows.tolist()},
                                   headers={**self.auth, "x-request-id": request_id})
        if r.status_code != 401:  # refused without a key: no prediction; unanswered ones (503/504) are logged too
            self.sent.append(request_id)
        return r

    def psql(self, query: str) -> str:
        result = self.container("db").exec_run(["psql", "-U", "modelport", "-d", "predictions", "-At", "-c", query])
        assert result.exit_code == 0, result.output.decode()
        return result.output.decode().strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    import pandas as pd

    tmp = tmp_path_factory.mktemp("stack")
    name = f"mpt-{uuid.uuid4().hex[:6]}"
    env = {"MODELPORT_HOME": str(tmp / "home")}
    # Every build signed, every image verified before it serves: the whole module runs as a signed delivery would.
    (tmp / "keys").mkdir()
    run_cli("keygen", str(tmp / "keys" / "signing.pem"), env=env)
    env |= {"MODELPORT_SIGNING_KEY": str(tmp / "keys" / "signing.pem"),
            "MODELPORT_VERIFY_KEY": str(tmp / "keys" / "signing.pub.pem")}
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(300, len(FEATURES))), columns=FEATURES)
    frame["target"] = frame.to_numpy() @ np.arange(1, len(FEATURES) + 1) + rng.normal(scale=0.5, size=300)
    frame.to_csv(tmp / "data.csv", index=False)
    frame.iloc[:150].to_csv(tmp / "half.csv", index=False)
    for model, data, kind in (("lin", "data.csv", "linear-regression"), ("ridge", "data.csv", "ridge"),
                              ("lin", "half.csv", "linear-regression")):  # lin:2 for deploy
        run_cli("train", "--data", str(tmp / data), "--target", "target", "--name", model, "--model", kind, env=env)
    client = docker.from_env()
    directory = tmp / name
    port = free_port()
    try:
        run_cli("stack", "init", str(directory), "--model", "lin:1", "--model", "ridge", "--gateway-port", str(port),
                "--base-image", TEST_BASE_IMAGE, "--db-image", POSTGRES_IMAGE, "--memory", "512m", env=env)
        run_cli("stack", "up", "--dir", str(directory), env=env, timeout=900)
        out = run_cli("stack", "keys", "create", "ci", "--dir", str(directory), env=env).stdout
        key = out.strip()
        assert re.fullmatch(r"mpk_\S+", key), out  # the key alone on stdout, as `KEY=$(...)` in the README takes it
        yield RunningStack(name, directory, env, f"http://127.0.0.1:{port}", key, frame[FEATURES].to_numpy()[:8], client)
    finally:
        if directory.exists():
            run_cli("stack", "down", "--volumes", "--dir", str(directory), env=env, check=False)
        remove_everything(client, name)
        client.close()


def stored_request_ids(stack: RunningStack, wanted: list[str], timeout: float = 60) -> list[str]:
    """Request ids in the prediction log, once every one of ``wanted`` is there (records are
    written asynchronously, and after an outage replayed from the spool). Other tests' records
    are in the same table, so this waits for these ids, never for a row count."""
    def missing(ids: list[str]) -> str:
        gone = set(wanted) - set(ids)
        return f"{len(gone)} of {len(set(wanted))} request ids not in the prediction log, e.g. {sorted(gone)[:3]}"

    return wait_until(lambda: stack.psql("SELECT request_id FROM mp_predictions").split(),
                      lambda ids: set(wanted) <= set(ids), timeout=timeout, interval=0.5, what=missing)


def stack_password(stack: RunningStack) -> str:
    return (stack.directory / "secrets" / "db-password").read_text()


def test_stack_files_hold_no_secret(stack: RunningStack) -> None:
    secret = stack.directory / "secrets" / "db-password"
    password = stack_password(stack)
    assert len(password) >= 32
    # Readable by the containers' users (a bind mount keeps the host file's mode), by no other
    # user of the host: the directory holding it is private.
    assert secret.stat().st_mode & 0o777 == 0o644 and secret.parent.stat().st_mode & 0o777 == 0o700
    for path in (stack.directory / ".env", stack.directory / "compose.yaml", stack.directory / "stack.json"):
        assert password not in path.read_text()
    for path in (stack.directory / "build").rglob("*"):  # what the images are built from
        assert not path.is_file() or password.encode() not in path.read_bytes(), path
    logs = run_cli("stack", "logs", "--dir", str(stack.directory), env=stack.env).stdout
    assert "gateway" in logs and password not in logs


def test_no_container_config_or_process_environment_holds_the_password(stack: RunningStack) -> None:
    """Issue 10, item 11: not in `docker inspect` (Config.Env), not in any image, not in
    /proc/PID/environ of any process of the stack's containers, seen from the host."""
    password = stack_password(stack)
    containers = stack.client.containers.list(filters={"label": f"com.docker.compose.project={stack.name}"})
    assert {c.labels["com.docker.compose.service"] for c in containers} == SERVICES
    for c in containers:
        service = c.labels["com.docker.compose.service"]
        assert c.attrs["Config"]["Env"] and not any(password in e for e in c.attrs["Config"]["Env"]), service
        assert password not in json.dumps(c.attrs), service
        assert password not in json.dumps(stack.client.images.get(c.attrs["Image"]).attrs), service
        top = c.top()
        pids = [int(p[top["Titles"].index("PID")]) for p in top["Processes"]]
        assert c.attrs["State"]["Pid"] in pids
        for pid in pids:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a process that has just ended
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                assert environ and password.encode() not in environ, (service, pid, Path(f"/proc/{pid}/cmdline").read_bytes())
    for service in ("control", "lin-blue"):  # what writes the prediction log reads the password from a file
        env = dict(e.split("=", 1) for e in stack.container(service).attrs["Config"]["Env"])
        assert env["MODELPORT_PREDICTIONS_DB_PASSWORD_FILE"] == "/run/secrets/db_password"
        assert "PGPASSWORD" not in env


def test_only_the_gateway_port_is_published(stack: RunningStack) -> None:
    containers = stack.client.containers.list(filters={"label": f"com.docker.compose.project={stack.name}"})
    published = {c.labels["com.docker.compose.service"]: [b for bs in (c.attrs["NetworkSettings"]["Ports"] or {}).values()
                                                          for b in bs or []] for c in containers}
    assert set(published) == SERVICES
    assert {s for s, bindings in published.items() if bindings} == {"gateway"}
    assert {b["HostIp"] for b in published["gateway"]} == {"127.0.0.1"}
    backend = stack.client.networks.get(f"{stack.name}_backend")
    assert backend.attrs["Internal"] is True
    for model in ("lin", "ridge"):
        c = stack.container(f"{model}-blue")
        assert list(c.attrs["NetworkSettings"]["Networks"]) == [f"{stack.name}_backend"]
        assert c.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
        assert c.attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
        assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"


def test_requests_without_a_valid_key_get_401(stack: RunningStack) -> None:
    body = {"features": stack.x[0].tolist()}
    for headers in ({}, {"authorization": "Bearer mpk_not-a-key"}, {"x-api-key": "nope"}):
        r = httpx.post(f"{stack.url}/predict", json=body, headers=headers, timeout=10)
        assert r.status_code == 401, r.text
        assert "API key" in r.json()["error"]
    assert httpx.post(f"{stack.url}/predict", json=body, headers={"x-api-key": stack.key}, timeout=10).status_code == 200


def test_no_encoding_of_a_prediction_path_gets_past_the_gateway(stack: RunningStack) -> None:
    """Issue 10, defect 1, on the deployed edge: double-encoded and other ambiguous paths reach no model."""
    port = int(stack.url.rsplit(":", 1)[1])
    for path in SAME_ROUTE + AMBIGUOUS:
        body = body_for(path, len(FEATURES))
        anonymous, _ = raw_post(port, path, body)
        keyed, text = raw_post(port, path, body, stack.auth)
        assert anonymous in ((401,) if path in SAME_ROUTE else (307, 400, 404, 405)), (path, anonymous)
        assert keyed == 200 if path in SAME_ROUTE else keyed in (307, 400, 404, 405), (path, keyed, text)


def test_predictions_through_the_gateway_equal_the_models_own(stack: RunningStack) -> None:
    for model, ref in (("lin", "lin:1"), ("ridge", "ridge:1")):
        r = stack.predict(model, stack.x)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected(stack, ref, stack.x), rtol=1e-9)
        assert r.headers["x-model-version"] == "1" and r.headers["x-request-id"] == stack.sent[-1]
    r = httpx.post(f"{stack.url}/predict", json={"features": stack.x[0].tolist()}, headers=stack.auth, timeout=10)
    assert r.json()["prediction"] == pytest.approx(expected(stack, "lin:1", stack.x[:1])[0], rel=1e-9)  # the default
    v2 = {"inputs": [{"name": "input", "shape": list(stack.x.shape), "datatype": "FP64", "data": stack.x.ravel().tolist()}]}
    r = httpx.post(f"{stack.url}/v2/models/ridge/infer", json=v2, headers=stack.auth, timeout=10)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["outputs"][0]["data"], expected(stack, "ridge:1", stack.x), rtol=1e-9)


def test_every_prediction_is_in_postgres(stack: RunningStack, tmp_path: Path) -> None:
    with httpx.Client() as client:
        for i in range(40):
            assert stack.predict(("lin", "ridge")[i % 2], stack.x[i % len(stack.x)], client).status_code == 200
    ids = stored_request_ids(stack, stack.sent)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} records stored twice"

    out = tmp_path / "export.json"
    stack.cli("predictions", "export", "--format", "json", "--output", str(out))
    records = {r["request_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    last = records[stack.sent[-1]]
    assert (last["model"], last["version"], last["status"], last["key_id"][:4]) == ("ridge", "1", 200, "key_")
    assert json.loads(last["inputs"]) == {"features": stack.x[39 % len(stack.x)].tolist()}
    assert "prediction" in json.loads(last["outputs"]) and last["latency_ms"] > 0

    stats = {(s["model"], s["version"]): s for s in json.loads(stack.cli("predictions", "stats", "--json").stdout)}
    assert stats[("lin", "1")]["count"] >= 20 and stats[("ridge", "1")]["count"] >= 20
    keys = json.loads(stack.cli("stack", "keys", "list", "--json").stdout)
    assert [k["name"] for k in keys] == ["ci"] and all(stack.key not in json.dumps(k) for k in keys)


def test_a_killed_model_is_restarted_and_the_gateway_answers_503_meanwhile(stack: RunningStack) -> None:
    lin = stack.container("lin-blue")
    restarts = lin.attrs["RestartCount"]
    # SIGKILL to its process from outside, as a crash or the OOM killer would (`docker kill`
    # counts as a deliberate stop, which restart policies respect).
    os.kill(lin.attrs["State"]["Pid"], signal.SIGKILL)
    statuses: list[int] = []
    deadline = time.monotonic() + 90
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            r = stack.predict("lin", stack.x[:1], client, timeout=30)
            assert time.monotonic() - started < 10, "the gateway hung instead of answering"
            statuses.append(r.status_code)
            if r.status_code == 503:
                assert "unavailable" in r.json()["error"] and "lin" in r.json()["error"]
            else:
                assert r.status_code == 200, r.text
                if 503 in statuses:
                    break
            time.sleep(0.05)
    assert 503 in statuses and statuses[-1] == 200, statuses
    lin.reload()
    assert lin.attrs["RestartCount"] == restarts + 1  # Docker restarted it, by its restart policy


def test_stopping_and_starting_the_database_under_load_loses_no_record(stack: RunningStack) -> None:
    failures: list[str] = []
    sent_here: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client() as client:
            while not stop.is_set() and len(sent_here) < 50_000:  # bounded; stops when the outage is over
                r = stack.predict(("lin", "ridge")[len(sent_here) % 2], stack.x[0], client)
                sent_here.append(r.headers.get("x-request-id", ""))
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        db = stack.container("db")
        db.stop(timeout=10)
        time.sleep(4)  # predictions go on, their records into the gateway's spool
        during_outage = len(sent_here)
        db.start()
        time.sleep(4)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert len(sent_here) > during_outage > 0
    ids = stored_request_ids(stack, stack.sent, timeout=90)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} records stored twice"


def test_deploy_and_rollback_under_a_client_loop_fail_no_request(stack: RunningStack) -> None:
    v1, v2 = expected(stack, "lin:1", stack.x[:1])[0], expected(stack, "lin:2", stack.x[:1])[0]
    assert v1 != pytest.approx(v2)
    seen: list[tuple[int, str | None, float | None]] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                r = stack.predict("lin", stack.x[0], client, timeout=30)
                seen.append((r.status_code, r.headers.get("x-model-version"),
                             r.json().get("prediction") if r.status_code == 200 else None))

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        time.sleep(1)
        stack.cli("stack", "deploy", "lin=2", timeout=600)
        after_deploy = len(seen)
        time.sleep(1)
        assert 'image: "modelport/lin:2"' in (stack.directory / "compose.yaml").read_text()
        stack.cli("stack", "rollback", "lin", timeout=600)
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
    failed = [s for s in seen if s[0] != 200]
    assert not failed, f"{len(failed)} of {len(seen)} requests failed: {failed[:5]}"
    versions = [v for _, v, _ in seen]
    assert versions[0] == "1" and "2" in versions[:after_deploy + 1] and versions[-1] == "1"
    for _, version, prediction in seen:
        assert prediction == pytest.approx(v1 if version == "1" else v2, rel=1e-9)
    compose = (stack.directory / "compose.yaml").read_text()
    assert 'image: "modelport/lin:1"' in compose and "modelport/lin:2" not in compose
    assert [c.attrs["Config"]["Image"] for c in stack.replicas("lin")] == ["modelport/lin:1"]  # the old slot retired


def test_with_a_verify_key_a_changed_or_unsigned_model_image_is_refused_before_it_serves(stack: RunningStack) -> None:
    """The module's stack signs every build (MODELPORT_SIGNING_KEY) and checks each model image before it
    serves (MODELPORT_VERIFY_KEY): lin:2, built and signed by the deploy above, is refused once its SBOM or
    its signature is not what was signed, and nothing of it starts."""
    record = Path(stack.env["MODELPORT_HOME"]) / "images" / quote("modelport/lin:2", safe="")
    sbom, signature = record / "sbom.cdx.json", record / "statement.sig.json"
    assert signature.is_file()  # signed when the deploy above built it
    original = sbom.read_bytes()
    sbom.write_bytes(original.replace(b'"name": "numpy"', b'"name": "numpy-patched"', 1))
    try:
        proc = stack.cli("stack", "deploy", "lin=2", check=False, timeout=600)
        assert proc.returncode == 1 and "SBOM was changed" in proc.stderr, proc.stdout + proc.stderr
    finally:
        sbom.write_bytes(original)
    signed = signature.read_bytes()
    signature.unlink()
    try:
        proc = stack.cli("stack", "deploy", "lin=2", check=False, timeout=600)
        assert proc.returncode == 1 and "is not signed" in proc.stderr, proc.stdout + proc.stderr
    finally:
        signature.write_bytes(signed)
    assert [c.attrs["Config"]["Image"] for c in stack.replicas("lin")] == ["modelport/lin:1"]
    assert 'image: "modelport/lin:2"' not in (stack.directory / "compose.yaml").read_text()
    # An image without a record (built before records were kept) is built again, signed, and then serves.
    shutil.rmtree(record)
    try:
        proc = stack.cli("stack", "deploy", "lin=2", timeout=900)
        assert "it has no provenance record here to verify" in proc.stdout + proc.stderr and signature.is_file()
        assert stack.predict("lin", stack.x[:1]).headers.get("x-model-version") == "2"
    finally:  # the later tests expect lin:1 serving (refused, "already serves", when the deploy failed)
        stack.cli("stack", "deploy", "lin=1", timeout=600, check=False)


class ClientLoop:
    """Predictions in a thread until stopped (bounded in count): each answer's status and version."""

    def __init__(self, stack: RunningStack, model: str) -> None:
        self.seen: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(stack, model))

    def _run(self, stack: RunningStack, model: str) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set() and len(self.seen) < 100_000:
                r = stack.predict(model, stack.x[0], client, timeout=30)
                self.seen.append((r.status_code, r.headers.get("x-model-version")))

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        wait_until(lambda: len(self.seen), bool, timeout=30, what=lambda _: "no answer to the client loop")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def failed(self) -> list[tuple[int, str | None]]:
        return [s for s in self.seen if s[0] != 200]


def test_a_canary_gets_its_share_and_promote_and_rollback_lose_no_request(stack: RunningStack) -> None:
    with ClientLoop(stack, "lin") as loop:
        stack.cli("stack", "deploy", "lin=2", "--canary", "10", timeout=600)
        with httpx.Client() as client:
            versions = [stack.predict("lin", stack.x[0], client).headers["x-model-version"] for _ in range(2000)]
        assert 160 <= versions.count("2") <= 240, versions.count("2")  # 8-12 % of 2,000
        assert set(versions) == {"1", "2"}
        stack.cli("stack", "rollback", "lin", timeout=600)  # during a canary: all back to version 1
        after_rollback = len(loop.seen)
        stack.cli("stack", "deploy", "lin=2", "--canary", "10", timeout=600)
        stack.cli("stack", "promote", "lin", timeout=600)
        after_promote = len(loop.seen)
        wait_until(lambda: len(loop.seen), lambda n: n > after_promote + 20, timeout=30)
        stack.cli("stack", "rollback", "lin", timeout=600)  # back to version 1 for the tests after this one
    assert not loop.failed(), f"{len(loop.failed())} of {len(loop.seen)} requests failed: {loop.failed()[:5]}"
    assert {v for _, v in loop.seen[after_rollback - 1:after_rollback + 20]} <= {"1", "2"}
    assert {v for _, v in loop.seen[after_promote + 5:after_promote + 20]} == {"2"}  # promoted: version 2 only
    assert [c.attrs["Config"]["Image"] for c in stack.replicas("lin")] == ["modelport/lin:1"]


def test_a_killed_replica_costs_no_request_and_scale_replaces_it(stack: RunningStack) -> None:
    stack.cli("stack", "scale", "ridge", "3", timeout=600)
    ps = json.loads(stack.cli("stack", "ps", "--json").stdout)
    assert sorted((r["proxy"], r["weight"]) for r in ps if r["model"] == "ridge") == [("UP", 33)] * 3
    with ClientLoop(stack, "ridge") as loop:
        victim = stack.replicas("ridge")[0]
        victim.kill()  # `docker kill`: a deliberate stop, which the restart policy leaves down
        before = len(loop.seen)
        wait_until(lambda: len(loop.seen), lambda n: n > before + 50, timeout=30)
        stack.cli("stack", "scale", "ridge", "3", timeout=600)  # replaces the replica that is down
        assert sum(c.status == "running" for c in stack.replicas("ridge")) == 3
        stack.cli("stack", "scale", "ridge", "1", timeout=600)
    assert not loop.failed(), f"{len(loop.failed())} of {len(loop.seen)} requests failed: {loop.failed()[:5]}"
    assert [c.status for c in stack.replicas("ridge")] == ["running"]


def test_a_revoked_key_is_refused_at_once_without_dropping_another_clients_connection(stack: RunningStack) -> None:
    gateway_started = stack.container("gateway").attrs["State"]["StartedAt"]
    token = stack.cli("stack", "keys", "create", "short-lived").stdout.strip()
    body = json.dumps({"features": stack.x[0].tolist()}).encode()
    port = int(stack.url.rsplit(":", 1)[1])
    with KeepAlive(port) as other:  # another client's open connection, across the revocation
        assert other.post("/models/lin/predict", body, stack.key) == 200
        assert httpx.post(f"{stack.url}/predict", content=body, headers={"x-api-key": token}, timeout=10).status_code == 200
        stack.cli("stack", "keys", "revoke", token[:12])
        r = httpx.post(f"{stack.url}/predict", content=body, headers={"x-api-key": token}, timeout=10)
        assert r.status_code == 401 and r.json() == {"error": "Invalid or revoked API key"}
        assert other.post("/models/lin/predict", body, stack.key) == 200  # the same connection, still open
    assert stack.container("gateway").attrs["State"]["StartedAt"] == gateway_started  # no restart


class KeepAlive:
    """One HTTP/1.1 connection, kept: a request on it fails if the server closed it."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def post(self, path: str, body: bytes, key: str) -> int:
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"X-API-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int(self.file.readline().split()[1])
        length = 0
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        self.file.read(length)
        return status

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()


def test_the_gateway_under_load_fails_no_request(stack: RunningStack) -> None:
    """wrk through the gateway and straight to a container of the same model image (same limits): no
    request fails on either. The latencies are printed for a look, not asserted: how fast is bench/'s
    job, and a timed assertion fails on a busy machine for no fault of the code (issue 17)."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/test-env.sh installs it)")
    port = free_port()
    served = stack.replicas("lin")[0].image.id  # the image the stack serves (tags are the engine's, shared)
    direct = stack.client.containers.run(served, detach=True, ports={"8080/tcp": ("127.0.0.1", port)},
                                         nano_cpus=1_000_000_000, mem_limit="512m",
                                         labels={"io.modelport.stack": stack.name, "io.modelport.role": "measure"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        results = {path: wrk(url, stack.key, stack.x[0]) for path, url in
                   (("direct", f"http://127.0.0.1:{port}"), ("gateway", stack.url))}
    finally:
        direct.remove(force=True)
    print(f"\ngateway overhead ({WRK_ARGS}): " + "; ".join(
        f"{path}: p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, {r['rps']:.0f} req/s" for path, r in results.items()))
    assert results["gateway"]["errors"] == 0 and results["direct"]["errors"] == 0
    assert results["gateway"]["requests"] > 0 and results["direct"]["requests"] > 0


WRK_ARGS = "wrk -t2 -c8 -d10s, POST /models/lin/predict, one row"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %d %d %f\\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests, summary.requests / (summary.duration / 1e6)))
end
"""


def wrk(url: str, key: str, row: np.ndarray) -> dict[str, float]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT.format(body=json.dumps({"features": row.tolist()}), key=key))
        script.flush()
        out = subprocess.run(["wrk", "-t2", "-c8", "-d10s", "-s", script.name, f"{url}/models/lin/predict"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    p50, p99, errors, requests, rps = re.search(r"^RESULT (\S+) (\S+) (\d+) (\d+) (\S+)$", out, re.M).groups()
    return {"p50": float(p50), "p99": float(p99), "errors": int(errors), "requests": int(requests), "rps": float(rps)}


def test_data_survives_down_and_up(stack: RunningStack) -> None:
    before = set(stack.psql("SELECT record_id FROM mp_predictions").split())
    stack.cli("stack", "down")
    assert not stack.client.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack.name}"})
    stack.cli("stack", "up", timeout=600)
    assert before <= set(stack.psql("SELECT record_id FROM mp_predictions").split())  # each record, not a count
    assert stack.predict("ridge", stack.x[:2]).status_code == 200  # the key is in the database too
    ps = json.loads(stack.cli("stack", "ps", "--json").stdout)
    assert {(r["service"], r["state"]) for r in ps} == {("db", "healthy"), ("lin-blue", "healthy"), ("ridge-blue", "healthy"),
                                                        ("gateway", "healthy"), ("control", "running")}
    assert {(r["service"], r["proxy"], r["weight"]) for r in ps if r["model"]} == {("lin-blue", "UP", 100),
                                                                                 ("ridge-blue", "UP", 100)}


def test_up_brings_back_a_stopped_model_service(stack: RunningStack) -> None:
    """`docker stop` of one model service, then `stack up` (the gateway still publishing the port):
    Compose starts it again, and up waits for it rather than failing on the exited container it saw first."""
    stack.container("ridge-blue").stop(timeout=10)
    assert stack.container("ridge-blue").status == "exited"
    proc = stack.cli("stack", "up", timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stack.container("ridge-blue").status == "running"
    r = stack.predict("ridge", stack.x[:2])
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], expected(stack, "ridge:1", stack.x[:2]), rtol=1e-6)


def test_up_names_the_service_that_is_not_healthy_and_why(stack: RunningStack, tmp_path: Path) -> None:
    """A second stack whose model services get far too little memory: up fails naming one, with the cause."""
    name = f"mpt-{uuid.uuid4().hex[:6]}"
    directory = tmp_path / name
    try:
        run_cli("stack", "init", str(directory), "--model", "lin:1", "--gateway-port", str(free_port()),
                "--base-image", TEST_BASE_IMAGE, "--db-image", POSTGRES_IMAGE, "--memory", "24m", env=stack.env)
        proc = run_cli("stack", "up", "--dir", str(directory), "--wait", "120", env=stack.env, check=False, timeout=300)
        assert proc.returncode == 1
        assert "Service 'lin-blue' is not healthy" in proc.stderr and "OOMKilled" in proc.stderr, proc.stderr
    finally:
        run_cli("stack", "down", "--volumes", "--dir", str(directory), env=stack.env, check=False)
        remove_everything(stack.client, name)
