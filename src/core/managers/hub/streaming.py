"""Streams through the hub: open with fallback until the first message, then relay without it.

Opening (:class:`StreamOpener`, one attempt per transport, driven by the manager's rounds):
an attempt opens the transport's stream and waits for its first response message under the
stream's deadline. A ``TransportError`` before that message lets the manager fall back to the
next transport (or retry), exactly like a unary call; for a bidi stream the next attempt reads
a fresh view of the :class:`~core.managers.hub.replay.ReplayBuffer`, so the requests sent so
far are sent again first. A stream that ends cleanly with no message at all is opened too.

Relaying (:func:`relay`): once the first message is in, the stream is committed to its
transport. Messages are passed on as they arrive, each read under the stream's deadline. A
transport failure after that raises ``TransportError`` to the consumer (and counts against the
breaker): the hub never restarts a stream behind its consumer's back, since the service has
already acted on it. The consumer closing the generator closes the transport's stream, which
cancels the remote call (gRPC ``cancel()``, HTTP connection closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from core.errors import CallError, DeadlineExceeded, InvalidArgument, TransportError
from core.managers.endpoint import Endpoint
from core.managers.hub.breaker import CircuitBreaker
from core.managers.hub.replay import ReplayBuffer
from core.managers.hub.transports.base import Metadata, StreamCall
from core.wire import Kind, Operation, to_message

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from core.managers.hub.rounds import Rounds


@dataclass(slots=True)
class Opened:
    """A stream that has its transport and (unless it was empty) its first message."""

    protocol: str
    messages: AsyncGenerator[Message, None]
    first: Message | None
    t0: float


async def _close(gen: AsyncGenerator[Message, None]) -> None:
    with contextlib.suppress(Exception):
        await gen.aclose()


class StreamOpener:
    """Opens one stream over the transport the manager's round picks; keeps the bidi replay buffer."""

    def __init__(self, hub: Rounds, op: Operation, request: Message | None, replay: ReplayBuffer | None) -> None:
        self.hub, self.op, self.request, self.replay = hub, op, request, replay

    @classmethod
    def for_payload(
        cls, hub: Rounds, op: Operation, payload: Any, service: str, method: str
    ) -> StreamOpener:
        """Check the operation is a stream and turn ``payload`` into its request(s)."""
        if op.kind is Kind.UNARY:
            raise InvalidArgument(
                f"{service}.{method} is a unary operation; use call(), not stream()", service=service, method=method
            )
        if op.kind is Kind.SERVER_STREAM:
            return cls(hub, op, to_message(op.request, payload), None)
        iterable = isinstance(payload, AsyncIterable | Iterable)
        if not iterable or isinstance(payload, Message | Mapping | bytes | str):
            raise InvalidArgument(
                f"{service}.{method} is a bidirectional stream: pass its requests as an iterable or async "
                f"iterable of {op.request.DESCRIPTOR.full_name} messages (or dicts), not {type(payload).__name__}",
                service=service, method=method,
            )
        return cls(hub, op, None, ReplayBuffer(payload, lambda item: to_message(op.request, item)))

    def attempt(self, deadline: float) -> Callable[[str, Endpoint, Metadata, bool], Awaitable[Opened]]:
        connect_timeout_s = self.hub.connect_timeout_s

        async def run(name: str, ep: Endpoint, md: Metadata, fail_fast: bool) -> Opened:
            requests = self.replay.view() if self.replay is not None else None
            call = StreamCall(ep, self.op, self.request, requests, deadline, md, connect_timeout_s, fail_fast)
            return await self._open(name, call)

        return run

    async def close(self) -> None:
        if self.replay is not None:
            await self.replay.aclose()

    def caller_error(self) -> BaseException | None:
        """The caller's own request iterator failed (or gave a bad request): that is the real error."""
        return self.replay.error if self.replay is not None else None

    async def _open(self, name: str, call: StreamCall) -> Opened:
        service, method = call.endpoint.name, self.op.name
        t0 = time.perf_counter()
        messages = self.hub.transport(name).stream(call)
        try:
            async with asyncio.timeout_at(call.deadline):
                first = await anext(messages, None)
        except BaseException as e:
            await _close(messages)
            own = self.caller_error()
            if own is not None:
                raise own from e
            err = _as_call_error(e, f"{service}.{method} over {name}")
            if err is None:
                raise
            self.hub.fail(err, service, method, name, t0)
            if err is e:
                raise
            raise err from e
        if first is not None:
            self.hub.metrics.first_message(service, method, name, time.perf_counter() - t0)
        return Opened(name, messages, first, t0)


def _as_call_error(e: BaseException, where: str) -> CallError | None:
    """The CallError for a failure while streaming; None for cancellation and the like."""
    if isinstance(e, CallError):
        return e
    if isinstance(e, TimeoutError):
        return DeadlineExceeded(f"{where}: the stream's deadline passed")
    if isinstance(e, OSError):
        return TransportError(f"{where}: {type(e).__name__}: {e}")
    return None


async def relay(
    opener: StreamOpener, opened: Opened, breaker: CircuitBreaker, deadline: float
) -> AsyncGenerator[Message, None]:
    """Yield the opened stream's messages (see the module docstring); always closes it."""
    hub, service, method, protocol = opener.hub, breaker.service, opener.op.name, opened.protocol
    if opener.replay is not None:
        opener.replay.commit()
    count, finished = 0, False
    try:
        msg = opened.first
        while msg is not None:
            count += 1
            hub.metrics.message(service, method, protocol)
            yield msg
            try:
                async with asyncio.timeout_at(deadline):
                    msg = await anext(opened.messages, None)
            except Exception as e:
                finished = True
                own = opener.caller_error()
                if own is not None:
                    raise own from e
                err = _as_call_error(e, f"{service}.{method} over {protocol}")
                if err is None:
                    raise
                if isinstance(err, TransportError):
                    err = TransportError(
                        f"{service}.{method} over {protocol} broke after {count} message(s); the stream "
                        f"is not restarted (the service already acted on it): {err.message}"
                    )
                    # the service (or the way to it) broke under a live stream
                    breaker.failure(f"{method}: {type(err).__name__}: {err.message}")
                hub.fail(err, service, method, protocol, opened.t0)
                hub.metrics.call_failed(err, service, method)
                if err is e:
                    raise
                raise err from e
        finished = True
        hub.metrics.attempt(service, method, protocol, None, time.perf_counter() - opened.t0)
    finally:
        if not finished:
            hub.metrics.cancelled(service, method, protocol)
        await _close(opened.messages)
        await opener.close()
