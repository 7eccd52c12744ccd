"""The proxy's own answers (HAProxy's JSON syslog lines) into the prediction log: parsing, the UDP
receiver with a real socket, a database outage, and ``modelport predictions receive`` as a process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from modelport.predlog.db import make_engine
from modelport.predlog.proxylog import MAX_DATAGRAM, ProxyLogReceiver, parse_datagram
from modelport.predlog.queries import stats
from modelport.predlog.writer import PredictionLog, predictions
from tests.helpers import free_port, run_in_process, wait_until

LINE = {"time": "2026-12-03T08:29:36.123Z", "request_id": "req-1", "key_id": "key_ab12", "model": "iris",
        "version": "3", "status": 503, "latency_ms": 2.5}


def line(**changes: object) -> bytes:
    fields = {k: v for k, v in {**LINE, **changes}.items() if v is not ...}  # ...: leave the field out
    return json.dumps(fields).encode() + b"\n"


def stored(url: str) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(predictions).order_by(predictions.c.id)).mappings()]
    except Exception:  # not created yet
        return []
    finally:
        engine.dispose()


# -- parsing ---------------------------------------------------------------------------------------

def test_a_log_line_becomes_a_record_of_the_proxys_answer() -> None:
    record = parse_datagram(line())
    assert record is not None
    assert (record.request_id, record.key_id, record.model, record.version, record.status, record.latency_ms) == (
        "req-1", "key_ab12", "iris", "3", 503, 2.5)
    assert record.time == datetime(2026, 12, 3, 8, 29, 36, 123000, tzinfo=UTC)
    assert (record.inputs, record.content_type) == (b"", "")
    assert json.loads(record.outputs) == {"error": "the proxy answered 503: no model replica could take the request"}


@pytest.mark.parametrize("empty", ["", "-", None, ...])
def test_no_key_and_no_version_are_none(empty: object) -> None:
    record = parse_datagram(line(key_id=empty, version=empty))
    assert record is not None and (record.key_id, record.version) == (None, None)


@pytest.mark.parametrize("value", [
    "2026-12-03T08:29:36.123Z", "2026-12-03T09:29:36.123+01:00", "2026-12-03T08:29:36.123",  # ISO 8601
    1796286576.123, "1796286576.123",  # epoch seconds, as a number or quoted
    "03/Dec/2026:08:29:36.123",  # HAProxy's %t
])
def test_times_in_each_accepted_format(value: object) -> None:
    record = parse_datagram(line(time=value))
    assert record is not None
    assert abs(record.time - datetime(2026, 12, 3, 8, 29, 36, 123000, tzinfo=UTC)).total_seconds() < 0.001


def test_haproxy_date_with_its_zone() -> None:
    record = parse_datagram(line(time="03/Dec/2026:08:29:36 +0000"))
    assert record is not None and record.time == datetime(2026, 12, 3, 8, 29, 36, tzinfo=UTC)


@pytest.mark.parametrize("header", [
    b"<134>Dec  3 08:29:36 haproxy[7]: ",  # RFC 3164
    b"<134>1 2026-12-03T08:29:36.123Z gateway haproxy 7 - - ",  # RFC 5424
    b"<134>1 2026-12-03T08:29:36.123Z gateway haproxy 7 - - \xef\xbb\xbf",  # RFC 5424 with its BOM
])
def test_a_syslog_header_before_the_json_is_skipped(header: bytes) -> None:
    record = parse_datagram(header + line())
    assert record is not None and (record.request_id, record.status) == ("req-1", 503)


@pytest.mark.parametrize(("data", "reason"), [
    (line(request_id=...), "missing request_id"),
    (line(status=..., latency_ms=...), "missing status, latency_ms"),
    (b'{"time": "2026-12-03T08:29:36Z", "request_id": ', "bad JSON"),
    (b"haproxy started", "no JSON object"),
    (b"<134>Dec  3 08:29:36 haproxy[7]: [1, 2]", "no JSON object"),
    (b'{"a": 1} trailing', "bad JSON"),
    (line(status="five hundred"), "not a number"),
    (line(status=1000), "not an HTTP status"),
    (line(status=True), "not a number"),
    (line(latency_ms="nan"), "not a number"),
    (line(time="yesterday"), "not ISO 8601"),
    (line(time=1796286576123), "not ISO 8601"),  # milliseconds, not seconds: refused, not the year 58890
    (line(request_id=""), "not a name"),
    (line(model=5), "not a name"),
    (line(key_id=7), "not a string"),
    (line().replace(b"req-1", b"req-\xff"), "bad JSON"),  # not UTF-8
])
def test_a_malformed_line_is_ignored_with_a_warning(data: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "modelport.predlog.proxylog"):
        assert parse_datagram(data) is None
    assert reason in caplog.text


def test_a_datagram_over_64_kib_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    huge = line(request_id="r" * MAX_DATAGRAM)
    with caplog.at_level(logging.WARNING, "modelport.predlog.proxylog"):
        assert parse_datagram(huge) is None
    assert f"more than {MAX_DATAGRAM}" in caplog.text
    assert parse_datagram(line(request_id="r" * 1000)) is not None  # a long line under the limit is fine


# -- the receiver ----------------------------------------------------------------------------------

@pytest.fixture
def receiving(tmp_path: Path) -> Iterator:
    """Start a receiver (on a free port) writing to a given database; stopped and closed after the test."""
    started: list[tuple[ProxyLogReceiver, threading.Thread, PredictionLog]] = []

    def start(db_url: str) -> ProxyLogReceiver:
        plog = PredictionLog(db_url, tmp_path / "spool", flush_interval=0.05, retry_interval=0.1)
        receiver = ProxyLogReceiver(plog, "127.0.0.1", 0)
        thread = threading.Thread(target=receiver.serve_forever, daemon=True)
        thread.start()
        started.append((receiver, thread, plog))
        return receiver

    yield start
    for receiver, thread, plog in started:
        receiver.stop()
        thread.join(5)
        plog.close()
    assert not any(thread.is_alive() for _, thread, _ in started), "serve_forever did not return after stop()"


def send(port: int, *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in datagrams:
            s.sendto(data, ("127.0.0.1", port))


def test_the_receiver_writes_each_line_to_the_prediction_log(receiving, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    receiver = receiving(url)
    port = receiver.address[1]
    send(port, line(request_id="req-a"), b"not a log line", line(request_id="req-b", status=504, key_id="-"),
         b"<134>Dec  3 08:29:36 haproxy[7]: " + line(request_id="req-c", model="digits", version="-", status=502))
    rows = wait_until(lambda: stored(url), lambda r: len(r) == 3, timeout=10, interval=0.05,
                      what=lambda r: f"{len(r)} of 3 rows: {[x['request_id'] for x in r]}")
    assert {r["request_id"]: (r["model"], r["version"], r["key_id"], r["status"]) for r in rows} == {
        "req-a": ("iris", "3", "key_ab12", 503), "req-b": ("iris", "3", None, 504), "req-c": ("digits", None, "key_ab12", 502)}
    assert (receiver.received, receiver.ignored) == (3, 1)
    # What `modelport predictions stats` shows: the proxy's answers are counted, as errors.
    counts = {(s["model"], s["count"], s["errors"]) for s in stats(make_engine(url))}
    assert counts == {("iris", 2, 2), ("digits", 1, 1)}


def test_lines_received_while_the_database_is_unavailable_reach_it_once_it_is_back(receiving, tmp_path: Path) -> None:
    """The receiver submits to predlog's spooling writer (test_predlog.py proves the spool itself): a
    SQLite file in a directory that does not exist yet cannot be opened, as a database that is down."""
    db_dir = tmp_path / "db"
    url = f"sqlite:///{db_dir / 'predictions.db'}"
    receiver = receiving(url)
    send(receiver.address[1], *(line(request_id=f"req-{n}") for n in range(50)))
    spool = tmp_path / "spool"
    wait_until(lambda: sum(len(s.read_bytes().splitlines()) for s in spool.glob("*.jsonl")), lambda n: n == 50,
               timeout=10, interval=0.05, what=lambda n: f"{n} of 50 records spooled")
    db_dir.mkdir()  # the database is back
    rows = wait_until(lambda: stored(url), lambda r: len(r) == 50, timeout=20, interval=0.1,
                      what=lambda r: f"{len(r)} of 50 rows after the outage")
    assert sorted(int(r["request_id"][4:]) for r in rows) == list(range(50))
    wait_until(lambda: list(spool.glob("*.jsonl")), lambda s: not s, timeout=10, interval=0.1,
               what=lambda s: f"spool segments left: {s}")


def test_the_port_taken_is_an_error_saying_so(tmp_path: Path) -> None:
    from modelport.errors import ModelportError

    plog = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "spool")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            with pytest.raises(ModelportError, match=r"Cannot listen on udp 127\.0\.0\.1"):
                ProxyLogReceiver(plog, "127.0.0.1", taken.getsockname()[1])
    finally:
        plog.close()


# -- the command -----------------------------------------------------------------------------------

def test_receive_needs_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_PREDICTIONS_DB_URL", raising=False)
    proc = run_in_process("predictions", "receive", "--port", "0", check=False)
    assert proc.returncode == 1 and "pass --db-url or set MODELPORT_PREDICTIONS_DB_URL" in proc.stderr + proc.stdout


def test_the_command_receives_until_sigterm_and_writes_what_it_received(tmp_path: Path) -> None:
    """A real process: SIGTERM right after the last datagram still writes every record (the ones still
    in the socket and the ones still queued) before it exits."""
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    port = free_port()
    out = tmp_path / "receive.log"
    with out.open("wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "modelport", "predictions", "receive", "--host", "127.0.0.1",
                                 "--port", str(port), "--db-url", url, "--spool-dir", str(tmp_path / "spool")],
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: out.read_text(), lambda text: "Receiving" in text or proc.poll() is not None,
                       timeout=60, interval=0.05)
            assert proc.poll() is None, out.read_text()
            send(port, *(line(request_id=f"req-{n}") for n in range(200)))
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(20) == 0, out.read_text()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    text = out.read_text()
    assert f"Receiving the proxy's log on udp 127.0.0.1:{port}" in text
    assert sorted(int(r["request_id"][4:]) for r in stored(url)) == list(range(200)), text
    assert not list((tmp_path / "spool").glob("*.jsonl"))
