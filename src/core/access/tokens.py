"""Short-lived client tokens: signed JWTs (HS256) a browser uses instead of a key.

``POST /api/tokens`` (a key with role client or higher) mints one. Claims: ``sub`` (the minting
key's name, who owns the sessions the token creates), ``role`` (always ``client``), optional
``session_id`` and ``agent`` (the token may use only those), ``iat``, ``exp`` (at most
``auth.token_max_ttl_s``, one hour), ``jti`` and ``iss``. Minted tokens are recorded (never the
token itself) in the store, so ``DELETE /api/tokens/{jti}`` revokes one and the revocation
survives a restart.

The signing secret comes from ``$UV_JWT_SECRET`` or a file created on first start (mode 0600).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from core.access.principal import Principal
from core.errors import ConfigError, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from core.logs import register_secret
from core.sessions.store import ConversationStore

log = logging.getLogger("ultravox.access")
ISSUER = "ultravox-pipeline"
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
JTI = re.compile(r"^[0-9a-f]{32}$")
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and bool(JWT_SHAPE.match(credential))


def load_secret(env_value: str, path: Path) -> bytes:
    """The signing secret: the env value, else the file (created with a random secret if absent)."""
    if env_value:
        if len(env_value.encode()) < MIN_SECRET_BYTES:
            raise ConfigError("env", "gateway.auth.jwt_secret_env",
                              f"the token secret must be at least {MIN_SECRET_BYTES} bytes; "
                              "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'")
        secret = env_value.encode()
    else:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
            log.info("created the token signing secret at %s", path)
        secret = path.read_text().strip().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(str(path), "gateway.auth.jwt_secret_file",
                              f"the token secret is shorter than {MIN_SECRET_BYTES} bytes; "
                              "delete the file to make a new one")
    register_secret(secret.decode(errors="replace"))
    return secret


class TokenIssuer:
    def __init__(self, secret: bytes, store: ConversationStore | None, *, default_ttl_s: int, max_ttl_s: int) -> None:
        self._secret = secret
        self.store = store
        self.default_ttl_s, self.max_ttl_s = default_ttl_s, max_ttl_s
        self._revoked: dict[str, float] = store.revoked_tokens(time.time()) if store is not None else {}

    def attach_store(self, store: ConversationStore) -> None:
        self.store = store
        self._revoked.update(store.revoked_tokens(time.time()))

    async def mint(self, by: Principal, *, session_id: str | None = None, agent: str | None = None,
                   ttl_s: int | None = None) -> dict[str, Any]:
        """A token for ``by`` (a key): ``{"token", "jti", "expires_at", "expires_in", ...claims}``."""
        if by.via == "token":
            raise PermissionDenied("a client token cannot mint tokens; use an API key for POST /api/tokens")
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        if not 10 <= ttl <= self.max_ttl_s:
            raise InvalidArgument(f"ttl_s must be between 10 and {self.max_ttl_s} seconds; got {ttl}")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": by.name, "role": "client", "iat": now, "exp": now + ttl,
                                  "jti": uuid.uuid4().hex, "iss": ISSUER}
        if session_id is not None:
            claims["session_id"] = session_id
        if agent is not None:
            claims["agent"] = agent
        if self.store is not None:
            await self.store.put_token({"jti": claims["jti"], "subject": by.name, "session_id": session_id,
                                        "agent": agent, "issued_at": now, "expires_at": claims["exp"]})
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        log.info("client token %s minted by %s for %d s%s", claims["jti"], by.name, ttl,
                 f" (session {session_id})" if session_id else "")
        return {"token": token, "token_type": "Bearer", "expires_in": ttl, "expires_at": claims["exp"], **claims}

    def verify(self, token: str, now: float | None = None) -> Principal:
        """The principal a token stands for, or Unauthenticated saying exactly what is wrong."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "iss"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise Unauthenticated("the token has expired; get a new one from POST /api/tokens") from e
        except jwt.InvalidSignatureError as e:
            raise Unauthenticated("the token's signature does not match: it was altered, or signed by "
                                  "another server; get a new one from POST /api/tokens") from e
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"not a valid token ({e}); get a new one from POST /api/tokens") from e
        jti = str(claims["jti"])
        if jti in self._revoked:
            raise Unauthenticated(f"the token {jti} was revoked; get a new one from POST /api/tokens")
        if claims.get("role") != "client":
            raise Unauthenticated("the token's role is not 'client'; only client tokens are issued here")
        sid, agent = claims.get("session_id"), claims.get("agent")
        return Principal(name=str(claims["sub"]), role="client", via="token",
                         session_id=str(sid) if sid is not None else None,
                         agent=str(agent) if agent is not None else None, jti=jti,
                         expires_at=float(claims["exp"]))

    async def revoke(self, jti: str, by: Principal) -> dict[str, Any]:
        """Revoke a minted token: admins any, other keys only the ones they minted."""
        if by.via == "token":
            raise PermissionDenied("a client token cannot revoke tokens; use the API key that minted it")
        if not JTI.match(jti):
            raise InvalidArgument(f"{jti[:80]!r} is not a token id (32 hex digits: the jti of POST /api/tokens)")
        row = self.store.token_row(jti) if self.store is not None else None
        if row is None or (not by.at_least("admin") and row["subject"] != by.name):
            raise NotFound(f"no token {jti} minted by this key; only tokens this key minted can be revoked")
        now = time.time()
        if row["revoked_at"] is None and self.store is not None:
            await self.store.revoke_token(jti, by.name, now)
        self._revoked[jti] = float(row["expires_at"])
        self._revoked = {j: exp for j, exp in self._revoked.items() if exp > now}
        log.warning("client token %s revoked by %s", jti, by.label)
        return {"jti": jti, "revoked": True, "expires_at": row["expires_at"]}
