"""Sessions: live conversations, their persistent store and admission control.

Public face: :class:`SessionManager`, :func:`load_agents`, :class:`ConversationStore`,
:class:`Admission`, :class:`Recorder`, plus the REST and polling helpers
the gateway routes use (:class:`CollectingSink`, :class:`ReplyAudioCache`, :class:`PollRegistry`).

The two packages import each other: ``core.conversation``'s orchestrator uses the session
manager, and this package's modules use ``core.conversation.types``. So the names here resolve
lazily (PEP 562 ``__getattr__``), and this package loads ``core.conversation`` before anything
else: whichever of the two a program imports first, each finds what it needs of the other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.sessions.admission import Admission
    from core.sessions.agents import load_agents
    from core.sessions.manager import SessionManager, check_session_id
    from core.sessions.polling import PollBuffer, PollRegistry, PollSink, TurnInProgress
    from core.sessions.recorder import Recorder
    from core.sessions.replies import CollectingSink, ReplyAudioCache, wav_bytes
    from core.sessions.store import ConversationStore

_WHERE = {
    "Admission": "admission", "load_agents": "agents", "SessionManager": "manager", "check_session_id": "manager",
    "PollBuffer": "polling", "PollRegistry": "polling", "PollSink": "polling", "TurnInProgress": "polling",
    "Recorder": "recorder", "CollectingSink": "replies", "ReplyAudioCache": "replies",
    "wav_bytes": "replies", "ConversationStore": "store",
}

__all__ = [
    "Admission",
    "CollectingSink",
    "ConversationStore",
    "PollBuffer",
    "PollRegistry",
    "PollSink",
    "Recorder",
    "ReplyAudioCache",
    "SessionManager",
    "TurnInProgress",
    "check_session_id",
    "load_agents",
    "wav_bytes",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'core.sessions' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"core.sessions.{module}"), name)
    globals()[name] = value
    return value


# last, once __getattr__ exists: the orchestrator imported from here finds the names it needs
importlib.import_module("core.conversation")
