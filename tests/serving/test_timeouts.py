"""Slow and stalled clients (issue 10, defect 4): read timeouts on the head, the body and idle
connections, and a per-worker limit on the bytes of request bodies being read. Real server
processes, raw sockets."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, run_in_process

TIMEOUT = 1.0
MARGIN = 1.0  # a close must come within TIMEOUT + MARGIN, and not before the timeout
SHORT = ["--header-timeout", "1", "--body-timeout", "1", "--keep-alive", "1"]
FEATURES = json.dumps({"features": [0.1] * 8}).encode()
HEAD = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"


@pytest.fixture
def lin(store, regression_csv) -> None:
    """A linear model trained here, ``lin``."""
    from modelport.training.trainer import train

    train(regression_csv[0], "target", "lin", store=store)


@pytest.fixture
def model(lin, serve):
    """A factory: ``modelport serve lin ARGS``."""
    return lambda *args: serve("lin", *args)


@dataclass
class Closed:
    after: float  # seconds from the connection's start to the server closing it
    received: bytes


async def until_closed(reader: asyncio.StreamReader, start: float) -> Closed:
    received = b""
    while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT + MARGIN + 1):
        received += chunk
    return Closed(time.monotonic() - start, received)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    assert length is not None, head
    return int(head.split(b" ", 2)[1]), await reader.readexactly(int(length[1]))


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float = 0.2) -> None:
    """Send ``data`` a byte at a time, each well within the timeout: only a deadline on the whole stops it."""
    try:
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every)
    except ConnectionError:
        pass


async def slow_clients(port: int) -> dict[str, Closed]:
    """An idle connection, one idle after a request, a slow head and a slow body, all at once, while a
    normal client keeps asking; → how each slow one was closed."""
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return reader, writer, time.monotonic()

    async def idle() -> Closed:
        reader, _, start = await connect()
        return await until_closed(reader, start)

    async def idle_after_a_request() -> Closed:
        reader, writer, _ = await connect()
        writer.write(HEAD + b"content-length: %d\r\n\r\n" % len(FEATURES) + FEATURES)
        await read_response(reader)
        return await until_closed(reader, time.monotonic())

    async def slow_head() -> Closed:
        reader, writer, start = await connect()
        sending = asyncio.create_task(trickle(writer, HEAD + b"x-padding: " + b"a" * 100))
        closed = await until_closed(reader, start)
        sending.cancel()
        return closed

    async def slow_body() -> Closed:
        reader, writer, _ = await connect()
        writer.write(HEAD + b"content-length: %d\r\n\r\n" % len(FEATURES))
        start = time.monotonic()
        sending = asyncio.create_task(trickle(writer, FEATURES * 4))
        closed = await until_closed(reader, start)
        sending.cancel()
        return closed

    async def normal(client: httpx.AsyncClient) -> list[float]:
        times = []
        for _ in range(10):
            t = time.monotonic()
            response = await client.post("/predict", content=FEATURES)
            assert response.status_code == 200, response.text
            times.append(time.monotonic() - t)
            await asyncio.sleep(0.1)
        return times

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        *closed, times = await asyncio.gather(idle(), idle_after_a_request(), slow_head(), slow_body(), normal(client))
    assert max(times) < 0.5, times  # served throughout, not queued behind the slow ones
    return dict(zip(["idle", "idle after a request", "slow head", "slow body"], closed, strict=True))


def check_closed(closed: dict[str, Closed]) -> None:
    for name, c in closed.items():
        assert TIMEOUT - 0.1 <= c.after <= TIMEOUT + MARGIN, (name, c)
    assert closed["idle"].received == b""
    assert closed["idle after a request"].received == b""
    for name, what in (("slow head", "head"), ("slow body", "body")):
        status, _, body = closed[name].received.partition(b"\r\n")
        assert status == b"HTTP/1.1 408 Request Timeout", closed[name]
        assert json.loads(body.split(b"\r\n\r\n", 1)[1]) == {"error": f"The request {what} was not received within 1 s"}


def test_slow_and_idle_clients_are_closed_by_the_server(model) -> None:
    check_closed(asyncio.run(slow_clients(model(*SHORT).port)))


MIB = 1024 * 1024


def vm_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]


def queued(port: int) -> int:
    """Bytes in flight on loopback TCP connections to ``port``: sent but not acknowledged, or
    received but not yet read by the process (both ends are listed in /proc/net/tcp)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, (tx, rx) = fields[1], fields[2], fields[4].split(":")
        if int(local.split(":")[1], 16) == port or int(remote.split(":")[1], 16) == port:
            total += int(tx, 16) + int(rx, 16)
    return total


async def stalled_uploads(port: int, clients: int, size: int, chunked: bool) -> tuple[list[tuple[int, bytes] | None], list]:
    """``clients`` uploads of ``size`` bytes at once that stop one step short of the end (the last byte,
    or the last chunk) → each one's answer, or None for one the server is holding; and the open connections."""
    piece = b"0" * MIB
    framing = b"transfer-encoding: chunked\r\n\r\n" if chunked else b"content-length: %d\r\n\r\n" % size

    async def upload() -> tuple[tuple[int, bytes] | None, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = asyncio.create_task(read_response(reader))
        try:
            writer.write(HEAD + framing)
            for sent in range(0, size, MIB):
                data = piece[:min(MIB, size - sent - (0 if chunked else 1))]
                writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                await writer.drain()
                if answer.done():
                    break
        except ConnectionError:
            pass
        # Sent what it will send: either the server answers it, or it holds the body and waits for the rest.
        while not answer.done() and queued(port) > 0:
            await asyncio.sleep(0.05)
        if answer.done():
            return answer.result(), writer
        answer.cancel()
        return None, writer

    results = await asyncio.gather(*(upload() for _ in range(clients)))
    while queued(port) > 0:  # everything sent has been read by the server
        await asyncio.sleep(0.05)
    return [answer for answer, _ in results], [writer for _, writer in results]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_stalled_uploads_hold_no_more_than_the_buffered_bytes_limit(model, chunked: bool) -> None:
    limit = 64 * MIB
    server = model("--max-buffered-bytes", str(limit), "--body-timeout", "60")
    assert httpx.post(server.url + "/predict", content=FEATURES).status_code == 200
    before = vm_rss(server.proc.pid)

    async def scenario() -> tuple[list[tuple[int, bytes] | None], int, int]:
        answers, connections = await stalled_uploads(server.port, 20, 15 * MIB, chunked)
        held = vm_rss(server.proc.pid)
        async with httpx.AsyncClient() as client:  # a small request still fits beside them
            status = (await client.post(server.url + "/predict", content=FEATURES)).status_code
        for writer in connections:
            writer.close()
        return answers, held, status

    answers, held, small = asyncio.run(scenario())
    refused = [a for a in answers if a is not None]
    assert 1 <= answers.count(None) <= limit // (15 * MIB)
    assert len(refused) >= 20 - limit // (15 * MIB)
    for status, body in refused:
        assert status == 503 and "--max-buffered-bytes" in json.loads(body)["error"], (status, body)
    assert held - before < limit + 32 * MIB, f"the worker grew by {(held - before) / MIB:.0f} MiB"
    assert small == 200


@pytest.mark.parametrize(("command", "option", "message"), [
    (["serve", "lin"], ["--max-buffered-bytes", "1000"], "--max-buffered-bytes (1000) is smaller than the largest request body"),
    (["serve", "lin"], ["--body-timeout", "0"], "--body-timeout must be more than 0 seconds"),
    (["serve", "lin"], ["--header-timeout", "-1"], "--header-timeout must be more than 0 seconds"),
])
def test_limits_that_cannot_work_are_a_clear_error(home, command: list[str], option: list[str], message: str) -> None:
    result = run_in_process(*command, *option, "--port", str(free_port()), check=False)
    assert result.returncode == 1 and message in result.stderr, result
