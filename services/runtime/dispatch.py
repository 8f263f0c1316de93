"""Protocol-agnostic call path: token check, readiness gate, handler, metrics, logs, errors.

Both servers (gRPC and HTTP) decode a request, build a :class:`CallInfo` and call
:meth:`Dispatcher.invoke` (unary) or iterate :meth:`Dispatcher.stream` (server streaming and
bidirectional); whatever goes wrong comes back as a ``core.errors.CallError`` that each server
renders in its own way. A stream's consumer must close it (``contextlib.aclosing``) so that a
client that went away cancels the handler at once. Control operations (``control.py``) are
answered for every service, and work while the model is still loading.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

from google.protobuf.message import Message
from prometheus_client import Gauge

from core.errors import CallError, InvalidArgument, NotFound, ServiceFailed, ServiceUnavailable, Unauthenticated
from core.wire import CONTROL_OPS, Kind, Operation, operations
from services.runtime.api import CallInfo, Handler, ModelService, UnaryHandler
from services.runtime.binding import bind_handlers
from services.runtime.control import ControlOps
from services.runtime.logs import bind_call
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState

__all__ = ["TOKEN_HINT", "Dispatcher", "bind_handlers"]

TOKEN_HINT = (
    "send the run's internal token in the x-internal-token gRPC metadata or the X-Internal-Token "
    "HTTP header (main generates one per run and passes it to its services; a --standalone "
    "service prints the one it uses, or takes UV_INTERNAL_TOKEN)"
)

StreamHandler = Callable[[Any, CallInfo], AsyncIterator[Message]]


class _Counted:
    """A request iterator that counts what the handler takes from it (a class, so nothing is left to finalize)."""

    def __init__(self, inner: AsyncIterator[Message], counter: Any) -> None:
        self._inner, self._counter = inner, counter

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> Message:
        msg = await self._inner.__anext__()
        self._counter.inc()
        return msg


class Dispatcher:
    """Runs one operation call end to end and keeps the in-flight count used for draining."""

    def __init__(
        self,
        *,
        service_name: str,
        service: ModelService,
        token: str,
        state: ServiceState,
        metrics: RuntimeMetrics,
        version: str,
    ) -> None:
        self.service_name = service_name
        self.role = service.role
        self.operations: dict[str, Operation] = operations(service.role)
        self._token = token.encode()
        self._state = state
        self._metrics = metrics
        control = ControlOps(service_name, service, state, lambda: version)
        self._handlers: dict[str, Handler] = {**bind_handlers(service.role, service.handlers()), **control.handlers()}
        self._in_flight = 0
        self._tasks: dict[asyncio.Task[Any], int] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.log = logging.getLogger(f"ultravox.{service_name}.calls")

    @property
    def in_flight(self) -> int:
        """Calls and streams being served right now."""
        return self._in_flight

    def check_token(self, presented: str | None) -> None:
        if not presented:
            raise Unauthenticated(f"missing internal token: {TOKEN_HINT}")
        if not hmac.compare_digest(presented.encode(), self._token):
            raise Unauthenticated(
                "internal token is wrong (it changes every time main starts); "
                f"use the current run's token: {TOKEN_HINT}"
            )

    def operation(self, method: str) -> Operation:
        op = self.operations.get(method)
        if op is None:
            raise NotFound(
                f"service {self.service_name!r} ({self.role}) has no method {method!r}; "
                f"available: {', '.join(sorted(self.operations))}"
            )
        return op

    async def invoke(self, method: str, request: Message, call: CallInfo, token: str | None) -> Message:
        """Run unary ``method``; raises a ``CallError`` (never anything else) when the call fails."""
        op = self.operation(method)
        if op.kind is not Kind.UNARY:
            raise InvalidArgument(f"{method} is a {op.kind.value} operation; open it as a stream, not a unary call")
        restore_context = bind_call(call.request_id, call.session_id, call.turn_id)
        gauge = self._metrics.in_flight.labels(self.service_name, method)
        self._enter()
        gauge.inc()
        started = time.perf_counter()
        outcome = "ok"
        try:
            self._admit(method, token)
            response = await cast(UnaryHandler, self._handlers[method])(request, call)
            self._check_type(op, response)
            return response
        except BaseException as e:
            outcome = self._failure(e, call)
            if _wraps(e):
                raise self._wrapped(e, call) from e
            raise
        finally:
            self._close(gauge, call, outcome, started)
            restore_context()

    async def stream(
        self, method: str, request: Message | AsyncIterator[Message], call: CallInfo, token: str | None
    ) -> AsyncGenerator[Message, None]:
        """Run streaming ``method``, yielding its responses; errors come out as ``CallError``.

        ``request`` is the one request of a server stream, or the request iterator of a
        bidirectional one. Close the generator (``aclose``) to cancel the handler.
        """
        op = self.operation(method)
        if op.kind is Kind.UNARY:
            raise InvalidArgument(f"{method} is a unary operation; call it with one request, not as a stream")
        restore_context = bind_call(call.request_id, call.session_id, call.turn_id)
        m, name, proto = self._metrics, self.service_name, call.protocol
        gauge = m.in_flight.labels(name, method)
        sent = m.stream_messages.labels(name, method, proto, "out")
        self._enter()
        gauge.inc()
        started = time.perf_counter()
        outcome, first = "ok", True
        try:
            self._admit(method, token)
            if op.kind is Kind.BIDI_STREAM:
                assert not isinstance(request, Message)
                request = _Counted(request, m.stream_messages.labels(name, method, proto, "in"))
            # bind_handlers made sure streaming handlers are async generator functions
            responses = cast(AsyncGenerator[Message, None], cast(StreamHandler, self._handlers[method])(request, call))
            try:
                async for msg in responses:
                    self._check_type(op, msg)
                    if first:
                        first = False
                        m.first_message.labels(name, method, proto).observe(time.perf_counter() - started)
                    sent.inc()
                    yield msg
            finally:
                await responses.aclose()
        except BaseException as e:
            outcome = self._failure(e, call)
            if _wraps(e):
                raise self._wrapped(e, call) from e
            raise
        finally:
            self._close(gauge, call, outcome, started)
            restore_context()  # tolerates a generator closed from another context

    def _close(self, gauge: Gauge, call: CallInfo, outcome: str, started: float) -> None:
        """Bookkeeping at the end of every call, unary or streaming."""
        seconds = time.perf_counter() - started
        gauge.dec()
        self._leave()
        self._done(call, outcome, seconds)

    def refuse(self, call: CallInfo, err: CallError) -> None:
        """Count and log a call that failed before reaching the dispatcher (bad body, no token)."""
        self._metrics.observe(call.method, call.protocol, err.code.lower(), None)
        self.log.warning(
            "call refused", extra={"method": call.method, "protocol": call.protocol, "code": err.code,
                                   "reason": err.message, "request_id": call.request_id},
        )

    def cancel_all(self) -> int:
        """Cancel the tasks serving calls now (a drain ran out of grace); returns how many."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def wait_idle(self, within_s: float) -> bool:
        """Wait until no call or stream is in flight; False if ``within_s`` passed first."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
        except TimeoutError:
            return False
        return True

    # ---- helpers --------------------------------------------------------------------------------

    def _admit(self, method: str, token: str | None) -> None:
        self.check_token(token)
        if method not in CONTROL_OPS and not self._state.ready:
            raise ServiceUnavailable(self._state.reason())

    def _check_type(self, op: Operation, msg: object) -> None:
        if not isinstance(msg, op.response):
            raise ServiceFailed(
                f"handler for {op.name} returned {type(msg).__name__}, not "
                f"{op.response.DESCRIPTOR.full_name}; this is a bug in the service"
            )

    def _failure(self, e: BaseException, call: CallInfo) -> str:
        """Log a failed call and return its metrics outcome."""
        if isinstance(e, CallError):
            self.log.warning("call refused", extra={
                "method": call.method, "protocol": call.protocol, "code": e.code, "reason": e.message,
            })
            return e.code.lower()
        if isinstance(e, asyncio.CancelledError | GeneratorExit):
            return "cancelled"
        if isinstance(e, Exception):
            self.log.error("call failed", exc_info=e, extra={"method": call.method, "protocol": call.protocol})
            return "internal"
        return "cancelled"

    def _wrapped(self, e: BaseException, call: CallInfo) -> ServiceFailed:
        return ServiceFailed(
            f"{call.method} failed inside service {self.service_name!r} with {type(e).__name__}: {e}; "
            f"the service log has the traceback (request_id {call.request_id})"
        )

    def _done(self, call: CallInfo, outcome: str, seconds: float) -> None:
        self._metrics.observe(call.method, call.protocol, outcome, seconds)
        if outcome == "ok":
            level = logging.DEBUG if call.method in CONTROL_OPS else logging.INFO
            self.log.log(level, "call ok", extra={
                "method": call.method, "protocol": call.protocol, "duration_ms": round(seconds * 1e3, 2),
            })
        elif outcome == "cancelled":
            self.log.info("call cancelled (the client went away, or the service is stopping)", extra={
                "method": call.method, "protocol": call.protocol, "duration_ms": round(seconds * 1e3, 2),
            })

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._tasks[task] = self._tasks.get(task, 0) + 1

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
        task = asyncio.current_task()
        if task is not None and task in self._tasks:
            self._tasks[task] -= 1
            if not self._tasks[task]:
                del self._tasks[task]


def _wraps(e: BaseException) -> bool:
    """An unexpected exception from a handler: it becomes ServiceFailed (INTERNAL)."""
    return isinstance(e, Exception) and not isinstance(e, CallError)
