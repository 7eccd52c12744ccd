"""Small HTTP helpers shared by every endpoint: JSON bodies, size limits, error responses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelport.errors import InvalidInputError, ModelOutputError, ModelportError, NotFoundError

DEFAULT_MAX_BODY = 16 * 1024 * 1024
NO_JSON = "Request body is empty: send a JSON object"
NO_IMAGE = "No image provided"  # the tutorial's message for image models, kept word for word
# A client's X-Request-ID is kept only in this shape (it ends up in logs and the prediction log).
REQUEST_ID_FORMAT = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# Domain errors raised below the HTTP layer, and the status each becomes at the edge. A model's
# non-finite output is a 422: the request was well formed, but there is no prediction to give for it.
_DOMAIN_STATUS: tuple[tuple[type[ModelportError], int], ...] = (
    (InvalidInputError, 400), (NotFoundError, 404), (ModelOutputError, 422))


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


def error_reply(status: int, message: str) -> Reply:
    return Reply(orjson.dumps({"error": message}), status)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status, headers)


def is_decimal(text: str) -> bool:
    """Only ASCII digits: ``str.isdigit`` also accepts '²', which ``int`` refuses."""
    return text.isascii() and text.isdigit()


async def read_body(request: Request, limit: int, allow_empty: bool = False) -> bytes:
    """The request body, refusing it as soon as it passes ``limit`` bytes (even when chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not is_decimal(declared):
            raise HTTPError(400, "Invalid Content-Length header")
        if int(declared) > limit:
            raise HTTPError(413, f"Request body is {int(declared)} bytes; the limit is {limit} bytes")
        body = await request.body()
    else:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"Request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
    if not body and not allow_empty:
        raise HTTPError(400, NO_JSON)
    return body


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if any(token in body for token in (b"NaN", b"Infinity")):
            raise HTTPError(400, "NaN and Infinity are not valid JSON numbers; send null for a missing value "
                                 "if the model accepts missing values") from None
        raise HTTPError(400, f"Malformed JSON: {e}") from None
