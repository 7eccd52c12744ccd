"""One Docker client per process and engine address: reused, closed, never cached when unreachable."""

from __future__ import annotations

import pytest

from modelport.container import engine


def test_an_unreachable_engine_is_explained_and_not_remembered(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    for _ in range(2):  # the second call tries again rather than repeating a cached failure or client
        with pytest.raises(engine.EngineUnavailable, match="Cannot reach the Docker Engine at unix://.*no-engine.sock"):
            engine.client()


@pytest.mark.docker
def test_the_client_is_made_once_per_engine_and_closed() -> None:
    first = engine.client()
    assert engine.client() is first and first.ping()
    engine.close()
    second = engine.client()
    assert second is not first and second.ping()
