"""What a REST turn hands back: the collected reply (text + PCM16) and a cache of reply WAVs.

:class:`CollectingSink` is the REST route's EventSink: it keeps the reply text, the audio and
any error events of one turn. :class:`ReplyAudioCache` keeps finished reply WAVs for
``GET /api/audio/{id}.wav`` for ``ttl_s`` seconds, bounded by count and bytes (oldest dropped).
"""

from __future__ import annotations

import io
import time
import uuid
import wave
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MAX_REPLY_AUDIO_BYTES = 64 * 1024 * 1024
"""Audio beyond this in one reply is dropped (about 20 minutes of 24 kHz PCM16)."""


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """PCM16 mono little-endian as an in-memory WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) - len(pcm) % 2])
    return buf.getvalue()


class CollectingSink:
    """EventSink that gathers one turn's output for a single REST reply."""

    def __init__(self, default_rate: int) -> None:
        self.text_parts: list[str] = []
        self.audio = bytearray()
        self.sample_rate = default_rate
        self.user_text = ""
        self.errors: list[dict[str, Any]] = []
        self.latency: dict[str, Any] = {}
        self.complete: dict[str, Any] = {}
        self.truncated = False

    async def send_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "llm_text":
            self.text_parts.append(str(event.get("delta", "")))
        elif kind == "audio_start" and event.get("sample_rate"):
            self.sample_rate = int(event["sample_rate"])
        elif kind == "transcript" and event.get("final", True):
            self.user_text = str(event.get("text", ""))
        elif kind == "error":
            self.errors.append({k: v for k, v in event.items() if k != "type"})
        elif kind == "latency":
            self.latency = {k: v for k, v in event.items() if k != "type"}
        elif kind == "turn_complete":
            self.complete = dict(event)

    async def send_audio(self, pcm: bytes) -> None:
        if len(self.audio) + len(pcm) > MAX_REPLY_AUDIO_BYTES:
            self.truncated = True
            return
        self.audio += pcm

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def wav(self) -> bytes:
        return wav_bytes(bytes(self.audio), self.sample_rate)


class ReplyAudioCache:
    def __init__(
        self, ttl_s: float, *, max_items: int = 256, max_bytes: int = 256 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_items, self.max_bytes = ttl_s, max_items, max_bytes
        self._clock = clock
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    def put(self, wav: bytes) -> str:
        """Keep ``wav``; returns its id (a 32-character hex string)."""
        self._expire()
        audio_id = uuid.uuid4().hex
        self._items[audio_id] = (wav, self._clock() + self.ttl_s)
        self._bytes += len(wav)
        while self._items and (len(self._items) > self.max_items or self._bytes > self.max_bytes):
            _, (old, _) = self._items.popitem(last=False)
            self._bytes -= len(old)
        return audio_id

    def get(self, audio_id: str) -> bytes | None:
        self._expire()
        item = self._items.get(audio_id)
        return item[0] if item else None

    def _expire(self) -> None:
        now = self._clock()
        while self._items:
            audio_id, (wav, until) = next(iter(self._items.items()))
            if until > now:
                break
            del self._items[audio_id]
            self._bytes -= len(wav)

    def __len__(self) -> int:
        return len(self._items)
