"""Limits on what a client may hold of a server: time to send a request, bytes of bodies being read.

Both the model server and the gateway take them (``--header-timeout``, ``--body-timeout``,
``--keep-alive``, ``--max-buffered-bytes``), so a slow or stalled client cannot keep a connection
or a worker's memory for as long as it likes.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelport.errors import ModelportError

MIB = 1024 * 1024
DEFAULT_MAX_BUFFERED = 256 * MIB


@dataclass(frozen=True, slots=True)
class ReadLimits:
    header_timeout: float = 10.0  # from connecting (or a request's first byte) to its complete head
    body_timeout: float = 60.0  # from the complete head to the complete body
    keep_alive: float = 5.0  # idle time allowed between requests on one connection
    max_buffered: int = DEFAULT_MAX_BUFFERED  # bytes of request bodies one worker reads at once

    def check(self, max_body: int) -> ReadLimits:
        for name, value in (("--header-timeout", self.header_timeout), ("--body-timeout", self.body_timeout),
                            ("--keep-alive", self.keep_alive)):
            if not value > 0:
                raise ModelportError(f"{name} must be more than 0 seconds, got {value:g}")
        if self.max_buffered < max_body:
            raise ModelportError(f"--max-buffered-bytes ({self.max_buffered}) is smaller than the largest request "
                                 f"body accepted ({max_body} bytes): such a request could never be read")
        return self


class BodyBudget:
    """The bytes of request bodies a worker is reading right now, held under a limit: beyond it a
    request is refused before its body is buffered, so stalled uploads cannot pin the memory."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        self.used -= n
