"""The exact artifacts a multi-worker server started with, set aside for its workers.

References are resolved once, when the server starts, and each artifact's verified files are copied
to the server's private state directory. Every worker, including a replacement the supervisor
starts hours later, loads those same bytes, whatever happened in the store meanwhile (the version
removed, a newer one trained under the same name, its blobs collected).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from modelport.config import home
from modelport.errors import ModelportError
from modelport.store import ModelVersion, models_to_serve, parse_ref

if TYPE_CHECKING:
    from modelport.serving.runtime import Models, ServeSpec

_INFO = "info.pickle"  # written and read only by this server, in its own 0700 directory


def pin(specs: Sequence[ServeSpec], directory: Path, store: Models | None = None) -> list[ServeSpec]:
    """``specs`` with each reference resolved to an exact version whose files are copied to ``directory``."""
    store = store or models_to_serve()
    pinned = []
    for n, spec in enumerate(specs):
        info = store.resolve(spec.ref)
        files = store.read_files(info)  # checked against their sha256
        target = directory / str(n)
        target.mkdir(parents=True)
        for fname, data in files.items():
            (target / info.files[fname].sha256).write_bytes(data)
        (target / _INFO).write_bytes(pickle.dumps(info))
        pinned.append(dataclasses.replace(spec, ref=info.ref, name=spec.name or parse_ref(spec.ref).name,
                                          pinned=str(target)))  # `ref` exact already when serve() resolved it
    return pinned


def read_pinned(directory: Path) -> tuple[ModelVersion, dict[str, bytes]]:
    """The version and files ``pin`` set aside, checked against their sha256 again."""
    info: ModelVersion = pickle.loads((directory / _INFO).read_bytes())
    files = {}
    for fname, entry in info.files.items():
        data = (directory / entry.sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ModelportError(f"The server's copy of {info.ref} file {fname!r} is damaged: restart the server")
        files[fname] = data
    return info, files


# -- which versions local servers are serving (so `models rm` can say so) -------------------------

def _servers_dir() -> Path:
    return home() / "serving"


@contextlib.contextmanager
def announced(refs: Sequence[str]) -> Iterator[None]:
    """Record, for as long as the block runs, that this process serves these exact versions."""
    path = _servers_dir() / f"{os.getpid()}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "refs": list(refs)}))
    except OSError:  # a read-only home: serving goes on, only the warning is lost
        pass
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def local_servers(ref: str) -> list[int]:
    """Pids of running ``modelport serve`` processes that serve exactly ``ref`` (``name:N``)."""
    pids = []
    for path in _servers_dir().glob("*.json"):
        try:
            entry = json.loads(path.read_text())
            os.kill(entry["pid"], 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)  # left by a server that was killed
            continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ref in entry["refs"]:
            pids.append(entry["pid"])
    return pids
