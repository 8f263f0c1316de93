"""Conversations: the streaming turn pipeline (STT -> LLM -> speakable chunks -> TTS -> client).

Public face: :class:`Orchestrator` (text, audio and streaming voice turns),
:class:`VoiceConversation`, :class:`Outbox` (the bounded sink of streaming transports),
:class:`SpeakableChunker`, and the shared types. Modules:

    types.py          the shared contract: agents, sessions, turns, latency reports, event sinks
    orchestrator.py   one turn end to end: lock, admission, barge-in, playback, record
    voice.py          a streaming voice conversation on the STT's VAD events
    stt_stream.py     one StreamingRecognize call and its audio clock
    reply.py          LLM tokens -> chunks -> TTS, with the degradations
    speech.py         ordered TTS of a reply's chunks to the sink
    chunker.py        speakable chunks from a token stream
    prompt.py         the LLM request: system prompt, recent history, user text
    turn.py           the state of one turn in flight
    control.py        the control messages of streaming clients
    outbox.py         bounded send queue for sockets
    metrics.py        Prometheus histograms and the latency log line
    audio.py          PCM16 helpers
"""

from core.conversation.chunker import SpeakableChunker
from core.conversation.orchestrator import Orchestrator
from core.conversation.outbox import Outbox
from core.conversation.types import (
    STAGES,
    AgentConfig,
    EventSink,
    HistoryItem,
    LatencyReport,
    Session,
    TurnRecord,
)
from core.conversation.voice import VoiceConversation

__all__ = [
    "STAGES",
    "AgentConfig",
    "EventSink",
    "HistoryItem",
    "LatencyReport",
    "Orchestrator",
    "Outbox",
    "Session",
    "SpeakableChunker",
    "TurnRecord",
    "VoiceConversation",
]
