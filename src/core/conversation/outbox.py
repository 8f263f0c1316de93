"""A bounded send queue between a conversation and a socket: the EventSink of streaming transports.

Turns put events and audio here and never wait for the client; one writer task per socket
takes them off in order (:meth:`Outbox.get`). The queue is bounded:

- audio beyond ``max_audio_bytes`` waiting to be written is dropped, and the client gets one
  ``error`` event (``RESOURCE_EXHAUSTED``, ``stage: "send"``) per reply saying so;
- events beyond ``max_events`` waiting mean the client reads nothing at all: the outbox
  overflows (:attr:`Outbox.overflowed` is set) and the transport should close the connection.

A ``flush`` event (barge-in) drops the audio still waiting, so the client stops hearing the
interrupted reply as soon as possible.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

Item = dict[str, Any] | bytes


class Outbox:
    def __init__(self, *, max_audio_bytes: int = 4 * 1024 * 1024, max_events: int = 4096) -> None:
        self.max_audio_bytes, self.max_events = max_audio_bytes, max_events
        self.closed = False
        self.overflowed = asyncio.Event()
        """Set when the client stopped reading (``max_events`` waiting): the transport should hang up."""
        self.dropped_audio_bytes = 0
        self._items: deque[Item] = deque()
        self._audio_bytes = 0
        self._events = 0
        self._warned = False
        self._ready = asyncio.Event()

    @property
    def pending_audio_bytes(self) -> int:
        return self._audio_bytes

    async def send_event(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        kind = event.get("type")
        if kind == "flush":
            self._drop_audio()
        elif kind == "audio_start":
            self._warned = False
        if self._events >= self.max_events:
            self.overflowed.set()
            self.close()
            return
        self._push(event)

    async def send_audio(self, pcm: bytes) -> None:
        if self.closed or not pcm:
            return
        if self._audio_bytes + len(pcm) > self.max_audio_bytes:
            self.dropped_audio_bytes += len(pcm)
            if not self._warned:
                self._warned = True
                await self.send_event({
                    "type": "error", "code": "RESOURCE_EXHAUSTED", "stage": "send",
                    "message": "the client is not reading fast enough: reply audio was dropped; read the socket "
                               "continuously and buffer playback on the client side",
                })
            return
        self._push(pcm)

    async def get(self) -> Item | None:
        """The next item to write, in order; None once the outbox is closed and empty."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, bytes):
            self._audio_bytes -= len(item)
        else:
            self._events -= 1
        return item

    def close(self) -> None:
        """No more items are accepted; the writer drains what is queued, then gets None."""
        self.closed = True
        self._ready.set()

    def _push(self, item: Item) -> None:
        self._items.append(item)
        if isinstance(item, bytes):
            self._audio_bytes += len(item)
        else:
            self._events += 1
        self._ready.set()

    def _drop_audio(self) -> None:
        if not self._audio_bytes:
            return
        self.dropped_audio_bytes += self._audio_bytes
        self._items = deque(i for i in self._items if not isinstance(i, bytes))
        self._audio_bytes = 0
