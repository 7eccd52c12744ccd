"""The Open Inference Protocol's model repository extension (Triton's and MLServer's):

    POST /v2/repository/index                    the served models and their state
    POST /v2/repository/models/{name}/load       make an unloaded model available again
    POST /v2/repository/models/{name}/unload     stop serving it (ready: false; predictions refused)

The server serves what it was started with, resolved and pinned once at start: "load" brings back a
served model, it does not fetch another one from the store. An unloaded model stays in memory, so
loading it again is instant and serves the same artifacts.

With several worker processes the state is shared through marker files in a directory, so every
worker agrees whichever one took the request."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from modelport.errors import InvalidInputError, ModelNotFoundError, ModelUnavailableError
from modelport.serving.http import json_response, parse_json, receive_body
from modelport.serving.limits import BodyBudget

if TYPE_CHECKING:
    from modelport.serving.runtime import ModelSet

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
_MAX_BODY = 64 * 1024  # index, load and unload carry a few parameters at most


class Availability:
    """Which served models are unloaded: in memory for one process, in ``directory`` for several."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._unloaded: set[str] = set()
        self._seen: int | None = None  # the directory's mtime when last read: one stat per check

    def unloaded(self) -> set[str]:
        if self.directory is not None:
            mtime = os.stat(self.directory).st_mtime_ns
            # Timestamps may be as coarse as a clock tick: two changes within one leave the mtime as
            # it was, so for a second after a change the listing is read every time.
            if mtime != self._seen or time.time_ns() - mtime < 1_000_000_000:
                self._seen = mtime
                self._unloaded = {bytes.fromhex(p.name).decode() for p in self.directory.iterdir()}
        return self._unloaded

    def is_loaded(self, name: str) -> bool:
        return name not in self.unloaded()

    def set_loaded(self, name: str, loaded: bool) -> None:
        if self.directory is None:
            (self._unloaded.discard if loaded else self._unloaded.add)(name)
            return
        marker = self.directory / name.encode().hex()  # any model name is a safe file name this way
        if loaded:
            marker.unlink(missing_ok=True)
        else:
            marker.touch()


def unloaded_message(name: str) -> str:
    return (f"Model {name!r} is unloaded (POST /v2/repository/models/{name}/unload): "
            f"POST /v2/repository/models/{name}/load to serve it again")


def check_loaded(models: ModelSet, name: str) -> None:
    if not models.availability.is_loaded(name):
        raise ModelUnavailableError(unloaded_message(name))


async def _body(request: Request, budget: BodyBudget) -> dict[str, Any]:
    """The optional JSON object these requests carry (tritonclient sends an empty body for the index)."""
    body = await receive_body(request.scope, request.receive, _MAX_BODY, budget)
    if not body.strip():
        return {}
    payload = parse_json(body)
    if type(payload) is not dict:
        raise InvalidInputError("The request body must be a JSON object")
    params = payload.get("parameters")
    if params is not None and type(params) is not dict:
        raise InvalidInputError('"parameters" must be a JSON object')
    return payload


def _served(models: ModelSet, request: Request) -> str:
    name = request.path_params["name"]
    if name not in models.by_name:
        raise ModelNotFoundError(f"Model {name!r} is not served here (served: {', '.join(models.by_name)}); this server "
                                 "serves the models it was started with: add it to `modelport serve` to serve it")
    return name


async def index(models: ModelSet, request: Request, budget: BodyBudget) -> Response:
    payload = await _body(request, budget)
    only_ready = payload.get("ready", False)
    if type(only_ready) is not bool:
        raise InvalidInputError('"ready" must be true or false')
    unloaded = models.availability.unloaded()
    entries = [{"name": m.name, "version": m.version, "state": UNAVAILABLE if m.name in unloaded else READY,
                "reason": "unloaded" if m.name in unloaded else ""} for m in models]
    return json_response([e for e in entries if e["state"] == READY] if only_ready else entries)


async def load(models: ModelSet, request: Request, budget: BodyBudget) -> Response:
    name = _served(models, request)
    params = (await _body(request, budget)).get("parameters") or {}
    if params:  # Triton's config and file overrides: this server cannot apply them, so it says so
        raise InvalidInputError(f"Loading with parameters ({', '.join(sorted(params))}) is not supported: "
                                "a served model is loaded as it was registered")
    models.availability.set_loaded(name, True)
    return json_response({})


async def unload(models: ModelSet, request: Request, budget: BodyBudget) -> Response:
    name = _served(models, request)
    params = (await _body(request, budget)).get("parameters") or {}
    unknown = sorted(set(params) - {"unload_dependents"})
    if unknown:
        raise InvalidInputError(f"Unknown unload parameter {unknown[0]!r}: the only one is unload_dependents")
    dependents = params.get("unload_dependents", False)
    if type(dependents) is not bool:  # no model here has dependents (ensembles): accepted and moot
        raise InvalidInputError('Parameter "unload_dependents" must be true or false')
    models.availability.set_loaded(name, False)
    return json_response({})
