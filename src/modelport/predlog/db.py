"""The predictions database: an engine per URL, with timeouts so that a server that is down or
slow makes a call fail within seconds instead of stalling the caller.

A stack's gateway gets a URL without a password and, in ``MODELPORT_PREDICTIONS_DB_PASSWORD_FILE``,
the path of a file holding it (a Compose secret): a password in an environment variable would be
in ``docker inspect`` and in /proc/PID/environ. Every engine is made here, so the gateway and any
``modelport`` command run in its container read it the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine, make_url

from modelport.errors import ModelportError
from modelport.extras import require
from modelport.store.schema import make_engine as make_sqlite_engine

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 10_000
PASSWORD_FILE_ENV = "MODELPORT_PREDICTIONS_DB_PASSWORD_FILE"


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


def with_password_file(url: URL, path: str | None) -> URL:
    """``url`` with the password read from the file at ``path``, when the URL has none; a password
    written in the URL wins. The file's trailing newline, if any, is not part of the password."""
    if not path or url.password is not None:
        return url
    try:
        password = Path(path).read_text().rstrip("\r\n")
    except OSError as e:
        raise ModelportError(f"Cannot read the database password from {path} (${PASSWORD_FILE_ENV}): "
                             f"{e.strerror or e}") from None
    if not password:
        raise ModelportError(f"The database password file {path} (${PASSWORD_FILE_ENV}) is empty")
    return url.set(password=password)


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return make_sqlite_engine(url)
    parsed = make_url(url)
    args = {}
    if parsed.get_backend_name() == "postgresql":
        require("postgres", "A PostgreSQL prediction log")
        parsed = with_password_file(parsed, os.environ.get(PASSWORD_FILE_ENV))
        args = {"connect_timeout": CONNECT_TIMEOUT_S, "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}
    return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=4, connect_args=args)
