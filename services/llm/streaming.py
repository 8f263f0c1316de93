"""Bridges a blocking token loop in a worker thread to an async iterator on the event loop.

llama.cpp generates in a plain thread (it holds the GIL only between tokens); each piece is
handed to the loop with ``call_soon_threadsafe`` so the event loop never blocks. Closing or
cancelling the iterator sets the call's cancel flag, which the worker checks once per token,
and then waits for the worker to return: the engine is idle again when the iterator is done.
One single-thread executor per engine keeps generations strictly one at a time.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor

from services.llm.engine import Finish

Item = str | Finish
Emit = Callable[[Item], None]


async def stream_from_thread(
    pool: ThreadPoolExecutor, work: Callable[[Emit], Finish], cancel: threading.Event
) -> AsyncGenerator[Item, None]:
    """Run ``work(emit)`` on ``pool``; yield what it emits, then the Finish it returns."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Item | BaseException] = asyncio.Queue()

    def put(item: Item | BaseException) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def run() -> None:
        try:
            put(work(put))
        except BaseException as e:
            put(e)

    ctx = contextvars.copy_context()  # keeps the request id on the worker's log lines
    done = loop.run_in_executor(pool, ctx.run, run)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Finish):
                return
    finally:
        cancel.set()
        # Shielded: a second cancellation stops the wait, not the worker, which sees the flag
        # within a token; the single-thread pool keeps the next generation behind it anyway.
        await asyncio.shield(done)
