"""Start-up: the server listens at once, the models load and answer a warm-up prediction, and only then
is it ready. Meanwhile liveness answers 200, readiness 503 and every other request 503 with
``Retry-After``, so a probe never waits on a silent socket and never sees a server ready before its
models have answered a prediction. Each stage's time is logged in one ``Startup:`` line, which
``modelport run`` reads from the container's log to print the cold start's breakdown."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from modelport.errors import InvalidInputError, ModelportError
from modelport.frameworks.base import IMAGE_CLASSIFICATION
from modelport.serving.runtime import ModelSet, ServedModel, TensorRequest
from modelport.serving.timings import Timings

log = logging.getLogger("modelport.server")

_NOT_READY = orjson.dumps({"ready": False, "error": "The server is starting: its models are loading"})
_STARTING = orjson.dumps({"error": "The server is starting: its models are loading; retry in a moment"})


# -- warm-up -------------------------------------------------------------------------------------

def read_warmup(path: Path) -> TensorRequest:
    """A warm-up input given by the user: a file holding an Open Inference Protocol v2 request body
    (JSON, as ``POST /v2/models/NAME/infer`` takes it)."""
    from modelport.serving import v2

    try:
        body = path.read_bytes()
    except OSError as e:
        raise ModelportError(f"Cannot read the warm-up input {str(path)!r} (--warmup): {e.strerror}") from None
    try:
        return v2.decode(body, None)[0]
    except (InvalidInputError, ModelportError) as e:
        raise ModelportError(f"The warm-up input {str(path)!r} (--warmup) is not a v2 inference request: {e}") from None


def generated_request(model: ServedModel) -> TensorRequest:
    """A warm-up input from the model's signature: one row of zeros, each input of batch 1, or a small
    gray JPEG for an image classifier (decoding and preprocessing are warmed too)."""
    if model.task == IMAGE_CLASSIFICATION:
        import io

        from PIL import Image  # an image server imports it anyway

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, "JPEG")
        name = model.input_specs[0]["name"] if model.input_specs else "image"
        return TensorRequest({name: np.array([buf.getvalue()], dtype=object)}, raw=frozenset({name}))
    inputs = {}
    for spec in model.input_specs:
        shape = [1 if d == -1 else d for d in spec["shape"]]
        dtype = object if spec["dtype"] in ("string", "object") else spec["dtype"]
        inputs[spec["name"]] = np.zeros(shape, dtype=dtype) if dtype is not object else np.full(shape, "", dtype=object)
    outputs = frozenset({"probabilities"}) if model.schema is not None and model.schema.classes is not None else frozenset()
    return TensorRequest(inputs, outputs=outputs)


async def warm_up(models: ModelSet, given: dict[str, TensorRequest]) -> None:
    """One prediction per model, through the path requests take (its batcher, its threads), on the
    server's own event loop. A given input must succeed; a generated one that a model refuses is
    logged (the model did run). The warm-up is not counted in the metrics."""
    for model in models:
        request = given.get(model.name)
        try:
            await model.infer(request if request is not None else generated_request(model))
        except ModelportError as e:
            if request is not None:
                raise ModelportError(f"The warm-up prediction of {model.name!r} (--warmup) failed: {e}") from None
            log.warning("The warm-up prediction of %s on generated inputs failed: %s", model.name, e)
        model.metrics.discard()


# -- the app while it starts ---------------------------------------------------------------------

class Starting:
    """An ASGI app that starts answering at once and becomes ``build()``'s app when it is ready.

    ``build`` (in a thread) loads the models and makes the app; the models then answer a warm-up
    prediction on this loop, the app's own lifespan starts, and ``ready()`` must hold (with several
    workers: every worker has warmed up) before any request reaches it. ``on_failure`` is told why a
    start failed (it stops the server); ``on_serving`` once requests reach the app (the server says it
    serves). ``before_listening``: all that before the server listens (a replacement worker of a server
    that is ready: its siblings take the requests meanwhile)."""

    def __init__(self, build: Callable[[], tuple[ModelSet, ASGIApp]], timings: Timings, *,
                 warmup: dict[str, TensorRequest] | None = None, ready: Callable[[], bool] = lambda: True,
                 on_ready: Callable[[], None] = lambda: None, on_failure: Callable[[str], None],
                 on_serving: Callable[[], None] = lambda: None, before_listening: bool = False) -> None:
        self.build, self.timings, self.warmup = build, timings, warmup or {}
        self.before_listening = before_listening
        self.ready, self.on_ready, self.on_failure, self.on_serving = ready, on_ready, on_failure, on_serving
        self.app: ASGIApp | None = None
        self._inner: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._lifespan: asyncio.Task[None] | None = None
        self._start: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.app is not None and scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] == "lifespan":
            return await self._serve_lifespan(receive, send)
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/v2/health/live":
            return await _answer(send, 200, b'{"live":true}')
        await _answer(send, 503, _NOT_READY if path == "/v2/health/ready" else _STARTING,
                      [(b"retry-after", b"1")])

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start = asyncio.create_task(self._starting())
                if self.before_listening:  # uvicorn listens once the startup is complete
                    await asyncio.shield(self._start)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._start is not None:
                    self._start.cancel()
                if self._lifespan is not None:
                    await self._inner.put({"type": "lifespan.shutdown"})
                    await self._lifespan
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _starting(self) -> None:
        try:
            self.timings.mark("imports")
            models, app = await asyncio.to_thread(self.build)
            self.timings.mark("loaded")
            await warm_up(models, self.warmup)
            self.timings.mark("warmup")
            await self._start_inner(app)
            self.on_ready()
            while not self.ready():  # the other workers' warm-up
                await asyncio.sleep(0.01)
            self.app = app
            self.timings.mark("ready")
            log.info("%s", self.timings.line())
            self.on_serving()
        except ModelportError as e:
            self.on_failure(str(e))
        except Exception as e:  # noqa: BLE001 (whatever stops a start is reported, not lost in a task)
            log.exception("The server could not start")
            self.on_failure(f"The server could not start: {type(e).__name__}: {e}")

    async def _start_inner(self, app: ASGIApp) -> None:
        """Run ``app``'s lifespan (its metrics flusher, the prediction log) until shutdown."""
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def send(message: dict[str, Any]) -> None:
            if message["type"].startswith("lifespan.startup.") and not started.done():
                started.set_result(message.get("message", "") if message["type"].endswith("failed") else "")

        self._lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                 self._inner.get, send))
        await self._inner.put({"type": "lifespan.startup"})
        if failure := await started:
            raise ModelportError(f"The server could not start: {failure}")


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class ReadyMarks:
    """With several workers, the server is ready once every one of them has warmed up: each leaves a
    mark in a directory they share. A replacement worker finds the marks of the ones it replaces."""

    def __init__(self, directory: Path, workers: int) -> None:
        self.directory, self.workers, self._all = directory, workers, False

    def mark(self) -> None:
        (self.directory / str(os.getpid())).touch()

    def __call__(self) -> bool:
        self._all = self._all or len(os.listdir(self.directory)) >= self.workers
        return self._all
