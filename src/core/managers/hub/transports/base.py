"""The one interface every hub transport implements, and the call it is handed.

A transport carries one operation to one endpoint over one protocol and returns the response
message, or raises a :mod:`core.errors` ``CallError``: ``TransportError`` when this protocol
could not carry the call (the hub then tries the next one), anything else when the service
answered (or the deadline passed). Transports know nothing of fallback, retries, breakers or
metrics; the manager owns those, so a fake transport is enough to test all of them.

Streaming operations will get a ``stream(call) -> AsyncIterator[Message]`` method beside
``unary``; ``UnaryCall`` already carries everything a stream needs but its request iterator.
"""

from __future__ import annotations

import asyncio
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


class Transport(Protocol):
    """One protocol (gRPC, HTTP+msgpack, HTTP+JSON) to every service; keeps its connections."""

    async def unary(self, call: UnaryCall) -> Message:
        """Send ``call.request`` and return a ``call.operation.response`` message."""
        ...

    async def close(self) -> None:
        """Close every channel or client this transport holds. Idempotent."""
        ...
