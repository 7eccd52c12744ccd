"""Request paths the gateway refuses because a model server could read them differently.

The gateway routes (and authenticates) on the path decoded once; the model server behind it decodes
the forwarded path once more. Any path whose meaning could change with one more decoding or a
normalisation step (double percent-encoding, encoded slashes, dot segments, ``;`` parameters,
backslashes, control characters) is refused here, so the two always agree on what was asked for.
A path that passes is forwarded exactly as received.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.serving.http import error_response

# In the raw path: an encoded '/', '\' or '%' hides a separator or a second round of encoding.
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c|25)", re.IGNORECASE)
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\;%]")


def ambiguity(raw_path: bytes, path: str) -> str | None:
    """Why this path is refused, or None. ``path`` is ``raw_path`` decoded once (the ASGI ``path``)."""
    if not raw_path.startswith(b"/"):
        return "the path must start with '/'"
    if _ENCODED_SEPARATOR.search(raw_path):
        return "percent-encoded '/', '\\' or '%' in the path"
    if (bad := _FORBIDDEN.search(path)) is not None:
        return f"character {bad.group()!r} in the path"
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        return "'.' or '..' segment in the path"
    if any(s == "" for s in segments[:-1]):
        return "empty segment ('//') in the path"
    return None


class PathGuard:
    """ASGI middleware: answers 400 for an ambiguous path before any route sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Some servers (and httpx's ASGI transport) include the query string in raw_path.
            raw_path = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
            reason = ambiguity(raw_path, scope["path"])
            if reason is not None:
                await error_response(400, f"Ambiguous request path refused: {reason}")(scope, receive, send)
                return
        await self.app(scope, receive, send)
