"""Request bytes to messages for both servers: a body the client got wrong is always InvalidArgument.

gRPC: grpcio runs a method's ``request_deserializer`` before any of our code and answers one
that raises with UNKNOWN ("Exception deserializing request!"), which names neither the method
nor the message and reads as a server fault. So the gRPC handlers are registered without a
deserializer (they receive the raw bytes) and parse with :func:`grpc_parser`, which costs the
same ``FromString`` plus a ``try``. A bidirectional stream parses each message as the handler
takes it (:class:`ParsedRequests`), so a bad message mid-stream ends the call with
INVALID_ARGUMENT and the messages before it were served.

HTTP: ``core.wire``'s decoders raise InvalidArgument for what they expect; whatever else a
decoder raises on a client's bytes (a JSON body that is not UTF-8, a string protobuf cannot
encode, nesting deeper than Python recurses) is still the client's mistake, so
:func:`decode_http` turns it into InvalidArgument (400) too, never a 500. :func:`load_json` does
the same for the plain JSON bodies of the OpenAI-compatible routes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Literal

from google.protobuf.message import DecodeError, Message

from core.errors import CallError, InvalidArgument
from core.wire import Operation, from_json, from_msgpack

Parser = Callable[[bytes], Message]


def grpc_parser(op: Operation) -> Parser:
    """``bytes -> op.request``; InvalidArgument naming the method and message type on a bad body."""
    parse = op.request.FromString
    full_name = op.request.DESCRIPTOR.full_name

    def parser(data: bytes) -> Message:
        try:
            return parse(data)
        except (DecodeError, RecursionError) as e:
            raise InvalidArgument(
                f"{op.grpc_path}: the request body must be a serialized {full_name} protobuf message "
                f"({len(data)} bytes could not be parsed: {e})"
            ) from e

    return parser


class ParsedRequests:
    """The request iterator of a bidirectional gRPC call: raw messages parsed as they are taken."""

    def __init__(self, raw: AsyncIterator[bytes], parse: Parser) -> None:
        self._raw, self._parse = raw, parse

    def __aiter__(self) -> ParsedRequests:
        return self

    async def __anext__(self) -> Message:
        return self._parse(await self._raw.__anext__())


def decode_http(op: Operation, protocol: Literal["msgpack", "json"], body: bytes) -> Message:
    """The request of a unary or server-streaming HTTP call; InvalidArgument whatever is wrong with it."""
    try:
        return from_msgpack(op.request, body) if protocol == "msgpack" else from_json(op.request, body)
    except CallError:
        raise
    except Exception as e:  # any failure to decode a client's bytes is a bad request
        raise bad_body(op, protocol, e) from e


def bad_body(op: Operation, protocol: Literal["msgpack", "json"], e: BaseException) -> InvalidArgument:
    """InvalidArgument for a body (or stream frame) that a decoder refused with ``e``."""
    if isinstance(e, UnicodeDecodeError) and protocol == "json":
        why = f"it is not UTF-8 ({e.reason} at byte {e.start})"
    elif isinstance(e, RecursionError):
        why = "it is nested too deeply"
    else:
        why = f"{type(e).__name__}: {e}"
    full_name = op.request.DESCRIPTOR.full_name
    return InvalidArgument(f"{op.http_path}: the {protocol} body is not a valid {full_name}; {why}")


def load_json(body: bytes, expected: str) -> object:
    """A JSON body as Python values (``None`` when empty); InvalidArgument saying it should be ``expected``."""
    try:
        return json.loads(body or b"null")
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = "it is nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise InvalidArgument(f"the body is not JSON (not valid JSON: {why}); send {expected}") from e
