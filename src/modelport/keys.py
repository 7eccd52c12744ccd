"""API keys for a stack's gateway, kept in the predictions database.

Only the sha256 of a key is stored: the key itself is shown once, when it is created. The gateway
(HAProxy) checks presented keys against a map of the active keys' hashes that the control plane
hands it (``digests``); no request costs a database query.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, or_, select, update
from sqlalchemy.engine import Engine

from modelport.errors import ModelportError, NotFoundError
from modelport.store.schema import create_tables

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
            return {digest_: key_id for digest_, key_id in conn.execute(query)}

    def lookup(self, token: str) -> str | None:
        """The id of the active key ``token`` is, or None."""
        self._ensure_schema()
        query = select(api_keys.c.id).where(api_keys.c.token_sha256 == digest(token), api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()


def _key(row: Mapping) -> ApiKey:
    return ApiKey(id=row["id"], name=row["name"], prefix=row["prefix"], created_at=row["created_at"],
                  revoked_at=row["revoked_at"])
