"""Event buffers for HTTP polling clients: one bounded, numbered log of events per session.

A polling turn runs in the background with a :class:`PollSink`; its events (the same JSON events
a WebSocket client gets) are appended to the session's :class:`PollBuffer` with increasing
``seq`` numbers, and clients long-poll ``after=<last seq seen>``. Reply audio becomes ``audio``
events: ``{"type": "audio", "format": "pcm_s16le", "sample_rate": R, "data": <base64>}``, one per
chunk the TTS produced, in order.

Memory is bounded per session (``max_events`` and ``max_bytes``; the oldest events go first and a
client that fell behind is told how many it missed) and across sessions (``max_buffers``; idle
buffers are dropped after ``idle_s``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from core.errors import Overloaded, RequestRejected
from core.logs import turn_id_var

log = logging.getLogger("ultravox.sessions.polling")
MAX_EVENTS_PER_REPLY = 256


class TurnInProgress(RequestRejected):
    """A turn is already running in this session (409)."""

    code = "ABORTED"
    http_status = 409


class PollBuffer:
    def __init__(self, *, max_events: int = 1024, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.max_events, self.max_bytes = max_events, max_bytes
        self.seq = 0
        self.dropped = 0
        self.last_used = time.monotonic()
        self._events: deque[tuple[int, dict[str, Any], int]] = deque()
        self._bytes = 0
        self._changed = asyncio.Event()

    def push(self, event: dict[str, Any]) -> int:
        self.seq += 1
        size = 128 + sum(len(v) for v in event.values() if isinstance(v, str))
        self._events.append((self.seq, {"seq": self.seq, **event}, size))
        self._bytes += size
        while len(self._events) > 1 and (len(self._events) > self.max_events or self._bytes > self.max_bytes):
            _, _, gone = self._events.popleft()
            self._bytes -= gone
            self.dropped += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return self.seq

    @property
    def first_seq(self) -> int:
        return self._events[0][0] if self._events else self.seq + 1

    def after(self, seq: int) -> dict[str, Any]:
        """Events numbered above ``seq`` (at most MAX_EVENTS_PER_REPLY) and where to continue.

        A ``seq`` beyond the newest (a buffer that restarted, e.g. after main restarted) reads
        from the start and says ``reset: true``.
        """
        self.last_used = time.monotonic()
        reset = seq > self.seq
        seq = 0 if reset else max(seq, 0)
        out = [e for s, e, _ in self._events if s > seq][:MAX_EVENTS_PER_REPLY]
        nxt = out[-1]["seq"] if out else seq
        return {
            "events": out, "next": nxt, "missed": max(0, self.first_seq - seq - 1),
            "more": nxt < self.seq, "reset": reset,
        }

    async def wait_after(self, seq: int, wait_s: float) -> dict[str, Any]:
        """Like :meth:`after`, but waits up to ``wait_s`` for a first event when none is there yet."""
        if self.seq in (0, seq) and wait_s > 0:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await changed.wait()
        return self.after(seq)

    def __len__(self) -> int:
        return len(self._events)


class PollSink:
    """EventSink of one polling turn: events and audio go to the session's buffer.

    Every event carries the ``turn_id`` of the turn it belongs to (the orchestrator's, read from
    the logging context it runs in), so a client can tell turns apart in one buffer.
    """

    def __init__(self, buffer: PollBuffer, default_rate: int) -> None:
        self.buffer, self.rate = buffer, default_rate

    async def send_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "audio_start" and event.get("sample_rate"):
            self.rate = int(event["sample_rate"])
        self.buffer.push({**event, "turn_id": event.get("turn_id") or turn_id_var.get()})

    async def send_audio(self, pcm: bytes) -> None:
        self.buffer.push({
            "type": "audio", "turn_id": turn_id_var.get(), "format": "pcm_s16le", "sample_rate": self.rate,
            "data": base64.b64encode(pcm).decode("ascii"),
        })


class PollRegistry:
    """The buffers and background turns of every polling session."""

    def __init__(
        self, *, max_buffers: int, idle_s: float, max_events: int = 1024, max_bytes: int = 4 * 1024 * 1024
    ) -> None:
        self.max_buffers, self.idle_s = max_buffers, idle_s
        self._limits = {"max_events": max_events, "max_bytes": max_bytes}
        self._buffers: OrderedDict[str, PollBuffer] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}

    def buffer(self, session_id: str) -> PollBuffer:
        buf = self._buffers.get(session_id)
        if buf is None:
            self._prune()
            if len(self._buffers) >= self.max_buffers:
                raise Overloaded(
                    f"too many polling sessions ({self.max_buffers}); retry later", retry_after_s=5.0
                )
            buf = self._buffers[session_id] = PollBuffer(**self._limits)
        self._buffers.move_to_end(session_id)
        buf.last_used = time.monotonic()
        return buf

    def running(self, session_id: str) -> bool:
        task = self._running.get(session_id)
        return task is not None and not task.done()

    def start(
        self, session_id: str, turn: Callable[[], Awaitable[None]], *, context: contextvars.Context | None = None
    ) -> asyncio.Task[None]:
        """Run ``turn`` in the background (in ``context``); TurnInProgress if the session runs one."""
        if self.running(session_id):
            raise TurnInProgress(
                f"a turn is already running in session {session_id!r}; wait for its turn_complete event"
            )
        task = asyncio.create_task(self._run(turn), name=f"poll-turn-{session_id}", context=context)
        self._running[session_id] = task

        def forget(t: asyncio.Task[None]) -> None:
            if self._running.get(session_id) is t:
                del self._running[session_id]
        task.add_done_callback(forget)
        return task

    @staticmethod
    async def _run(turn: Callable[[], Awaitable[None]]) -> None:
        await turn()

    def drop(self, session_id: str) -> None:
        """Forget a session's buffer (its turn, if any, is cancelled)."""
        self._buffers.pop(session_id, None)
        task = self._running.pop(session_id, None)
        if task is not None:
            task.cancel()

    def _prune(self) -> None:
        cutoff = time.monotonic() - self.idle_s
        for sid in [s for s, b in self._buffers.items() if b.last_used < cutoff and not self.running(s)]:
            del self._buffers[sid]

    async def close(self) -> None:
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._running.clear()
        self._buffers.clear()
