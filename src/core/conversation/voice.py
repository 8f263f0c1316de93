"""A streaming voice conversation: audio frames in, turns detected by the STT's VAD, replies out.

The client's PCM16 16 kHz frames go into one StreamingRecognize stream (:class:`SttStream`).
Its events drive the turns:

- ``SPEECH_STARTED``: a ``speech_started`` event; if a reply is generating or still playing,
  that is a barge-in and the reply is interrupted (see :meth:`Orchestrator.run`);
- ``PARTIAL``: a ``transcript`` event with ``final: false`` (when partials are on);
- ``SPEECH_ENDED``: the turn-end mark; the end of speech on the input clock is mapped to the
  monotonic time that audio arrived;
- ``FINAL``: a ``transcript`` event with ``final: true``, then the turn runs in the background
  (an empty transcript gets the not-heard phrase).

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
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from core.conversation.audio import STT_RATE, dbfs
from core.conversation.stt_stream import SttStream
from core.conversation.turn import Turn, describe
from core.conversation.types import EventSink, Session
from core.errors import CallError
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


class VoiceConversation:
    def __init__(
        self, orchestrator: Orchestrator, session: Session, sink: EventSink, *, out_rate: int,
        end_silence_ms: int, partials: bool = False,
    ) -> None:
        self.orch, self.session, self.sink, self.out_rate = orchestrator, session, sink, out_rate
        self.end_silence_ms, self.partials = end_silence_ms, partials
        self.log = orchestrator.log
        self.stream: SttStream | None = None
        self.closed = False
        self.dropped_frames = 0
        self._streams: set[SttStream] = set()
        self._turns: dict[asyncio.Task[None], Turn] = {}
        self._failures = 0
        self._retry_at = 0.0
        self._warned_backlog = False
        self._targets: dict[SttStream, str | None] = {}  # where each stream was opened (the STT instance)
        self._moved_checked_at = 0.0

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

    async def end_utterance(self) -> None:
        """Push-to-talk: the user finished speaking; the utterance is finalised now."""
        if self.stream is not None:
            self.stream.end_input(ptt_at=time.monotonic())
            self.stream = None

    async def interrupt(self) -> None:
        """Stop the reply that is generating or playing (the client's own barge-in)."""
        for turn in list(self._turns.values()):
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
        await self.interrupt()
        streams = list(self._streams)
        self.stream = None
        await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
        if self._turns:
            await asyncio.wait(list(self._turns), timeout=30)

    @property
    def busy(self) -> bool:
        return any(not t.done() for t in self._turns)

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
        vad = stt_pb2.VadConfig(end_silence_ms=self.end_silence_ms)
        config = stt_pb2.StreamingConfig(
            sample_rate=STT_RATE, language=self.session.language, vad=vad, partials=self.partials,
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
        if ev.type == stt_pb2.SPEECH_STARTED:
            stream.in_speech = True
            await self.sink.send_event({"type": "speech_started", "utterance": ev.utterance})
            if self.busy:
                self.log.info("barge-in: the user started speaking over the reply")
                await self.interrupt()
        elif ev.type == stt_pb2.PARTIAL:
            await self.sink.send_event({"type": "transcript", "text": ev.text.strip(), "final": False})
        elif ev.type == stt_pb2.SPEECH_ENDED:
            stream.in_speech = False
            turn_end = min(now, stream.ptt_at) if stream.ptt_at is not None else now
            stream.ends[ev.utterance] = (stream.clock.arrival(ev.end_s), turn_end)
        elif ev.type == stt_pb2.FINAL:
            stream.in_speech = False
            text = ev.text.strip()
            await self.sink.send_event({"type": "transcript", "text": text, "final": True})
            speech_end, turn_end = stream.ends.pop(ev.utterance, (stream.clock.arrival(ev.end_s), now))
            turn = Turn(self.session, self.sink, self.out_rate, user_text=text)
            if speech_end is not None:
                turn.report.mark("speech_end", min(speech_end, turn_end))
            turn.report.mark("turn_end_detected", turn_end)
            turn.report.mark("stt_final", now)
            if stream.tape is not None:
                turn.user_audio = stream.tape.slice(max(0.0, ev.start_s - PRE_ROLL_S), ev.end_s)
            self._start(turn)

    async def _on_end(self, stream: SttStream, error: BaseException | None) -> None:
        self._streams.discard(stream)
        self._targets.pop(stream, None)
        if self.stream is stream:
            self.stream = None
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

    def _start(self, turn: Turn) -> None:
        if self.closed:
            return
        self._in_session()
        task = asyncio.create_task(self._run(turn), name=f"voice-turn-{turn.turn_id}")
        self._turns[task] = turn
        task.add_done_callback(lambda done: self._turns.pop(done, None))

    async def _run(self, turn: Turn) -> None:
        try:
            await self.orch.run(turn, hold_playback=True)
        except CallError as e:  # Overloaded (admission full) or a rejected request
            self.log.warning("turn %s not run: %s", turn.turn_id, describe(e))
            event: dict[str, Any] = {"type": "error", "code": e.code, "message": e.message, "turn_id": turn.turn_id}
            if (retry := getattr(e, "retry_after_s", None)) is not None:
                event["retry_after_s"] = retry
            await self.sink.send_event(event)
        except Exception as e:  # a bug must not end the conversation
            self.log.exception("turn %s failed: %s", turn.turn_id, describe(e))
            await self.sink.send_event({
                "type": "error", "code": "INTERNAL", "turn_id": turn.turn_id,
                "message": f"the turn failed ({describe(e)}); the conversation goes on",
            })
