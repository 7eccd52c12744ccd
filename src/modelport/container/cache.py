"""Directories a build makes once and keeps in the modelport home (``cache/``): a wheelhouse per requirement
set, a wheel's stripped libraries. Made in a staging directory of their own and moved into place in one step
(``os.replace``), with a marker file inside written last: an entry is complete or absent, never half there, and
two builds making the same entry at once both end with one whole copy (the second's is discarded)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from modelport import config

COMPLETE = ".complete"


def cached_dir(kind: str, key: str, make: Callable[[Path], None]) -> tuple[Path, bool]:
    """``cache/KIND/KEY``, made by ``make(directory)`` when missing → (the directory, whether it was there).
    ``make`` writes into an empty directory; what it leaves there is the entry (``COMPLETE`` is added)."""
    entry = config.home() / "cache" / kind / key
    if (entry / COMPLETE).is_file():
        return entry, True
    staging = entry.with_name(f".{key}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        make(staging)
        (staging / COMPLETE).touch()
        if entry.exists() and not (entry / COMPLETE).is_file():  # left by a build that stopped before replacing
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(staging, entry)
        except OSError:  # another build put a whole entry there meanwhile: the same content, kept
            if not (entry / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry, False
