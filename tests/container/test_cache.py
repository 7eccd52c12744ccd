"""The build caches' directories in the modelport home (modelport.container.cache): whole or absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.container.cache import COMPLETE, cached_dir


def _entries(home: Path) -> list[str]:
    root = home / "cache" / "kind"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_an_entry_is_made_once_then_found(home: Path) -> None:
    made: list[Path] = []

    def make(d: Path) -> None:
        made.append(d)
        (d / "file").write_text("content")

    entry, found = cached_dir("kind", "key", make)
    assert not found and (entry / "file").read_text() == "content" and (entry / COMPLETE).is_file()
    again, found = cached_dir("kind", "key", lambda d: pytest.fail("made twice"))
    assert found and again == entry and len(made) == 1
    assert _entries(home) == ["key"]  # no staging directory left


def test_an_incomplete_entry_is_made_again(home: Path) -> None:
    stale = home / "cache" / "kind" / "key"
    stale.mkdir(parents=True)
    (stale / "half").write_text("a build stopped here")
    entry, found = cached_dir("kind", "key", lambda d: (d / "file").write_text("whole"))
    assert not found and sorted(p.name for p in entry.iterdir()) == [COMPLETE, "file"]


def test_an_entry_another_build_completed_meanwhile_is_kept(home: Path) -> None:
    def make(d: Path) -> None:  # while this build makes its copy, another one finishes the same entry
        other = home / "cache" / "kind" / "key"
        other.mkdir(parents=True)
        (other / "file").write_text("theirs")
        (other / COMPLETE).touch()
        (d / "file").write_text("ours")

    entry, found = cached_dir("kind", "key", make)
    assert (entry / "file").read_text() == "theirs" and _entries(home) == ["key"]


def test_a_failed_make_leaves_nothing(home: Path) -> None:
    def make(d: Path) -> None:
        (d / "file").write_text("partial")
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError, match="download failed"):
        cached_dir("kind", "key", make)
    assert _entries(home) == []
