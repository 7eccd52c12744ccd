"""The prediction log: every answered prediction in a database, written in the background,
spooled to disk while the database is down. No HTTP here: servers and proxies feed it records.

    record.py   PredictionRecord, what one answered prediction is
    writer.py   PredictionLog, the asynchronous spooling writer, and the table
    spool.py    the on-disk spool
    db.py       engines with timeouts, URLs without passwords
    queries.py  list, stats and exports for ``modelport predictions``
    proxylog.py the answers a stack's HAProxy gives itself, from its syslog lines (UDP receiver)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelport import config
from modelport.predlog.record import PredictionRecord

if TYPE_CHECKING:  # the writer imports SQLAlchemy: only a server that writes the log (serve --log-db) needs it
    from modelport.predlog.writer import PredictionLog

__all__ = ["PredictionRecord", "default_spool_dir", "open_log"]


def default_spool_dir() -> Path:
    return config.home() / "spool" / "predictions"


def open_log(db_url: str, spool_dir: Path | None = None) -> PredictionLog:
    """The writer for ``db_url``: call ``submit(record)`` per prediction (it never waits for the
    database) and ``close()`` when the server stops, which writes what is still queued."""
    from importlib.util import find_spec

    from modelport.errors import ModelportError
    from modelport.extras import MissingExtraError

    if find_spec("sqlalchemy") is None:  # a plain model image (a stack's have it): one sentence, not an ImportError
        if config.model_dir() is not None:  # in a model image: pip is not the way
            raise ModelportError("Writing the prediction log (serve --log-db) needs SQLAlchemy and the PostgreSQL "
                                 "driver, which this image does not hold: build it with `modelport build REF "
                                 "--prediction-log` (a stack's model images have them)")
        raise MissingExtraError("store", "Writing the prediction log (serve --log-db)", ["SQLAlchemy"])
    from modelport.predlog.writer import PredictionLog

    return PredictionLog(db_url, spool_dir or default_spool_dir())
