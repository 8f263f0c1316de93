"""SessionManager: live sessions in memory, every finished turn in the store.

A session is created (or resumed by id from the store after an eviction or a restart of main),
used by turns, and ended. Sessions idle past ``idle_timeout_s`` are dropped from memory by a
background loop; their history stays in the store, so the next ``get`` resumes them. At most
``max_sessions`` live in memory: past it, idle ones are evicted first, then a new one gets
:class:`~core.errors.Overloaded` (503).

History kept in memory is capped (``history_cap``): the LLM sees at most ``history_turns`` earlier
turns anyway, and the store keeps everything for transcripts.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from core.access.principal import OPEN, Principal
from core.config.models import ConversationConfig
from core.conversation.types import AgentConfig, HistoryItem, Session, TurnRecord
from core.errors import ConfigError, InvalidArgument, NotFound, Overloaded, ServiceFailed
from core.sessions.metrics import SessionMetrics
from core.sessions.store import ConversationStore

log = logging.getLogger("ultravox.sessions")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RECENTLY_ENDED = 10_000


def history_cap(agent: AgentConfig) -> int:
    """History items kept in memory: two per turn the LLM may see, with room to spare."""
    return max(4 * agent.history_turns, 40)


def check_session_id(session_id: str) -> str:
    if not SESSION_ID.match(session_id):
        raise InvalidArgument(
            f"invalid session id {session_id[:80]!r}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
        )
    return session_id


def history_items(user_text: str, assistant_text: str, interrupted: bool) -> list[HistoryItem]:
    """What one turn adds to the LLM's context. A turn where nothing was heard adds nothing."""
    if not user_text.strip():
        return []
    items = [HistoryItem("user", user_text)]
    if assistant_text.strip():
        items.append(HistoryItem("assistant", assistant_text, interrupted=interrupted))
    return items


class SessionManager:
    def __init__(
        self, store: ConversationStore, agents: Mapping[str, AgentConfig], config: ConversationConfig,
        *, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        if config.default_agent not in agents:
            raise ConfigError(
                "services.yaml", "conversation.default_agent",
                f"agent {config.default_agent!r} has no file in the agents folder; agents: {', '.join(sorted(agents))}",
            )
        self.store, self.agents, self.config = store, dict(agents), config
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # ended here lately; the store may lag a write
        self._metrics = SessionMetrics(registry)
        self._eviction: asyncio.Task[None] | None = None

    # ---- lifecycle of sessions -------------------------------------------------------------
    def create(
        self, *, agent: str | None = None, session_id: str | None = None, voice: str | None = None,
        language: str | None = None, by: Principal = OPEN,
    ) -> Session:
        """A new session (owned by ``by``), or the live (or stored) one with this id if ``by`` may use it."""
        session_id, agent = by.scope(session_id, agent)
        if session_id is not None:
            check_session_id(session_id)
            if (live := self._sessions.get(session_id)) is not None:
                by.check_session(live.id, live.owner, live.agent.name)
                live.touch()
                return live
            row = self.store.session_row(session_id)
            if row is not None:
                by.check_session(session_id, row["owner"], row["agent"])
            if session_id in self._ended or (row is not None and row["ended_at"] is not None):
                raise InvalidArgument(f"session {session_id!r} has ended; start a new one with another id")
            if row is not None:
                return self._resume(row)
        ag = self.agent(agent or self.config.default_agent)
        self._make_room()
        now = self._clock()
        s = Session(
            id=session_id or uuid.uuid4().hex, agent=ag, voice=ag.voice if voice is None else voice,
            language=language or ag.language, created_at=now, last_active=now, owner=by.owner,
        )
        self._sessions[s.id] = s
        self.store.put_session(s)
        self._metrics.created.inc()
        self._metrics.active.set(len(self._sessions))
        log.info("session created (agent %s)", ag.name, extra={"session_id": s.id})
        return s

    def get(self, session_id: str, by: Principal = OPEN) -> Session:
        """The live session, else the stored one resumed (history rebuilt); NotFound if unknown/ended,
        or not ``by``'s to use."""
        check_session_id(session_id)
        if (live := self._sessions.get(session_id)) is not None:
            by.check_session(live.id, live.owner, live.agent.name)
            live.touch()
            return live
        row = self.store.session_row(session_id)
        if row is None and session_id not in self._ended:
            raise NotFound(f"unknown session {session_id!r}; create one with POST /api/sessions")
        if row is not None:
            by.check_session(session_id, row["owner"], row["agent"])
        if row is None or row["ended_at"] is not None or session_id in self._ended:
            raise NotFound(f"session {session_id!r} has ended; its transcript is still at "
                           f"GET /api/sessions/{session_id}/transcript")
        return self._resume(row)

    def _resume(self, row: Mapping[str, Any]) -> Session:
        sid = row["id"]
        ag = self.agents.get(row["agent"])
        if ag is None:
            ag = self.agents[self.config.default_agent]
            log.warning("stored agent %r is gone; resuming with %r", row["agent"], ag.name, extra={"session_id": sid})
        self._make_room()
        history: list[HistoryItem] = []
        for t in self.store.recent_turns(sid, history_cap(ag) // 2):
            history += history_items(t["user_text"], t["assistant_text"], t["interrupted"])
        s = Session(
            id=sid, agent=ag, voice=row["voice"], language=row["language"], created_at=row["created_at"],
            last_active=self._clock(), history=history, turn_count=int(row["turn_count"]), owner=row["owner"],
        )
        self._sessions[sid] = s
        self._metrics.resumed.inc()
        self._metrics.active.set(len(self._sessions))
        log.info("session resumed from the store (%d turns)", s.turn_count, extra={"session_id": sid})
        return s

    def configure(self, session: Session, *, voice: str | None = None, language: str | None = None) -> None:
        """Change a session's voice or language for later turns (saved with the session)."""
        changed = False
        if voice is not None and voice != session.voice:
            session.voice, changed = voice, True
        if language and language != session.language:
            session.language, changed = language, True
        if changed:
            self.store.put_session(session)

    def check_access(self, session_id: str, by: Principal) -> None:
        """NotFound (or PermissionDenied for a scoped token) unless ``by`` may use the session, live,
        stored or ended."""
        check_session_id(session_id)
        if (live := self._sessions.get(session_id)) is not None:
            by.check_session(live.id, live.owner, live.agent.name)
            return
        row = self.store.session_row(session_id)
        if row is None:
            by.scope(session_id, None)
            raise NotFound(f"unknown session {session_id!r}")
        by.check_session(session_id, row["owner"], row["agent"])

    def end(self, session_id: str, by: Principal = OPEN) -> None:
        """End a session: it leaves memory and cannot be resumed; its transcript stays."""
        check_session_id(session_id)
        if by is not OPEN:
            self.check_access(session_id, by)
        if session_id in self._ended:
            return
        live = self._sessions.pop(session_id, None)
        if live is None:
            row = self.store.session_row(session_id)
            if row is None:
                raise NotFound(f"unknown session {session_id!r}")
            if row["ended_at"] is not None:
                return
        else:
            live.ended = True
            self._metrics.active.set(len(self._sessions))
        self._ended[session_id] = None
        while len(self._ended) > RECENTLY_ENDED:
            self._ended.popitem(last=False)
        self.store.end_session(session_id, self._clock())
        log.info("session ended", extra={"session_id": session_id})

    async def purge(self, session_id: str, by: Principal = OPEN) -> None:
        """End a session and delete it and its turns from the store (its id may be used again)."""
        self.end(session_id, by)
        await self.store.purge_session(session_id)
        self._ended.pop(session_id, None)

    async def record_turn(self, session: Session, record: TurnRecord) -> None:
        """Add a finished turn to the history and the store; returns once it is committed."""
        session.history += history_items(
            record.user_text, record.assistant_text, record.interrupted or record.outcome == "interrupted"
        )
        cap = history_cap(session.agent)
        if len(session.history) > cap:
            del session.history[: len(session.history) - cap]
        session.turn_count = max(session.turn_count, record.index + 1)
        session.touch()
        try:
            await self.store.add_turn(session, record)
        except Exception as e:
            log.error("turn %s not saved: %s", record.turn_id, e, extra={"session_id": session.id})
            raise ServiceFailed(f"the turn could not be saved to the conversation store: {e}") from e
        self._metrics.turns_saved.labels(record.outcome).inc()

    # ---- queries ---------------------------------------------------------------------------
    def agent(self, name: str) -> AgentConfig:
        try:
            return self.agents[name]
        except KeyError as e:
            raise NotFound(f"unknown agent {name!r}; agents: {', '.join(sorted(self.agents))}") from e

    def describe(self, s: Session) -> dict[str, Any]:
        return {
            "session_id": s.id, "agent": s.agent.name, "voice": s.voice, "language": s.language,
            "created_at": s.created_at, "last_active": s.last_active,
            "idle_s": round(max(0.0, self._clock() - s.last_active), 3), "turn_count": s.turn_count,
            "turn_running": s.turn_lock.locked(), "history_items": len(s.history),
        }

    def list(self, by: Principal = OPEN) -> builtins.list[dict[str, Any]]:
        """Live sessions ``by`` may see, most recently active first."""
        mine = (s for s in self._sessions.values()
                if by.sees_all_sessions or by.via == "open" or (s.owner == by.name and by.session_id in (None, s.id)))
        return [self.describe(s) for s in sorted(mine, key=lambda s: -s.last_active)]

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    # ---- eviction --------------------------------------------------------------------------
    def evict_idle(self, now: float | None = None) -> builtins.list[str]:
        """Drop sessions idle past the timeout (never one in a turn); returns their ids."""
        now = self._clock() if now is None else now
        gone = [
            s.id for s in self._sessions.values()
            if now - s.last_active >= self.config.idle_timeout_s and not s.turn_lock.locked()
        ]
        for sid in gone:
            del self._sessions[sid]
            self._metrics.evicted.inc()
            log.info("session evicted after %.0f s idle", self.config.idle_timeout_s, extra={"session_id": sid})
        if gone:
            self._metrics.active.set(len(self._sessions))
        return gone

    def _make_room(self) -> None:
        if len(self._sessions) < self.config.max_sessions:
            return
        self.evict_idle()
        if len(self._sessions) < self.config.max_sessions:
            return
        self._metrics.rejected.inc()
        oldest = min(s.last_active for s in self._sessions.values())
        wait = oldest + self.config.idle_timeout_s - self._clock()
        raise Overloaded(
            f"too many live sessions ({len(self._sessions)} = conversation.max_sessions); end unused ones with "
            "DELETE /api/sessions/{id}, or retry later",
            retry_after_s=min(max(1.0, wait), 300.0),
        )

    async def run_eviction(self) -> None:
        """Evict idle sessions forever, every quarter of the idle timeout (between 1 and 60 s)."""
        period = min(60.0, max(1.0, self.config.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            try:
                self.evict_idle()
            except Exception:  # never let a bug end the loop silently
                log.exception("session eviction failed")

    def start(self) -> None:
        """Start the eviction loop as a task owned by this manager."""
        if self._eviction is None:
            self._eviction = asyncio.create_task(self.run_eviction(), name="session-eviction")

    async def close(self) -> None:
        """Stop the eviction loop, then flush and close the store."""
        if self._eviction is not None:
            self._eviction.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._eviction
            self._eviction = None
        await self.store.close()
