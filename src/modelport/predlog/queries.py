"""Reading the prediction log: recent records, per-version statistics, and exports."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy import Select, case, func, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from modelport.errors import ModelportError
from modelport.extras import require
from modelport.predlog.writer import COLUMNS, predictions

FORMATS = ("csv", "json", "parquet")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    m = re.fullmatch(r"(\d+)([smhdw])", value.strip())
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ModelportError(f"--since {value!r}: give a duration (30m, 2h, 7d) or an ISO time (2025-01-31T12:00)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _filtered(engine: Engine, query: Select, model: str | None, since: datetime | None) -> Select:
    if model:
        query = query.where(predictions.c.model == model)
    if since:
        since = since.astimezone(UTC)
        # SQLite keeps times without their zone (all are UTC): compare like with like.
        query = query.where(predictions.c.time >= (since.replace(tzinfo=None) if engine.dialect.name == "sqlite" else since))
    return query


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _record(row: Any) -> dict[str, Any]:
    out = {c: row[c] for c in COLUMNS}
    out["time"] = _utc(out["time"])
    return out


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection to read the log through. A database that is missing, unreachable or has no log
    yet is a ModelportError saying which (a reader never creates a SQLite file)."""
    where = engine.url.render_as_string(hide_password=True)
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and database not in ("", ":memory:") and not Path(database).is_file():
        raise ModelportError(f"No prediction log at {where}: the file {database} does not exist (it is written by "
                             "`modelport serve --log-db URL` or a stack's gateway)")
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(predictions.name):
                raise ModelportError(f"{where} has no prediction log yet (no {predictions.name} table): a server "
                                     "writing to it creates it with its first prediction")
            yield conn
    except DBAPIError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
        raise ModelportError(f"Cannot read the prediction log at {where}: {reason}") from None


def check_log(engine: Engine) -> None:
    """Fail now, as a query would, if the log cannot be read (before an export opens its output file)."""
    with reading(engine):
        pass


def list_predictions(engine: Engine, *, model: str | None = None, since: datetime | None = None,
                     limit: int = 20) -> list[dict[str, Any]]:
    """The most recent records, newest first."""
    query = _filtered(engine, select(predictions), model, since).order_by(predictions.c.time.desc()).limit(limit)
    with reading(engine) as conn:
        return [_record(r) for r in conn.execute(query).mappings()]


def stats(engine: Engine, *, model: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    """Per model and version: requests, errors (status ≥ 400), error rate, p50/p99 latency."""
    c = predictions.c
    keys = [c.model, c.version]
    counts = [func.count().label("count"), func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
              func.avg(c.latency_ms).label("mean_ms")]
    if engine.dialect.name == "postgresql":
        counts += [func.percentile_cont(0.5).within_group(c.latency_ms).label("p50_ms"),
                   func.percentile_cont(0.99).within_group(c.latency_ms).label("p99_ms")]
    query = _filtered(engine, select(*keys, *counts), model, since).group_by(*keys).order_by(*keys)
    with reading(engine) as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        if engine.dialect.name != "postgresql":  # SQLite has no percentile function: compute them here
            import numpy as np

            for r in rows:
                q = _filtered(engine, select(c.latency_ms), r["model"], since).where(
                    c.version.is_(None) if r["version"] is None else c.version == r["version"])
                latencies = np.fromiter(conn.execute(q).scalars(), dtype=np.float64)
                r["p50_ms"], r["p99_ms"] = (float(v) for v in np.percentile(latencies, [50, 99]))
    for r in rows:
        r["errors"] = int(r["errors"] or 0)
        r["error_rate"] = r["errors"] / r["count"] if r["count"] else 0.0
        r["mean_ms"], r["p50_ms"], r["p99_ms"] = (float(r[k]) for k in ("mean_ms", "p50_ms", "p99_ms"))
    return rows


def iter_records(engine: Engine, *, model: str | None = None, since: datetime | None = None,
                 chunk: int = 5000) -> Iterator[list[dict[str, Any]]]:
    """Every matching record, oldest first, in chunks (a server-side cursor: bounded memory)."""
    query = _filtered(engine, select(predictions), model, since).order_by(predictions.c.time, predictions.c.id)
    with reading(engine) as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(query).mappings()
        for part in result.partitions(chunk):
            yield [_record(r) for r in part]


def check_format(fmt: str) -> None:
    """Whether ``export`` can write ``fmt`` here: checked before any output file is opened."""
    if fmt not in FORMATS:
        raise ModelportError(f"Unknown format {fmt!r}: choose csv, json (one object a line) or parquet")
    if fmt == "parquet":
        require("parquet", "Parquet export")


def export(engine: Engine, out: BinaryIO, fmt: str, *, model: str | None = None, since: datetime | None = None) -> int:
    """Write the records as CSV, JSON Lines or Parquet; → how many."""
    check_format(fmt)
    chunks = iter_records(engine, model=model, since=since)
    if fmt == "parquet":
        return _parquet(chunks, out)
    n = 0
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True) if fmt == "csv" else None
    writer = csv.DictWriter(text, fieldnames=COLUMNS) if text else None
    if writer:
        writer.writeheader()
    for rows in chunks:
        for r in rows:
            if writer:
                writer.writerow({**r, "time": r["time"].isoformat()})
            else:
                out.write(orjson.dumps(r) + b"\n")
        n += len(rows)
    if text:
        text.detach()  # leave ``out`` open for the caller
    return n


def _parquet(chunks: Iterator[list[dict[str, Any]]], out: BinaryIO) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("record_id", pa.string()), ("time", pa.timestamp("us", tz="UTC")), ("request_id", pa.string()),
                        ("key_id", pa.string()), ("model", pa.string()), ("version", pa.string()),
                        ("inputs", pa.string()), ("outputs", pa.string()), ("content_type", pa.string()),
                        ("latency_ms", pa.float64()), ("status", pa.int32())])
    n = 0
    with pq.ParquetWriter(out, schema) as writer:
        for rows in chunks:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            n += len(rows)
    return n
