"""Who is calling: an API key (with its role), a client token (with its scope), or nobody.

Roles are ranked: ``client`` < ``operator`` < ``admin``; a rule that asks for one role admits
the higher ones. Operators and admins see every session; a client (key or token) sees only the
sessions it owns, and a token scoped to one session or agent sees only that one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config.models import Role
from core.errors import NotFound, PermissionDenied

RANK: dict[str, int] = {"client": 0, "operator": 1, "admin": 2}
Via = Literal["key", "token", "open"]


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    """The key's name, or a token's subject (the name of the key that minted it)."""
    role: Role
    via: Via
    session_id: str | None = None
    """A token scoped to one session: it may use only this session id."""
    agent: str | None = None
    """A token scoped to one agent: sessions it creates use this agent, and it may use no other."""
    jti: str | None = None
    expires_at: float | None = None

    def at_least(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]

    @property
    def sees_all_sessions(self) -> bool:
        return self.at_least("operator") and self.via != "token"

    @property
    def owner(self) -> str:
        """What sessions this caller creates are owned by ('' when auth is off)."""
        return "" if self.via == "open" else self.name

    @property
    def label(self) -> str:
        """For logs and metrics: the key's name, ``token:<subject>``, or ``-`` when auth is off."""
        return {"key": self.name, "token": f"token:{self.name}", "open": "-"}[self.via]

    def scope(self, session_id: str | None, agent: str | None) -> tuple[str | None, str | None]:
        """The session id and agent a new or joined session gets, after the token's scope.

        A scoped token fills in what the caller left out and refuses anything else.
        """
        if self.session_id is not None:
            if session_id is not None and session_id != self.session_id:
                raise PermissionDenied(
                    f"this token is scoped to session {self.session_id!r} and cannot use session {session_id!r}; "
                    "mint a token for that session (POST /api/tokens with its session_id)"
                )
            session_id = self.session_id
        if self.agent is not None:
            if agent is not None and agent != self.agent:
                raise PermissionDenied(
                    f"this token is scoped to agent {self.agent!r} and cannot use agent {agent!r}; "
                    "mint a token for that agent"
                )
            agent = self.agent
        return session_id, agent

    def check_session(self, session_id: str, owner: str, agent: str | None = None) -> None:
        """Raise unless this caller may read or use the session (owned by ``owner``).

        Another client's session reads as unknown (404), so ids cannot be probed.
        """
        self.scope(session_id, agent)
        if self.sees_all_sessions or self.via == "open" or owner == self.name:
            return
        raise NotFound(f"unknown session {session_id!r}; create one with POST /api/sessions")


OPEN = Principal(name="-", role="admin", via="open")
"""The caller when auth is off (loopback without any key): everything is allowed."""
