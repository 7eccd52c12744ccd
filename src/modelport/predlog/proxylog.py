"""The answers a stack's HAProxy gives itself (502/503/504: no model replica could take the
request), as prediction records: HAProxy sends one JSON line per such answer over UDP syslog,
and this receiver turns each into a PredictionRecord for the prediction log.

A line looks like ``{"time": ..., "request_id": ..., "key_id": ..., "model": ..., "version": ...,
"status": 503, "latency_ms": 1.2}``; HAProxy's ``format raw`` sends just that, and any syslog
header (RFC 3164 or 5424) before it is skipped by reading from the first ``{``.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from modelport.errors import ModelportError
from modelport.predlog.record import PredictionRecord
from modelport.predlog.writer import PredictionLog

log = logging.getLogger("modelport.predlog.proxylog")

MAX_DATAGRAM = 64 * 1024  # a log line is a few hundred bytes: anything larger is not one of ours
RECEIVE_BUFFER = 4 * 1024 * 1024  # a model going down makes a burst of 5xx lines at once (the kernel may cap it)
POLL_S = 0.25  # how soon the receive loop notices stop()
NONE = ("", "-")  # what HAProxy logs for an empty field
HAPROXY_DATES = ("%d/%b/%Y:%H:%M:%S.%f", "%d/%b/%Y:%H:%M:%S %z", "%d/%b/%Y:%H:%M:%S")  # %t/%tr, %T


class Malformed(ValueError):
    """A datagram that is not one of the proxy's log lines."""


def error_body(status: int) -> bytes:
    """The outputs recorded for an answer the proxy gave itself (its log line has no body)."""
    return orjson.dumps({"error": f"the proxy answered {status}: no model replica could take the request"})


def parse_datagram(data: bytes) -> PredictionRecord | None:
    """One syslog datagram → its record, or None (and a warning) when it is not a valid log line."""
    try:
        return parse_line(data)
    except Malformed as e:
        log.warning("ignoring a proxy log datagram: %s: %r", e, data[:200])
        return None


def parse_line(data: bytes) -> PredictionRecord:
    """Like parse_datagram, raising Malformed with the reason."""
    if len(data) > MAX_DATAGRAM:
        raise Malformed(f"{len(data)} bytes, more than {MAX_DATAGRAM}")
    start = data.find(b"{")
    if start < 0:
        raise Malformed("no JSON object")
    try:
        fields = orjson.loads(data[start:].rstrip(b"\r\n\0 "))
    except orjson.JSONDecodeError as e:
        raise Malformed(f"bad JSON ({e})") from None
    if not isinstance(fields, dict):
        raise Malformed("not a JSON object")
    missing = [k for k in ("time", "request_id", "model", "status", "latency_ms") if k not in fields]
    if missing:
        raise Malformed(f"missing {', '.join(missing)}")
    status = _status(fields["status"])
    return PredictionRecord(
        time=_time(fields["time"]), request_id=_text(fields, "request_id"), key_id=_optional(fields, "key_id"),
        model=_text(fields, "model"), version=_optional(fields, "version"), inputs=b"", outputs=error_body(status),
        content_type="", latency_ms=_number(fields["latency_ms"], "latency_ms"), status=status)


def _text(fields: dict[str, Any], key: str) -> str:
    value = fields[key]
    if not isinstance(value, str) or value.strip() in NONE:
        raise Malformed(f"{key} is {value!r}, not a name")
    return value


def _optional(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is None or value in NONE:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{key} is {value!r}, not a string")
    return value


def _number(value: object, key: str) -> float:
    # HAProxy's log-format may quote a number or not, depending on how the template writes it.
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        number = float(value)
    except ValueError:
        raise Malformed(f"{key} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise Malformed(f"{key} is {value!r}, not a number")
    return number


def _status(value: object) -> int:
    number = _number(value, "status")
    if not number.is_integer() or not 100 <= number <= 599:
        raise Malformed(f"status is {value!r}, not an HTTP status")
    return int(number)


def _time(value: object) -> datetime:
    """Epoch seconds (a number, or a string with a fraction), ISO 8601, or HAProxy's own date format;
    a time without a zone is UTC (HAProxy's local time, which is UTC in its container)."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):
            pass
    if isinstance(value, str):
        try:
            parsed = _date(value.strip())
        except ValueError:
            pass
        else:
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise Malformed(f"time is {value!r}, not ISO 8601, epoch seconds or HAProxy's date")


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in HAPROXY_DATES:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ValueError(text)


class ProxyLogReceiver:
    """A UDP socket bound to ``host:port`` (0: any free port) that submits every valid datagram to
    ``plog``, which spools while the database is down. ``serve_forever()`` until ``stop()``."""

    def __init__(self, plog: PredictionLog, host: str = "0.0.0.0", port: int = 5140) -> None:
        self.plog = plog
        self.received = 0  # valid log lines submitted
        self.ignored = 0  # datagrams that were not
        self._stopping = threading.Event()
        try:
            family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:
            raise ModelportError(f"Cannot listen on udp {host}:{port}: {e.strerror or e}") from None
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            self._sock.bind(address)
        except OSError as e:
            self._sock.close()
            raise ModelportError(f"Cannot listen on udp {host}:{port}: {e.strerror or e}") from None
        self._sock.settimeout(POLL_S)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    def serve_forever(self) -> None:
        """Receive until ``stop()``, then take what is already waiting in the socket, and close it."""
        try:
            while not self._stopping.is_set():
                try:
                    data = self._sock.recv(MAX_DATAGRAM + 1)  # +1: a datagram over the limit shows as one
                except TimeoutError:
                    continue
                except OSError as e:  # e.g. ECONNREFUSED reported for an earlier send: the socket is still fine
                    log.warning("proxy log: receiving failed: %s", e)
                    continue
                self.handle(data)
            self._drain()
        finally:
            self._sock.close()

    def stop(self) -> None:
        """Make ``serve_forever()`` return within POLL_S (safe in a signal handler)."""
        self._stopping.set()

    def handle(self, data: bytes) -> None:
        try:
            record = parse_datagram(data)
            if record is None:
                self.ignored += 1
                return
            self.plog.submit(record)
            self.received += 1
        except Exception:  # a bug must not stop the log of every answer after this one
            log.exception("proxy log: cannot record a datagram: %r", data[:200])

    def _drain(self) -> None:
        # Lines the kernel holds already were answers given before the stop: record them too.
        self._sock.setblocking(False)
        while True:
            try:
                data = self._sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            self.handle(data)


def receive(db_url: str, spool_dir: Path | None = None, *, host: str = "0.0.0.0", port: int = 5140,
            announce: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    """``modelport predictions receive``: record the proxy's own answers until SIGTERM or SIGINT,
    then close the prediction log, which writes what is queued (to the spool if the database is down)."""
    from modelport.predlog import open_log

    plog = open_log(db_url, spool_dir)
    try:
        receiver = ProxyLogReceiver(plog, host, port)
        with _stop_on_signals(receiver.stop):
            announce(f"Receiving the proxy's log on udp {host}:{receiver.address[1]}, writing to {plog.where}")
            receiver.serve_forever()
    finally:
        plog.close()
    log.info("proxy log: stopped after %d record(s) (%d datagram(s) ignored)", receiver.received, receiver.ignored)


@contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: stop()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
