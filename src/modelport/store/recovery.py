"""Starting a new registry over an existing store's artifact files, after the registry was lost or damaged."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.engine import make_url

from modelport import config
from modelport.errors import ModelportError, RegistryDamagedError, RegistryLostError
from modelport.store.registry import ModelStore


def new_registry(home: Path | None = None, db_url: str | None = None) -> tuple[ModelStore, Path | None]:
    """Open the store with an empty registry that keeps its artifact files; a damaged SQLite registry file
    is moved aside first (returned), never deleted. A registry that works is left alone."""
    url = db_url or (f"sqlite:///{Path(home) / 'registry.db'}" if home else config.db_url())
    try:
        store = ModelStore(home, url)
        try:
            count = store.check()
        finally:
            store.close()
    except RegistryLostError:
        return ModelStore(home, url, adopt_artifacts=True), None
    except RegistryDamagedError:
        moved = _move_aside(url)
        return ModelStore(home, url, adopt_artifacts=True), moved
    raise ModelportError(f"The model registry is readable ({count} version(s)): nothing to recover")


def _move_aside(url: str) -> Path:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database:
        raise ModelportError("Only a damaged SQLite registry file can be set aside; repair or restore this database")
    db = Path(parsed.database)
    aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
    for suffix in ("-wal", "-shm"):  # SQLite's companions would otherwise be read into the new file
        companion = db.with_name(db.name + suffix)
        if companion.exists():
            companion.rename(aside.with_name(aside.name + suffix))
    db.rename(aside)
    return aside
