"""The adaptive batcher, in-process: batches fail alone, sizes and waits hold, cancellation is harmless."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import pytest

from modelport.serving.batching import BatchConfig, Batcher

T = TypeVar("T")
GUARD_S = 10  # a bound on waits that must end: a hung batcher fails the test instead of hanging it


class Model:
    """Doubles its input; records each call's row count; can be held inside a call until released."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        self.entered.set()
        self.gate.wait(GUARD_S)
        if (x == -1).any():
            raise RuntimeError("the model refuses -1")
        return x * 2


def run(scenario: Callable[[Batcher, Model], Awaitable[T]], max_batch_size: int = 4, max_latency_ms: float = 0.0) -> T:
    model = Model()
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(model, BatchConfig(max_batch_size, max_latency_ms), pool)
        return asyncio.run(asyncio.wait_for(scenario(batcher, model), GUARD_S))


async def held(batcher: Batcher, model: Model) -> asyncio.Task[np.ndarray]:
    """A request whose model call is running and held: what is submitted next queues up behind it."""
    model.gate.clear()
    model.entered.clear()
    first = asyncio.create_task(batcher.submit(np.zeros((1, 2))))
    await asyncio.to_thread(model.entered.wait, GUARD_S)
    return first


def rows(*values: float) -> np.ndarray:
    return np.array([[v, v] for v in values], dtype=np.float64)


def test_a_failing_model_call_fails_exactly_that_batch_and_the_next_request_is_served() -> None:
    async def scenario(batcher: Batcher, model: Model) -> None:
        first = await held(batcher, model)
        bad = asyncio.create_task(batcher.submit(rows(-1)))
        same_batch = asyncio.create_task(batcher.submit(rows(5)))
        await asyncio.sleep(0)  # both queued behind the held call
        model.gate.set()
        np.testing.assert_array_equal(await first, np.zeros((1, 2)))
        for task in (bad, same_batch):
            with pytest.raises(RuntimeError, match="refuses -1"):
                await task
        np.testing.assert_array_equal(await batcher.submit(rows(3)), rows(6))
        assert model.calls == [1, 2, 1]

    run(scenario)


def test_a_failure_in_the_loop_itself_fails_its_batch_and_the_loop_goes_on() -> None:
    async def scenario(batcher: Batcher, model: Model) -> None:
        first = await held(batcher, model)
        # Blocks of different widths cannot be concatenated: that fails in the loop, not the model.
        wide = asyncio.create_task(batcher.submit(np.zeros((1, 3))))
        narrow = asyncio.create_task(batcher.submit(np.zeros((1, 2))))
        await asyncio.sleep(0)
        model.gate.set()
        await first
        for task in (wide, narrow):
            with pytest.raises(ValueError, match="dimensions"):
                await task
        np.testing.assert_array_equal(await batcher.submit(rows(1, 2)), rows(2, 4))

    run(scenario)


def test_no_model_call_gets_more_than_max_batch_size_rows() -> None:
    async def scenario(batcher: Batcher, model: Model) -> None:
        first = await held(batcher, model)
        blocks = [rows(*range(n)) + 10 * i for i, n in enumerate([3, 3, 1, 10])]
        tasks = [asyncio.create_task(batcher.submit(b)) for b in blocks]
        await asyncio.sleep(0)
        model.gate.set()
        await first
        for block, task in zip(blocks, tasks, strict=True):
            np.testing.assert_array_equal(await task, block * 2)
        big = rows(*range(9))  # one request larger than max_batch_size
        np.testing.assert_array_equal(await batcher.submit(big), big * 2)
        assert max(model.calls) <= 4
        assert sum(model.calls) == 1 + 17 + 9
        assert model.calls[-3:] == [4, 4, 1]

    run(scenario)


def test_a_full_batch_does_not_wait_and_a_partial_one_waits_at_most_max_latency() -> None:
    async def full(batcher: Batcher, model: Model) -> float:
        start = time.perf_counter()
        await batcher.submit(rows(1, 2, 3, 4))  # max_batch_size rows: nothing to wait for
        return time.perf_counter() - start

    assert run(full, max_latency_ms=60_000) < GUARD_S

    async def partial(batcher: Batcher, model: Model) -> tuple[float, list[int]]:
        start = time.perf_counter()
        a = asyncio.create_task(batcher.submit(rows(1)))
        b = asyncio.create_task(batcher.submit(rows(2)))  # arrives within the wait: same batch
        await asyncio.gather(a, b)
        return time.perf_counter() - start, model.calls

    elapsed, calls = run(partial, max_latency_ms=200)
    assert calls == [2]
    assert 0.2 <= elapsed < GUARD_S


def test_a_cancelled_waiter_is_left_out_and_the_loop_goes_on() -> None:
    async def scenario(batcher: Batcher, model: Model) -> None:
        first = await held(batcher, model)
        gone = asyncio.create_task(batcher.submit(rows(7)))
        kept = asyncio.create_task(batcher.submit(rows(8)))
        await asyncio.sleep(0)
        gone.cancel()
        model.gate.set()
        await first
        np.testing.assert_array_equal(await kept, rows(16))
        assert gone.cancelled()
        np.testing.assert_array_equal(await batcher.submit(rows(9)), rows(18))
        assert model.calls == [1, 1, 1]  # the cancelled rows never reached the model

    run(scenario)
