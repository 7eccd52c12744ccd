"""Where modelport keeps its state, read from the environment once per call."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The store's home directory: ``MODELPORT_HOME`` or ``~/.modelport``."""
    return Path(os.environ.get("MODELPORT_HOME") or Path.home() / ".modelport").expanduser()


def db_url() -> str:
    """Metadata database: ``MODELPORT_DB_URL`` or a SQLite file inside the home."""
    return os.environ.get("MODELPORT_DB_URL") or f"sqlite:///{home() / 'registry.db'}"
