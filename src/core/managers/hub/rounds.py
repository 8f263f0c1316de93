"""One call's transport rounds: each transport in order, fallback on TransportError only, retries.

:meth:`Rounds.run` is the heart of the hub, shared by unary calls and by the opening of
streams: it drives an *attempt* (one try over one transport, a coroutine the caller supplies)
through the fallback order and the retry rounds described in ``manager.py``, and keeps the
"transport down" marks that let later calls skip a transport that just failed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from core.errors import CallError, CircuitOpen, DeadlineExceeded, ServiceUnavailable, TransportError
from core.managers.endpoint import Endpoint
from core.managers.hub.metrics import HubMetrics
from core.managers.hub.retry import RetryPolicy
from core.managers.hub.transports import Metadata, Transport, UnaryCall
from core.wire import Operation

T = TypeVar("T")
Attempt = Callable[[str, Endpoint, Metadata, bool], Awaitable[T]]
"""One try over one transport: (protocol, endpoint, metadata, fail_fast) -> result."""


@dataclass(slots=True)
class CallPlan:
    """What every round of one call needs; ``endpoint`` is refreshed before each retry."""

    endpoint: Endpoint
    op: Operation
    order: tuple[str, ...]
    forced: bool
    deadline: float
    caller: Metadata


def _is_retryable(err: CallError) -> bool:
    return isinstance(err, TransportError | ServiceUnavailable) and not isinstance(err, CircuitOpen)


class Rounds:
    """Fallback and retry over the hub's transports, with per-service "transport down" marks."""

    def __init__(
        self,
        transports: Mapping[str, Transport],
        *,
        retry: RetryPolicy,
        metrics: HubMetrics,
        resolve: Callable[[str], Endpoint],
        connect_timeout_s: float,
        transport_down_s: float,
        clock: Callable[[], float],
        log: logging.Logger,
    ) -> None:
        self._transports = dict(transports)
        self._retry = retry
        self.metrics = metrics
        self._resolve = resolve
        self.connect_timeout_s = connect_timeout_s
        self._transport_down_s = transport_down_s
        self._clock = clock
        self._log = log
        self._down: dict[tuple[str, str], float] = {}

    def transport(self, name: str) -> Transport:
        return self._transports[name]

    def down(self, service: str, order: tuple[str, ...]) -> list[str]:
        """Transports of ``order`` now skipped for ``service``."""
        now = self._clock()
        return [p for p in order if self._down.get((service, p), 0.0) > now]

    def down_for(self, service: str, protocol: str) -> float:
        """Seconds ``protocol`` stays marked down for ``service``; 0.0 when it is not."""
        return max(self._down.get((service, protocol), 0.0) - self._clock(), 0.0)

    def down_marks(self) -> list[tuple[str, str]]:
        """(service, protocol) of every mark still held, expired or not."""
        return list(self._down)

    def clear_down(self, service: str) -> list[str]:
        """Drop every "transport down" mark of ``service``; returns the protocols that had one."""
        keys = [k for k in self._down if k[0] == service]
        for k in keys:
            del self._down[k]
        return sorted(p for _, p in keys)

    async def run(self, c: CallPlan, attempt: Attempt[T]) -> T:
        service, op, loop = c.endpoint.name, c.op, asyncio.get_running_loop()
        last: CallError | None = None
        for rnd in range(self._retry.max_retries + 1):
            if rnd:
                delay = self._retry.delay(rnd - 1)
                if loop.time() + delay >= c.deadline:
                    raise DeadlineExceeded(
                        f"{service}.{op.name}: the deadline leaves no time for retry {rnd}; "
                        f"last error: {last}", service=service, method=op.name,
                    ) from last
                self.metrics.retry(service)
                await asyncio.sleep(delay)
                c.endpoint = self._resolve(service)  # a restarted service may have new ports
            try:
                result = await self._round(c, attempt)
            except CallError as e:
                if not _is_retryable(e):
                    raise
                last = e
                continue
            if rnd:
                self.metrics.retried_call(service, succeeded=True)
            return result
        assert last is not None
        if self._retry.max_retries:
            self.metrics.retried_call(service, succeeded=False)
        raise ServiceUnavailable(
            f"service {service!r} could not serve {op.name} after {self._retry.max_retries + 1} "
            f"attempt(s) over {', '.join(c.order)}: {last}", service=service, method=op.name,
            protocol=last.protocol,
        ) from last

    async def _round(self, c: CallPlan, attempt: Attempt[T]) -> T:
        """Each transport in order once; falls through only on TransportError."""
        service = c.endpoint.name
        skip = () if c.forced else self._down_now(service, c.order)
        live = [p for p in c.order if p not in skip]
        metadata: Metadata = (("x-internal-token", c.endpoint.token), *c.endpoint.metadata, *c.caller)
        failed: list[TransportError] = []
        passed: list[str] = []  # failed or skipped since the last attempt, for the fallback metric
        for name in c.order:
            if name in skip:
                passed.append(name)
                continue
            for a, b in itertools.pairwise([*passed, name]):
                self.metrics.fallback(service, a, b)
            try:
                response = await attempt(name, c.endpoint, metadata, name != live[-1])
            except TransportError as e:
                self._mark_down(service, name, e)
                failed.append(e)
                passed = [name]
                continue
            self._down.pop((service, name), None)
            return response
        if len(failed) == 1:
            raise failed[0]
        raise TransportError(
            "; ".join(f"{e.protocol}: {e.message}" for e in failed),
            service=service, method=c.op.name, protocol=failed[-1].protocol,
        ) from failed[-1]

    async def unary(self, name: str, call: UnaryCall) -> Message:
        """One transport attempt under the call's deadline, counted in the metrics."""
        service, method = call.endpoint.name, call.operation.name
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout_at(call.deadline):
                response = await self._transports[name].unary(call)
        except TimeoutError as e:
            err: CallError = DeadlineExceeded(f"{service}.{method} over {name}: the deadline passed")
            self.fail(err, service, method, name, t0)
            raise err from e
        except CallError as e:
            self.fail(e, service, method, name, t0)
            raise
        except OSError as e:
            err = TransportError(f"{type(e).__name__}: {e}")
            self.fail(err, service, method, name, t0)
            raise err from e
        self.metrics.attempt(service, method, name, None, time.perf_counter() - t0)
        return response

    def fail(self, err: CallError, service: str, method: str, protocol: str, t0: float) -> None:
        """Fill in where ``err`` happened and count the failed attempt."""
        err.service = err.service or service
        err.method = err.method or method
        err.protocol = err.protocol or protocol
        self.metrics.attempt(service, method, protocol, err, time.perf_counter() - t0)

    def _down_now(self, service: str, order: tuple[str, ...]) -> tuple[str, ...]:
        """Transports of ``order`` marked down for ``service``; none if all of them are."""
        if not self._down:
            return ()
        now = self._clock()
        down = tuple(p for p in order if self._down.get((service, p), 0.0) > now)
        return () if len(down) == len(order) else down

    def _mark_down(self, service: str, protocol: str, err: TransportError) -> None:
        if self._transport_down_s <= 0:
            return
        key = (service, protocol)
        now = self._clock()
        if self._down.get(key, 0.0) <= now:
            self._log.info(
                "hub: %s over %s failed (%s); skipping %s for %s for %.1f s",
                service, protocol, err.message, protocol, service, self._transport_down_s,
            )
        self._down[key] = now + self._transport_down_s
