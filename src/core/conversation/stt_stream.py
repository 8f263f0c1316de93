"""One StreamingRecognize call through the hub, fed from a voice conversation.

:class:`SttStream` sends the StreamingConfig, then every PCM16 16 kHz frame handed to
:meth:`SttStream.feed`, and passes each response (VAD events, partials, finals) to a callback.
It keeps an :class:`AudioClock`: the STT service reports positions on the stream's audio
clock (seconds of audio received), and the latency report needs the monotonic time at which
that audio arrived from the client. A live stream must be full duplex, so the conversation pins
it to gRPC: the HTTP transports send the whole request body before they read the reply, so over
them no event would come back until the input ended (they do serve push-to-talk, where it
ends at each utterance). With recordings on it also keeps the recent audio
(:class:`AudioTape`), so a finished utterance can be saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from core.conversation.audio import STT_RATE
from core.managers.hub import CommunicationManager
from uvpb import stt_pb2

KEEP_S = 120.0
"""How far back positions (and taped audio) can be looked up; an utterance is at most ~30 s."""

OnEvent = Callable[["SttStream", stt_pb2.StreamingRecognizeResponse], Awaitable[None]]
OnEnd = Callable[["SttStream", BaseException | None], Awaitable[None]]


class AudioClock:
    """Stream position (samples received) -> monotonic arrival time of the frame holding it."""

    def __init__(self) -> None:
        self.samples = 0
        self._marks: deque[tuple[int, float]] = deque()

    @property
    def seconds(self) -> float:
        return self.samples / STT_RATE

    def add(self, samples: int, at: float) -> None:
        self.samples += samples
        self._marks.append((self.samples, at))
        while len(self._marks) > 1 and self._marks[0][1] < at - KEEP_S:
            self._marks.popleft()

    def arrival(self, position_s: float) -> float | None:
        target = round(position_s * STT_RATE)
        for end, at in self._marks:
            if end >= target:
                return at
        return self._marks[-1][1] if self._marks else None


class AudioTape:
    """The last ``KEEP_S`` seconds of a stream's audio, addressable by stream position."""

    def __init__(self) -> None:
        self.start = 0
        """Stream position (samples) of ``_data[0]``."""
        self._data = bytearray()

    def add(self, pcm: bytes) -> None:
        self._data += pcm
        excess = len(self._data) - int(KEEP_S * STT_RATE) * 2
        if excess > 0:
            del self._data[:excess]
            self.start += excess // 2

    def slice(self, start_s: float, end_s: float) -> bytes:
        a = max(0, round(start_s * STT_RATE) - self.start) * 2
        b = max(0, round(end_s * STT_RATE) - self.start) * 2
        return bytes(self._data[a:b])


class SttStream:
    def __init__(
        self, hub: CommunicationManager, service: str, config: stt_pb2.StreamingConfig, *,
        on_event: OnEvent, on_end: OnEnd, tape: bool, deadline_s: float, metadata: dict[str, str] | None = None,
        protocol: str | None = None,
    ) -> None:
        self.hub, self.service, self.config = hub, service, config
        self.on_event, self.on_end = on_event, on_end
        self.clock = AudioClock()
        self.tape = AudioTape() if tape else None
        self.opened_at = time.monotonic()
        self.responses = 0
        self.pending_bytes = 0
        self.input_ended = False
        self.closing = False
        self.in_speech = False
        """SPEECH_STARTED seen and its SPEECH_ENDED not yet."""
        self.ptt_at: float | None = None
        """When the client ended the utterance itself (push-to-talk), if it did."""
        self.ends: dict[int, tuple[float | None, float]] = {}
        """Utterance -> (speech end, turn end detected) as monotonic times."""
        self._queue: asyncio.Queue[bytes | int | None] = asyncio.Queue()
        """Audio to send; an int is an utterance whose final is no longer wanted (CancelUtterance)."""
        self._deadline_s, self._metadata, self._protocol = deadline_s, metadata, protocol
        self.task = asyncio.create_task(self._run(), name="stt-stream")

    def feed(self, pcm: bytes, at: float) -> None:
        if self.input_ended:
            return
        self._queue.put_nowait(pcm)
        self.pending_bytes += len(pcm)
        self.clock.add(len(pcm) // 2, at)
        if self.tape is not None:
            self.tape.add(pcm)

    def cancel(self, utterance: int) -> None:
        """The final of ``utterance`` is not wanted (its turn was refused): the service skips its decode."""
        if not self.input_ended:
            self._queue.put_nowait(utterance)

    def end_input(self, *, ptt_at: float | None = None) -> None:
        """No more audio: the service ends an utterance in progress (SPEECH_ENDED, FINAL) and the stream."""
        if not self.input_ended:
            self.input_ended, self.ptt_at = True, ptt_at
            self._queue.put_nowait(None)

    async def close(self) -> None:
        """Cancel the call now (the conversation is over)."""
        self.closing = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _requests(self) -> AsyncIterator[stt_pb2.StreamingRecognizeRequest]:
        yield stt_pb2.StreamingRecognizeRequest(config=self.config)
        while (item := await self._queue.get()) is not None:
            if isinstance(item, int):
                yield stt_pb2.StreamingRecognizeRequest(cancel=stt_pb2.CancelUtterance(utterance=item))
                continue
            self.pending_bytes -= len(item)
            yield stt_pb2.StreamingRecognizeRequest(audio=item)

    async def _run(self) -> None:
        error: BaseException | None = None
        try:
            events = self.hub.stream(
                self.service, "StreamingRecognize", self._requests(), deadline_s=self._deadline_s,
                metadata=self._metadata, protocol=self._protocol,
            )
            async with contextlib.aclosing(events) as responses:
                async for response in responses:
                    self.responses += 1
                    await self.on_event(self, self._typed(response))
        except Exception as e:  # the conversation decides what a broken stream means
            error = e
        await self.on_end(self, error)

    @staticmethod
    def _typed(response: Any) -> stt_pb2.StreamingRecognizeResponse:
        assert isinstance(response, stt_pb2.StreamingRecognizeResponse)
        return response
