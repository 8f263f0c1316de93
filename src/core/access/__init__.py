"""Access: API keys with roles, short-lived client tokens, route rules, rate limits, input limits.

Public face: :class:`Access` (built by main's lifespan once the store is open, kept on
``app.state.access``), :class:`AccessGuard` (the ASGI middleware), :class:`Principal` and
:func:`principal_of`. Modules:

    principal.py   who is calling, and which sessions they may use
    keys.py        API keys by hash: env, keys file, the store
    tokens.py      client tokens (JWT HS256): mint, verify, revoke
    policy.py      the role each route needs
    ratelimit.py   per key and per address, per minute and per hour
    guard.py       the middleware that applies all of it
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from core.access.guard import AccessGuard, check_json_text
from core.access.keys import ApiKey, KeyRing, load_key_file
from core.access.policy import RULES, Rule, missing_rules
from core.access.principal import OPEN, Principal
from core.access.ratelimit import RateLimiter
from core.access.tokens import TokenIssuer, load_secret, looks_like_jwt
from core.config.models import GatewayConfig, RateLimits
from core.errors import Unauthenticated
from core.logs import register_secret
from core.sessions.store import ConversationStore


@dataclass
class Access:
    config: GatewayConfig
    keys: KeyRing
    tokens: TokenIssuer
    limiter: RateLimiter
    requests: Counter = field(repr=False)
    """ultravox_access_total{key, outcome}: every guarded request by caller and outcome."""

    def count(self, key: str, outcome: str) -> None:
        self.requests.labels(key, outcome).inc()

    @property
    def enabled(self) -> bool:
        return self.keys.enabled

    def authenticate(self, credential: str) -> Principal:
        """A key or a client token, as a principal (Unauthenticated saying why not)."""
        if looks_like_jwt(credential):
            principal = self.tokens.verify(credential)
            minter = self.keys.get(principal.name)
            if minter is None or (minter.expires_at is not None and minter.expires_at <= time.time()):
                raise Unauthenticated(f"the API key {principal.name!r} that minted this token was deleted or has "
                                      "expired, and its tokens went with it; get a new token with a valid key")
            return principal
        return self.keys.authenticate(credential)

    def attach_store(self, store: ConversationStore) -> None:
        """Keys made through the API and token records live in the store (opened by the lifespan)."""
        self.keys.attach_store(store)
        self.tokens.attach_store(store)

    def key_limits(self, principal: Principal) -> RateLimits | None:
        if principal.via == "open":
            return None
        key = self.keys.get(principal.name)
        return key.rate_limits if key is not None else None


def env_key(config: GatewayConfig) -> str:
    return os.environ.get(config.api_key_env, "")


def build_access(config: GatewayConfig, *, config_dir: Path, data_dir: Path, registry: Any = None) -> Access:
    """Keys from env and file, the token secret, the rate limiter; the store comes later (attach_store)."""
    auth = config.auth
    key = env_key(config)
    register_secret(key)
    keys_path = Path(auth.keys_file).expanduser()
    if not keys_path.is_absolute():
        keys_path = config_dir / keys_path
    ring = KeyRing(None, env_key=key, env_name=config.api_key_env, env_role=auth.env_key_role,
                   file_keys=load_key_file(keys_path))
    secret_file = Path(auth.jwt_secret_file).expanduser() if auth.jwt_secret_file else data_dir / "jwt_secret"
    secret = load_secret(os.environ.get(auth.jwt_secret_env, ""), secret_file)
    issuer = TokenIssuer(secret, None, default_ttl_s=auth.token_ttl_s, max_ttl_s=auth.token_max_ttl_s)
    limiter = RateLimiter(auth.rate_limits, allowlist=auth.allowlist, registry=registry)
    requests = Counter(
        "ultravox_access_total",
        "Requests to guarded routes by caller (an API key's name, token:<minting key>, '-' for none or when "
        "auth is off) and outcome (allowed, unauthenticated, forbidden, rate_limited).",
        ["key", "outcome"], registry=registry,
    )
    return Access(config, ring, issuer, limiter, requests)


def principal_of(request: Any) -> Principal:
    """The caller of a request or WebSocket (set by :class:`AccessGuard`; everything is open without it)."""
    state = request.scope.get("state") or {}
    p = state.get("principal")
    return p if isinstance(p, Principal) else OPEN


__all__ = [
    "OPEN",
    "RULES",
    "Access",
    "AccessGuard",
    "ApiKey",
    "KeyRing",
    "Principal",
    "RateLimiter",
    "Rule",
    "TokenIssuer",
    "build_access",
    "check_json_text",
    "missing_rules",
    "principal_of",
]
