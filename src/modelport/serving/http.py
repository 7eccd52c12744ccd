"""Small HTTP helpers shared by every endpoint: JSON bodies, size limits, error responses."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from modelport import defaults
from modelport.errors import (
    InvalidInputError,
    LimitExceededError,
    ModelFailedError,
    ModelOutputError,
    ModelportError,
    ModelUnavailableError,
    NotFoundError,
)
from modelport.serving.limits import BodyBudget

DEFAULT_MAX_BODY = defaults.MAX_BODY
NO_JSON = "Request body is empty: send a JSON object"
NO_IMAGE = "No image provided"  # the tutorial's message for image models, kept word for word
# A client's X-Request-ID is kept only in this shape (it ends up in logs and the prediction log).
REQUEST_ID_FORMAT = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# Domain errors raised below the HTTP layer, and the status each becomes at the edge: the only place
# one is chosen (the first match wins, so a subclass comes before its base). A model's non-finite
# output is a 422: the request was well formed, but there is no prediction to give for it. An
# unloaded model is a 400, as the protocol's ready endpoint answers. Any other error is a 500.
_DOMAIN_STATUS: tuple[tuple[type[ModelportError], int], ...] = (
    (LimitExceededError, 413), (InvalidInputError, 400), (ModelUnavailableError, 400), (NotFoundError, 404),
    (ModelOutputError, 422), (ModelFailedError, 500))


class HTTPError(Exception):
    """An error the client caused or should know about; rendered as ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(slots=True)
class Reply:
    """A prediction answer as bytes: what the prediction router sends without building a Response."""

    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def from_domain(error: ModelportError) -> HTTPError:
    status = next((status for cls, status in _DOMAIN_STATUS if isinstance(error, cls)), 500)
    return HTTPError(status, str(error))


def reply_for(error: Exception) -> Reply:
    """What any error raised while answering becomes, on every path: ``{"error": message}`` with the
    status of an ``HTTPError``, of a domain error (the table above), else a 500 (logged by the caller)."""
    if isinstance(error, ModelportError):
        error = from_domain(error)
    if not isinstance(error, HTTPError):
        return error_reply(500, f"Internal server error ({type(error).__name__}); see the server log")
    reply = error_reply(error.status, error.message)
    reply.headers = [(k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()]
    return reply


def response(reply: Reply) -> Response:
    """A Reply for the paths that answer with Starlette Responses."""
    return Response(reply.body, reply.status, headers={k.decode(): v.decode() for k, v in reply.headers},
                    media_type=reply.content_type.decode())


async def on_error(request: Request, exc: Exception) -> Response:
    """The Starlette apps' handler for ``HTTPError`` and domain errors: ``{"error": message}``, its status."""
    return response(reply_for(exc))


def error_reply(status: int, message: str) -> Reply:
    return Reply(orjson.dumps({"error": message}), status)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def is_decimal(text: str) -> bool:
    """Only ASCII digits: ``str.isdigit`` also accepts '²', which ``int`` refuses."""
    return text.isascii() and text.isdigit()


class ClientGone(Exception):
    """The client disconnected (or was timed out) before its request body arrived."""


def server_busy(budget: BodyBudget) -> HTTPError:
    return HTTPError(503, f"The server is already reading its limit of {budget.limit} bytes of request bodies "
                          "(--max-buffered-bytes); try again shortly", {"retry-after": "1"})


async def receive_body(scope: Scope, receive: Receive, limit: int, budget: BodyBudget) -> bytes:
    """The request body as sent, refused as soon as it passes ``limit`` bytes (even when chunked).

    While it is read its bytes count against the worker's ``budget``: a declared length is taken
    before reading, so a request that does not fit is refused without buffering any of it."""
    declared = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            declared = value.decode("latin-1")
            break
    held = 0
    if declared is not None:
        if not is_decimal(declared):
            raise HTTPError(400, "Invalid Content-Length header")
        held = int(declared)
        if held > limit:
            raise HTTPError(413, f"Request body is {held} bytes; the limit is {limit} bytes")
        if not budget.take(held):
            raise server_busy(budget)
    try:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"Request body is over the limit of {limit} bytes")
            if size > held:  # chunked: taken as it arrives
                if not budget.take(size - held):
                    raise server_busy(budget)
                held = size
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        budget.release(held)


async def read_body(scope: Scope, receive: Receive, limit: int, budget: BodyBudget, empty: str = NO_JSON,
                    decompress: bool = True) -> bytes:
    """A request's body (see ``receive_body``), which must not be empty (``empty`` says so), decompressed
    as its Content-Encoding says unless ``decompress`` is off (a proxy passes it on as sent)."""
    body = await receive_body(scope, receive, limit, budget)
    if decompress and body:
        encoding = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-encoding"), None)
        if encoding is not None:
            body = decompressed(body, encoding, limit)
    if not body:
        raise HTTPError(400, empty)
    return body


_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib's window bits for each framing


def decompressed(body: bytes, encoding: str, limit: int) -> bytes:
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


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if any(token in body for token in (b"NaN", b"Infinity")):
            raise InvalidInputError("NaN and Infinity are not valid JSON numbers; send null for a missing value "
                                    "if the model accepts missing values") from None
        raise InvalidInputError(f"Malformed JSON: {e}") from None
