"""The one interface every hub transport implements, and the call it is handed.

A transport carries one operation to one endpoint over one protocol and returns the response
message, or raises a :mod:`core.errors` ``CallError``: ``TransportError`` when this protocol
could not carry the call (the hub then tries the next one), anything else when the service
answered (or the deadline passed). Transports know nothing of fallback, retries, breakers or
metrics; the manager owns those, so a fake transport is enough to test all of them.

Streaming operations use ``stream(call)``, an async generator of response messages. Closing
it (``aclose``) must cancel the remote call. A transport raises ``TransportError`` for a stream
it could not carry *or* that broke; the manager decides whether that may still fall back
(only before the first response message).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from core.managers.endpoint import Endpoint
from core.wire import Operation

Metadata = tuple[tuple[str, str], ...]
"""Call metadata as (lower-case key, value) pairs: gRPC metadata or HTTP headers alike."""


@dataclass(frozen=True, slots=True)
class UnaryCall:
    """One attempt of one unary call over one transport."""

    endpoint: Endpoint
    operation: Operation
    request: Message
    deadline: float
    """Absolute deadline in the running event loop's clock (``loop.time()``)."""
    metadata: Metadata
    """Internal token, request id and the caller's metadata."""
    connect_timeout_s: float
    """Longest wait for a connection that is not up yet, so a dead port does not eat the deadline."""
    fail_fast: bool = False
    """Another transport follows: don't wait on a connection already known to be failing."""

    def remaining(self) -> float:
        """Seconds left until the deadline (negative once it passed)."""
        return self.deadline - asyncio.get_running_loop().time()


@dataclass(frozen=True, slots=True)
class StreamCall:
    """One attempt of one streaming call (SERVER_STREAM or BIDI_STREAM) over one transport."""

    endpoint: Endpoint
    operation: Operation
    request: Message | None
    """The one request of a server stream; None for a bidi stream."""
    requests: AsyncIterator[Message] | None
    """The request messages of a bidi stream (replayed from the start on every attempt)."""
    deadline: float
    """Absolute deadline of the whole stream, in the running loop's clock."""
    metadata: Metadata
    connect_timeout_s: float
    fail_fast: bool = False

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


class Transport(Protocol):
    """One protocol (gRPC, HTTP+msgpack, HTTP+JSON) to every service; keeps its connections."""

    async def unary(self, call: UnaryCall) -> Message:
        """Send ``call.request`` and return a ``call.operation.response`` message."""
        ...

    def stream(self, call: StreamCall) -> AsyncGenerator[Message, None]:
        """Open ``call`` and yield its response messages; ``aclose()`` cancels the remote call."""
        ...

    async def close(self) -> None:
        """Close every channel or client this transport holds. Idempotent."""
        ...
