"""A WebRTC voice client (aiortc) for tests and the benchmark: a real-time microphone, the events, the reply.

It does what the demo page does: creates the ``events`` data channel and a microphone track,
waits for its ICE gathering, ``POST /api/offer``, applies the answer. The microphone plays
whatever :meth:`WebRtcClient.speak` queued (48 kHz PCM16 mono) in 20 ms frames at real time,
silence otherwise. The reply track is read frame by frame: frames, non-silent frames and the
audio itself (mono PCM16 48 kHz) are kept, with the time the first non-silent frame of each
reply arrived.

Must run inside ``tests.helpers.netns.loopback_netns()`` (ICE gathers on every interface).
Run as a script it makes one call and prints a JSON summary (for a subprocess client).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from core.gateway.webrtc.ice import allow_loopback_candidates

RATE = 48000
FRAME = 960  # samples in 20 ms
SILENT_PEAK = 64
"""A reply frame whose peak is below this (of 32767) counts as silence (Opus leaves a little noise)."""


class MicTrack(MediaStreamTrack):
    """A microphone: queued speech at real time, silence between; notes when the last speech frame left."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._pending = b""
        self._start: float | None = None
        self._pts = 0
        self.speech_done = asyncio.Event()
        self.speech_ended_at: float | None = None

    def speak(self, pcm48: bytes) -> None:
        self.speech_done.clear()
        self._queue.put_nowait(pcm48)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            await asyncio.sleep(max(0.0, self._start + self._pts / RATE - time.monotonic()))
        if not self._pending and not self._queue.empty():
            self._pending = self._queue.get_nowait()
        chunk, self._pending = self._pending[: FRAME * 2], self._pending[FRAME * 2 :]
        if chunk and not self._pending and self._queue.empty():
            self.speech_ended_at = time.monotonic()
            self.speech_done.set()
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk + bytes(FRAME * 2 - len(chunk)))
        frame.pts, frame.sample_rate, frame.time_base = self._pts, RATE, fractions.Fraction(1, RATE)
        return frame


class WebRtcClient:
    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self.base_url, self.http = base_url, http
        allow_loopback_candidates()  # aioice skips 127.0.0.1; in a loopback-only namespace it is all there is
        self.pc = RTCPeerConnection()
        self.mic = MicTrack()
        self.channel = self.pc.createDataChannel("events")
        self.events: list[dict[str, Any]] = []
        self.pc_id = ""
        self.session_id = ""
        self.frames = 0
        self.loud_frames = 0
        self.audio = bytearray()
        self.loud_at: list[float] = []
        """Arrival time (monotonic) of every non-silent reply frame."""
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.addTrack(self.mic)
        self.pc.on("track", self._on_track)
        self.channel.on("message", self._on_message)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, base_url: str, config: dict[str, Any] | None = None, *, http: httpx.AsyncClient | None = None,
        delete: bool = True,
    ) -> AsyncIterator[WebRtcClient]:
        """A connected call (``ready`` received); on exit ``DELETE`` (unless ``delete=False``) and close."""
        own = http is None
        client = cls(base_url, http or httpx.AsyncClient(timeout=60))
        try:
            await client.connect(config)
            yield client
        finally:
            await client.close(delete=delete)
            if own:
                await client.http.aclose()

    async def connect(self, config: dict[str, Any] | None = None, timeout: float = 60) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body: dict[str, Any] = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if config is not None:
            body["config"] = config
        r = await self.http.post(f"{self.base_url}/api/offer", json=body)
        if r.status_code != 200:
            raise AssertionError(f"POST /api/offer: {r.status_code} {r.text}")
        answer = r.json()
        self.pc_id, self.session_id = answer["pc_id"], answer["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await self.wait("ready", timeout=timeout)

    async def close(self, *, delete: bool = True) -> None:
        """Hang up: ``DELETE`` first when ``delete``, else just drop the connection (no goodbye)."""
        if delete and self.pc_id:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(f"{self.base_url}/api/offer/{self.pc_id}")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.mic.stop()
        await self.pc.close()

    def speak(self, pcm48: bytes) -> None:
        self.mic.speak(pcm48)

    def send(self, doc: dict[str, Any] | str) -> None:
        self.channel.send(doc if isinstance(doc, str) else json.dumps(doc))

    def of(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.events[since:] if kind in (None, e["type"])]

    def text(self, since: int = 0) -> str:
        return "".join(e["delta"] for e in self.of("llm_text", since))

    async def wait(
        self, kind: str, count: int = 1, *, since: int = 0, timeout: float = 180,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while len(found := [e for e in self.of(kind, since) if where(e)]) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            summary = [e for e in self.events if e["type"] != "llm_text"][-20:]
            raise AssertionError(f"no {kind!r} #{count} within {timeout}s; got {summary}") from None
        return found[count - 1]

    async def wait_until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 180) -> None:
        """Until ``done(last_event)`` holds, re-checked on every event and reply frame."""
        try:
            async with asyncio.timeout(timeout):
                while not done(self.events[-1] if self.events else {}):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            summary = [e for e in self.events if e["type"] != "llm_text"][-20:]
            raise AssertionError(f"not settled within {timeout}s; got {summary}") from None

    async def first_loud_after(self, t: float, timeout: float = 180) -> float:
        """When the first non-silent reply frame after ``t`` (monotonic) arrived."""
        async with asyncio.timeout(timeout):
            while not (after := [x for x in self.loud_at if x >= t]):
                self._changed.clear()
                await self._changed.wait()
        return after[0]

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.events.append(json.loads(message))
            self._changed.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).astype(np.int32)
            mono = samples.mean(axis=1).astype("<i2")
            self.audio += mono.tobytes()
            self.frames += 1
            if int(np.abs(mono.astype(np.int32)).max(initial=0)) >= SILENT_PEAK:
                self.loud_frames += 1
                self.loud_at.append(time.monotonic())
                self._changed.set()


def to_48k_mono(wav: bytes) -> bytes:
    """A PCM16 WAV as 48 kHz mono PCM16 (what the microphone track plays)."""
    from tests.helpers.speech import convert

    return convert(wav, RATE, 1).data


async def _main(base_url: str, mode: str, text: str) -> None:
    """``turn``: one typed turn, a JSON summary, DELETE. ``hold``: connect, print ``pc_id``, stay until killed."""
    async with WebRtcClient.open(base_url) as c:
        if mode == "hold":
            print(json.dumps({"pc_id": c.pc_id}), flush=True)
            await asyncio.Event().wait()
        c.send({"type": "text", "text": text})
        done = await c.wait("turn_complete")
        print(json.dumps({"turn": done, "frames": c.frames, "loud_frames": c.loud_frames}), flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="One WebRTC voice call against a running main.")
    parser.add_argument("base_url")
    parser.add_argument("--mode", choices=("turn", "hold"), default="turn")
    parser.add_argument("--text", default="Say hello.")
    args = parser.parse_args()
    asyncio.run(_main(args.base_url, args.mode, args.text))
