"""A /ws/voice client that behaves like a microphone, and what one spoken turn looked like to it.

The microphone task sends 20 ms PCM16 16 kHz frames at real-time pace, forever: the queued
utterance when there is one, silence otherwise (the server's VAD needs the silence to hear the
end of a turn). The reader keeps every event with its arrival time. :meth:`VoiceClient.turn`
speaks one utterance and waits until it settles: every utterance the VAD heard (one
``speech_started`` each) has its final transcript, and each of those turns has ended with
``turn_complete`` or an error naming its ``turn_id`` (admission control's rejection is
``UNAVAILABLE`` without a ``stage``). Client-side voice-to-voice runs from the moment the last
speech frame was handed to the socket to the first reply audio frame received after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from scripts.bench._voice_speech import Utterance
from tests.helpers.text import word_error_rate

FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz
FRAME_S = 0.02
SILENCE = b"\x00\x00" * 320


@dataclass(slots=True)
class TurnResult:
    """One spoken utterance as the client saw it."""

    utterance: str
    source: str
    question: str
    transcript: str = ""
    reply: str = ""
    audio_s: float = 0.0
    outcome: str = ""
    degraded: str = ""
    rejected: bool = False
    reject_after_s: float | None = None
    lost: bool = False
    why: str = ""
    finals: int = 0
    typed: bool = False
    """A typed ``text`` turn (no speech): needs no transcript; client latency runs from the send."""
    turns: int = 0
    client_v2v_s: float | None = None
    report: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def server_v2v_s(self) -> float | None:
        v = self.report.get("voice_to_voice_s")
        return float(v) if isinstance(v, int | float) else None

    @property
    def answered(self) -> bool:
        """A final transcript, reply text and reply audio."""
        return bool((self.finals or self.typed) and self.reply.strip() and self.audio_s > 0)

    @property
    def wer(self) -> float:
        return word_error_rate(self.question, self.transcript)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "server_v2v_s": self.server_v2v_s, "answered": self.answered,
                "wer": round(self.wer, 3)}


class VoiceClient:
    def __init__(self, ws: ClientConnection, out_rate: int) -> None:
        self.ws, self.out_rate = ws, out_rate
        self.items: list[tuple[float, dict[str, Any] | bytes]] = []
        self._changed = asyncio.Event()
        self._speech: asyncio.Queue[bytes] = asyncio.Queue()
        self.speech_end_sent: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, out_rate: int, *, within_s: float = 30, voice: str | None = None,
        turn: dict[str, Any] | None = None,
    ) -> AsyncIterator[VoiceClient]:
        """``turn``: the session's turn-taking settings (the ``config`` message's ``turn``)."""
        async with connect(url, max_size=None, open_timeout=within_s) as ws:
            client = cls(ws, out_rate)
            client._tasks = [asyncio.create_task(client._read())]
            try:
                config = {"type": "config", "sample_rate": out_rate, **({"voice": voice} if voice else {}),
                          **({"turn": turn} if turn is not None else {})}
                await ws.send(json.dumps(config))
                await client.wait_for(lambda: client.events("ready"), within_s, "ready")
                client._tasks.append(asyncio.create_task(client._mic()))
                yield client
            finally:
                for task in client._tasks:
                    task.cancel()
                await asyncio.gather(*client._tasks, return_exceptions=True)

    async def reset(self, within_s: float = 30) -> None:
        """A fresh session (no history) with the same settings."""
        n = len(self.events("ready"))
        await self.ws.send(json.dumps({"type": "reset"}))
        await self.wait_for(lambda: len(self.events("ready")) > n, within_s, "ready after reset")

    def events(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return [i for _, i in self.items[since:] if isinstance(i, dict) and kind in (None, i.get("type"))]

    async def wait_for(self, done: Any, within_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(within_s):
                while not done():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"no {what} within {within_s:.0f} s; last events: {self.summary()}") from None

    def summary(self) -> list[Any]:
        return [f"<{len(i)} B>" if isinstance(i, bytes) else i for _, i in self.items[-12:]]

    async def _mic(self) -> None:
        pending, t = b"", time.monotonic()
        while True:
            if not pending and not self._speech.empty():
                pending = self._speech.get_nowait()
            frame, pending = (pending[:FRAME_BYTES], pending[FRAME_BYTES:]) if pending else (SILENCE, b"")
            await self.ws.send(frame)
            if frame is not SILENCE and not pending:
                self.speech_end_sent = time.monotonic()
                self._changed.set()
            t += FRAME_S
            await asyncio.sleep(max(0.0, t - time.monotonic()))

    async def _read(self) -> None:
        async for message in self.ws:
            item = message if isinstance(message, bytes) else json.loads(message)
            self.items.append((time.monotonic(), item))
            self._changed.set()

    async def turn(self, utt: Utterance, *, lead_s: float = 0.3, within_s: float = 120) -> TurnResult:
        """Speak ``utt`` after ``lead_s`` of silence and wait until its turn(s) settle."""
        res = TurnResult(utt.id, utt.source, utt.text)
        mark = len(self.items)
        self.speech_end_sent = None
        self._speech.put_nowait(b"\x00\x00" * int(16000 * lead_s) + utt.pcm)
        try:
            await self.wait_for(lambda: self._settled(mark), within_s, f"settled turn for {utt.id}")
        except TimeoutError as e:
            res.lost, res.why = True, str(e)
        self._collect(res, mark)
        if not res.lost and not res.rejected and not res.answered:
            res.lost, res.why = True, "no final transcript, reply text and audio, and no rejection"
        return res

    async def typed(self, text: str, *, within_s: float = 120) -> TurnResult:
        """A typed turn (``{"type": "text"}``): admission without the STT stage in front of it."""
        res = TurnResult("typed", "text", text, typed=True)
        mark = len(self.items)
        await self.ws.send(json.dumps({"type": "text", "text": text}))
        self.speech_end_sent = time.monotonic()
        try:
            await self.wait_for(lambda: bool(self._ends(mark)), within_s, "end of a typed turn")
        except TimeoutError as e:
            res.lost, res.why = True, str(e)
        self._collect(res, mark)
        if not res.lost and not res.rejected and not res.answered:
            res.lost, res.why = True, "no reply text and audio, and no rejection"
        return res

    def _ends(self, mark: int) -> list[dict[str, Any]]:
        """Events that end a turn: turn_complete, or an error naming a turn without a stage (not run)."""
        return [e for e in self.events(None, mark) if e["type"] == "turn_complete"
                or (e["type"] == "error" and e.get("turn_id") and not e.get("stage"))]

    def _settled(self, mark: int) -> bool:
        """Every utterance heard has ended (``speech_ended``) and each of those turns has ended: a
        refused turn has no final transcript (its transcription is cancelled), only its error."""
        if self.speech_end_sent is None:
            return False
        started = len(self.events("speech_started", mark))
        ended = len(self.events("speech_ended", mark))
        return ended >= max(1, started) and len(self._ends(mark)) >= ended

    def _collect(self, res: TurnResult, mark: int) -> None:
        items = self.items[mark:]
        finals = [e for e in self.events("transcript", mark) if e.get("final")]
        res.finals, res.transcript = len(finals), " ".join(e["text"] for e in finals).strip()
        res.reply = "".join(e["delta"] for e in self.events("llm_text", mark))
        res.audio_s = sum(len(i) for _, i in items if isinstance(i, bytes)) / 2 / self.out_rate
        res.errors = self.events("error", mark)
        ends = self._ends(mark)
        res.turns = len(ends)
        done = [e for e in ends if e["type"] == "turn_complete"]
        if done:
            res.outcome, res.degraded = done[-1]["outcome"], done[-1].get("degraded", "")
            reports = {e["turn_id"]: e["report"] for e in self.events("latency", mark)}
            res.report = reports.get(done[-1]["turn_id"], {})
        rejections = [e for e in ends if e["type"] == "error" and e.get("code") == "UNAVAILABLE"]
        if rejections and not done:
            res.rejected, res.outcome = True, "rejected"
            rej_at = next(t for t, i in items if i is rejections[0])
            ended_at = next((t for t, i in items if isinstance(i, dict) and i.get("type") == "speech_ended"),
                            self.speech_end_sent)
            res.reject_after_s = None if ended_at is None else round(rej_at - ended_at, 4)
        elif ends and not done:
            res.outcome = "error"
        if self.speech_end_sent is not None:
            first = next((t for t, i in items if isinstance(i, bytes) and t > self.speech_end_sent), None)
            if first is not None:
                res.client_v2v_s = round(first - self.speech_end_sent, 4)
