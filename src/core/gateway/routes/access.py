"""Access routes: mint and revoke client tokens (any key), manage API keys (admins).

``POST /api/tokens`` swaps a key for a short-lived token a browser can hold; the token may be
scoped to one session and one agent. ``DELETE /api/tokens/{jti}`` revokes one (the key that
minted it, or an admin). ``/api/keys`` lists, creates (the key is shown once) and deletes the
keys kept in the store; keys from the env or the keys file are listed but changed only there.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.access import principal_of
from core.config.models import EPOCH_2100, KEY_NAME_PATTERN, RateLimits, Role
from core.errors import NotFound
from core.gateway.runtime import runtime_of
from core.sessions import check_session_id

router = APIRouter(prefix="/api", tags=["access"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenRequest(_Body):
    session_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                   description="Scope the token to this session (created on first use if new).")
    agent: str | None = Field(None, max_length=64, description="Scope the token to this agent.")
    ttl_s: int | None = Field(None, ge=10, le=3600, description="Lifetime; gateway.auth.token_ttl_s when absent.")


class TokenResponse(BaseModel):
    token: str
    token_type: str
    expires_in: int
    expires_at: int
    jti: str
    sub: str
    role: str
    iat: int
    iss: str
    session_id: str | None = None
    agent: str | None = None


class Revoked(BaseModel):
    jti: str
    revoked: bool
    expires_at: float


class KeyRequest(_Body):
    name: str = Field(pattern=KEY_NAME_PATTERN, description="Shown in logs and metrics instead of the key.")
    role: Role
    expires_at: float | None = Field(None, ge=0, le=EPOCH_2100, description="Unix time after which the key is refused.")
    rate_limits: RateLimits | None = None


class KeyInfo(BaseModel):
    name: str
    role: str
    source: str
    expires_at: float | None = None
    created_at: float | None = None
    rate_limits: dict[str, int] | None = None


class NewKey(KeyInfo):
    key: str = Field(description="The key itself: shown now and never again.")


class KeyList(BaseModel):
    keys: list[KeyInfo]


@router.post("/tokens", status_code=201, response_model=TokenResponse)
async def mint_token(request: Request, body: TokenRequest | None = None) -> JSONResponse:
    """A client token for the calling key (a token cannot mint tokens)."""
    rt, by = runtime_of(request), principal_of(request)
    body = body or TokenRequest.model_validate({})
    if body.agent is not None:
        rt.sessions.agent(body.agent)   # NotFound naming the agents
    if body.session_id is not None:
        try:
            rt.sessions.check_access(check_session_id(body.session_id), by)
        except NotFound:
            if body.session_id in rt.sessions or rt.sessions.store.session_row(body.session_id) is not None:
                raise
    out = await rt.access.tokens.mint(by, session_id=body.session_id, agent=body.agent, ttl_s=body.ttl_s)
    return JSONResponse(out, status_code=201)


@router.delete("/tokens/{jti}", response_model=Revoked)
async def revoke_token(jti: str, request: Request) -> dict[str, Any]:
    return await runtime_of(request).access.tokens.revoke(jti, principal_of(request))


@router.get("/keys", response_model=KeyList)
async def list_keys(request: Request) -> dict[str, Any]:
    return {"keys": [k.public() for k in runtime_of(request).access.keys.list()]}


@router.post("/keys", status_code=201, response_model=NewKey)
async def create_key(body: KeyRequest, request: Request) -> JSONResponse:
    by = principal_of(request)
    key, secret = await runtime_of(request).access.keys.create(
        body.name, body.role, by=by.label, expires_at=body.expires_at, rate_limits=body.rate_limits,
    )
    return JSONResponse({**key.public(), "key": secret}, status_code=201)


@router.delete("/keys/{name}")
async def delete_key(name: str, request: Request) -> dict[str, Any]:
    await runtime_of(request).access.keys.delete(name, by=principal_of(request).label)
    return {"name": name, "deleted": True}
