"""uvicorn's httptools protocol with read timeouts on the request head and body, and one write per answer.

uvicorn times out only an idle keep-alive connection (after a response): a client that never
finishes a request head, or a body, holds its connection, and its part of the body, forever.
This protocol gives each connection one timer, armed only while a request is incomplete at the end
of a read: a request that arrives whole in one read (nearly all of them) arms none.

uvicorn also writes a response's head and its body in two writes. A replica killed between them
leaves its proxy a head it has already forwarded, so the proxy cannot retry the request elsewhere
and the client gets a truncated answer. Writes made in one turn of the event loop (a whole
non-streaming answer) go out as one, so a crash costs either nothing (the proxy retries) or nothing
the client sees.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelport.serving.limits import ReadLimits

# Where the connection's current request is. NEW: nothing received yet on a new connection.
NEW, HEAD, BODY, DONE = range(4)


class ReadTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._phase = NEW
        self._timer: asyncio.TimerHandle | None = None
        self._timed_phase = DONE  # the phase the timer runs for (HEAD also stands for NEW)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = OneWriteTransport(transport, self.loop)  # type: ignore[assignment]
        self._timed_phase = HEAD
        self._timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        phase = HEAD if self._phase == NEW else self._phase
        if phase != self._timed_phase:  # the request moved on during this read: the timer follows
            self._timed_phase = phase
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if phase != DONE and not self.transport.is_closing():
                self._timer = self.loop.call_later(self.header_timeout if phase == HEAD else self.body_timeout,
                                                   self._timed_out)

    def on_message_begin(self) -> None:
        self._phase = HEAD
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._phase = BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = DONE
        super().on_message_complete()

    def _timed_out(self) -> None:
        self._timer = None
        self._timed_phase = DONE
        if self.transport.is_closing():
            return
        if self._phase == NEW:  # nothing asked: close quietly, as after an idle keep-alive
            self.transport.close()
            return
        cycle = self.cycle
        if self._phase == HEAD:
            busy = cycle is not None and not cycle.response_complete  # an earlier, pipelined request is answering
            what = f"The request head was not received within {self.header_timeout:g} s"
        else:
            busy = cycle.response_started
            what = f"The request body was not received within {self.body_timeout:g} s"
            # The app waiting for the body sees a disconnect, and whatever it sends after is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if not busy:
            self.transport.write(_timeout_response(what, self.server_state.default_headers))
        self.transport.close()


class OneWriteTransport:
    """A transport whose writes in one event-loop turn reach the socket as one write (at the turn's end,
    or before a close). Everything else is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)  # one item: that item, not a copy
            self._pending.clear()
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _timeout_response(message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = orjson.dumps({"error": message})
    lines = [STATUS_LINE[408], *(name + b": " + value + b"\r\n" for name, value in default_headers),
             b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]
    return b"".join(lines)


def uvicorn_options(limits: ReadLimits) -> dict[str, Any]:
    """The uvicorn Config options for ``limits`` (a partial, not a subclass made here: worker processes
    receive the config pickled)."""
    return {"http": functools.partial(ReadTimeoutProtocol, header_timeout=limits.header_timeout,
                                      body_timeout=limits.body_timeout),
            "timeout_keep_alive": limits.keep_alive, "ws": "none"}  # no upgrades: a timer must not outlive HTTP
