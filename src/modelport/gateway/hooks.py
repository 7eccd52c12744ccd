"""What the gateway (and ``modelport serve --log-db``) plugs in: API keys and the prediction log."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request

from modelport.errors import ModelportError
from modelport.gateway.keys import KeyCache, KeyStore
from modelport.predlog import PredictionLog, default_spool_dir
from modelport.predlog.db import make_engine
from modelport.predlog.record import PredictionRecord


class DatabaseHooks:
    """``GatewayHooks`` over the predictions database: keys checked through a cache, every
    prediction handed to the asynchronous log (neither waits for the database)."""

    def __init__(self, keys: KeyCache | None, predictions: PredictionLog | None) -> None:
        self.keys = keys
        self.predictions = predictions

    async def authenticate(self, request: Request) -> str | None:
        return await self.keys.authenticate(request.headers) if self.keys is not None else None

    async def on_prediction(self, record: PredictionRecord) -> None:
        if self.predictions is not None:
            self.predictions.submit(record)

    def close(self) -> None:
        if self.predictions is not None:
            self.predictions.close()


def hooks_from_options(db_url: str | None, require_keys: bool, spool_dir: Path | None) -> DatabaseHooks | None:
    """The gateway's ``--db-url``, ``--require-keys`` and ``--spool-dir``; None when neither is asked for."""
    if db_url is None:
        if require_keys:
            raise ModelportError("--require-keys needs --db-url: API keys are kept in the predictions database")
        return None
    keys = None
    if require_keys:
        store = KeyStore(make_engine(db_url))
        keys = KeyCache(store)
    return DatabaseHooks(keys, PredictionLog(db_url, spool_dir or default_spool_dir()))
