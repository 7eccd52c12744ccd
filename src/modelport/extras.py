"""modelport's optional features (the extras of ``pip install 'modelport[EXTRA]'``), checked before a
command does any work, so a missing one is one clear sentence, not a traceback minutes in.

What each extra holds is read from modelport's own installed metadata (pyproject.toml's
``[project.optional-dependencies]``), so this never drifts from what pip would install."""

from __future__ import annotations

import re
import sys
from functools import cache
from importlib import metadata

from modelport.errors import ModelportError

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


class MissingExtraError(ModelportError):
    """A feature used without the extra it needs."""

    def __init__(self, extra: str, purpose: str, missing: list[str]) -> None:
        self.extra, self.missing = extra, missing
        super().__init__(f"{purpose} needs {', '.join(missing)}, not installed in this Python ({sys.executable}): "
                         f"pip install 'modelport[{extra}]'")


@cache
def _extras() -> dict[str, tuple[str, ...]]:
    """extra -> the distributions it installs (extras that name other extras expanded)."""
    direct: dict[str, list[str]] = {}
    for text in metadata.requires("modelport") or []:
        name, extra = _NAME.match(text), _EXTRA.search(text)
        if name and extra:
            # "modelport[sklearn]" stands for the distributions of that extra
            items = [f"[{e.strip()}]" for e in (name[2] or "").split(",")] if name[1].lower() == "modelport" else [name[1]]
            direct.setdefault(extra[1], []).extend(items)

    def expand(extra: str) -> list[str]:
        out: list[str] = []
        for item in direct.get(extra, []):
            out += expand(item[1:-1]) if item.startswith("[") else [item]
        return out

    return {extra: tuple(dict.fromkeys(expand(extra))) for extra in direct}


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` not installed here ([] when modelport's metadata is unavailable,
    e.g. run from a source tree: then the import itself reports what is missing)."""
    try:
        extras = _extras()
    except metadata.PackageNotFoundError:
        return []
    if extra not in extras:
        raise ValueError(f"modelport has no extra {extra!r}; it has: {', '.join(sorted(extras))}")
    return [d for d in extras[extra] if not _installed(d)]


def require(extra: str, purpose: str) -> None:
    """Stop with what to install unless every distribution of ``extra`` is installed.
    ``purpose`` starts the sentence: "Training needs pandas, ...: pip install 'modelport[train]'"."""
    if absent := missing(extra):
        raise MissingExtraError(extra, purpose, absent)
