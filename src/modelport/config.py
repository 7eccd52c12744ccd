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


def model_dir() -> Path | None:
    """A model image's own version, read in place of the store: ``MODELPORT_MODEL_DIR`` (store.bundle's
    directory form), or none."""
    return _path("MODELPORT_MODEL_DIR")


def _path(variable: str) -> Path | None:
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else None


def signing_key() -> Path | None:
    """The Ed25519 private key (PEM) every build signs its image with: ``MODELPORT_SIGNING_KEY``, or none."""
    return _path("MODELPORT_SIGNING_KEY")


def verify_key() -> Path | None:
    """The public key (PEM) images must be signed with to run or load: ``MODELPORT_VERIFY_KEY``, or none
    (no verification)."""
    return _path("MODELPORT_VERIFY_KEY")
