"""One turn in flight: what it heard, what it said, how it ended, and its latency marks.

A :class:`Turn` is the shared state between the orchestrator (which runs it), the reply
pipeline (which fills it) and a voice conversation (which may interrupt it). It becomes the
stored :class:`TurnRecord` once it is over.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from core.conversation.speech import SpeechOutput
from core.conversation.types import EventSink, LatencyReport, Outcome, Session, TurnRecord
from core.errors import CallError


def new_turn_id() -> str:
    return uuid.uuid4().hex[:12]


def describe(err: BaseException) -> str:
    """``Type: message`` of an error, for logs, events and the stored record."""
    message = err.message if isinstance(err, CallError) else str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


@dataclass(slots=True, eq=False)
class Turn:
    session: Session
    sink: EventSink
    out_rate: int
    report: LatencyReport = field(default_factory=LatencyReport)
    turn_id: str = field(default_factory=new_turn_id)
    index: int = 0
    user_text: str = ""
    user_audio: bytes = b""
    """The user's speech as PCM16 16 kHz mono, for recordings (empty for typed turns)."""
    reply_text: str = ""
    """Everything the LLM produced, and any phrase spoken in its place."""
    degraded: str = ""
    error: str = ""
    interrupted: bool = False
    heard_text: str = ""
    """Set on interruption: the part of the reply the user heard."""
    speech: SpeechOutput | None = None
    started_at: float = field(default_factory=time.time)
    _interrupt: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def interrupt_requested(self) -> bool:
        return self._interrupt.is_set()

    def interrupt(self) -> None:
        """Ask the turn to stop (barge-in); the orchestrator cancels its work and keeps what was heard."""
        self._interrupt.set()

    async def wait_interrupt(self) -> None:
        await self._interrupt.wait()

    def degrade(self, stage: str, err: BaseException | str) -> None:
        """Note the first stage that failed; the turn goes on with a fallback."""
        if not self.degraded:
            self.degraded = stage
            self.error = err if isinstance(err, str) else describe(err)

    def add_reply(self, text: str) -> str:
        """Append ``text`` to the reply; returns the delta as sent to the client (with its joining space)."""
        delta = f" {text}" if self.reply_text and not self.reply_text[-1].isspace() else text
        self.reply_text += delta
        return delta

    @property
    def outcome(self) -> Outcome:
        if self.interrupted:
            return "interrupted"
        return "degraded" if self.degraded else "ok"

    def assistant_text(self) -> str:
        return self.heard_text.strip() if self.interrupted else self.reply_text.strip()

    def record(self) -> TurnRecord:
        return TurnRecord(
            session_id=self.session.id, turn_id=self.turn_id, index=self.index, user_text=self.user_text,
            assistant_text=self.assistant_text(), outcome=self.outcome, interrupted=self.interrupted,
            degraded=self.degraded, error=self.error, latency=self.report.to_dict(), started_at=self.started_at,
            ended_at=time.time(),
        )
