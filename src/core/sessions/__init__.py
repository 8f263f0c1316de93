"""Sessions: live conversations, their persistent store, admission control and rate limits.

Public face: :class:`SessionManager`, :func:`load_agents`, :class:`ConversationStore`,
:class:`Admission`, :class:`RateLimiter`, :class:`Recorder`, plus the REST and polling helpers
the gateway routes use (:class:`CollectingSink`, :class:`ReplyAudioCache`, :class:`PollRegistry`).
"""

from core.sessions.admission import Admission
from core.sessions.agents import load_agents
from core.sessions.manager import SessionManager, check_session_id
from core.sessions.polling import PollBuffer, PollRegistry, PollSink, TurnInProgress
from core.sessions.ratelimit import RateLimiter
from core.sessions.recorder import Recorder
from core.sessions.replies import CollectingSink, ReplyAudioCache, wav_bytes
from core.sessions.store import ConversationStore

__all__ = [
    "Admission",
    "CollectingSink",
    "ConversationStore",
    "PollBuffer",
    "PollRegistry",
    "PollSink",
    "RateLimiter",
    "Recorder",
    "ReplyAudioCache",
    "SessionManager",
    "TurnInProgress",
    "check_session_id",
    "load_agents",
    "wav_bytes",
]
