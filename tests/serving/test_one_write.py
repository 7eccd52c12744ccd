"""A whole answer leaves the server in one write (its head and body together), so a replica killed
mid-answer never leaves the proxy a head it has forwarded and cannot retry. The real uvicorn protocol
and app; the socket is replaced by a transport that records each write the server makes to it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from modelport.serving.app import create_app
from modelport.serving.limits import ReadLimits
from modelport.serving.protocol import uvicorn_options
from modelport.serving.runtime import ServeSpec, load_models
from tests.fixtures_serving import small_models


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


async def _answers(app: Any, requests: list[bytes], expected: int) -> list[bytes]:
    config = uvicorn.Config(app, lifespan="off", access_log=False, **uvicorn_options(ReadLimits()))
    config.load()
    protocol = config.http_protocol_class(config=config, server_state=ServerState(), app_state={},
                                          _loop=asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for request in requests:
        protocol.data_received(request)
    async with asyncio.timeout(10):
        while b"".join(transport.writes).count(b"HTTP/1.1 ") < expected:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # nothing more is written after the last answer
    protocol.connection_lost(None)
    return transport.writes


def _post(body: bytes, *, close: bool = False) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + (b"connection: close\r\n" if close else b"") + b"content-length: %d\r\n\r\n" % len(body) + body)


def test_each_answer_is_one_write_with_its_head_and_body(tmp_path: Path) -> None:
    store = small_models(tmp_path / "home")
    app = create_app(load_models([ServeSpec.parse("lin")], store))
    good, bad = b'{"features": [0.1, 0.2, 0.3, 0.4]}', b'{"features": "no"}'
    writes = asyncio.run(_answers(app, [_post(good), _post(bad), _post(good, close=True)], expected=3))
    assert len(writes) == 3, writes
    assert [w.split(b" ", 2)[1] for w in writes] == [b"200", b"400", b"200"]
    for w in writes:
        head, body = w.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        assert len(body) == length and body.startswith(b"{"), w  # the whole body, in the same write as its head
    store.close()
