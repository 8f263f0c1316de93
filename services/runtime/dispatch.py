"""Protocol-agnostic call path: token check, readiness gate, handler, metrics, logs, errors.

Both servers (gRPC and HTTP) decode a request, build a :class:`CallInfo` and call
:meth:`Dispatcher.invoke`; whatever goes wrong comes back as a ``core.errors.CallError`` that
each server renders in its own way. Control operations (Echo, Info) are answered here for
every service, and work while the model is still loading.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping

from google.protobuf.message import Message

from core.errors import CallError, NotFound, ServiceFailed, ServiceUnavailable, Unauthenticated
from core.wire import CONTROL_OPS, Kind, Operation, operations
from services.runtime.api import CallInfo, Handler, ModelService
from services.runtime.logs import REQUEST_ID
from services.runtime.metrics import RuntimeMetrics
from services.runtime.state import ServiceState

TOKEN_HINT = (
    "send the run's internal token in the x-internal-token gRPC metadata or the X-Internal-Token "
    "HTTP header (main generates one per run and passes it to its services; a --standalone "
    "service prints the one it uses, or takes UV_INTERNAL_TOKEN)"
)


def bind_handlers(role: str, service_handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    """Check that the service handles exactly its role's operations, all of them unary."""
    ops = operations(role)
    wanted = sorted(n for n in ops if n not in CONTROL_OPS)
    missing = [n for n in wanted if n not in service_handlers]
    unknown = sorted(n for n in service_handlers if n not in wanted)
    if missing or unknown:
        raise TypeError(
            f"a {role!r} service must handle exactly {wanted}; missing {missing}, unexpected {unknown} "
            "(operations come from core.wire.catalog; Control ops are served by the runtime)"
        )
    streaming = [n for n in wanted if ops[n].kind is not Kind.UNARY]
    if streaming:
        raise TypeError(
            f"operations {streaming} of role {role!r} are streaming; this runtime serves unary "
            "operations only, so declare them unary in core.wire.catalog or extend services.runtime"
        )
    return dict(service_handlers)


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
        self._service = service
        self._token = token.encode()
        self._state = state
        self._metrics = metrics
        self._version = version
        self._handlers: dict[str, Handler] = {
            **bind_handlers(service.role, service.handlers()),
            "Echo": self._echo,
            "Info": self._info,
        }
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.log = logging.getLogger(f"ultravox.{service_name}.calls")

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def check_token(self, presented: str | None) -> None:
        if not presented:
            raise Unauthenticated(f"missing internal token: {TOKEN_HINT}")
        if not hmac.compare_digest(presented.encode(), self._token):
            raise Unauthenticated(
                "internal token is wrong (it changes every time main starts); "
                f"use the current run's token: {TOKEN_HINT}"
            )

    async def invoke(self, method: str, request: Message, call: CallInfo, token: str | None) -> Message:
        """Run ``method``; raises a ``CallError`` (never anything else) when the call fails."""
        op = self.operations.get(method)
        if op is None:
            raise NotFound(
                f"service {self.service_name!r} ({self.role}) has no method {method!r}; "
                f"available: {', '.join(sorted(self.operations))}"
            )
        rid_token = REQUEST_ID.set(call.request_id)
        gauge = self._metrics.in_flight.labels(self.service_name, method)
        self._enter()
        gauge.inc()
        started = time.perf_counter()
        outcome = "ok"
        try:
            self.check_token(token)
            if method not in CONTROL_OPS and not self._state.ready:
                raise ServiceUnavailable(self._state.reason())
            response = await self._handlers[method](request, call)
            if not isinstance(response, op.response):
                raise ServiceFailed(
                    f"handler for {method} returned {type(response).__name__}, not "
                    f"{op.response.DESCRIPTOR.full_name}; this is a bug in the service"
                )
            return response
        except CallError as err:
            outcome = err.code.lower()
            self.log.warning(
                "call refused", extra={"method": method, "protocol": call.protocol, "code": err.code,
                                       "reason": err.message},
            )
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as e:
            outcome = "internal"
            self.log.exception("call failed", extra={"method": method, "protocol": call.protocol})
            raise ServiceFailed(
                f"{method} failed inside service {self.service_name!r} with {type(e).__name__}: {e}; "
                f"the service log has the traceback (request_id {call.request_id})"
            ) from e
        finally:
            seconds = time.perf_counter() - started
            gauge.dec()
            self._leave()
            self._metrics.observe(method, call.protocol, outcome, seconds)
            if outcome == "ok":
                level = logging.DEBUG if method in CONTROL_OPS else logging.INFO
                self.log.log(level, "call ok", extra={
                    "method": method, "protocol": call.protocol, "duration_ms": round(seconds * 1e3, 2),
                })
            REQUEST_ID.reset(rid_token)

    def refuse(self, call: CallInfo, err: CallError) -> None:
        """Count and log a call that failed before reaching :meth:`invoke` (bad body, no token)."""
        self._metrics.observe(call.method, call.protocol, err.code.lower(), None)
        self.log.warning(
            "call refused", extra={"method": call.method, "protocol": call.protocol, "code": err.code,
                                   "reason": err.message, "request_id": call.request_id},
        )

    async def wait_idle(self, within_s: float) -> bool:
        """Wait until no call is in flight; False if ``within_s`` passed first."""
        if self._idle.is_set():
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), within_s)
        except TimeoutError:
            return False
        return True

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _echo(self, request: Message, call: CallInfo) -> Message:
        return CONTROL_OPS["Echo"].response(payload=getattr(request, "payload", b""))

    async def _info(self, request: Message, call: CallInfo) -> Message:
        d = self._service.describe()
        return CONTROL_OPS["Info"].response(
            service=self.service_name, role=self.role, engine=d.engine, model=d.model, device=d.device,
            ready=self._state.ready, load_time_s=self._state.load_time_s, version=self._version,
            details=dict(d.details),
        )
