"""Conversations: the streaming turn pipeline (STT -> LLM -> speakable chunks -> TTS -> client)."""

from core.conversation.types import (
    STAGES,
    AgentConfig,
    EventSink,
    HistoryItem,
    LatencyReport,
    Session,
    TurnRecord,
)

__all__ = ["STAGES", "AgentConfig", "EventSink", "HistoryItem", "LatencyReport", "Session", "TurnRecord"]
