"""Shared types of a conversation: agent configs, sessions, turns, latency reports, events.

The orchestrator (``core.conversation``), the session layer (``core.sessions``) and the gateway
routes (REST, WebSocket, polling) all speak these types and nothing else of each other.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from core.config import TurnTaking


class AgentConfig(BaseModel):
    """A named agent (``config/agents/<name>.yaml``): how the assistant behaves and sounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="File stem; what clients pass as `agent`.")
    description: str = ""
    system_prompt: str = Field(description="First message of every LLM call.")
    voice: str = Field("", description="TTS voice id; empty uses the TTS service default.")
    language: str = Field("en", description="ISO-639-1 for STT (en, pt); TTS gets the matching locale.")
    tts_engine: str = Field("", description="kokoro | piper; empty uses the TTS service default.")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(160, ge=1, le=4096, description="Cap on one reply's tokens.")
    history_turns: int = Field(12, ge=0, description="Earlier turns sent to the LLM with each request.")
    fallback_phrase: str = Field(
        "Sorry, I'm having trouble answering right now. Please try again in a moment.",
        description="Spoken when the LLM fails.",
    )
    not_heard_phrase: str = Field("Sorry, I didn't catch that.", description="Spoken when STT fails or hears nothing.")
    busy_phrase: str = Field(
        "One moment, please. I'm busy right now; say that again in a few seconds.",
        description="Spoken when a turn is refused because every slot is busy (admission control).",
    )
    turn: TurnTaking = Field(
        default_factory=TurnTaking,  # type: ignore[arg-type]
        description="Turn-taking for this agent's voice sessions, over conversation.turn (only what it sets).",
    )


Role = Literal["user", "assistant"]


@dataclass(slots=True)
class HistoryItem:
    role: Role
    text: str
    interrupted: bool = False


@dataclass(slots=True)
class Session:
    """One conversation. Only its turn lock serialises turns; history is the LLM's context."""

    id: str
    agent: AgentConfig
    voice: str
    language: str
    created_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)
    history: list[HistoryItem] = field(default_factory=list)
    turn_count: int = 0
    ended: bool = False
    owner: str = ""
    """The name of the key (or the minting key of the token) that created it; '' when auth was off."""
    turn_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def touch(self) -> None:
        self.last_active = time.time()


STAGES = (
    "speech_end",          # end of the user's speech, on the input audio's clock
    "turn_end_detected",   # VAD decided the turn is over (or the client said so)
    "stt_final",           # final transcript available
    "llm_first_token",
    "first_chunk_text",    # first speakable chunk cut from the token stream
    "tts_first_audio",     # TTS returned the first audio of that chunk
    "first_audio_sent",    # first reply audio byte handed to the transport
    "turn_complete",
)


@dataclass(slots=True)
class LatencyReport:
    """Per-turn timestamps (``time.monotonic()`` seconds) and the durations derived from them."""

    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, stage: str, at: float | None = None) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown latency stage {stage!r}; stages: {', '.join(STAGES)}")
        self.marks.setdefault(stage, time.monotonic() if at is None else at)

    def between(self, a: str, b: str) -> float | None:
        if a in self.marks and b in self.marks:
            return round(self.marks[b] - self.marks[a], 4)
        return None

    def durations(self) -> dict[str, float | None]:
        """Stage durations in seconds; ``voice_to_voice`` is speech end -> first audio byte sent."""
        return {
            "vad_s": self.between("speech_end", "turn_end_detected"),
            "stt_s": self.between("turn_end_detected", "stt_final"),
            "llm_first_token_s": self.between("stt_final", "llm_first_token"),
            "first_chunk_s": self.between("llm_first_token", "first_chunk_text"),
            "tts_first_audio_s": self.between("first_chunk_text", "tts_first_audio"),
            "send_s": self.between("tts_first_audio", "first_audio_sent"),
            "voice_to_voice_s": self.between("speech_end", "first_audio_sent"),
            "total_s": self.between("speech_end", "turn_complete") or self.between("stt_final", "turn_complete"),
        }

    def to_dict(self) -> dict[str, Any]:
        t0 = min(self.marks.values(), default=0.0)
        return {
            "marks_s": {k: round(v - t0, 4) for k, v in sorted(self.marks.items(), key=lambda kv: kv[1])},
            **self.durations(),
        }


Outcome = Literal["ok", "interrupted", "degraded", "rejected", "failed"]


@dataclass(slots=True)
class TurnRecord:
    """What the store keeps of one finished turn."""

    session_id: str
    turn_id: str
    index: int
    user_text: str
    assistant_text: str
    outcome: Outcome
    interrupted: bool = False
    degraded: str = ""              # which stage degraded: "stt", "llm", "tts" or ""
    error: str = ""
    latency: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    ended_at: float = 0.0
    user_audio_path: str = ""
    assistant_audio_path: str = ""


class EventSink(Protocol):
    """Where a turn's output goes (a WebSocket, a polling queue, a REST collector).

    Events are JSON-able dicts with a ``type``: ready, speech_started, speech_ended (``reason``:
    semantic, silence, max_wait...), transcript (``final: bool``), llm_text (``delta``),
    audio_start (``sample_rate``), audio_end, pause and resume (hold and go on playing the reply:
    a possible interruption is being checked), flush, latency, error (``code``, ``message``,
    ``stage``), turn_complete. Audio is PCM16 mono at the
    rate the client chose, sent as separate binary frames in order.
    """

    async def send_event(self, event: dict[str, Any]) -> None: ...

    async def send_audio(self, pcm: bytes) -> None: ...
