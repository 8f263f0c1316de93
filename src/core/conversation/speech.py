"""A reply's voice: each chunk to TTS as soon as it is cut, audio to the sink strictly in chunk order.

:meth:`SpeechOutput.say` starts the chunk's ``SynthesizeStream`` at once (at most ``parallel``
in flight, so the next chunk is queued at the service while the current one plays out), and
one sender task forwards audio in chunk order, each piece as soon as it arrives, in frames of
at most ``FRAME_S``. The first audio sent opens the reply with ``audio_start``. A TTS failure
is reported once (an ``error`` event with ``stage: "tts"``) and silences the rest of the
reply; the text has already reached the client as ``llm_text``. The sender keeps a playback
timeline (where each chunk starts in the reply's audio), so a barge-in can tell which part of
the reply the user actually heard. A *paused* reply (:meth:`SpeechOutput.pause`, while the
conversation finds out whether a noise was a real interruption) keeps generating and sending; the
client holds playback, and the time spent paused moves the playback timeline on resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.conversation.types import EventSink, LatencyReport
from core.errors import CallError, ServiceFailed
from core.managers.hub import CommunicationManager
from uvpb import tts_pb2

FRAME_S = 0.1
"""Longest binary audio frame sent to a client, in seconds of audio."""
TTS_DEADLINE_S = 60.0


@dataclass(slots=True)
class _Chunk:
    text: str
    audio: asyncio.Queue[tuple[bytes, float] | BaseException | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    start_s: float = -1.0
    """Where this chunk's audio starts in the reply (seconds of audio sent before it); -1: none sent."""


class SpeechOutput:
    def __init__(
        self, hub: CommunicationManager, service: str, sink: EventSink, report: LatencyReport, *,
        voice: str, engine: str, language: str, out_rate: int, log: logging.Logger,
        metadata: Mapping[str, str] | None = None, parallel: int = 2, keep_audio: bool = False,
    ) -> None:
        """``keep_audio`` keeps a copy of everything sent in :attr:`audio` (for recordings)."""
        self.hub, self.service, self.sink, self.report, self.log = hub, service, sink, report, log
        self.voice, self.engine, self.language, self.out_rate = voice, engine, language, out_rate
        self.metadata = metadata
        self.chunks: list[_Chunk] = []
        self.error: BaseException | None = None
        self.audio = bytearray()
        self.bytes_sent = 0
        self._keep_audio = keep_audio
        self.first_sent_at: float | None = None
        self.paused_at: float | None = None
        self.paused_s = 0.0
        """Total time playback was held by pauses that have ended."""
        self._slots = asyncio.Semaphore(parallel)
        self._order: asyncio.Queue[_Chunk | None] = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_all(), name="speech-sender")
        self._frame_bytes = max(2, int(out_rate * FRAME_S) * 2)

    @property
    def seconds_sent(self) -> float:
        return self.bytes_sent / 2 / self.out_rate

    def say(self, text: str) -> None:
        """Queue a chunk; its synthesis starts now (unless TTS already failed in this reply)."""
        if self.error is not None:
            return
        chunk = _Chunk(text)
        chunk.task = asyncio.create_task(self._synthesize(chunk), name="speech-tts")
        self.chunks.append(chunk)
        self._order.put_nowait(chunk)

    async def finish(self) -> None:
        """Wait until every queued chunk is sent (or TTS failed)."""
        self._order.put_nowait(None)
        await asyncio.shield(self._sender)

    async def cancel(self) -> None:
        """Stop synthesis and sending now (barge-in); closes the TTS streams."""
        tasks = [c.task for c in self.chunks if c.task is not None] + [self._sender]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def pause(self, at: float | None = None) -> None:
        """The client holds playback from ``at`` (a possible interruption is being checked)."""
        if self.paused_at is None:
            self.paused_at = time.monotonic() if at is None else at

    def resume(self, at: float | None = None) -> None:
        """Playback goes on from where it was held."""
        if self.paused_at is not None:
            self.paused_s += max(0.0, (time.monotonic() if at is None else at) - self.paused_at)
            self.paused_at = None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def played_s(self, now: float | None = None) -> float:
        """Seconds of the reply played by ``now`` (assuming playback began on receipt and pauses held it)."""
        if self.first_sent_at is None:
            return 0.0
        until = self.paused_at if self.paused_at is not None else (time.monotonic() if now is None else now)
        return min(self.seconds_sent, max(0.0, until - self.first_sent_at - self.paused_s))

    def heard_text(self, now: float | None = None) -> str:
        """The chunks whose audio had started playing by ``now``."""
        if self.first_sent_at is None:
            return ""
        played = self.played_s(now)
        return " ".join(c.text for c in self.chunks if 0 <= c.start_s <= played)

    def queued_text(self) -> str:
        """Every chunk handed to :meth:`say` so far."""
        return " ".join(c.text for c in self.chunks)

    def playback_end(self) -> float | None:
        """When the client should finish playing what was sent (monotonic), if anything was.

        While paused the end keeps moving; it is estimated as if playback resumed now.
        """
        if self.first_sent_at is None:
            return None
        held = self.paused_s + (time.monotonic() - self.paused_at if self.paused_at is not None else 0.0)
        return self.first_sent_at + self.seconds_sent + held

    async def _synthesize(self, chunk: _Chunk) -> None:
        request = tts_pb2.SynthesizeRequest(
            text=chunk.text, voice=self.voice, language=self.language, engine=self.engine, format="pcm",
            sample_rate=self.out_rate,
        )
        try:
            async with self._slots:
                stream = self.hub.stream(
                    self.service, "SynthesizeStream", request, deadline_s=TTS_DEADLINE_S, metadata=self.metadata
                )
                async with contextlib.aclosing(stream) as pieces:
                    async for piece in pieces:
                        assert isinstance(piece, tts_pb2.SynthesisChunk)
                        if piece.sample_rate and piece.sample_rate != self.out_rate:
                            raise ServiceFailed(
                                f"TTS answered at {piece.sample_rate} Hz, not the {self.out_rate} Hz asked for",
                                service=self.service, method="SynthesizeStream",
                            )
                        if piece.audio:
                            chunk.audio.put_nowait((piece.audio, time.monotonic()))
        except Exception as e:  # handed to the sender, which reports it in order
            chunk.audio.put_nowait(e)
        finally:
            chunk.audio.put_nowait(None)

    async def _send_all(self) -> None:
        while (chunk := await self._order.get()) is not None:
            while (item := await chunk.audio.get()) is not None:
                if isinstance(item, BaseException):
                    await self._failed(chunk, item)
                    return
                pcm, ready_at = item
                if chunk.start_s < 0:
                    chunk.start_s = self.seconds_sent
                await self._send(pcm, ready_at)

    async def _send(self, pcm: bytes, ready_at: float) -> None:
        if self.first_sent_at is None:
            self.report.mark("tts_first_audio", ready_at)
            await self.sink.send_event({"type": "audio_start", "sample_rate": self.out_rate})
        for i in range(0, len(pcm), self._frame_bytes):
            frame = pcm[i : i + self._frame_bytes]
            await self.sink.send_audio(frame)
            if self.first_sent_at is None:
                self.first_sent_at = time.monotonic()
                self.report.mark("first_audio_sent", self.first_sent_at)
            self.bytes_sent += len(frame)
            if self._keep_audio:
                self.audio += frame

    async def _failed(self, chunk: _Chunk, err: BaseException) -> None:
        self.error = err
        for other in self.chunks:
            if other.task is not None and other is not chunk:
                other.task.cancel()
        code = err.code if isinstance(err, CallError) else "INTERNAL"
        self.log.error(
            "TTS failed on a %d-char chunk: %s: %s; the reply goes on as text only", len(chunk.text),
            type(err).__name__,
            err, exc_info=not isinstance(err, CallError),
        )
        await self.sink.send_event({
            "type": "error", "code": code, "stage": "tts",
            "message": f"speech synthesis failed ({type(err).__name__}: {err}); the reply continues as text",
        })
