"""API keys against real databases (SQLite and PostgreSQL): hashed storage, revocation, the digests a proxy gets."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from modelport.errors import NotFoundError
from modelport.keys import KeyStore, api_keys
from modelport.predlog.db import make_engine


def test_keys_are_stored_hashed_and_revocable(db_url: str) -> None:
    store = KeyStore(make_engine(db_url))
    key, token = store.create("ci-client")
    other, other_token = store.create("dashboard")
    assert token.startswith("mpk_") and len(token) > 40 and token != other_token
    with store.engine.connect() as conn:
        stored = conn.execute(select(api_keys)).mappings().all()
    assert {r["token_sha256"] for r in stored} == {hashlib.sha256(t.encode()).hexdigest() for t in (token, other_token)}
    assert not any(token in str(value) for r in stored for value in r.values() if value is not None and value != key.prefix)

    assert store.lookup(token) == key.id
    assert store.lookup(token + "x") is None
    assert [(k.id, k.name, k.prefix, k.active) for k in store.list()] == [
        (key.id, "ci-client", token[:12], True), (other.id, "dashboard", other_token[:12], True)]

    assert store.digests() == {hashlib.sha256(token.encode()).hexdigest(): key.id,
                               hashlib.sha256(other_token.encode()).hexdigest(): other.id}
    revoked = store.revoke(key.id)
    assert not revoked.active
    assert store.lookup(token) is None
    assert store.revoke(other.prefix).id == other.id  # by the prefix `keys list` shows
    assert store.list(include_revoked=False) == [] and store.digests() == {}
    with pytest.raises(NotFoundError):
        store.revoke("key_nope")
    store.engine.dispose()
