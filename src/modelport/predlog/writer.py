"""The prediction log: every prediction answered, in a database (PostgreSQL, or SQLite locally).

``PredictionLog.submit`` never waits for the database: records go to a bounded in-memory queue
that a background thread writes in batches. While the database is down or too slow, batches go
to an on-disk spool (spool.py) and are replayed when it answers again. Each record carries a
unique id and inserts skip ids already present, so replaying twice stores nothing twice.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from modelport.errors import ModelportError
from modelport.predlog.db import make_engine, safe_url
from modelport.predlog.record import PredictionRecord
from modelport.predlog.spool import Rows, Spool
from modelport.store.schema import create_tables

log = logging.getLogger("modelport.predlog")

MAX_BODY_LOGGED = 1024 * 1024  # larger bodies are logged as their size and sha256
# A connection that fails or a statement that times out: the database is unavailable, not the data bad.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)

metadata = MetaData()
predictions = Table(
    "mp_predictions", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("record_id", String(32), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(32)),
    Column("model", String(64), nullable=False),
    Column("version", String(32)),
    Column("inputs", Text),
    Column("outputs", Text),
    Column("content_type", String(128)),
    Column("latency_ms", Float, nullable=False),
    Column("status", Integer, nullable=False),
    Index("ix_mp_predictions_time", "time"),
    Index("ix_mp_predictions_model_time", "model", "time"),
)
COLUMNS = [str(c.name) for c in predictions.columns if c.name != "id"]  # plain str: orjson refuses subclasses as keys


def body_text(body: bytes) -> str:
    """A body as stored: its text when it is text, ``base64:…`` when not (PostgreSQL text cannot
    hold NUL either), and only its size and sha256 when it is very large."""
    if len(body) > MAX_BODY_LOGGED:
        return f"<omitted: {len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()}>"
    try:
        decoded = body.decode()
    except UnicodeDecodeError:
        decoded = "\0"
    return "base64:" + base64.b64encode(body).decode() if "\0" in decoded else decoded


def to_row(record: PredictionRecord) -> dict[str, Any]:
    return {"record_id": uuid.uuid4().hex, "time": record.time, "request_id": record.request_id[:128],
            "key_id": record.key_id, "model": record.model, "version": record.version,
            "inputs": body_text(record.inputs), "outputs": body_text(record.outputs),
            "content_type": (record.content_type or "")[:128], "latency_ms": float(record.latency_ms),
            "status": int(record.status)}


def _from_spool(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "time": datetime.fromisoformat(row["time"])}


def create_schema(engine: Engine) -> None:
    create_tables(engine, metadata)


def insert_rows(engine: Engine, rows: Rows) -> None:
    """Insert, skipping records whose id is stored already (a replay after a partial one)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ModelportError(f"The prediction log needs PostgreSQL or SQLite, not {engine.dialect.name}")
    with engine.begin() as conn:
        conn.execute(insert(predictions).on_conflict_do_nothing(index_elements=["record_id"]), rows)


class PredictionLog:
    """The asynchronous, spooling writer, one per process. Its owner closes it (``close()``, or ``with``):
    the server's app in its lifespan, ``predictions receive`` when it stops. Nothing closes it at exit on
    its own: a writer nobody closed loses what is still queued, as a killed process does."""

    def __init__(self, db_url: str, spool_dir: Path, *, batch_size: int = 500, flush_interval: float = 0.1,
                 retry_interval: float = 1.0, sweep_interval: float = 30.0, max_queue_bytes: int = 64 * 1024 * 1024) -> None:
        self.engine = make_engine(db_url)
        self.where = safe_url(db_url)
        self.spool = Spool(spool_dir)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.sweep_interval = sweep_interval
        self.max_queue_bytes = max_queue_bytes
        self._queue: deque[tuple[dict[str, Any], int]] = deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._up = False  # the database answered the last time we tried
        self._warned = False
        self._schema = False
        self._next_check = 0.0  # when to (re)connect, replay the spool and sweep up others' segments
        self._backoff = retry_interval
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="modelport-predlog", daemon=True)
        self._thread.start()

    # -- the caller's side: never waits for the database -----------------------------------------

    def submit(self, record: PredictionRecord) -> None:
        row = to_row(record)
        size = len(row["inputs"]) + len(row["outputs"]) + 256
        with self._cond:
            self._submitted += 1
            if self._queued_bytes + size <= self.max_queue_bytes or not self._queue:
                self._queue.append((row, size))
                self._queued_bytes += size
                if len(self._queue) == self.batch_size:  # else the writer wakes on its own: one insert per interval
                    self._cond.notify()
                return
        # The memory budget is spent (the database is slow and the queue full): straight to disk.
        try:
            self.spool.append([row], sync_within=0.05)
        except OSError as e:  # the disk fails too: lose the record, never the prediction
            log.error("prediction log: cannot spool record %s: %s", row["record_id"], e)
        with self._cond:
            self._done += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every record submitted so far is in the database or the spool."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 15.0) -> None:
        """Write what is queued (to the database, or to the spool if it is down) and stop. Once is enough:
        a second call returns at once."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self.engine.dispose()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Records queued in memory, not yet written anywhere."""
        with self._cond:
            return len(self._queue)

    # -- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        self._check()
        while True:
            rows = self._take()
            try:
                if rows:
                    self._write(rows)
                if time.monotonic() >= self._next_check or (self._up and self.spool.dirty):
                    self._check()
            except Exception:  # a full disk, a bug: say so, and keep the writer alive for what comes next
                log.exception("prediction log: writing %d record(s) failed", len(rows))
                time.sleep(self.retry_interval)
            if rows:
                with self._cond:
                    self._done += len(rows)
                    self._cond.notify_all()
            with self._cond:
                if self._closing and not self._queue:
                    break
        if self.spool.dirty and self._up:
            self._check()  # replay what this process spooled before it stops
        self.spool.seal()

    def _take(self) -> Rows:
        with self._cond:
            if len(self._queue) < self.batch_size and not self._closing:
                self._cond.wait(self.flush_interval)
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            self._queued_bytes -= sum(size for _, size in batch)
        return [row for row, _ in batch]

    def _write(self, rows: Rows) -> None:
        if self._up:
            try:
                self._store(rows)
                return
            except UNAVAILABLE as e:
                self._went_down(e)
        self.spool.append(rows)

    def _store(self, rows: Rows) -> None:
        """Insert; a batch the database refuses (bad data, not a lost connection) goes in row by
        row, and rows it still refuses are kept aside in the spool's rejected/ folder."""
        try:
            insert_rows(self.engine, rows)
        except UNAVAILABLE:
            raise
        except SQLAlchemyError:
            for row in rows:
                try:
                    insert_rows(self.engine, [row])
                except UNAVAILABLE:
                    raise
                except SQLAlchemyError as e:
                    path = self.spool.quarantine([row], str(getattr(e, "orig", e))[:500])
                    log.error("the prediction log refused record %s (%s); kept in %s", row["record_id"], e, path)

    def _check(self) -> None:
        """Connect, replay every spool segment nobody holds, and mark the database up."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            if not self._schema:
                create_schema(self.engine)
                self._schema = True
            self.spool.seal()
            replayed = self.spool.replay(lambda rows: self._store([_from_spool(r) for r in rows]), self.batch_size)
        except UNAVAILABLE as e:
            self._went_down(e)
            return
        if replayed or self._warned:
            log.info("prediction log: writing to %s%s", self.where, f" (replayed {replayed} spooled records)" if replayed else "")
        self._up, self._warned = True, False
        self._backoff = self.retry_interval
        self._next_check = time.monotonic() + self.sweep_interval

    def _went_down(self, e: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("prediction log: %s is unavailable (%s); spooling records to %s until it is back",
                        self.where, type(getattr(e, "orig", None) or e).__name__, self.spool.directory)
        self._up = False
        self._next_check = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 10.0)
