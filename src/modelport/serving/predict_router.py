"""The prediction endpoints: raw ASGI apps registered in the model server's one route table.

Predictions are the hot path: here they are handled on raw ASGI messages (bytes in, bytes out),
without Starlette's Request/Response objects, which cost more than the model itself for a small
model. ``routes`` gives them as Starlette routes; ``FastRoutes`` dispatches a request that matches
one of them straight to it (the same routes, matched the same way), ahead of the middleware the
Starlette app wraps around every other path.

    POST /predict                                 the default model, simple JSON (or an image)
    POST /models/{name}/predict                   a named model, simple JSON (or an image)
    POST /v2/models/{name}[/versions/{v}]/infer   Open Inference Protocol v2
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.routing import Route, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.errors import ModelportError
from modelport.frameworks.base import IMAGE_CLASSIFICATION
from modelport.predlog.record import PredictionRecord
from modelport.serving import v2
from modelport.serving.http import (
    NO_IMAGE,
    NO_JSON,
    REQUEST_ID_FORMAT,
    ClientGone,
    Reply,
    parse_json,
    read_body,
    reply_for,
)
from modelport.serving.limits import BodyBudget
from modelport.serving.repository import check_loaded
from modelport.serving.runtime import ModelSet, ServedModel

log = logging.getLogger("modelport.server")
SIMPLE, V2 = "simple", "v2"
KEY_ID_HEADER = b"x-modelport-key-id"  # set by the proxy in front once it has checked the API key


def request_id(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    return given if given is not None and REQUEST_ID_FORMAT.fullmatch(given) else uuid.uuid4().hex


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def routes(models: ModelSet, max_body: int, budget: BodyBudget, log: Callable[[PredictionRecord], None] | None = None,
           trust_proxy_headers: bool = False) -> list[Route]:
    simple, v2_infer = (Predictions(protocol, models, max_body, budget, log, trust_proxy_headers) for protocol in (SIMPLE, V2))
    return [Route("/predict", simple, methods=["POST"]),
            Route("/models/{name}/predict", simple, methods=["POST"]),
            Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}/infer", v2_infer, methods=["POST"])]


class FastRoutes:
    """``app`` (whose route table holds ``fast``), with a request that fully matches one of the
    ``fast`` routes sent to it directly. Anything else, a wrong method included, goes through the
    app, so 404s, 405s and errors are answered in one place.

    Matched as Starlette matches them, from the routes themselves, in a fraction of the time: a
    dict for the paths without parameters, the routes' own regexes behind a prefix test for the rest."""

    def __init__(self, fast: list[Route], app: ASGIApp) -> None:
        self.app = app
        self.exact = {r.path: r for r in fast if not r.param_convertors}
        self.patterns = [r for r in fast if r.param_convertors]
        self.prefixes = tuple({r.path.partition("{")[0] for r in self.patterns})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._match(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
        else:
            await route.app(scope, receive, send)

    def _match(self, scope: Scope) -> Route | None:
        path = get_route_path(scope)
        route = self.exact.get(path)
        if route is not None:
            params: dict[str, Any] = {}
        elif path.startswith(self.prefixes):
            for route in self.patterns:
                found = route.path_regex.match(path)
                if found:
                    params = {k: route.param_convertors[k].convert(v) for k, v in found.groupdict().items()}
                    break
            else:
                return None
        else:
            return None
        if route.methods and scope["method"] not in route.methods:
            return None
        scope["endpoint"], scope["path_params"] = route.endpoint, params
        return route


class Predictions:
    """The raw ASGI endpoint of one protocol's prediction routes (``name``, ``version`` path parameters)."""

    def __init__(self, protocol: str, models: ModelSet, max_body: int, budget: BodyBudget,
                 log: Callable[[PredictionRecord], None] | None = None, trust_proxy_headers: bool = False) -> None:
        self.protocol = protocol
        self.models = models
        self.max_body = max_body
        self.budget = budget  # this worker's bytes of bodies being read
        self.log = log  # the prediction log (serve --log-db): returns at once, writes in the background
        # Only behind modelport's proxy, which sets X-Modelport-Key-Id after checking the key and
        # drops any copy a client sent: served directly, a client could claim any key id.
        self.trust_proxy_headers = trust_proxy_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        name, protocol = params.get("name"), self.protocol
        try:
            model = self.models.default if name is None else self.models.get(name, params.get("version"))
            check_loaded(self.models, model.name)
        except ModelportError as e:
            await self._send(send, reply_for(e), [])
            return
        start = time.perf_counter()
        rid = request_id(scope)
        model.metrics.in_flight += 1
        try:
            body, reply = await self._predict(model, protocol, scope, receive)
            await self._send(send, reply, [*model.raw_headers, (b"x-request-id", rid.encode())])
            status = reply.status
            if self.log is not None:
                self._log(model, scope, rid, body, reply, start)
        except ClientGone:
            return
        finally:
            model.metrics.in_flight -= 1
        model.metrics.observe(protocol, status, time.perf_counter() - start)

    async def _predict(self, model: ServedModel, protocol: str, scope: Scope, receive: Receive) -> tuple[bytes, Reply]:
        body = b""
        try:
            image = protocol == SIMPLE and model.task == IMAGE_CLASSIFICATION
            body = await read_body(scope, receive, self.max_body, self.budget, NO_IMAGE if image else NO_JSON)
            if protocol == V2:
                return body, await v2.infer(model, header(scope, b"inference-header-content-length"), body)
            if image:
                from modelport.serving import images  # Pillow: imported by image servers only

                return body, await images.predict(model, scope, body)
            return body, Reply(orjson.dumps(await model.predict_simple(parse_json(body))))
        except ClientGone:
            raise
        except Exception as e:
            reply = reply_for(e)
            if reply.status >= 500:  # with the model's own traceback, when it raised
                log.error("prediction failed: %s", e, exc_info=e, extra={"model": model.name, "version": model.version})
            return body, reply

    def _log(self, model: ServedModel, scope: Scope, rid: str, body: bytes, reply: Reply, start: float) -> None:
        assert self.log is not None
        key_id = header(scope, KEY_ID_HEADER) if self.trust_proxy_headers else None
        self.log(PredictionRecord(
            time=datetime.now(UTC), request_id=rid, key_id=key_id,
            model=model.name, version=model.version, inputs=body, outputs=reply.body,
            content_type=header(scope, b"content-type") or "", latency_ms=(time.perf_counter() - start) * 1000,
            status=reply.status))

    @staticmethod
    async def _send(send: Send, reply: Reply, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()), *extra, *reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
