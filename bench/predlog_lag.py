"""How late prediction records reach the database: the prediction log's writer lag, under load.

    python -m bench.predlog_lag                      # PostgreSQL from the local binaries, 2000 records/s, 20 s
    python -m bench.predlog_lag --hogs 2 --rate 5000 # with two busy-looping processes competing for the CPUs

Records are submitted at a steady rate, as a gateway under load would; a reader polls the table every
5 ms and takes, for each new row, the time from the record's creation to the moment it was first seen.
At the end the log is closed (as a normal server stop does) and every record must be in the table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from modelport.predlog.db import make_engine
from modelport.predlog.record import PredictionRecord
from modelport.predlog.writer import PredictionLog, create_schema, predictions


@contextmanager
def postgres() -> Iterator[str]:
    bindir = max(Path("/usr/lib/postgresql").glob("*/bin"))
    root = Path(tempfile.mkdtemp(prefix="modelport-lag-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    port = 54329
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)
    subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-w", "-l", str(root / "log"),
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def hog(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def measure(db_url: str, rate: int, seconds: float, spool: Path) -> dict[str, float]:
    log = PredictionLog(db_url, spool)
    engine = make_engine(db_url)
    create_schema(engine)
    lags: list[float] = []
    done = threading.Event()

    def reader() -> None:
        last = 0
        while not done.is_set():
            with engine.connect() as conn:
                rows = conn.execute(select(predictions.c.id, predictions.c.time).where(predictions.c.id > last)
                                    .order_by(predictions.c.id)).all()
            now = datetime.now(UTC)
            for row_id, created in rows:
                created = created if created.tzinfo else created.replace(tzinfo=UTC)
                lags.append((now - created).total_seconds())
                last = row_id
            time.sleep(0.005)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    body = b'{"features": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]}'
    sent = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        for _ in range(due - sent):
            log.submit(PredictionRecord(time=datetime.now(UTC), request_id=f"r{sent}", key_id=None, model="m",
                                        version="1", inputs=body, outputs=b'{"prediction": 1.5}', content_type="application/json",
                                        latency_ms=1.0, status=200))
            sent += 1
        time.sleep(0.001)
    time.sleep(1.0)  # let the reader see the tail before the writer is closed
    done.set()
    thread.join()
    log.close()
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(predictions)).scalar_one()
    lags.sort()

    def pct(p: float) -> float:
        return lags[min(len(lags) - 1, int(p * len(lags)))] * 1000 if lags else float("nan")

    return {"sent": sent, "stored": stored, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=2000, help="records per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--hogs", type=int, default=0, help="busy-looping processes run alongside")
    args = parser.parse_args()
    hogs = [multiprocessing.Process(target=hog, args=(time.time() + args.seconds + 5,)) for _ in range(args.hogs)]
    for h in hogs:
        h.start()
    try:
        with postgres() as url, tempfile.TemporaryDirectory() as spool:
            result = measure(url, args.rate, args.seconds, Path(spool))
    finally:
        for h in hogs:
            h.terminate()
    print(f"rate {args.rate}/s for {args.seconds:.0f} s, {args.hogs} CPU hogs, load average {os.getloadavg()[0]:.1f}: "
          f"sent {result['sent']}, stored {result['stored']}; lag p50 {result['p50_ms']:.0f} ms, "
          f"p99 {result['p99_ms']:.0f} ms, max {result['max_ms']:.0f} ms")


if __name__ == "__main__":
    main()
