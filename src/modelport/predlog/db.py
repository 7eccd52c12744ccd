"""The predictions database: an engine per URL, with timeouts so that a server that is down or
slow makes a call fail within seconds instead of stalling the caller."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url

from modelport.extras import require
from modelport.store.schema import make_engine as make_sqlite_engine

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 10_000


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3, the driver modelport installs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable URL)"


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return make_sqlite_engine(url)
    args = {}
    if make_url(url).get_backend_name() == "postgresql":
        require("postgres", "A PostgreSQL prediction log")
        # libpq takes the password from PGPASSWORD when the URL has none: the stack keeps it out of the URL.
        args = {"connect_timeout": CONNECT_TIMEOUT_S, "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4, connect_args=args)
