"""Database fixtures (the real PostgreSQL server, prediction records), shared through ``pytest_plugins``."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from modelport import keys
from modelport.predlog import writer as predlog
from modelport.predlog.db import make_engine
from modelport.predlog.record import PredictionRecord


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """The real PostgreSQL server, its modelport tables dropped after the test."""
    yield postgres_url
    engine = make_engine(postgres_url)
    predlog.metadata.drop_all(engine)
    keys.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test against a SQLite file and the real PostgreSQL server."""
    return f"sqlite:///{tmp_path / 'predictions.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def record(n: int, *, model: str = "iris", version: str | None = "1", status: int = 200, latency_ms: float = 1.5,
           inputs: bytes | None = None, key_id: str | None = "key_test") -> PredictionRecord:
    return PredictionRecord(time=datetime.now(UTC), request_id=f"req-{n}", key_id=key_id, model=model, version=version,
                            inputs=inputs if inputs is not None else b'{"features": [%d, 2.5]}' % n,
                            outputs=b'{"prediction": %d}' % n, content_type="application/json",
                            latency_ms=latency_ms, status=status)


@dataclass
class PostgresServer:
    """Stop and start the test PostgreSQL server (postgres_url's) as an outage would."""

    data: Path
    options: str

    def _pg_ctl(self, *args: str) -> None:
        bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)))
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-w", "-l", str(self.data.parent / "pg.log"), "-o", self.options, "start")


@pytest.fixture
def postgres_server(postgres_url: str) -> Iterator[PostgresServer]:
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        data = Path(conn.execute(text("SHOW data_directory")).scalar())
    engine.dispose()
    # postmaster.opts: the server's command line; start it again with the same options.
    argv = shlex.split((data / "postmaster.opts").read_text())[1:]
    i = argv.index("-D")
    server = PostgresServer(data, shlex.join(argv[:i] + argv[i + 2:]))
    yield server
    if not (data / "postmaster.pid").exists():
        server.start()  # a test that failed half-way leaves it running for the next
