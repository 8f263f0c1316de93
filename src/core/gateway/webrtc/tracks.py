"""The two media paths of a peer: the reply track it hears, and the pump that feeds its microphone to STT.

:class:`ReplyTrack` is what aiortc's sender pulls: one 20 ms 48 kHz mono frame per tick, on a
real-time clock (a late tick is caught up without bursting more than ``MAX_LAG_S``), taken from
a :class:`PlayoutBuffer` (silence when idle). :func:`pump_microphone` reads the client's
decoded track until it ends, turns it into 16 kHz frames and hands them to a callback.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from core.gateway.webrtc.audio import TRACK_FRAME_SAMPLES, TRACK_RATE, InboundAudio, PlayoutBuffer

TIME_BASE = fractions.Fraction(1, TRACK_RATE)
MAX_LAG_S = 0.2
"""A sender that fell this far behind the clock restarts it rather than sending a burst of frames."""


class ReplyTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self, buffer: PlayoutBuffer) -> None:
        super().__init__()
        self.buffer = buffer
        self.frames_sent = 0
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += TRACK_FRAME_SAMPLES
            due = self._start + self._pts / TRACK_RATE
            if now - due > MAX_LAG_S:
                self._start = now - self._pts / TRACK_RATE  # restart the clock at this frame
            elif due > now:
                await asyncio.sleep(due - now)
        frame = av.AudioFrame(format="s16", layout="mono", samples=TRACK_FRAME_SAMPLES)
        frame.planes[0].update(self.buffer.pop())
        frame.pts, frame.sample_rate, frame.time_base = self._pts, TRACK_RATE, TIME_BASE
        self.frames_sent += 1
        return frame


async def pump_microphone(
    track: MediaStreamTrack, inbound: InboundAudio, feed: Callable[[bytes], Awaitable[None]]
) -> None:
    """Until the track ends: its frames as 16 kHz 20 ms PCM16 frames, in order, to ``feed``."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        for pcm in inbound.push(frame):
            await feed(pcm)
