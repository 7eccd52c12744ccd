"""The prediction endpoints as a small ASGI router in front of the Starlette app.

Predictions are the hot path: here they are handled on raw ASGI messages (bytes in, bytes out),
without Starlette's Request/Response objects and middleware layers, which cost more than the
model itself for a small model. Every other path goes to the Starlette app.

    POST /predict                                 the default model, simple JSON (or an image)
    POST /models/{name}/predict                   a named model, simple JSON (or an image)
    POST /v2/models/{name}[/versions/{v}]/infer   Open Inference Protocol v2
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.errors import InvalidInputError, ModelportError
from modelport.frameworks.base import IMAGE_CLASSIFICATION
from modelport.predlog.record import PredictionRecord
from modelport.serving import v2
from modelport.serving.http import (
    NO_IMAGE,
    NO_JSON,
    REQUEST_ID_FORMAT,
    ClientGone,
    HTTPError,
    Reply,
    error_reply,
    from_domain,
    parse_json,
    receive_body,
)
from modelport.serving.limits import BodyBudget
from modelport.serving.repository import check_loaded
from modelport.serving.runtime import ModelSet, ServedModel

log = logging.getLogger("modelport.server")
SIMPLE, V2 = "simple", "v2"
KEY_ID_HEADER = b"x-modelport-key-id"  # set by the proxy in front once it has checked the API key


def match(path: str) -> tuple[str | None, str | None, str] | None:
    """→ (model name or None for the default, version or None, protocol), or None if not a prediction path."""
    if path == "/predict":
        return None, None, SIMPLE
    parts = path.split("/")
    n = len(parts)
    if n == 4 and parts[1] == "models" and parts[3] == "predict":
        return parts[2], None, SIMPLE
    if n >= 5 and parts[1] == "v2" and parts[2] == "models" and parts[-1] == "infer":
        if n == 5:
            return parts[3], None, V2
        if n == 7 and parts[4] == "versions":
            return parts[3], parts[5], V2
    return None


def request_id(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    return given if given is not None and REQUEST_ID_FORMAT.fullmatch(given) else uuid.uuid4().hex


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit: int, budget: BodyBudget, empty: str = NO_JSON) -> bytes:
    body = await receive_body(scope, receive, limit, budget)
    encoding = header(scope, b"content-encoding")
    if encoding is not None and body:
        body = decompress(body, encoding, limit)
    if not body:
        raise HTTPError(400, empty)
    return body


_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib's window bits for each framing


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A compressed body (tritonclient's request_compression_algorithm), held to the same limit
    once decompressed: a small bomb must not expand into memory."""
    name = encoding.strip().lower()
    if name == "identity":
        return body
    if name not in _WBITS:
        raise HTTPError(415, f"Content-Encoding {encoding} is not supported: send the body uncompressed, gzip or deflate")
    decoder = zlib.decompressobj(_WBITS[name])
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as e:
        raise HTTPError(400, f"The body is not valid {name} data: {e}") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise HTTPError(413, f"Request body is over the limit of {limit} bytes once decompressed")
    if not decoder.eof:
        raise HTTPError(400, f"The body is not valid {name} data: it ends early")
    return out


async def simple_predict(model: ServedModel, body: bytes) -> Reply:
    import orjson

    if model.schema is None:
        raise InvalidInputError(f"/predict is not available for model {model.name!r}: its inputs are not one table of "
                                f"rows (one numeric [batch, n] input, one output). Use POST /v2/models/{model.name}/infer")
    payload = parse_json(body)
    # No finiteness check here: orjson refuses NaN, Infinity and numbers that overflow, and a null
    # becomes NaN only for models that accept missing values.
    x, single = model.schema.parse(payload)
    probabilities = payload.get("probabilities", False)
    if type(probabilities) is not bool:
        raise InvalidInputError(f'"probabilities" must be true or false, got {orjson.dumps(probabilities).decode()[:40]}')
    y = (await model.predict(x)).tolist()
    out: dict[str, Any] = {"prediction": y[0]} if single else {"predictions": y}
    if probabilities:
        if model.schema.classes is None:
            raise InvalidInputError(f"Model {model.name!r} is a {model.task} model: it has no class probabilities")
        probs = model.schema.probabilities(await model.predict_proba(x))
        out["probabilities"] = probs[0] if single else probs
    return Reply(orjson.dumps(out))


class PredictionRouter:
    def __init__(self, models: ModelSet, app: ASGIApp, max_body: int, budget: BodyBudget,
                 log: Callable[[PredictionRecord], None] | None = None, trust_proxy_headers: bool = False) -> None:
        self.models = models
        self.app = app
        self.max_body = max_body
        self.budget = budget  # this worker's bytes of bodies being read
        self.log = log  # the prediction log (serve --log-db): returns at once, writes in the background
        # Only behind modelport's proxy, which sets X-Modelport-Key-Id after checking the key and
        # drops any copy a client sent: served directly, a client could claim any key id.
        self.trust_proxy_headers = trust_proxy_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = match(scope["path"]) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        name, version, protocol = target
        if scope["method"] != "POST":
            await self._send(send, error_reply(405, f"Method {scope['method']} is not allowed on {scope['path']}; use POST"),
                             [(b"allow", b"POST")])
            return
        try:
            model = self.models.default if name is None else self.models.get(name, version)
            check_loaded(self.models, model.name)
        except ModelportError as e:
            error = from_domain(e)
            await self._send(send, error_reply(error.status, error.message), [])
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
            return body, await simple_predict(model, body)
        except HTTPError as e:
            return body, self._error(model, e)
        except ModelportError as e:
            return body, self._error(model, from_domain(e), e)
        except ClientGone:
            raise
        except Exception as e:
            log.exception("prediction failed", extra={"model": model.name, "version": model.version})
            return body, error_reply(500, f"Internal server error ({type(e).__name__}); see the server log")

    def _log(self, model: ServedModel, scope: Scope, rid: str, body: bytes, reply: Reply, start: float) -> None:
        assert self.log is not None
        key_id = header(scope, KEY_ID_HEADER) if self.trust_proxy_headers else None
        self.log(PredictionRecord(
            time=datetime.now(UTC), request_id=rid, key_id=key_id,
            model=model.name, version=model.version, inputs=body, outputs=reply.body,
            content_type=header(scope, b"content-type") or "", latency_ms=(time.perf_counter() - start) * 1000,
            status=reply.status))

    @staticmethod
    def _error(model: ServedModel, e: HTTPError, cause: ModelportError | None = None) -> Reply:
        if e.status >= 500:  # with the model's own traceback, when it raised
            log.error("prediction failed: %s", e.message, exc_info=cause, extra={"model": model.name, "version": model.version})
        reply = error_reply(e.status, e.message)
        reply.headers = [(k.encode(), v.encode()) for k, v in (e.headers or {}).items()]
        return reply

    @staticmethod
    async def _send(send: Send, reply: Reply, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()), *extra, *reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
