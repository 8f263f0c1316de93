"""HTTP content types the runtime speaks, and error bodies rendered in the request's type.

Unary bodies are msgpack (``application/msgpack`` or ``application/x-msgpack``) or proto3 JSON
(``application/json``). Streaming replies are msgpack frames or NDJSON
(``application/x-ndjson``); a bidi request body may also be sent as ``application/x-ndjson``.
"""

from __future__ import annotations

import json

import msgpack
from starlette.requests import Request

from core.errors import CallError, InvalidArgument
from core.wire.frames import NDJSON_TYPE

MSGPACK_TYPES = frozenset({"application/msgpack", "application/x-msgpack"})
JSON_TYPE = "application/json"
STREAM_JSON_TYPES = frozenset({JSON_TYPE, NDJSON_TYPE})

__all__ = ["JSON_TYPE", "MSGPACK_TYPES", "NDJSON_TYPE", "STREAM_JSON_TYPES", "UnsupportedMediaType",
           "error_body", "media_type"]


class UnsupportedMediaType(InvalidArgument):
    http_status = 415


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def error_body(err: CallError, media: str) -> tuple[bytes, str]:
    """``{"error": {"code", "message"}}`` as msgpack for a msgpack request, else as JSON."""
    payload = {"error": {"code": err.code, "message": err.message}}
    if media in MSGPACK_TYPES:
        return msgpack.packb(payload, use_bin_type=True), media
    return json.dumps(payload).encode(), JSON_TYPE
