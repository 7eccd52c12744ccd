"""Limits on what one client or one request may cost a server.

Time to send a request and bytes of bodies being read (``--header-timeout``, ``--body-timeout``,
``--keep-alive``, ``--max-buffered-bytes``, taken by the model server and the gateway), so a slow or
stalled client cannot keep a connection or a worker's memory for as long as it likes; and what one
request to an image model may decode. Kept apart from the decoding code so that serving tabular
models never imports Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelport import defaults
from modelport.errors import ModelportError

DEFAULT_MAX_BUFFERED = defaults.MAX_BUFFERED
DEFAULT_MAX_IMAGES = defaults.MAX_IMAGES
DEFAULT_MAX_REQUEST_PIXELS = defaults.MAX_REQUEST_PIXELS


@dataclass(frozen=True, slots=True)
class ReadLimits:
    header_timeout: float = defaults.HEADER_TIMEOUT  # from connecting (or a request's first byte) to its complete head
    body_timeout: float = defaults.BODY_TIMEOUT  # from the complete head to the complete body
    keep_alive: float = defaults.KEEP_ALIVE  # idle time allowed between requests on one connection
    max_buffered: int = defaults.MAX_BUFFERED  # bytes of request bodies one worker reads at once

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


@dataclass(frozen=True)
class ImageLimits:
    """Per request to an image model; a field left as None takes the default (see ``resolved``)."""

    max_images: int | None = None
    max_request_pixels: int | None = None

    def resolved(self) -> ImageLimits:
        return ImageLimits(
            max_images=self.max_images if self.max_images is not None else DEFAULT_MAX_IMAGES,
            max_request_pixels=(self.max_request_pixels if self.max_request_pixels is not None
                                else DEFAULT_MAX_REQUEST_PIXELS))
