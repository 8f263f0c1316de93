"""The streaming turn pipeline: a user's words (typed, uploaded or spoken) in, a spoken reply out.

``text_turn`` and ``audio_turn`` serve REST and polling; ``voice`` opens a streaming
:class:`VoiceConversation` (WebSocket). Every turn, whatever its source, runs through
:meth:`Orchestrator.run`:

1. the session's turn lock (one turn at a time per session), then an admission slot (a bounded
   number of turns in flight across sessions; ``Overloaded`` when full, raised to the caller);
2. hearing (Transcribe for an upload), then the reply (:class:`ReplyPipeline`), in a task that
   a barge-in cancels: the LLM and TTS streams are closed, a ``flush`` event tells the client
   to drop what it buffered, and the part of the reply the user heard is kept, marked
   interrupted;
3. for voice turns, the reply's playback time (what the client still plays after the last
   byte went out) is waited out, since the user may still talk over it;
4. the record: metrics and a latency log line, the recording (when on), ``record_turn`` (history
   and store), and the ``turn_complete`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from core.config.models import ConversationConfig, TurnTaking
from core.context import ProcessContext
from core.conversation.audio import resample_pcm16, wav_to_pcm16k
from core.conversation.metrics import TurnMetrics
from core.conversation.prompt import generate_request
from core.conversation.reply import ReplyPipeline
from core.conversation.turn import Turn, describe
from core.conversation.types import EventSink, Session, TurnRecord
from core.conversation.voice import VoiceConversation
from core.errors import CallError, InvalidArgument
from core.logs import session_id_var, turn_id_var
from core.managers.hub import CommunicationManager
from core.sessions import Admission, Recorder, SessionManager
from uvpb import common_pb2, stt_pb2

STT_DEADLINE_S = 60.0
HOLD_CHECK_S = 0.25
"""While holding for playback, how often a pause (which moves the end) is looked at."""
Hear = Callable[[Turn], Awaitable[None]]


class Orchestrator:
    def __init__(
        self, ctx: ProcessContext, hub: CommunicationManager, sessions: SessionManager, admission: Admission,
        recorder: Recorder, config: ConversationConfig, services: Mapping[str, str],
    ) -> None:
        self.ctx, self.hub, self.sessions, self.admission = ctx, hub, sessions, admission
        self.recorder, self.config, self.services = recorder, config, dict(services)
        self.log = logging.getLogger(f"{ctx.log.name}.conversation")
        self.metrics = TurnMetrics(ctx.registry)
        self.replies = ReplyPipeline(hub, self.services, self.log, keep_audio=config.recordings)

    async def text_turn(self, session: Session, text: str, sink: EventSink, *, out_rate: int) -> TurnRecord:
        """A typed turn; raises ``Overloaded`` when admission is full."""
        turn = Turn(session, self.metrics.watch(sink), out_rate, user_text=text.strip())
        turn.report.mark("stt_final")
        return await self.run(turn)

    async def audio_turn(
        self, session: Session, audio: bytes, *, sample_rate: int | None, sink: EventSink, out_rate: int
    ) -> TurnRecord:
        """A whole utterance: a container (WAV...) when ``sample_rate`` is None, else raw PCM16 mono.

        Raises ``InvalidArgument`` when the STT service cannot read the audio, ``Overloaded``
        when admission is full; any other STT failure is a spoken "didn't catch that".
        """
        turn = Turn(session, self.metrics.watch(sink), out_rate)
        now = time.monotonic()
        turn.report.mark("speech_end", now)
        turn.report.mark("turn_end_detected", now)
        if self.config.recordings:
            turn.user_audio = wav_to_pcm16k(audio) if sample_rate is None else resample_pcm16(audio, sample_rate)
        encoding = common_pb2.AUDIO_ENCODING_UNSPECIFIED if sample_rate is None else common_pb2.PCM_S16LE
        clip = common_pb2.Audio(data=audio, encoding=encoding, sample_rate=sample_rate or 0)

        async def hear(t: Turn) -> None:
            await self._transcribe(t, clip)

        return await self.run(turn, hear=hear)

    def voice(
        self, session: Session, sink: EventSink, *, out_rate: int, end_silence_ms: int | None = None,
        partials: bool = False, turn: TurnTaking | None = None,
    ) -> VoiceConversation:
        """A streaming voice conversation (an async context manager); see :class:`VoiceConversation`.

        ``turn``: the session's own turn-taking settings, over the agent's and ``conversation.turn``.
        """
        return VoiceConversation(
            self, session, self.metrics.watch(sink), out_rate=out_rate,
            end_silence_ms=end_silence_ms or self.config.end_silence_ms, partials=partials, turn=turn,
        )

    async def run(self, turn: Turn, *, hear: Hear | None = None, hold_playback: bool = False) -> TurnRecord:
        """Run ``turn`` to its record (see the module docstring)."""
        session = turn.session
        sid, tid = session_id_var.set(session.id), turn_id_var.set(turn.turn_id)
        try:
            async with session.turn_lock:
                turn.index = session.turn_count
                async with self.admission.slot():
                    session.touch()
                    await self._work_until_interrupted(turn, hear)
                if hold_playback and not turn.interrupted:
                    await self._hold_playback(turn)
                return await self._finish(turn)
        except Exception as e:  # counted here, reported by the caller (a 4xx/503, an error event)
            self.metrics.not_run(e)
            raise
        finally:
            session_id_var.reset(sid)
            turn_id_var.reset(tid)

    async def _work_until_interrupted(self, turn: Turn, hear: Hear | None) -> None:
        with self._pinned():  # the turn's LLM and TTS calls stay on the instances that started it
            work = asyncio.create_task(self._work(turn, hear), name=f"turn-{turn.turn_id}")
            stop = asyncio.create_task(turn.wait_interrupt(), name=f"turn-{turn.turn_id}-interrupt")
            try:
                await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not work.done():
                    work.cancel()
                    if turn.speech is not None:
                        await turn.speech.cancel()
                    await asyncio.gather(work, return_exceptions=True)
        if not work.cancelled():
            work.result()  # a bug, or a rejected request (InvalidArgument): the caller's to report
            return
        await self._interrupted(turn)
        turn.report.mark("turn_complete")
        await self._send_latency(turn)

    def _pinned(self) -> contextlib.AbstractContextManager[None]:
        """During a profile switch, keep this turn's LLM and TTS calls on the instances it began on."""
        pinned = getattr(self.hub, "pinned", None)  # the hub's; absent from test doubles
        names = [n for n in (self.services.get("llm"), self.services.get("tts")) if n]
        return pinned(names) if pinned else contextlib.nullcontext()

    async def _work(self, turn: Turn, hear: Hear | None) -> None:
        if hear is not None:
            await hear(turn)
        agent = turn.session.agent
        if turn.degraded == "stt" or not turn.user_text:
            turn.degrade("stt", "nothing was heard (empty transcript)")
            self.log.warning("turn %s: %s; speaking the not-heard phrase", turn.turn_id, turn.error)
            await self.replies.phrase(turn, agent.not_heard_phrase)
        else:
            await self.replies.reply(turn, generate_request(agent, turn.session.history, turn.user_text))
        if turn.speech is not None and turn.speech.first_sent_at is not None:
            await turn.sink.send_event({"type": "audio_end", "turn_id": turn.turn_id})
        turn.report.mark("turn_complete")
        await self._send_latency(turn)

    async def _transcribe(self, turn: Turn, clip: common_pb2.Audio) -> None:
        request = stt_pb2.TranscribeRequest(audio=clip, language=turn.session.language)
        try:
            reply = await self.hub.call(
                self.services["stt"], "Transcribe", request, deadline_s=STT_DEADLINE_S,
                metadata={"x-request-id": turn.turn_id},
            )
        except InvalidArgument:
            raise  # the audio itself is bad: the client's to fix, not a turn
        except Exception as e:  # the service failed: a spoken "didn't catch that"
            self.log.error(
                "STT failed: %s; speaking the not-heard phrase", describe(e), exc_info=not isinstance(e, CallError)
            )
            turn.degrade("stt", e)
            return
        assert isinstance(reply, stt_pb2.TranscribeResponse)
        turn.report.mark("stt_final")
        turn.user_text = reply.text.strip()
        await turn.sink.send_event({"type": "transcript", "text": turn.user_text, "final": True})

    async def _interrupted(self, turn: Turn) -> None:
        turn.interrupted = True
        turn.heard_text = turn.speech.heard_text() if turn.speech is not None else ""
        self.log.info("turn %s interrupted; the user heard %d chars", turn.turn_id, len(turn.heard_text))
        await turn.sink.send_event({"type": "flush", "turn_id": turn.turn_id})

    async def _hold_playback(self, turn: Turn) -> None:
        """Wait out the reply's playback (its end moves while a pause holds it), or an interruption."""
        speech = turn.speech
        while speech is not None and (end := speech.playback_end()) is not None:
            remaining = end - time.monotonic()
            if remaining <= 0 and not speech.paused:
                return
            try:
                await asyncio.wait_for(turn.wait_interrupt(), min(max(remaining, 0.0), HOLD_CHECK_S) or HOLD_CHECK_S)
            except TimeoutError:
                continue
            await self._interrupted(turn)
            return

    async def _send_latency(self, turn: Turn) -> None:
        await turn.sink.send_event({"type": "latency", "turn_id": turn.turn_id, "report": turn.report.to_dict()})

    async def _finish(self, turn: Turn) -> TurnRecord:
        record = turn.record()
        self.metrics.observe(record, self.log)
        if self.config.recordings:
            audio = bytes(turn.speech.audio) if turn.speech is not None else b""
            try:
                record.user_audio_path, record.assistant_audio_path = await asyncio.to_thread(
                    self.recorder.save_turn, record.session_id, record.turn_id, turn.user_audio, audio, turn.out_rate
                )
            except Exception as e:  # a full disk must not lose the turn itself
                self.log.error("recording turn %s failed: %s", turn.turn_id, describe(e), exc_info=True)
        try:
            await self.sessions.record_turn(turn.session, record)
        except Exception as e:  # the store failing must not take the conversation down
            self.log.error("storing turn %s failed: %s", turn.turn_id, describe(e), exc_info=True)
            await turn.sink.send_event({
                "type": "error", "code": "INTERNAL", "stage": "store", "turn_id": turn.turn_id,
                "message": f"the turn could not be saved ({describe(e)}); the conversation goes on",
            })
        await turn.sink.send_event({
            "type": "turn_complete", "turn_id": turn.turn_id, "outcome": record.outcome,
            "degraded": record.degraded, "interrupted": record.interrupted,
            "user_text": record.user_text, "assistant_text": record.assistant_text,
        })
        return record
