"""Audio between a WebRTC track and the conversation: 16 kHz frames in, a paced 48 kHz playout buffer out.

In: the receiver's decoded Opus frames (``av.AudioFrame``, 48 kHz, stereo) are downmixed and
resampled to mono PCM16 16 kHz by :class:`InboundAudio` and cut into the 20 ms frames the STT
stream takes, the same frames a WebSocket client sends.

Out: the reply arrives from TTS already at 48 kHz (the orchestrator asks for the track's rate,
so nothing is resampled twice) in pieces far faster than real time. :class:`PlayoutBuffer`
holds it until the track takes one 20 ms frame per tick; an empty buffer plays silence, and a
``flush`` (barge-in) drops everything still waiting at once. It also notes how long the first
frame of each reply waited before it went out (the latency report's ``transport_jitter_s``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import av

TRACK_RATE = 48000
FRAME_S = 0.02
TRACK_FRAME_SAMPLES = int(TRACK_RATE * FRAME_S)
TRACK_FRAME_BYTES = TRACK_FRAME_SAMPLES * 2
STT_FRAME_BYTES = int(16000 * FRAME_S) * 2
MAX_PLAYOUT_S = 120.0
"""Reply audio waiting to be played beyond this is dropped (a reply is far shorter)."""


class InboundAudio:
    """Decoded track frames -> PCM16 16 kHz mono in 20 ms frames, with the time spent resampling."""

    def __init__(self, rate: int = 16000, frame_bytes: int = STT_FRAME_BYTES) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        self._frame_bytes = frame_bytes
        self._pending = bytearray()
        self.resample_s = 0.0
        """Seconds of CPU (wall) time spent resampling so far."""

    def push(self, frame: av.AudioFrame) -> list[bytes]:
        """The complete 20 ms frames now available (a remainder waits for the next frame)."""
        started = time.perf_counter()
        for out in self._resampler.resample(frame):
            self._pending += bytes(out.planes[0])[: out.samples * 2]
        self.resample_s += time.perf_counter() - started
        n = len(self._pending) // self._frame_bytes * self._frame_bytes
        frames = [bytes(self._pending[i : i + self._frame_bytes]) for i in range(0, n, self._frame_bytes)]
        del self._pending[:n]
        return frames


class PlayoutBuffer:
    """Reply PCM16 waiting for the outgoing track, taken one frame per tick (see the module docstring)."""

    def __init__(self, frame_bytes: int = TRACK_FRAME_BYTES, *, max_bytes: int = int(MAX_PLAYOUT_S * TRACK_RATE * 2)):
        self.frame_bytes, self.max_bytes = frame_bytes, max_bytes
        self.dropped_bytes = 0
        self.first_wait_s: float | None = None
        """How long the first frame of the current reply waited in the buffer (None until it went out)."""
        self.first_frame_out = asyncio.Event()
        """Set when the current reply's first frame has gone out (or there is no reply waiting)."""
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._reply_pushed_at: float | None = None
        self._new_reply = False
        self.paused = False
        """Playback held (a possible interruption is being checked): ticks play silence, audio stays queued."""

    @property
    def pending_bytes(self) -> int:
        return self._size

    @property
    def awaiting_first_frame(self) -> bool:
        """Audio of the current reply is queued and none of it has gone out yet."""
        return self._reply_pushed_at is not None and self.first_wait_s is None

    def start_reply(self) -> None:
        """The next audio pushed opens a new reply: its first frame's wait is measured afresh."""
        self._new_reply = True
        self._reply_pushed_at = None
        self.first_wait_s = None
        self.first_frame_out.clear()

    def push(self, pcm: bytes, now: float | None = None) -> bool:
        """Queue reply audio; False when it was dropped (the buffer is full)."""
        if not pcm:
            return True
        if self._size + len(pcm) > self.max_bytes:
            self.dropped_bytes += len(pcm)
            return False
        if self._new_reply:
            self._new_reply = False
            self._reply_pushed_at = time.monotonic() if now is None else now
        self._chunks.append(pcm)
        self._size += len(pcm)
        return True

    def pop(self, now: float | None = None) -> bytes:
        """One frame: queued audio, padded with silence when less than a frame waits (all silence when idle)."""
        if not self._size or self.paused:
            return bytes(self.frame_bytes)
        if self._reply_pushed_at is not None and self.first_wait_s is None:
            self.first_wait_s = max(0.0, (time.monotonic() if now is None else now) - self._reply_pushed_at)
            self.first_frame_out.set()
        out = bytearray()
        while self._chunks and len(out) < self.frame_bytes:
            chunk = self._chunks.popleft()
            take = self.frame_bytes - len(out)
            out += chunk[:take]
            if len(chunk) > take:
                self._chunks.appendleft(chunk[take:])
        self._size -= len(out)
        return bytes(out) + bytes(self.frame_bytes - len(out))

    def flush(self) -> int:
        """Drop everything waiting (barge-in); returns the bytes dropped."""
        dropped = self._size
        self._chunks.clear()
        self._size = 0
        self._new_reply = False
        if self.first_wait_s is None:
            self._reply_pushed_at = None
        self.first_frame_out.set()
        return dropped
