"""A /ws/voice test client that behaves like a microphone (tests of the WebSocket voice protocol).

PCM16 16 kHz frames of 20 ms paced at real time, silence unless :meth:`VoiceClient.speak` queued
speech; everything the server sends is kept in order (events as dicts, audio as bytes). With an
:class:`Speaker` (``echo=``) it is also a phone on speaker without echo cancellation: the reply
plays at real time (obeying pause, resume and flush) and comes back into the microphone later
and quieter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from tests.helpers.stack import MainProcess

FRAME = 640  # 20 ms of PCM16 at 16 kHz
TURN_S = 180.0


def silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(16000 * seconds)


class Speaker:
    """The client's loudspeaker (reply audio at 16 kHz) and its echo: what it plays reaches the
    microphone ``delay_s`` later at ``gain_db``."""

    def __init__(self, gain_db: float, delay_s: float) -> None:
        self.gain = 10 ** (gain_db / 20)
        self.queue = bytearray()
        self.paused = False
        self.played_bytes = 0
        self.line: collections.deque[bytes] = collections.deque([silence(0.02)] * max(0, round(delay_s / 0.02)))

    def heard(self, item: dict[str, Any] | bytes) -> None:
        if isinstance(item, bytes):
            self.queue += item
        elif item["type"] == "flush":
            self.queue.clear()
            self.paused = False
        elif item["type"] in ("pause", "resume"):
            self.paused = item["type"] == "pause"
        elif item["type"] == "audio_start":
            self.paused = False

    def tick(self) -> np.ndarray:
        """20 ms: play the next frame (unless paused); the echo arriving now, as float samples."""
        frame = b""
        if not self.paused and self.queue:
            frame = bytes(self.queue[:FRAME])
            del self.queue[:FRAME]
            self.played_bytes += len(frame)
        self.line.append(frame.ljust(FRAME, b"\0"))
        echo = self.line.popleft()
        return np.frombuffer(echo, "<i2").astype(np.float32) * self.gain


def mix(frame: bytes, echo: np.ndarray) -> bytes:
    mixed = np.frombuffer(frame, "<i2").astype(np.float32) + echo
    return np.clip(mixed, -32768, 32767).astype("<i2").tobytes()


class VoiceClient:
    """A /ws/voice client: a real-time microphone (silence unless speaking) and a log of what came back."""

    def __init__(self, ws: ClientConnection, *, mic: bool, speaker: Speaker | None = None) -> None:
        self.ws, self.mic_on, self.speaker = ws, mic, speaker
        self.items: list[dict[str, Any] | bytes] = []
        self._changed = asyncio.Event()
        self._speech: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, main: MainProcess, config: dict[str, Any] | None = None, *,
                   mic: bool = True, echo: Speaker | None = None) -> AsyncIterator[VoiceClient]:
        """``echo``: play the reply and feed it back into the microphone (ask for 16 kHz replies)."""
        async with connect(main.url.replace("http", "ws") + "/ws/voice", max_size=None) as ws:
            client = cls(ws, mic=mic, speaker=echo)
            client._tasks = [asyncio.create_task(client._read())]
            if config is not None:
                await ws.send(json.dumps({"type": "config", **config}))
            await client.wait("ready")
            if mic:
                client._tasks.append(asyncio.create_task(client._mic()))
            try:
                yield client
            finally:
                for task in client._tasks:
                    task.cancel()
                await asyncio.gather(*client._tasks, return_exceptions=True)

    def speak(self, pcm: bytes) -> None:
        self._speech.put_nowait(pcm)

    async def send_json(self, doc: dict[str, Any] | str) -> None:
        await self.ws.send(doc if isinstance(doc, str) else json.dumps(doc))

    async def _mic(self) -> None:
        pending, t = b"", time.monotonic()
        while True:
            if not pending and not self._speech.empty():
                pending = self._speech.get_nowait()
            frame, pending = (pending[:FRAME], pending[FRAME:]) if pending else (silence(0.02), b"")
            if self.speaker is not None:
                frame = mix(frame.ljust(FRAME, b"\0"), self.speaker.tick())
            await self.ws.send(frame)
            t += 0.02
            await asyncio.sleep(max(0.0, t - time.monotonic()))

    async def _read(self) -> None:
        async for message in self.ws:
            item = message if isinstance(message, bytes) else json.loads(message)
            self.items.append(item)
            if self.speaker is not None:
                self.speaker.heard(item)
            self._changed.set()

    def events(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return [i for i in self.items[since:] if isinstance(i, dict) and kind in (None, i["type"])]

    def index(self, event: dict[str, Any]) -> int:
        return next(i for i, item in enumerate(self.items) if item is event)

    async def wait(self, kind: str, count: int = 1, *, since: int = 0, timeout: float = TURN_S,
                   where: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while len(found := [e for e in self.events(kind, since) if where(e)]) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {kind!r} #{count} within {timeout}s; got {self.summary()}") from None
        return found[count - 1]

    async def wait_any(self, kinds: tuple[str, ...], *, since: int = 0, timeout: float = TURN_S) -> dict[str, Any]:
        """The first event of any of ``kinds``."""
        try:
            async with asyncio.timeout(timeout):
                while not (found := [e for e in self.events(since=since) if e["type"] in kinds]):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"none of {kinds} within {timeout}s; got {self.summary()}") from None
        return found[0]

    def audio(self, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(i for i in self.items[start:end] if isinstance(i, bytes))

    def text(self, start: int = 0, end: int | None = None) -> str:
        return "".join(i["delta"] for i in self.items[start:end] if isinstance(i, dict) and i["type"] == "llm_text")

    def summary(self) -> list[Any]:
        return [f"<{len(i)} bytes>" if isinstance(i, bytes) else i for i in self.items if not (
            isinstance(i, dict) and i["type"] == "llm_text")][-30:]
