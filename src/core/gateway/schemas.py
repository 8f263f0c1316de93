"""Response shapes the gateway's routes share in their OpenAPI schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error main answers: ``{"error": {"code", "message"}}`` (app.py's handlers write it)."""

    error: ErrorDetail


ERROR_MEANING = {
    400: "Bad input: the message says what was wrong and what to send instead.",
    404: "Not found: the message names what.",
    409: "A turn is already running in this session, or another switch is.",
    413: "The body is over its limit (the message names the setting).",
    401: "No key or token, or one that is unknown, expired, tampered or revoked (docs/security.md).",
    403: "The key's role is too low, or a scoped token asked for another session.",
    429: "Over the rate limit of this key or address: retry after Retry-After.",
    503: "Busy, or a service is down: retry after Retry-After.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting ``codes`` with the error body, for routers and routes."""
    return {c: {"model": ErrorBody, "description": ERROR_MEANING[c]} for c in codes}
