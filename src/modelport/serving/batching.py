"""Adaptive batching: requests that arrive while the model is busy run together as one call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class BatchConfig:
    """Batching settings; a field left as None takes the model's own default (see ``over``)."""

    max_batch_size: int | None = None  # 1 turns batching off: the model is called inline, per request
    max_latency_ms: float | None = None  # how long a batch may wait for more rows once the model is free

    @property
    def enabled(self) -> bool:
        return (self.max_batch_size or 1) > 1

    def over(self, default: Mapping[str, Any] | None) -> BatchConfig:
        """These settings where they are given, else the model's stored default (image models
        have one), else off."""
        default = default or {}
        return BatchConfig(
            max_batch_size=self.max_batch_size if self.max_batch_size is not None else default.get("max_batch_size", 1),
            max_latency_ms=self.max_latency_ms if self.max_latency_ms is not None else default.get("max_latency_ms", 0.0),
        )


class Batcher:
    """Queues row blocks, runs ``fn`` on their concatenation in ``executor``, splits the result.

    The event loop keeps accepting and decoding requests while a batch runs in the executor,
    so the next batch fills up by itself under load: no fixed wait is needed for batching to help.
    A batch that fails fails its own requests only: the loop goes on with the next one.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], config: BatchConfig, executor: Executor,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.fn = fn
        self.config = config
        self.max_size = config.max_batch_size or 1
        self.executor = executor
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        if self._task is None or self._task.done():  # first use, or a loop that died anyway: start one
            if self._queue is None:
                self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._queue is not None
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((rows, future))
        return await future

    async def _run(self) -> None:
        while True:
            items = await self._collect()
            try:
                await self._execute(items)
            except Exception as e:  # noqa: BLE001 (any failure belongs to this batch's requests, not the loop)
                _fail(items, e)

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        """The next batch: whatever is queued, up to max_batch_size rows, waiting at most
        max_latency_ms for more once the first block is in."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        items = [await self._queue.get()]
        size = len(items[0][0])
        deadline = loop.time() + (self.config.max_latency_ms or 0) / 1000
        while size < self.max_size:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                items.append(self._queue.get_nowait())
            size += len(items[-1][0])
        return items

    async def _execute(self, items: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        live = [(rows, fut) for rows, fut in items if not fut.cancelled()]
        if not live:
            return
        batch = live[0][0] if len(live) == 1 else np.concatenate([rows for rows, _ in live])
        loop = asyncio.get_running_loop()
        outs = []
        # A block larger than max_batch_size (one big request, or the last block that tipped the
        # batch over) runs as several model calls of at most max_batch_size rows.
        for start in range(0, max(len(batch), 1), self.max_size):
            chunk = batch[start:start + self.max_size]
            self.on_batch(len(chunk))
            outs.append(await loop.run_in_executor(self.executor, self.fn, chunk))
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        start = 0
        for rows, fut in live:
            end = start + len(rows)
            if not fut.done():
                fut.set_result(out[start:end])
            start = end


def _fail(items: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], error: Exception) -> None:
    for _, fut in items:
        if not fut.done():
            fut.set_exception(error)
