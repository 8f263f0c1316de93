"""Run a Plan's pieces on worker threads, one after another, and hand each one back as soon as it is ready.

Engines are blocking, so every piece is one job on a small thread pool (``max_concurrency``
workers); the pieces of concurrent requests interleave in arrival order. While piece *i* is
being sent, piece *i + 1* is already synthesising. When the consumer stops (the client
cancelled, the stream was closed), nothing further is started: the queued job is cancelled,
a flag stops a job that had not begun, and only the piece already inside the engine finishes.
Admission is per request: beyond ``max_concurrency + max_queue`` requests in progress the next
one is refused with RESOURCE_EXHAUSTED at once, never mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from core.errors import ResourceExhausted
from services.tts.audio import PAUSES, encode, resample, silence
from services.tts.engine import TtsEngine
from services.tts.requests import Plan
from services.tts.text_split import Piece

T = TypeVar("T")


class StopRequested(Exception):
    """A job that was queued when its request went away; never reaches a caller."""


@dataclass(frozen=True, slots=True)
class RenderedPiece:
    index: int
    piece: Piece
    samples: np.ndarray
    """float32 at the plan's output rate, with the pause that follows the piece (none after the last)."""
    audio: bytes
    """``samples`` encoded in the plan's format; empty when the caller encodes the whole clip itself."""

    def duration_s(self, rate: int) -> float:
        return len(self.samples) / rate


class Runner:
    """The worker threads and the per-request admission count."""

    def __init__(self, max_concurrency: int, max_queue: int, name: str) -> None:
        self.max_concurrency, self.max_queue = max_concurrency, max_queue
        self._pool = ThreadPoolExecutor(max_concurrency, f"{name}-synth")
        self._active = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self._active >= self.max_concurrency + self.max_queue:
            raise ResourceExhausted(
                f"TTS is busy: {self._active} request(s) in progress, the most this service takes "
                f"(options.max_concurrency {self.max_concurrency} + options.max_queue {self.max_queue}); "
                "retry shortly", retry_after_s=1.0,
            )
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1

    async def run(self, fn: Callable[[], T]) -> T:
        ctx = contextvars.copy_context()  # keeps the request id on log lines from the worker
        return await asyncio.get_running_loop().run_in_executor(self._pool, ctx.run, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def render_pieces(
    plan: Plan, engine: TtsEngine, runner: Runner, *, encode_each: bool, on_piece: Callable[[], None] = lambda: None
) -> AsyncGenerator[RenderedPiece, None]:
    """Each piece of ``plan`` in order, synthesised, resampled, padded and (optionally) encoded.

    ``on_piece`` runs on the worker after each engine call (metrics)."""
    stop = threading.Event()
    last = len(plan.pieces) - 1

    def work(index: int) -> RenderedPiece:
        if stop.is_set():
            raise StopRequested
        piece = plan.pieces[index]
        samples = engine.synthesize(piece.text, plan.voice, plan.language, plan.speed)
        on_piece()
        samples = resample(samples, plan.engine_rate, plan.sample_rate)
        if index < last and PAUSES[piece.pause]:
            samples = np.concatenate([samples, silence(PAUSES[piece.pause], plan.sample_rate)])
        audio = encode(samples, plan.sample_rate, plan.format) if encode_each else b""
        return RenderedPiece(index, piece, samples, audio)

    pending: asyncio.Future[RenderedPiece] = asyncio.ensure_future(runner.run(functools.partial(work, 0)))
    try:
        for index in range(len(plan.pieces)):
            rendered = await pending
            if index < last:
                pending = asyncio.ensure_future(runner.run(functools.partial(work, index + 1)))
            yield rendered
    finally:
        stop.set()
        if not pending.done():
            pending.cancel()  # a queued job never starts; a running one finishes and is dropped
        elif not pending.cancelled():
            pending.exception()  # a prefetched piece that failed after the consumer left: seen, not logged
