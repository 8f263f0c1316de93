"""A streaming voice conversation: audio frames in, turns detected by the STT service, replies out.

The client's PCM16 16 kHz frames go (through the echo canceller, when on) into one
StreamingRecognize stream (:class:`SttStream`), configured with the session's turn-taking
(:class:`~core.config.TurnTaking`: semantic or VAD end of turn, speculation). Its events drive
the turns:

- ``SPEECH_STARTED``: a ``speech_started`` event. Over a reply that is generating or playing it
  is a *possible* interruption (:class:`BargeIn`): the reply is paused (a ``pause`` event; the
  client holds playback) until the speech proves itself, by lasting ``barge_in_min_speech_ms`` or
  by ``barge_in_min_words`` words in a partial or the final, and the reply is interrupted (a
  ``flush``); a noise, a cough or the reply's own echo has no words, and the reply resumes
  (a ``resume`` event), at the latest ``resume_after_ms`` after the noise stopped;
- ``PARTIAL``: a ``transcript`` event with ``final: false`` (when partials are on);
- ``SPEECH_PAUSED`` / ``SPEECH_RESUMED``: a pause inside the utterance (the turn may be over);
- ``SPEECH_ENDED``: the turn is over: its turn starts at once (it takes the session's turn
  lock and an admission slot while the final transcript is being made, so admission control
  covers STT too: past capacity the turn is refused within ``admission_wait_s``, the STT decode
  is cancelled and the agent's ``busy_phrase`` is spoken); the end of speech on the input clock is
  mapped to the monotonic time that audio arrived;
- ``FINAL``: a ``transcript`` event with ``final: true``; the waiting turn goes on (an empty
  transcript gets the not-heard phrase).

Push-to-talk (:meth:`end_utterance`) ends the stream's input, so the service finishes the
utterance at once; the next frame opens a new stream. A broken stream is logged and reported
(``error`` with ``stage: "stt"``); an utterance it cut off gets the not-heard phrase; a new
stream opens on a later frame, after a short backoff. A stream that heard nothing for a long
time is replaced during a quiet moment, so the hub's replay buffer (which keeps a stream's
requests until its first response) never grows without bound. So is a stream whose STT
instance was replaced (a profile switch): the next quiet frame outside speech opens the new
stream on the new instance, and the old one ends cleanly, so the old instance can drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from core.config import DEFAULT_TURN_TAKING, TurnTaking
from core.conversation.aec import EchoCanceller
from core.conversation.audio import STT_RATE, dbfs
from core.conversation.stt_stream import SttStream
from core.conversation.turn import Turn, describe
from core.conversation.types import EventSink, Session
from core.errors import CallError, Overloaded
from core.logs import session_id_var
from uvpb import stt_pb2

if TYPE_CHECKING:
    from core.conversation.orchestrator import Orchestrator

STREAM_DEADLINE_S = 4 * 3600.0
RECYCLE_UNANSWERED_S = 60.0
"""A stream with no response after this much audio is replaced at the next quiet frame."""
RECYCLE_FORCE_S = 300.0
RECYCLE_AGE_S = 3 * 3600.0
QUIET_DBFS = -45.0
MAX_PENDING_BYTES = 10 * STT_RATE * 2
"""Audio waiting to go to STT (10 s); past it frames are dropped with an error."""
RETRY_S = (0.5, 1.0, 2.0, 5.0)
PRE_ROLL_S = 0.3
DETECTION = {"vad": stt_pb2.TURN_DETECTION_VAD, "semantic": stt_pb2.TURN_DETECTION_SEMANTIC}


def turn_taking(server: TurnTaking, agent: TurnTaking, session: TurnTaking | None) -> TurnTaking:
    """The effective turn-taking: built-in defaults, then the server's, the agent's, the session's."""
    policy = agent.over(server.over(DEFAULT_TURN_TAKING))
    return session.over(policy) if session is not None else policy


FILLER = re.compile(r"(h+m+|m+(-?h+m+)?|mh+m+|u+h+(-?h+u+h+)?|u+h*m+|a+h+|o+h+|e+r+m*|hu+h)")
"""Sounds that are not words, however Whisper spells them (hmm, HMMMM, mm-hmm, uh-huh, um, uhm, ah, oh,
erm, huh): a filler or a backchannel over the reply does not interrupt it."""


def words(text: str) -> int:
    """Words in a transcript, fillers and punctuation left out."""
    tokens = (w.strip(".,!?;:…\"'()[]-").lower() for w in text.split())
    return sum(1 for w in tokens if w and not FILLER.fullmatch(w) and any(c.isalnum() for c in w))


@dataclass(slots=True, eq=False)
class Heard:
    """An utterance whose turn has started (at SPEECH_ENDED) and waits for its final transcript."""

    stream: SttStream
    utterance: int
    turn: Turn
    final: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task[None] | None = None


@dataclass(slots=True, eq=False)
class BargeIn:
    """Speech that began over a busy reply: a possible interruption, until it proves itself or not."""

    stream: SttStream
    utterance: int
    speaking: bool = True
    timer: asyncio.Task[None] | None = None
    decided: str = ""
    """Empty while undecided, then "confirmed" (the reply was interrupted) or "resumed"."""


class EchoTap:
    """The conversation's sink, seen by its turns: reply audio on its way out is also handed to the
    echo canceller, with the client's playback timeline (pauses hold it; a flush ends it)."""

    def __init__(self, inner: EventSink, echo: EchoCanceller, rate: int) -> None:
        self.inner, self.echo, self.rate = inner, echo, rate
        self._reply = bytearray()
        self._started_at: float | None = None
        self._held_s = 0.0
        self._paused_at: float | None = None

    def _played_bytes(self, at: float) -> int:
        if self._started_at is None:
            return 0
        seconds = max(0.0, at - self._started_at - self._held_s)
        return min(len(self._reply), int(seconds * self.rate) * 2)

    async def send_event(self, event: dict[str, Any]) -> None:
        kind, now = event.get("type"), time.monotonic()
        if kind == "audio_start":
            self._reply.clear()
            self._started_at, self._held_s, self._paused_at = None, 0.0, None
        elif kind == "flush":
            self.echo.stop(now)
            self._reply.clear()
            self._started_at = None
        elif kind == "pause" and self._paused_at is None:
            self.echo.stop(now)
            self._paused_at = now
        elif kind == "resume" and self._paused_at is not None:
            played = self._played_bytes(self._paused_at)
            self._held_s += now - self._paused_at
            self._paused_at = None
            if played < len(self._reply):
                self.echo.playing(bytes(self._reply[played:]), self.rate, now)
        await self.inner.send_event(event)

    async def send_audio(self, pcm: bytes) -> None:
        now = time.monotonic()
        if self._started_at is None:
            self._started_at = now
        self._reply += pcm
        if self._paused_at is None:
            self.echo.playing(pcm, self.rate, now)
        await self.inner.send_audio(pcm)


class VoiceConversation:
    def __init__(
        self, orchestrator: Orchestrator, session: Session, sink: EventSink, *, out_rate: int,
        end_silence_ms: int, partials: bool = False, turn: TurnTaking | None = None,
    ) -> None:
        """``turn``: the session's own turn-taking settings (over the agent's and the server's)."""
        self.orch, self.session, self.out_rate = orchestrator, session, out_rate
        self.end_silence_ms, self.partials = end_silence_ms, partials
        self.policy = turn_taking(orchestrator.config.turn, session.agent.turn, turn)
        self.echo = EchoCanceller() if self.policy.echo_cancellation else None
        self.sink: EventSink = EchoTap(sink, self.echo, out_rate) if self.echo is not None else sink
        self.log = orchestrator.log
        self.stream: SttStream | None = None
        self.closed = False
        self.dropped_frames = 0
        self._streams: set[SttStream] = set()
        self._turns: dict[asyncio.Task[None], Turn] = {}
        self._heard: dict[tuple[SttStream, int], Heard] = {}
        self._checks: dict[tuple[SttStream, int], BargeIn] = {}
        """Utterances that began over a busy reply, until their final transcript."""
        self._failures = 0
        self._retry_at = 0.0
        self._warned_backlog = False
        self._targets: dict[SttStream, str | None] = {}  # where each stream was opened (the STT instance)
        self._moved_checked_at = 0.0
        self._echo_counts = (0, 0)

    async def __aenter__(self) -> VoiceConversation:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- client input ---------------------------------------------------------------------------

    async def feed(self, pcm: bytes) -> None:
        """One PCM16 16 kHz mono frame (an even number of bytes) from the client."""
        if self.closed or not pcm:
            return
        self._in_session()
        now = time.monotonic()
        if self.echo is not None:
            pcm = self._cancel_echo(pcm, now)
        stream = self.stream
        if stream is not None and (self._stale(stream, pcm) or self._moved(stream, pcm, now)):
            stream.end_input()
            stream = self.stream = None
        if stream is None:
            if now < self._retry_at:
                self.dropped_frames += 1
                return
            stream = self.stream = self._open()
        if stream.pending_bytes > MAX_PENDING_BYTES:
            self.dropped_frames += 1
            if not self._warned_backlog:
                self._warned_backlog = True
                await self.sink.send_event({
                    "type": "error", "code": "RESOURCE_EXHAUSTED", "stage": "stt",
                    "message": "audio is arriving faster than speech recognition takes it; frames are being "
                               "dropped: send audio at real time (20-100 ms frames)",
                })
            return
        self._warned_backlog = False
        stream.feed(pcm, now)

    def _cancel_echo(self, pcm: bytes, now: float) -> bytes:
        assert self.echo is not None
        if not self.echo.active:
            return pcm
        cleaned = self.echo.process(pcm, now)
        stats = self.echo.stats
        counts = (stats.frames_cleaned, stats.frames_suppressed)
        metrics = self.orch.metrics.echo_frames
        if counts[0] > self._echo_counts[0]:
            metrics.labels("cleaned").inc(counts[0] - self._echo_counts[0])
        if counts[1] > self._echo_counts[1]:
            metrics.labels("suppressed").inc(counts[1] - self._echo_counts[1])
        self._echo_counts = counts
        return cleaned

    async def end_utterance(self) -> None:
        """Push-to-talk: the user finished speaking; the utterance is finalised now."""
        if self.stream is not None:
            self.stream.end_input(ptt_at=time.monotonic())
            self.stream = None

    async def interrupt(self) -> None:
        """Stop the reply that is generating or playing (the client's own barge-in)."""
        for task, turn in list(self._turns.items()):
            if not self._waiting_for_final(task):
                turn.interrupt()

    async def say(self, text: str) -> None:
        """A typed turn inside the voice conversation; it interrupts a reply in progress."""
        self._in_session()
        await self.interrupt()
        turn = Turn(self.session, self.sink, self.out_rate, user_text=text.strip())
        turn.report.mark("stt_final")
        self._start(turn)

    async def close(self) -> None:
        """End the conversation: a reply in progress is interrupted (and recorded), streams are closed."""
        if self.closed:
            return
        self.closed = True
        if self.echo is not None and self.echo.stats.frames:
            st = self.echo.stats
            self.log.info(
                "echo canceller: %d frames while replies played, %d cleaned, %d silenced; delay %s ms, gain %s dB, "
                "%d estimates", st.frames, st.frames_cleaned, st.frames_suppressed, st.delay_ms, st.gain_db,
                st.estimates,
            )
        await self.interrupt()
        for check in self._checks.values():
            if check.timer is not None:
                check.timer.cancel()
        streams = list(self._streams)
        self.stream = None
        await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
        for heard in list(self._heard.values()):  # their streams are gone: no final will come
            if not heard.final.done():
                heard.final.set_exception(asyncio.CancelledError())
            if heard.task is not None:
                heard.task.cancel()
        if self._turns:
            await asyncio.wait(list(self._turns), timeout=30)

    @property
    def busy(self) -> bool:
        """A reply is generating or playing (turns that still wait for their transcript do not count)."""
        return any(not t.done() and not self._waiting_for_final(t) for t in self._turns)

    def _waiting_for_final(self, task: asyncio.Task[None]) -> bool:
        turn = self._turns.get(task)
        return any(h.turn is turn and not h.final.done() for h in self._heard.values())

    # ---- the STT stream -------------------------------------------------------------------------

    def _in_session(self) -> None:
        """Log under this conversation's session in the caller's task (and in the tasks it starts).

        The caller is the transport's task (a WebSocket receive loop, a WebRTC microphone pump) that may
        have served an earlier session of the same connection; its context would still name that one.
        """
        if session_id_var.get() != self.session.id:
            session_id_var.set(self.session.id)

    def _open(self) -> SttStream:
        self._in_session()  # the stream's task copies this context: its logs and calls name this session
        p = self.policy
        vad = stt_pb2.VadConfig(end_silence_ms=self.end_silence_ms)
        turn = stt_pb2.TurnConfig(
            detection=DETECTION[p.detection or "vad"], pause_ms=p.pause_ms or 0, max_wait_ms=p.max_wait_ms or 0,
            threshold=p.threshold or 0.0, no_speculation=not p.speculation,
        )
        config = stt_pb2.StreamingConfig(
            sample_rate=STT_RATE, language=self.session.language, vad=vad, partials=self.partials, turn=turn,
        )
        stream = SttStream(
            self.orch.hub, self.orch.services["stt"], config, on_event=self._on_event, on_end=self._on_end,
            tape=self.orch.config.recordings, deadline_s=STREAM_DEADLINE_S,
            metadata={"x-request-id": f"voice-{self.session.id}", "x-session-id": self.session.id},
            protocol="grpc" if "grpc" in self.orch.hub.protocols else None,  # full duplex (see stt_stream)
        )
        self._streams.add(stream)
        self._targets[stream] = self._stt_target()
        return stream

    def _stt_target(self) -> str | None:
        """Where the hub sends STT calls now (host:port), or None when it cannot tell."""
        endpoint = getattr(self.orch.hub, "endpoint", None)
        if endpoint is None:
            return None
        try:
            return str(endpoint(self.orch.services["stt"]).grpc_target)
        except CallError:
            return None

    def _moved(self, stream: SttStream, pcm: bytes, now: float) -> bool:
        """The STT service moved to a new instance (a profile switch): hand the conversation over
        between utterances, on a quiet frame, so the old instance drains with no stream cut."""
        if now - self._moved_checked_at < 0.25 or stream.in_speech or stream.input_ended:
            return False
        self._moved_checked_at = now
        opened_on = self._targets.get(stream)
        return opened_on is not None and self._stt_target() not in (None, opened_on) and dbfs(pcm) < QUIET_DBFS

    @staticmethod
    def _stale(stream: SttStream, pcm: bytes) -> bool:
        """Time to replace an idle stream (see the module docstring); only when this frame is quiet."""
        fed = stream.clock.seconds
        if stream.in_speech or stream.input_ended:
            return False
        if stream.responses == 0 and fed >= RECYCLE_FORCE_S:
            return True
        long_idle = stream.responses == 0 and fed >= RECYCLE_UNANSWERED_S
        too_old = time.monotonic() - stream.opened_at >= RECYCLE_AGE_S
        return (long_idle or too_old) and dbfs(pcm) < QUIET_DBFS

    async def _on_event(self, stream: SttStream, ev: stt_pb2.StreamingRecognizeResponse) -> None:
        now = time.monotonic()
        self._failures = 0
        barge = self._checks.get((stream, ev.utterance))
        if ev.type == stt_pb2.SPEECH_STARTED:
            stream.in_speech = True
            await self.sink.send_event({"type": "speech_started", "utterance": ev.utterance})
            if self.busy:
                await self._speech_over_reply(stream, ev.utterance)
        elif ev.type == stt_pb2.PARTIAL:
            text = ev.text.strip()
            await self.sink.send_event({"type": "transcript", "text": text, "final": False})
            if barge is not None and not barge.decided and self._has_words(text):
                await self._confirm(barge, f"{words(text)} words")
        elif ev.type == stt_pb2.SPEECH_PAUSED:
            if barge is not None:
                barge.speaking = False
        elif ev.type == stt_pb2.SPEECH_RESUMED:
            if barge is not None and not barge.decided:
                barge.speaking = True
                self._arm(barge)
        elif ev.type == stt_pb2.SPEECH_ENDED:
            stream.in_speech = False
            turn_end = min(now, stream.ptt_at) if stream.ptt_at is not None else now
            speech_end = stream.clock.arrival(ev.end_s)
            if barge is not None and not barge.decided:
                barge.speaking = False
                self._arm(barge, resume_after=True)
            await self.sink.send_event({
                "type": "speech_ended", "utterance": ev.utterance, "reason": ev.end_reason or "silence",
                "detection": ev.turn_detection or "vad",
                "turn_probability": round(ev.turn_probability, 3) if ev.turn_probability >= 0 else None,
            })
            self._heard_turn(stream, ev, speech_end, turn_end)
        elif ev.type == stt_pb2.FINAL:
            stream.in_speech = False
            text = ev.text.strip()
            await self.sink.send_event({"type": "transcript", "text": text, "final": True})
            heard = self._heard.get((stream, ev.utterance))  # still waiting: a confirm must not interrupt it
            self._checks.pop((stream, ev.utterance), None)
            if barge is not None and barge.decided != "confirmed":
                if self._has_words(text):  # words: a real interruption (even of a reply already resumed)
                    await self._confirm(barge, f"the final transcript has {words(text)} words")
                else:  # a noise, a cough, an echo: no turn, and the reply goes on
                    if not barge.decided:
                        await self._resume(barge, f"no words (heard {text!r})")
                    self._heard.pop((stream, ev.utterance), None)
                    if heard is not None and heard.task is not None:
                        heard.task.cancel()
                    return
            self._heard.pop((stream, ev.utterance), None)
            if heard is not None and not heard.final.done():
                heard.turn.report.mark("stt_final", now)
                heard.final.set_result(text)

    def _heard_turn(
        self, stream: SttStream, ev: stt_pb2.StreamingRecognizeResponse, speech_end: float | None, turn_end: float
    ) -> None:
        """The turn of an utterance that just ended: it starts now and waits for the transcript."""
        turn = Turn(self.session, self.sink, self.out_rate)
        if speech_end is not None:
            turn.report.mark("speech_end", min(speech_end, turn_end))
        turn.report.mark("turn_end_detected", turn_end)
        if stream.tape is not None:
            turn.user_audio = stream.tape.slice(max(0.0, ev.start_s - PRE_ROLL_S), ev.end_s)
        heard = Heard(stream, ev.utterance, turn)
        self._heard[(stream, ev.utterance)] = heard

        async def hear(t: Turn) -> None:
            try:
                t.user_text = await heard.final
            except Exception as e:  # the stream broke before its final: a spoken "didn't catch that"
                t.degrade("stt", e)

        heard.task = self._start(turn, hear=hear, heard=heard)

    # ---- barge-in -------------------------------------------------------------------------------

    def _has_words(self, text: str) -> bool:
        need = self.policy.barge_in_min_words or 0
        return need > 0 and words(text) >= need

    async def _speech_over_reply(self, stream: SttStream, utterance: int) -> None:
        """The user speaks over a reply: interrupt it at once, or pause it until the speech proves itself."""
        if not (self.policy.barge_in_min_speech_ms or self.policy.barge_in_min_words):
            self.log.info("barge-in: the user started speaking over the reply")
            await self.interrupt()
            return
        turns = [t for task, t in self._turns.items() if not task.done() and not self._waiting_for_final(task)]
        check = self._checks[(stream, utterance)] = BargeIn(stream, utterance)
        now = time.monotonic()
        for turn in turns:
            if turn.speech is not None and not turn.speech.paused:
                turn.speech.pause(now)
                await self.sink.send_event({"type": "pause", "turn_id": turn.turn_id})
        self._arm(check)

    def _arm(self, check: BargeIn, *, resume_after: bool = False) -> None:
        """(Re)start the timer: speech that lasts confirms; silence after it resumes the reply."""
        if check.timer is not None:
            check.timer.cancel()
        delay = (self.policy.resume_after_ms if resume_after else self.policy.barge_in_min_speech_ms) or 0
        if delay or resume_after:
            check.timer = asyncio.create_task(self._timer(check, delay / 1000, resume_after), name="barge-in-timer")

    async def _timer(self, check: BargeIn, delay_s: float, resume_after: bool) -> None:
        await asyncio.sleep(delay_s)
        if check.decided:
            return
        if resume_after:
            await self._resume(check, f"no words within {delay_s:g} s")
        elif check.speaking:
            await self._confirm(check, f"speech lasted {delay_s:g} s")

    async def _confirm(self, check: BargeIn, why: str) -> None:
        check.decided = "confirmed"
        if check.timer is not None and check.timer is not asyncio.current_task():
            check.timer.cancel()
        self.log.info("barge-in: the user spoke over the reply (%s); interrupting it", why)
        self.orch.metrics.barge_in_checks.labels("confirmed").inc()
        await self.interrupt()

    async def _resume(self, check: BargeIn, why: str) -> None:
        check.decided = "resumed"
        if check.timer is not None and check.timer is not asyncio.current_task():
            check.timer.cancel()
        self.orch.metrics.barge_in_checks.labels("resumed").inc()
        if any(not c.decided for c in self._checks.values()):
            return  # another sound still holds the reply
        self.log.info("not an interruption (%s); the reply resumes", why)
        now = time.monotonic()
        for task, turn in list(self._turns.items()):
            if not task.done() and turn.speech is not None and turn.speech.paused:
                turn.speech.resume(now)
                await self.sink.send_event({"type": "resume", "turn_id": turn.turn_id})

    async def _on_end(self, stream: SttStream, error: BaseException | None) -> None:
        self._streams.discard(stream)
        self._targets.pop(stream, None)
        if self.stream is stream:
            self.stream = None
        for key, check in list(self._checks.items()):
            if key[0] is stream:
                del self._checks[key]
                if not check.decided:
                    await self._resume(check, "the speech recognition stream ended")
        orphans = [h for key, h in list(self._heard.items()) if key[0] is stream]
        for heard in orphans:
            self._heard.pop((stream, heard.utterance), None)
            if not heard.final.done():
                heard.final.set_exception(error or ConnectionError("the stream ended before the final transcript"))
        if error is None or stream.closing or self.closed:
            return
        self._retry_at = time.monotonic() + RETRY_S[min(self._failures, len(RETRY_S) - 1)]
        self._failures += 1
        self.log.error(
            "speech recognition stream failed: %s", describe(error), exc_info=not isinstance(error, CallError)
        )
        code = error.code if isinstance(error, CallError) else "INTERNAL"
        await self.sink.send_event({
            "type": "error", "code": code, "stage": "stt",
            "message": f"speech recognition failed ({describe(error)}); keep talking, it restarts by itself",
        })
        if stream.in_speech:  # the utterance in progress is lost: say so
            turn = Turn(self.session, self.sink, self.out_rate)
            turn.degrade("stt", error)
            turn.report.mark("turn_end_detected")
            self._start(turn)

    # ---- turns ----------------------------------------------------------------------------------

    def _start(self, turn: Turn, *, hear: Any = None, heard: Heard | None = None) -> asyncio.Task[None] | None:
        if self.closed:
            return None
        self._in_session()
        task = asyncio.create_task(self._run(turn, hear, heard), name=f"voice-turn-{turn.turn_id}")
        self._turns[task] = turn
        task.add_done_callback(lambda done: self._turns.pop(done, None))
        return task

    async def _run(self, turn: Turn, hear: Any, heard: Heard | None) -> None:
        try:
            await self.orch.run(turn, hear=hear, hold_playback=True)
        except CallError as e:  # Overloaded (admission full) or a rejected request
            self.log.warning("turn %s not run: %s", turn.turn_id, describe(e))
            event: dict[str, Any] = {"type": "error", "code": e.code, "message": e.message, "turn_id": turn.turn_id}
            if (retry := getattr(e, "retry_after_s", None)) is not None:
                event["retry_after_s"] = retry
            await self.sink.send_event(event)
            if heard is not None:
                self._heard.pop((heard.stream, heard.utterance), None)
                heard.stream.cancel(heard.utterance)  # nobody will read that transcript: free the engine
            if isinstance(e, Overloaded):
                await self._say_busy(turn)
        except Exception as e:  # a bug must not end the conversation
            self.log.exception("turn %s failed: %s", turn.turn_id, describe(e))
            await self.sink.send_event({
                "type": "error", "code": "INTERNAL", "turn_id": turn.turn_id,
                "message": f"the turn failed ({describe(e)}); the conversation goes on",
            })

    async def _say_busy(self, turn: Turn) -> None:
        """The refused turn gets the agent's busy phrase, from a cache (no slot, no LLM; TTS once per voice)."""
        with contextlib.suppress(Exception):  # best effort: the error event already went out
            pcm = await self.orch.replies.cached_phrase(self.session, self.session.agent.busy_phrase, self.out_rate)
            if pcm and not self.closed:
                await self.sink.send_event({"type": "audio_start", "sample_rate": self.out_rate})
                step = int(self.out_rate * 0.1) * 2
                for i in range(0, len(pcm), step):
                    await self.sink.send_audio(pcm[i : i + step])
                await self.sink.send_event({"type": "audio_end", "turn_id": turn.turn_id})
