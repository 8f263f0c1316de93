"""Control messages a streaming client sends (JSON text frames on ``/ws/voice``), parsed and checked.

Every way a message can be wrong raises ``InvalidArgument`` with a message that says what to
send instead; the transport turns it into an ``error`` event and keeps the connection.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.config import TurnTaking
from core.errors import InvalidArgument

TYPES = ("config", "text", "interrupt", "reset", "end")
MIN_RATE, MAX_RATE = 8000, 48000


class VoiceConfig(BaseModel):
    """``{"type": "config", ...}``: which session, agent, voice and language; how replies sound."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["config"] = "config"
    session_id: str | None = Field(default=None, min_length=1, max_length=128, description="Resume this session.")
    agent: str | None = Field(default=None, min_length=1, max_length=64, description="Agent of a new session.")
    voice: str | None = Field(default=None, max_length=64)
    language: str | None = Field(default=None, min_length=2, max_length=16)
    sample_rate: int | None = Field(default=None, ge=MIN_RATE, le=MAX_RATE, description="Reply audio rate (PCM16).")
    end_silence_ms: int | None = Field(default=None, ge=100, le=5000, description="Silence that ends a turn.")
    partials: bool = Field(default=False, description="Send partial transcripts while the user speaks.")
    turn: TurnTaking | None = Field(
        default=None, description="Turn-taking for this session, over the agent's and the server's (what it sets).",
    )


class TextMessage(BaseModel):
    """``{"type": "text", "text": "..."}``: a typed turn."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text"] = "text"
    text: str


class Command(BaseModel):
    """``interrupt``, ``reset`` or ``end``: no other fields."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["interrupt", "reset", "end"]


Control = VoiceConfig | TextMessage | Command


def parse_control(raw: str, *, max_text_chars: int) -> Control:
    """One text frame as a control message; InvalidArgument saying what is wrong with it."""
    try:
        doc: Any = json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(
            f"malformed JSON in a control message ({e}); send a JSON object such as "
            '{"type": "config"} or {"type": "text", "text": "hello"}'
        ) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise InvalidArgument(
            f"a control message must be a JSON object with a string 'type' (one of {', '.join(TYPES)}); "
            f"got {type(doc).__name__}"
        )
    kind = doc["type"]
    if kind not in TYPES:
        raise InvalidArgument(f"unknown control message type {kind[:40]!r}; use one of {', '.join(TYPES)}")
    model: type[BaseModel] = VoiceConfig if kind == "config" else TextMessage if kind == "text" else Command
    try:
        msg = model.model_validate(doc)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or kind}: {err['msg']}" for err in e.errors())
        raise InvalidArgument(f"invalid {kind!r} message: {problems}") from e
    if isinstance(msg, TextMessage) and not msg.text.strip():
        raise InvalidArgument('text is empty; send the user\'s words, as in {"type": "text", "text": "hello"}')
    if isinstance(msg, TextMessage) and len(msg.text) > max_text_chars:
        raise InvalidArgument(
            f"text of {len(msg.text)} characters is over the {max_text_chars}-character limit; send a shorter message"
        )
    assert isinstance(msg, VoiceConfig | TextMessage | Command)
    return msg
