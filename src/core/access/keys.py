"""API keys: each has a name, a role, an optional expiry and its own rate limits; only its SHA-256 is kept.

Three sources, looked up by the key's hash:

* the env var ``gateway.api_key_env`` (``UV_API_KEY``): one key named after the variable, with
  role ``gateway.auth.env_key_role`` (admin by default), as before roles existed;
* the keys file (``gateway.auth.keys_file``, YAML list of :class:`~core.config.models.KeyEntry`),
  which holds hashes only; ``sm keys hash`` prints a new key and its entry;
* keys made through the API (``POST /api/keys``, admin only), kept in the conversation store.

Keys are 32 random bytes, so one unsalted SHA-256 is as hard to reverse as the key is to guess.
Auth is on as soon as any key exists.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from core.access.principal import Principal
from core.config.models import KEY_NAME_PATTERN, KeyEntry, RateLimits, Role
from core.errors import ConfigError, InvalidArgument, NotFound, Unauthenticated
from core.sessions.store import ConversationStore

log = logging.getLogger("ultravox.access")
KEY_PREFIX = "uvk_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    role: Role
    sha256: str
    source: str
    """env, file or api."""
    expires_at: float | None = None
    rate_limits: RateLimits | None = None
    created_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What listing keys shows: never the hash."""
        return {
            "name": self.name, "role": self.role, "source": self.source, "expires_at": self.expires_at,
            "created_at": self.created_at,
            "rate_limits": self.rate_limits.model_dump() if self.rate_limits else None,
        }


def load_key_file(path: Path) -> list[ApiKey]:
    """The keys file's entries (a missing file is none); a bad file is a ConfigError naming the entry."""
    if not path.is_file():
        return []
    try:
        raw = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "gateway.auth.keys_file", f"not valid YAML: {e}") from e
    if isinstance(raw, dict):
        raw = raw.get("keys", [])
    try:
        entries = TypeAdapter(list[KeyEntry]).validate_python(raw)
    except ValidationError as e:
        raise ConfigError(str(path), "gateway.auth.keys_file",
                          f"each entry needs name, role and sha256 (the key's hash, from 'sm keys hash'): {e}") from e
    names = [e.name for e in entries]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(str(path), "gateway.auth.keys_file", f"key names must be unique: {', '.join(dup)}")
    return [ApiKey(e.name, e.role, e.sha256, "file", e.expires_at, e.rate_limits) for e in entries]


class KeyRing:
    """Every API key main accepts, by hash."""

    def __init__(self, store: ConversationStore | None, *, env_key: str = "", env_name: str = "UV_API_KEY",
                 env_role: Role = "admin", file_keys: list[ApiKey] | None = None) -> None:
        self.store = store
        self._static: list[ApiKey] = list(file_keys or [])
        if env_key:
            self._static.insert(0, ApiKey(env_name, env_role, digest(env_key), "env"))
        self._by_hash: dict[str, ApiKey] = {}
        self.reload()

    def attach_store(self, store: ConversationStore) -> None:
        self.store = store
        self.reload()

    def reload(self) -> None:
        keys = list(self._static)
        if self.store is not None:
            for r in self.store.api_keys():
                limits = (RateLimits(per_minute=r["per_minute"], per_hour=r["per_hour"])
                          if r["per_minute"] is not None else None)
                keys.append(ApiKey(r["name"], r["role"], r["sha256"], "api", r["expires_at"], limits, r["created_at"]))
        self._by_hash = {k.sha256: k for k in keys}

    @property
    def enabled(self) -> bool:
        """Auth is on once any key exists."""
        return bool(self._by_hash)

    def has_admin(self) -> bool:
        return any(k.role == "admin" for k in self._by_hash.values())

    def authenticate(self, key: str, now: float | None = None) -> Principal:
        """The principal for a presented key, or Unauthenticated saying why not."""
        found = self._by_hash.get(digest(key))
        if found is None or not hmac.compare_digest(found.sha256, digest(key)):
            raise Unauthenticated("unknown API key; send a valid key as 'Authorization: Bearer <key>'")
        if found.expires_at is not None and (now or time.time()) >= found.expires_at:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(found.expires_at))
            raise Unauthenticated(f"API key {found.name!r} expired at {when}; ask an admin for a new one")
        return Principal(name=found.name, role=found.role, via="key", expires_at=found.expires_at)

    def get(self, name: str) -> ApiKey | None:
        return next((k for k in self._by_hash.values() if k.name == name), None)

    def list(self) -> list[ApiKey]:
        return sorted(self._by_hash.values(), key=lambda k: k.name)

    async def create(self, name: str, role: Role, *, by: str, expires_at: float | None = None,
                     rate_limits: RateLimits | None = None) -> tuple[ApiKey, str]:
        """A new key kept in the store: returns it and the key itself (shown once, never again)."""
        if not re.fullmatch(KEY_NAME_PATTERN, name):
            raise InvalidArgument(
                f"key name {name[:80]!r}: use 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"
            )
        if self.get(name) is not None:
            raise InvalidArgument(f"an API key named {name!r} exists; pick another name or delete it first")
        if expires_at is not None and expires_at <= time.time():
            raise InvalidArgument("expires_at is in the past; give a future Unix time, or none")
        if self.store is None:
            raise InvalidArgument("keys can be made through the API only with the conversation store open")
        secret = new_key()
        row = {"name": name, "role": role, "sha256": digest(secret), "created_at": time.time(), "created_by": by,
               "expires_at": expires_at, "per_minute": rate_limits.per_minute if rate_limits else None,
               "per_hour": rate_limits.per_hour if rate_limits else None}
        await self.store.put_key(row)
        self.reload()
        log.warning("API key %r (role %s) created by %s", name, role, by)
        key = self.get(name)
        assert key is not None
        return key, secret

    async def delete(self, name: str, *, by: str) -> None:
        k = self.get(name)
        if k is None:
            raise NotFound(f"no API key named {name!r}; GET /api/keys lists them")
        if k.source != "api" or self.store is None:
            raise InvalidArgument(f"key {name!r} comes from the {k.source} config; remove it there and restart main")
        await self.store.delete_key(name)
        self.reload()
        log.warning("API key %r deleted by %s", name, by)
