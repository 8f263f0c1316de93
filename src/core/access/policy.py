"""Which role each route needs: one table, checked against the app's routes when main starts.

Every route of the app must have a rule here (or match a public path in config): main refuses
to start otherwise, and the role matrix test calls every route with every kind of caller. A
route the table does not know is treated as needing a client key, so nothing is open by mistake.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Route, WebSocketRoute

from core.config.models import Role


@dataclass(frozen=True, slots=True)
class Rule:
    role: Role
    limited: bool = False
    """Counted by the rate limiter (the conversation routes)."""
    by_param: tuple[str, Mapping[str, Role]] | None = field(default=None)
    """(path parameter, value -> role) for routes whose parameter decides the role; ``role`` otherwise."""

    def role_for(self, params: Mapping[str, object]) -> Role:
        if self.by_param is not None:
            name, roles = self.by_param
            return roles.get(str(params.get(name, "")), self.role)
        return self.role


CLIENT, LIMITED = Rule("client"), Rule("client", limited=True)
OPERATOR, ADMIN = Rule("operator"), Rule("admin")

RULES: dict[tuple[str, str], Rule] = {
    # the control API: operators read it and restart services; the rest is for admins
    ("GET", "/services"): OPERATOR,
    ("GET", "/services/{name}"): OPERATOR,
    ("POST", "/services/{name}/{action}"): Rule(
        "admin", by_param=("action", {"restart": "operator", "start": "operator"})
    ),
    ("GET", "/services/{name}/logs"): ADMIN,
    ("POST", "/call"): ADMIN,
    **{(m, "/proxy/{service}/{path:path}"): ADMIN for m in ("GET", "POST", "PUT", "PATCH", "DELETE")},
    ("GET", "/metrics"): OPERATOR,
    ("GET", "/api/monitoring/targets"): OPERATOR,
    ("GET", "/api/webrtc/stats"): OPERATOR,
    ("GET", "/api/cluster"): OPERATOR,
    ("POST", "/api/cluster/deployments/{deployment}/scale"): OPERATOR,
    ("GET", "/api/resilience"): OPERATOR,
    ("POST", "/api/resilience/breakers/{service}/reset"): OPERATOR,
    ("GET", "/api/profiles"): OPERATOR,
    ("GET", "/api/profiles/{name}"): OPERATOR,
    ("POST", "/api/profiles/{name}/activate"): ADMIN,
    ("GET", "/api/keys"): ADMIN,
    ("POST", "/api/keys"): ADMIN,
    ("DELETE", "/api/keys/{name}"): ADMIN,
    # conversations: clients (keys and tokens), rate limited
    ("POST", "/api/tokens"): LIMITED,
    ("DELETE", "/api/tokens/{jti}"): LIMITED,
    ("POST", "/api/orchestrator/conversation"): LIMITED,
    ("POST", "/api/orchestrator/conversation/audio"): LIMITED,
    ("GET", "/api/audio/{audio_id}.wav"): LIMITED,
    ("POST", "/api/sessions"): LIMITED,
    ("GET", "/api/sessions"): LIMITED,
    ("GET", "/api/sessions/{session_id}"): LIMITED,
    ("DELETE", "/api/sessions/{session_id}"): LIMITED,
    ("GET", "/api/sessions/{session_id}/transcript"): LIMITED,
    ("GET", "/api/agents"): LIMITED,
    ("POST", "/api/poll/{session_id}/text"): LIMITED,
    ("POST", "/api/poll/{session_id}/audio"): LIMITED,
    ("GET", "/api/poll/{session_id}/events"): LIMITED,
    ("WS", "/ws/voice"): LIMITED,
    ("GET", "/api/webrtc/config"): LIMITED,
    ("POST", "/api/offer"): LIMITED,
    ("PATCH", "/api/offer/{pc_id}"): LIMITED,
    ("DELETE", "/api/offer/{pc_id}"): LIMITED,
    ("POST", "/v1/audio/transcriptions"): LIMITED,
    ("POST", "/v1/audio/speech"): LIMITED,
    ("GET", "/v1/audio/voices"): LIMITED,
    ("POST", "/v1/chat/completions"): LIMITED,
    ("GET", "/v1/models"): LIMITED,
    # health, the API's own description and the demo page (/health and the page are public by
    # default: gateway.auth.public_paths)
    ("GET", "/health"): CLIENT,
    ("GET", "/openapi.json"): CLIENT,
    ("GET", "/docs"): CLIENT,
    ("GET", "/docs/oauth2-redirect"): CLIENT,
    ("GET", "/redoc"): CLIENT,
    ("GET", "/"): CLIENT,
    ("GET", "/favicon.ico"): CLIENT,
    ("GET", "/static/{name:path}"): CLIENT,
}
UNKNOWN_ROUTE = CLIENT
"""A path no route matches: a key or token first, then the 404."""


def is_public(path: str, public_paths: Iterable[str]) -> bool:
    for p in public_paths:
        if p.endswith("/*"):
            if path.startswith(p[:-1]):
                return True
        elif path == p:
            return True
    return False


RouteEntry = tuple[str, str, "re.Pattern[str]"]


def app_routes(routes: Iterable[Any]) -> Iterator[RouteEntry]:
    """(method, path template, path regex) of every route, included routers flattened; WebSockets as
    ``WS``, HEAD left out (it rides on GET)."""
    for r in routes:
        if isinstance(r, APIWebSocketRoute | WebSocketRoute):
            yield "WS", r.path, r.path_regex
        elif isinstance(r, APIRoute | Route):
            for m in sorted(r.methods or ()):
                if m != "HEAD":
                    yield m, r.path, r.path_regex
        elif hasattr(r, "effective_route_contexts"):   # FastAPI's included router
            for c in r.effective_route_contexts():
                if c.starlette_route is not None:
                    yield from app_routes([c.starlette_route])
                else:
                    for m in sorted(c.methods):
                        if m != "HEAD":
                            yield m, c.path, c.path_regex


def resolve(table: list[RouteEntry], method: str, path: str) -> tuple[Rule, dict[str, str]]:
    """The rule of the route that serves ``method path``, and its path parameters."""
    method = "GET" if method == "HEAD" else method
    for m, template, rx in table:
        if m == method and (hit := rx.match(path)) is not None:
            return RULES.get((m, template), UNKNOWN_ROUTE), hit.groupdict()
    return UNKNOWN_ROUTE, {}


def missing_rules(routes: Iterable[tuple[str, str]]) -> list[str]:
    """Routes (method, path) of the app without a rule: main refuses to start while any exist."""
    return sorted(f"{m} {p}" for m, p in routes if (m, p) not in RULES)
