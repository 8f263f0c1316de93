"""Where a WebRTC call's conversation output goes: events to the ``events`` data channel, audio to the track.

The :class:`WebRtcSink` is the conversation's :class:`EventSink`. Reply audio goes straight
into the :class:`PlayoutBuffer` the outgoing track plays from; a ``flush`` empties it at once.
Events queue in a bounded :class:`Outbox` (so the turn never waits for the network) and one
writer task sends them as JSON text once the data channel is there; events from before it
opened (``ready``) wait for it. A client that stops reading the channel (its unsent bytes pass
``MAX_BUFFERED_BYTES``, or the outbox overflows) sets ``outbox.overflowed``: the peer hangs up.

Each ``latency`` event gets the transport's own share of the turn (docs/webrtc.md):

- ``transport_jitter_s``: how long the reply's first frame waited in the playout buffer before
  the track took it (None when the turn sent no audio). The send side's wait, not a network
  jitter buffer: those are at the receivers (docs/webrtc.md, "Latency");
- ``transport_resample_s``: time spent resampling for this turn: the microphone audio from the
  moment speech was detected (``speech_started``) to the report (0 for a typed turn); the
  reply needs none, it comes from TTS at the track's 48 kHz.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

from core.conversation.outbox import Outbox
from core.gateway.webrtc.audio import InboundAudio, PlayoutBuffer

log = logging.getLogger("ultravox.main.webrtc")
_JITTER = "_jitter"
MAX_BUFFERED_BYTES = 4 * 1024 * 1024
"""Events the channel could not send yet beyond this: the client stopped reading (the peer hangs up)."""
FIRST_FRAME_WAIT_S = 1.0
"""A latency report waits at most this long for the reply's first frame to go out (it is ~20 ms)."""


class Channel(Protocol):
    """What the sink needs of an ``RTCDataChannel``."""

    @property
    def readyState(self) -> str: ...

    @property
    def bufferedAmount(self) -> int: ...

    def send(self, data: str) -> None: ...


class WebRtcSink:
    def __init__(self, buffer: PlayoutBuffer, inbound: InboundAudio) -> None:
        self.buffer, self.inbound = buffer, inbound
        self.outbox = Outbox()
        self.events_sent = 0
        self._writer: asyncio.Task[None] | None = None
        self._reply_open = False
        self._warned_drop = False
        self._resample_from: float | None = None

    # ---- EventSink ----------------------------------------------------------------------------

    async def send_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "flush":
            self.buffer.flush()
            self.buffer.paused = False
        elif kind in ("pause", "resume"):
            self.buffer.paused = kind == "pause"
        elif kind == "audio_start":
            self.buffer.start_reply()
            self.buffer.paused = False
            self._reply_open, self._warned_drop = True, False
        elif kind == "speech_started":
            self._resample_from = self.inbound.resample_s
        elif kind == "latency":
            event = self._with_resample(event)
        await self.outbox.send_event(event)

    async def send_audio(self, pcm: bytes) -> None:
        if self.outbox.closed or self.buffer.push(pcm) or self._warned_drop:
            return
        self._warned_drop = True
        await self.outbox.send_event({
            "type": "error", "code": "RESOURCE_EXHAUSTED", "stage": "send",
            "message": f"more than {self.buffer.max_bytes // 96000} s of reply audio is waiting to play; "
                       "the rest of this reply was dropped",
        })

    # ---- the data channel ---------------------------------------------------------------------

    def attach(self, channel: Channel) -> None:
        """Start sending queued and future events on ``channel`` (once; later channels are ignored)."""
        if self._writer is None and not self.outbox.closed:
            self._writer = asyncio.create_task(self._write(channel), name="webrtc-events")

    async def close(self, drain_s: float = 1.0) -> None:
        """No more events; what is queued is sent for up to ``drain_s`` (an ``ended`` event, say)."""
        self.outbox.close()
        if self._writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), drain_s)
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self.buffer.flush()

    async def _write(self, channel: Channel) -> None:
        while (item := await self.outbox.get()) is not None:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "latency":
                item = await self._with_jitter(item)
            if channel.readyState != "open":
                return
            if channel.bufferedAmount > MAX_BUFFERED_BYTES:
                self.outbox.overflowed.set()
                return
            try:
                channel.send(json.dumps(item, separators=(",", ":"), ensure_ascii=False))
            except Exception as e:  # the association went away mid-send
                log.debug("webrtc event writer stopped: %s", e)
                return
            self.events_sent += 1

    def _with_resample(self, event: dict[str, Any]) -> dict[str, Any]:
        """The report plus ``transport_resample_s``; ``_jitter`` asks the writer to add the jitter."""
        start = self._resample_from
        resample = self.inbound.resample_s - start if start is not None else 0.0
        report = {**event.get("report", {}), "transport_resample_s": round(resample, 4), "transport_jitter_s": None}
        out = {**event, "report": report, _JITTER: self._reply_open}
        self._reply_open, self._resample_from = False, None
        return out

    async def _with_jitter(self, event: dict[str, Any]) -> dict[str, Any]:
        """Wait (briefly) for the reply's first frame to go out and add how long it waited."""
        if not event.pop(_JITTER, False):
            return event
        if self.buffer.awaiting_first_frame:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.buffer.first_frame_out.wait(), FIRST_FRAME_WAIT_S)
        if (wait := self.buffer.first_wait_s) is not None:
            event["report"]["transport_jitter_s"] = round(wait, 4)
        return event
