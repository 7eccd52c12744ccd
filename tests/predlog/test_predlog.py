"""The prediction log against real databases: batching, spooling through outages, exactly once, queries."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text

from modelport.predlog.db import make_engine
from modelport.predlog.queries import export, list_predictions, parse_since, stats
from modelport.predlog.spool import Spool
from modelport.predlog.writer import PredictionLog, create_schema, insert_rows, predictions, to_row
from tests.fixtures_db import PostgresServer, record
from tests.helpers import free_port, run_in_process, wait_until


def stored(url: str) -> list[dict]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(predictions).order_by(predictions.c.id)).mappings()]
    engine.dispose()
    return rows


def test_records_are_written_in_batches(db_url: str, tmp_path: Path) -> None:
    plog = PredictionLog(db_url, tmp_path / "spool")
    for n in range(1200):
        plog.submit(record(n))
    plog.submit(record(9999, inputs=b"\x89PNG\x00\x01", version=None, status=400, key_id=None))
    assert plog.flush(30)
    plog.close()
    rows = stored(db_url)
    assert len(rows) == 1201 and len({r["record_id"] for r in rows}) == 1201
    first = rows[0]
    assert (first["request_id"], first["key_id"], first["model"], first["version"], first["status"]) == (
        "req-0", "key_test", "iris", "1", 200)
    assert json.loads(first["inputs"]) == {"features": [0, 2.5]} and json.loads(first["outputs"]) == {"prediction": 0}
    binary = rows[-1]
    assert binary["inputs"] == "base64:iVBORwAB" and binary["version"] is None and binary["key_id"] is None
    assert not list((tmp_path / "spool").glob("*.jsonl"))  # the database was up: nothing spooled


def test_close_writes_every_queued_record_without_a_flush(db_url: str, tmp_path: Path) -> None:
    """A normal stop calls close() only: what is still queued then must reach the database."""
    plog = PredictionLog(db_url, tmp_path / "spool", flush_interval=60)  # the writer would not wake on its own
    for n in range(300):
        plog.submit(record(n))
    assert plog.pending > 0
    plog.close()
    assert {r["request_id"] for r in stored(db_url)} == {f"req-{n}" for n in range(300)}


def test_the_owner_closes_the_log_and_closing_writes_what_was_pending(tmp_path: Path) -> None:
    """No handler at exit (issue 13: the owner closes it): ``with`` closes it, and what was still
    queued is written then; a second close does nothing more."""
    import atexit

    url = f"sqlite:///{tmp_path / 'p.db'}"
    handlers = atexit._ncallbacks()  # noqa: SLF001 (CPython's count of registered exit handlers)
    with PredictionLog(url, tmp_path / "spool", flush_interval=60, batch_size=10_000) as plog:
        assert atexit._ncallbacks() == handlers  # noqa: SLF001
        for n in range(50):
            plog.submit(record(n))
        assert plog.pending == 50  # the writer would not wake on its own for a minute
    assert not plog._thread.is_alive()  # noqa: SLF001
    assert {r["request_id"] for r in stored(url)} == {f"req-{n}" for n in range(50)}
    plog.close()


def test_the_apps_lifespan_closes_its_prediction_log(model_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's app owns its log: its shutdown writes the records still queued."""
    import modelport.predlog
    from tests.fixtures_serving import serve_in_process

    url = f"sqlite:///{tmp_path / 'p.db'}"
    opened: list[PredictionLog] = []

    def open_log(db_url: str, spool_dir: Path | None = None) -> PredictionLog:
        opened.append(PredictionLog(db_url, spool_dir or tmp_path / "spool", flush_interval=60, batch_size=10_000))
        return opened[-1]

    monkeypatch.setattr(modelport.predlog, "open_log", open_log)
    client, _ = serve_in_process(model_store, ["lin"], log_db=url)
    with client:
        for n in range(5):
            assert client.post("/predict", json={"features": [n, 0, 0, 0]}, headers={"x-request-id": f"r{n}"}).status_code == 200
        assert opened[0].pending == 5
    assert not opened[0]._thread.is_alive()  # noqa: SLF001
    assert {r["request_id"] for r in stored(url)} == {f"r{n}" for n in range(5)}


def test_records_spooled_while_the_database_is_unreachable_are_replayed_once(db_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    down = PredictionLog(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone", spool)
    started = time.perf_counter()
    for n in range(300):
        down.submit(record(n))
    assert time.perf_counter() - started < 1  # never waits for the database
    assert down.flush(10)
    down.close()
    segments = list(spool.glob("*.jsonl"))
    lines = [json.loads(line) for s in segments for line in s.read_text().splitlines()]
    assert len(lines) == 300 and len({line["record_id"] for line in lines}) == 300

    # Another process (a restarted gateway) finds the segments and replays them.
    up = PredictionLog(db_url, spool)
    up.submit(record(300))
    assert up.flush(10)
    up.close()
    assert sorted(int(r["request_id"][4:]) for r in stored(db_url)) == list(range(301))
    assert not list(spool.glob("*.jsonl"))


def test_a_repeated_replay_stores_nothing_twice(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    create_schema(engine)
    spool = Spool(tmp_path / "spool")
    spool.append([to_row(record(n)) for n in range(10)])
    spool.seal()
    segment = spool.segments()[0]
    copy = segment.read_bytes()
    with segment.open("ab") as f:
        f.write(b'{"record_id": "torn')  # a write a crash cut short
    assert spool.replay(lambda rows: insert_rows(engine, _times(rows))) == 10
    segment.write_bytes(copy)  # as if the process died after inserting, before deleting the segment
    assert spool.replay(lambda rows: insert_rows(engine, _times(rows))) == 10
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(predictions)).scalar() == 10
    engine.dispose()


def _times(rows: list[dict]) -> list[dict]:
    return [{**r, "time": datetime.fromisoformat(r["time"])} for r in rows]


def test_a_segment_held_by_a_live_writer_is_left_alone(tmp_path: Path) -> None:
    writer, other = Spool(tmp_path), Spool(tmp_path)
    writer.append([to_row(record(1))])
    assert other.replay(lambda rows: pytest.fail("replayed a segment that is still being written")) == 0
    writer.seal()
    got: list = []
    assert other.replay(got.extend) == 1 and got[0]["request_id"] == "req-1"


def submit_stream(plog: PredictionLog, n: int, rate: float, slowest: list[float]) -> threading.Thread:
    """Submit ``n`` records at about ``rate`` a second, keeping the longest submit() time."""
    def run() -> None:
        for i in range(n):
            start = time.perf_counter()
            plog.submit(record(i))
            slowest[0] = max(slowest[0], time.perf_counter() - start)
            time.sleep(1 / rate)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def spool_drained(plog: PredictionLog, spool: Path, timeout: float) -> None:
    """Wait until the writer has replayed every spooled segment into the database."""
    wait_until(lambda: (list(spool.glob("*.jsonl")), plog.spool.dirty), lambda s: not s[0] and not s[1],
               timeout=timeout, interval=0.1, what=lambda s: f"spool not replayed: {len(s[0])} segment(s) left, dirty={s[1]}")


def test_postgres_stopped_and_restarted_mid_stream_loses_and_duplicates_nothing(
        pg_url: str, postgres_server: PostgresServer, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    plog = PredictionLog(pg_url, spool, retry_interval=0.5)
    slowest = [0.0]
    total = 2000
    stream = submit_stream(plog, total, rate=500, slowest=slowest)
    try:
        time.sleep(1)
        postgres_server.stop()
        spooled_during_outage = 0
        for _ in range(20):  # 2 s down: the stream goes on, into the spool
            time.sleep(0.1)
            spooled_during_outage = max(spooled_during_outage, sum(
                len(s.read_bytes().splitlines()) for s in spool.glob("*.jsonl") if s.exists()))
        postgres_server.start()
        stream.join()
        assert plog.flush(30)
        spool_drained(plog, spool, timeout=30)  # the writer reconnects and replays the spool
    finally:
        stream.join()
        plog.close()
    assert spooled_during_outage > 100
    assert not list(spool.glob("*.jsonl")), "the spool was not replayed after the database came back"
    rows = stored(pg_url)
    ids = sorted(int(r["request_id"][4:]) for r in rows)
    assert ids == list(range(total)), f"{total - len(set(ids))} records lost, {len(ids) - len(set(ids))} duplicated"
    assert len({r["record_id"] for r in rows}) == total
    # Never waits for the database (down for 2 s here); the margin is for a busy 2-core machine.
    assert slowest[0] < 0.2, f"submit() blocked for {slowest[0] * 1000:.0f} ms"


def test_a_slow_database_overflows_to_the_spool_not_to_memory(pg_url: str, tmp_path: Path) -> None:
    engine = make_engine(pg_url)
    create_schema(engine)
    plog = PredictionLog(pg_url, tmp_path / "spool", max_queue_bytes=64 * 1024)
    assert plog.flush(10)
    with engine.connect() as locker:  # inserts wait for this lock: a database that has become very slow
        locker.execute(text("LOCK TABLE mp_predictions IN ACCESS EXCLUSIVE MODE"))
        plog.submit(record(0))
        time.sleep(0.3)  # the writer is now stuck in its insert
        started = time.perf_counter()
        for n in range(1, 2001):
            plog.submit(record(n))
        elapsed = time.perf_counter() - started
        assert plog.pending * 300 < 64 * 1024 * 2  # the queue stayed within its budget...
        assert list((tmp_path / "spool").glob("*.jsonl"))  # ...the rest went to disk
        time.sleep(2)
        locker.rollback()
    assert elapsed < 2
    assert plog.flush(30)
    spool_drained(plog, tmp_path / "spool", timeout=20)
    plog.close()
    engine.dispose()
    assert sorted(int(r["request_id"][4:]) for r in stored(pg_url)) == list(range(2001))


def test_list_stats_and_export(db_url: str, tmp_path: Path) -> None:
    plog = PredictionLog(db_url, tmp_path / "spool")
    latencies = {"1": np.linspace(1, 100, 200), "2": np.linspace(5, 10, 50)}
    for version, values in latencies.items():
        for i, ms in enumerate(values):
            plog.submit(record(i, version=version, latency_ms=float(ms), status=500 if version == "2" and i < 5 else 200))
    plog.submit(record(0, model="other"))
    assert plog.flush(10)
    plog.close()
    engine = make_engine(db_url)

    recent = list_predictions(engine, model="iris", limit=5)
    assert len(recent) == 5 and all(r["model"] == "iris" for r in recent)
    assert recent[0]["time"] >= recent[-1]["time"] and recent[0]["time"].tzinfo is not None

    by_version = {r["version"]: r for r in stats(engine, model="iris")}
    assert set(by_version) == {"1", "2"}
    for version, values in latencies.items():
        s = by_version[version]
        assert s["count"] == len(values)
        assert s["p50_ms"] == pytest.approx(np.percentile(values, 50))
        assert s["p99_ms"] == pytest.approx(np.percentile(values, 99))
    assert (by_version["2"]["errors"], by_version["2"]["error_rate"]) == (5, 0.1)
    assert len(stats(engine)) == 3
    assert stats(engine, since=datetime.now(UTC) + timedelta(minutes=1)) == []

    out = io.BytesIO()
    assert export(engine, out, "json", model="iris") == 250
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 250 and {line["version"] for line in lines} == {"1", "2"}
    out = io.BytesIO()
    assert export(engine, out, "csv", since=parse_since("1h")) == 251
    assert out.getvalue().decode().splitlines()[0].startswith("record_id,time,request_id,key_id,model,version,inputs")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "p.parquet"
    with path.open("wb") as f:
        assert export(engine, f, "parquet", model="other") == 1
    table = pq.read_table(path)
    assert table.num_rows == 1 and table.column("model").to_pylist() == ["other"]
    engine.dispose()


@pytest.mark.parametrize("command", [["list"], ["stats"], ["export", "-o", "OUT"]])
def test_a_log_that_is_missing_empty_or_unreachable_is_a_clear_error(command: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    args = [a.replace("OUT", str(out)) for a in command]
    missing = tmp_path / "missing.db"
    empty = tmp_path / "empty.db"
    with make_engine(f"sqlite:///{empty}").begin() as conn:  # a database, but no log in it
        conn.execute(text("CREATE TABLE other (a INTEGER)"))
    cases = {f"sqlite:///{missing}": "does not exist", f"sqlite:///{empty}": "no prediction log yet",
             f"postgresql://nobody@127.0.0.1:{free_port()}/db": "Connection refused"}
    for url, reason in cases.items():
        proc = run_in_process("predictions", *args, "--db-url", url, check=False)
        assert proc.returncode == 1 and reason in proc.stderr and "Traceback" not in proc.stderr, (url, proc.stderr)
    assert not missing.exists()  # reading never creates a database
    assert not out.exists()  # nor an export's output file for nothing


def test_parse_since() -> None:
    now = datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert parse_since("90m", now) == datetime(2025, 1, 31, 10, 30, tzinfo=UTC)
    assert parse_since("2d", now) == datetime(2025, 1, 29, 12, tzinfo=UTC)
    assert parse_since("2025-01-30T08:00") == datetime(2025, 1, 30, 8, tzinfo=UTC)
    with pytest.raises(Exception, match="duration"):
        parse_since("yesterday")
