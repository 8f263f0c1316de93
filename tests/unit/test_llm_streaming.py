"""stream_from_thread: a blocking token loop on a worker thread, cancelled within a token or two."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.llm.engine import Finish
from services.llm.streaming import Emit, stream_from_thread

TOKEN_S = 0.01


class Worker:
    """A stand-in for llama.cpp's loop: one token per TOKEN_S, checking the cancel flag per token."""

    def __init__(self, cancel: threading.Event, tokens: int = 10_000) -> None:
        self.cancel, self.tokens = cancel, tokens
        self.produced = 0
        self.after_cancel = 0
        self.done = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, emit: Emit) -> Finish:
        self.threads.add(threading.current_thread().name)
        try:
            for i in range(self.tokens):
                if self.cancel.is_set():
                    return Finish("cancelled", 3, self.produced)
                time.sleep(TOKEN_S)
                self.produced += 1
                emit(f"t{i}")
            return Finish("length", 3, self.produced)
        finally:
            self.done.set()


async def test_pieces_arrive_in_order_then_the_finish() -> None:
    with ThreadPoolExecutor(1, "llama") as pool:
        cancel = threading.Event()
        items = [x async for x in stream_from_thread(pool, Worker(cancel, tokens=5), cancel)]
    assert items == ["t0", "t1", "t2", "t3", "t4", Finish("length", 3, 5)]


async def test_closing_the_stream_stops_the_worker_within_a_token() -> None:
    with ThreadPoolExecutor(1, "llama") as pool:
        cancel = threading.Event()
        worker = Worker(cancel)
        stream = stream_from_thread(pool, worker, cancel)
        assert [await anext(stream) for _ in range(3)] == ["t0", "t1", "t2"]
        await stream.aclose()
        # aclose returns only once the worker has returned: the engine is idle again
        assert cancel.is_set() and worker.done.is_set()
        assert worker.produced <= 3 + 2  # it saw the flag within a token or two
        assert worker.threads == {next(iter(worker.threads))} and next(iter(worker.threads)).startswith("llama")


async def test_task_cancellation_stops_the_worker_too() -> None:
    with ThreadPoolExecutor(1, "llama") as pool:
        cancel = threading.Event()
        worker = Worker(cancel)

        async def consume() -> None:
            async for _ in stream_from_thread(pool, worker, cancel):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert worker.done.is_set() and cancel.is_set()


async def test_worker_errors_surface_on_the_loop_and_generations_never_overlap() -> None:
    def boom(emit: Emit) -> Finish:
        emit("partial")
        raise ValueError("engine exploded")

    with ThreadPoolExecutor(1, "llama") as pool:
        cancel = threading.Event()
        stream = stream_from_thread(pool, boom, cancel)
        assert await anext(stream) == "partial"
        with pytest.raises(ValueError, match="engine exploded"):
            await anext(stream)
        # two streams at once on one engine pool run strictly one after the other
        c1, c2 = threading.Event(), threading.Event()
        w1, w2 = Worker(c1, tokens=5), Worker(c2, tokens=5)
        spans: list[tuple[str, float]] = []

        async def run(name: str, w: Worker, c: threading.Event) -> None:
            async for item in stream_from_thread(pool, w, c):
                spans.append((name, time.monotonic()))
                assert item is not None

        await asyncio.gather(run("a", w1, c1), run("b", w2, c2))
        names = [n for n, _ in spans]
        assert names == ["a"] * 6 + ["b"] * 6
