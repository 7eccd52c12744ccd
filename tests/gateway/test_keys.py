"""API keys against real databases (SQLite and PostgreSQL): hashed storage, revocation, the cache."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from modelport.gateway.keys import KeyCache, KeyStore, api_keys, presented_key
from sqlalchemy import select

from modelport.errors import NotFoundError
from modelport.predlog.db import make_engine
from modelport.serving.http import HTTPError
from tests.helpers import free_port


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

    revoked = store.revoke(key.id)
    assert not revoked.active
    assert store.lookup(token) is None
    assert store.revoke(other.prefix).id == other.id  # by the prefix `keys list` shows
    assert store.list(include_revoked=False) == []
    with pytest.raises(NotFoundError):
        store.revoke("key_nope")
    store.engine.dispose()


def test_presented_key_from_either_header() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "bearer  abc "}) == "abc"
    assert presented_key({"x-api-key": "abc"}) == "abc"
    assert presented_key({"authorization": "Basic Zm9v"}) is None
    assert presented_key({}) is None


def test_cache_authenticates_without_a_query_per_request(db_url: str) -> None:
    store = KeyStore(make_engine(db_url))
    key, token = store.create("load-test")
    lookups = []
    real_lookup = store.lookup
    store.lookup = lambda t: lookups.append(t) or real_lookup(t)  # type: ignore[method-assign]
    cache = KeyCache(store, ttl=0.3)

    async def scenario() -> None:
        results = await asyncio.gather(*(cache.authenticate({"authorization": f"Bearer {token}"}) for _ in range(50)))
        assert set(results) == {key.id}
        assert len(lookups) == 1  # 50 concurrent requests, one lookup
        assert await cache.authenticate({"x-api-key": token}) == key.id
        assert len(lookups) == 1

        for headers, message in (({}, "Missing API key"), ({"x-api-key": "mpk_wrong"}, "Invalid or revoked")):
            with pytest.raises(HTTPError) as e:
                await cache.authenticate(headers)
            assert e.value.status == 401 and message in e.value.message

        # Revoked: refused once the cached answer is older than the TTL (refreshed in the background).
        store.revoke(key.id)
        await asyncio.sleep(0.35)
        for _ in range(50):
            try:
                await cache.authenticate({"x-api-key": token})
            except HTTPError as e:
                assert e.status == 401
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("a revoked key was still accepted a second after the cache's TTL")

    asyncio.run(scenario())
    store.engine.dispose()


def test_known_keys_keep_working_while_the_database_is_down(db_url: str) -> None:
    store = KeyStore(make_engine(db_url))
    key, token = store.create("gateway")
    cache = KeyCache(store, ttl=0.05)

    async def scenario() -> None:
        assert await cache.authenticate({"x-api-key": token}) == key.id
        store.engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone")  # nothing listens
        store._schema = True
        await asyncio.sleep(0.1)
        for _ in range(3):  # stale, and the refreshes fail: the known key still works
            assert await cache.authenticate({"x-api-key": token}) == key.id
            await asyncio.sleep(0.1)
        with pytest.raises(HTTPError) as e:  # a key never seen cannot be checked: 503, not 401
            await cache.authenticate({"x-api-key": "mpk_never_seen"})
        assert e.value.status == 503

    asyncio.run(scenario())
