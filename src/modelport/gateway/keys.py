"""API keys for the gateway, kept in the predictions database.

Only the sha256 of a key is stored: the key itself is shown once, when it is created. The gateway
checks keys through a small in-memory cache, so a request does not cost a database query, and a
key it has seen keeps working while the database is down (a revocation takes effect within the
cache's TTL).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from modelport.errors import ModelportError, NotFoundError
from modelport.serving.http import HTTPError
from modelport.store.schema import create_tables

log = logging.getLogger("modelport.gateway.keys")

TOKEN_PREFIX = "mpk_"
metadata = MetaData()
api_keys = Table(
    "mp_api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),  # the key's first characters: enough to recognise it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    """Create, list, revoke and look up keys (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._schema = False

    def _ensure_schema(self) -> None:
        if not self._schema:
            create_tables(self.engine, metadata)
            self._schema = True

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key → (its record, the key itself: shown once, stored only as a hash)."""
        if not name or len(name) > 128:
            raise ModelportError("A key needs a name of 1 to 128 characters (who or what uses it)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._ensure_schema()
        key = ApiKey(id="key_" + secrets.token_hex(6), name=name, prefix=token[:12], created_at=datetime.now(UTC))
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(id=key.id, name=name, token_sha256=digest(token), prefix=key.prefix,
                                                 created_at=key.created_at))
        return key, token

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        self._ensure_schema()
        query = select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_key(row) for row in conn.execute(query).mappings()]

    def revoke(self, id_or_prefix: str) -> ApiKey:
        """Revoke by key id (``key_…``) or by the key's shown prefix (``mpk_…``)."""
        self._ensure_schema()
        match = or_(api_keys.c.id == id_or_prefix, api_keys.c.prefix == id_or_prefix)
        with self.engine.begin() as conn:
            rows = conn.execute(select(api_keys).where(match)).mappings().all()
            if not rows:
                raise NotFoundError(f"No API key {id_or_prefix!r} (modelport stack keys list shows them)")
            if len(rows) > 1:
                raise ModelportError(f"{id_or_prefix!r} matches {len(rows)} keys: give the key id")
            now = datetime.now(UTC)
            conn.execute(update(api_keys).where(api_keys.c.id == rows[0]["id"], api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=now))
        return _key({**rows[0], "revoked_at": rows[0]["revoked_at"] or now})

    def digests(self) -> dict[str, str]:
        """The active keys' sha256 → key id: what a proxy checks presented keys against."""
        self._ensure_schema()
        query = select(api_keys.c.token_sha256, api_keys.c.id).where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return dict(conn.execute(query).tuples().all())

    def lookup(self, token: str) -> str | None:
        """The id of the active key ``token`` is, or None."""
        self._ensure_schema()
        query = select(api_keys.c.id).where(api_keys.c.token_sha256 == digest(token), api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()


def _key(row: Mapping) -> ApiKey:
    return ApiKey(id=row["id"], name=row["name"], prefix=row["prefix"], created_at=row["created_at"],
                  revoked_at=row["revoked_at"])


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


class KeyCache:
    """Key lookups cached per key hash for ``ttl`` seconds. An expired entry is still answered
    while one background lookup refreshes it, and kept when the database cannot be reached."""

    def __init__(self, store: KeyStore, *, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[str | None, float]] = {}  # sha256 → (key id or None, fetched at)
        self._pending: dict[str, asyncio.Future[str | None]] = {}

    async def key_id(self, token: str) -> str | None:
        h = digest(token)
        entry = self._entries.get(h)
        if entry is not None:
            if time.monotonic() - entry[1] > self.ttl and h not in self._pending:
                self._refresh(h, token).add_done_callback(_ignore)
            return entry[0]
        return await self._refresh(h, token)

    def _refresh(self, h: str, token: str) -> asyncio.Future[str | None]:
        """One lookup per key at a time, however many requests wait for it."""
        if h not in self._pending:
            self._pending[h] = asyncio.ensure_future(self._lookup(h, token))
        return self._pending[h]

    async def _lookup(self, h: str, token: str) -> str | None:
        try:
            key_id = await asyncio.to_thread(self.store.lookup, token)
        except SQLAlchemyError as e:
            stale = self._entries.get(h)
            if stale is None:
                log.warning("cannot check an API key: the database is unavailable (%s)", type(e).__name__)
                raise HTTPError(503, "Cannot check the API key right now: the key database is unavailable",
                                {"retry-after": "1"}) from None
            return stale[0]
        finally:
            self._pending.pop(h, None)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # unknown keys sent at random must not grow memory without bound
        self._entries[h] = (key_id, time.monotonic())
        return key_id

    async def authenticate(self, headers: Mapping[str, str]) -> str:
        token = presented_key(headers)
        if token is None:
            raise HTTPError(401, "Missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                            {"www-authenticate": "Bearer"})
        key_id = await self.key_id(token)
        if key_id is None:
            raise HTTPError(401, "Invalid or revoked API key", {"www-authenticate": "Bearer"})
        return key_id


def _ignore(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed background refresh leaves the entry as it was
