"""An append-only spool of prediction records on disk, for while the database is unavailable.

Each writer appends to a segment file of its own (``<pid>-<time>.jsonl``, one JSON object a line,
fsync'd after each batch) and holds an exclusive ``flock`` on it while it is open. A segment that
nobody holds (sealed, or left by a process that died) can be replayed by any writer: the lock
makes sure two never replay the same one at once, and the record ids make a replay that is
repeated (after a crash half-way) insert nothing twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger("modelport.predlog.spool")

Rows = list[dict[str, Any]]


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._synced = 0.0

    def append(self, rows: Rows, *, sync_within: float = 0.0) -> None:
        """Append and fsync; with ``sync_within``, fsync only if the last was longer ago than that
        (for a caller that must not wait for the disk on every record)."""
        data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        with self._lock:
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"{os.getpid()}-{time.time_ns()}.jsonl"
                self._file = open(path, "ab")  # noqa: SIM115 (closed in seal())
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._file.write(data)
            self._file.flush()
            if time.monotonic() - self._synced >= sync_within:
                os.fsync(self._file.fileno())
                self._synced = time.monotonic()

    @property
    def dirty(self) -> bool:
        """This writer has a segment open: records to replay once the database answers."""
        return self._file is not None

    def seal(self) -> None:
        """Close the open segment: from now on it can be replayed."""
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.is_dir() else []

    def replay(self, insert: Callable[[Rows], None], batch_size: int = 1000) -> int:
        """Insert every record of every segment nobody holds, deleting each segment once it is all
        in; → how many records were sent. Raises what ``insert`` raises (the segment stays)."""
        sent = 0
        for path in self.segments():
            try:
                f = open(path, "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:  # replayed by another process a moment ago
                continue
            with f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a live writer's open segment
                    continue
                if not path.exists():  # replayed and deleted while we waited to open it
                    continue
                rows = list(_parse(f, path))
                for start in range(0, len(rows), batch_size):
                    insert(rows[start:start + batch_size])
                sent += len(rows)
                path.unlink()
        return sent

    def quarantine(self, rows: Rows, reason: str) -> Path:
        """Keep records the database refuses (not a connection problem) aside, for a person to look at."""
        path = self.directory / "rejected" / f"{os.getpid()}-{time.time_ns()}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(orjson.dumps({**row, "rejected_because": reason}) + b"\n" for row in rows))
        return path


def _parse(f: IO[bytes], path: Path) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(f, 1):
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError:
            # Only a write cut short by a crash ends like this, and that record was never acknowledged.
            log.warning("skipping an unreadable line %d of spool segment %s", n, path.name)
