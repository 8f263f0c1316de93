"""CommunicationManager: call any operation of any service, over the best transport that works.

One call is:

1. resolve the service to its current endpoint and role, and the method to its catalog
   Operation (an unknown service, method or protocol fails before any I/O);
2. ask the service's circuit breaker (an open breaker fails at once with CircuitOpen);
3. one *round*: try the transports in ``HubConfig.protocols`` order (gRPC, HTTP+msgpack,
   HTTP+JSON), moving to the next one **only** on ``TransportError``. Any other error ends the
   call at once: a rejected request (InvalidArgument, NotFound, ...), a handler failure
   (ServiceFailed), the deadline;
4. if the round failed transiently (every transport failed to carry the call, or the service
   said UNAVAILABLE), wait a jittered exponential backoff and run another round, up to
   ``max_retries`` times and never past the deadline (DeadlineExceeded then). The endpoint
   is resolved again before each retry, since a restarted service may have new ports.

Transport memory: a transport that failed to carry a call to a service is skipped for that
service for ``transport_down_s`` (1 s by default), as long as a later transport is not also
marked down; the order itself never changes, so gRPC is used again as soon as the mark
expires. This keeps a black-holed gRPC port from costing ``connect_timeout_s`` on every call.
A refused port costs little either way (the gRPC channel reports TRANSIENT_FAILURE at once).
A forced protocol (``protocol=``) ignores the marks and never falls back; it is still retried.

Resilience controls: ``resilience()`` is the per-service view of breakers, down marks and retry
counts behind ``GET /api/resilience``; ``reset_breaker()`` is an operator's override.

The breaker counts *calls*, not attempts: a call that ends in a transient failure (after its
retries) is one failure; a call the service answered, even with a rejection, is a success.

Streams (``stream()``, SERVER_STREAM and BIDI_STREAM operations) go through the same rounds,
transports, breaker and metrics until their first response message; what happens after that
is ``streaming.py``'s job (no fallback, no retry, a broken stream is a TransportError).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from google.protobuf.message import Message

from core.config.models import HubConfig, RemoteEndpoint
from core.context import ProcessContext
from core.errors import (
    CallError,
    CircuitOpen,
    InvalidArgument,
    NotFound,
    RequestRejected,
    ServiceUnavailable,
)
from core.logs import CONTEXT_HEADERS, MAX_ID_CHARS, clean_id, context_metadata
from core.managers.endpoint import Endpoint, EndpointResolver
from core.managers.hub.breaker import BreakerState, CircuitBreaker
from core.managers.hub.metrics import NO_PROTOCOL, HubMetrics, ServiceStats
from core.managers.hub.resilience import service_view
from core.managers.hub.retry import RetryPolicy
from core.managers.hub.rounds import CallPlan, Rounds
from core.managers.hub.streaming import StreamOpener, relay
from core.managers.hub.transports import (
    GrpcTransport,
    HttpClientPool,
    HttpTransport,
    Metadata,
    Transport,
    UnaryCall,
)
from core.managers.hub.transports.runpod import RunpodTransport
from core.wire import Kind, Operation, operation, to_message

_PINNED: ContextVar[Mapping[str, Endpoint] | None] = ContextVar("ultravox_pinned_endpoints", default=None)
DEFAULT_TRANSPORT_DOWN_S = 1.0
DEFAULT_STREAM_DEADLINE_S = 300.0


RUNPOD = "runpod"


def default_transports(config: HubConfig) -> dict[str, Transport]:
    """The real transports; msgpack and JSON share one HTTP client per service. ``runpod`` is
    not in the fallback order: it is the only protocol of a service whose remote kind is runpod."""
    pool = HttpClientPool()
    return {"grpc": GrpcTransport(connect_timeout_s=config.connect_timeout_s),
            "msgpack": HttpTransport("msgpack", pool=pool),
            "json": HttpTransport("json", pool=pool),
            RUNPOD: RunpodTransport()}


def _is_breaker_failure(err: CallError) -> bool:
    """Transient failures count against the breaker; an answer from the service (even a no) does not."""
    return err.transient and not isinstance(err, RequestRejected)


class CommunicationManager:
    """The hub: one in-process client for every model service, over gRPC, msgpack or JSON."""

    def __init__(
        self,
        ctx: ProcessContext,
        resolver: EndpointResolver,
        *,
        config: HubConfig | None = None,
        transports: Mapping[str, Transport] | None = None,
        transport_down_s: float = DEFAULT_TRANSPORT_DOWN_S,
        stream_deadline_s: float = DEFAULT_STREAM_DEADLINE_S,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """``stream_deadline_s`` is the deadline of a stream opened without ``deadline_s``."""
        self.config = config if config is not None else ctx.settings.hub
        self._ctx = ctx
        self._resolver = resolver
        self._transports: dict[str, Transport] = (
            dict(transports) if transports is not None else default_transports(self.config)
        )
        self._order = tuple(p for p in self.config.protocols if p in self._transports)
        if not self._order:
            raise ValueError(
                f"no transport for any protocol in hub.protocols {list(self.config.protocols)}; "
                f"transports given: {sorted(self._transports)}"
            )
        self._stream_deadline_s = stream_deadline_s
        self._clock = clock
        self.metrics = HubMetrics(ctx.registry)
        enabled = ctx.settings.enabled_services()
        self.metrics.prime({c.name: c.role for c in enabled if not _on_runpod(c.remote)}, self._order)
        if RUNPOD in self._transports:
            self.metrics.prime({c.name: c.role for c in enabled if _on_runpod(c.remote)}, (RUNPOD,))
        self.rounds = Rounds(
            self._transports,
            retry=RetryPolicy(
                self.config.max_retries, self.config.retry_base_s, self.config.retry_cap_s, rng or random.Random()
            ),
            metrics=self.metrics, resolve=self._endpoint, connect_timeout_s=self.config.connect_timeout_s,
            transport_down_s=transport_down_s, clock=clock, log=ctx.log,
        )
        self._breakers: dict[str, CircuitBreaker] = {}
        self._pins: dict[tuple[str, str], int] = {}
        self._holding: set[tuple[str, str]] = set()
        self._pins_changed = asyncio.Event()
        self._ops: dict[tuple[str, str], Operation] = {}
        self._closed = False

    # ---- public API -------------------------------------------------------------------------

    async def call(
        self,
        service: str,
        method: str,
        payload: Message | Mapping[str, Any] | None = None,
        *,
        protocol: str | None = None,
        deadline_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Message:
        """Call ``service.method`` and return the Operation's response message.

        Raises a ``core.errors.CallError``: NotFound / InvalidArgument before any I/O for an
        unknown service, method, protocol or a bad payload; CircuitOpen while the breaker is
        open; the service's own rejection or failure as sent; DeadlineExceeded; or
        ServiceUnavailable once every transport and retry failed.
        """
        c = self._prepare(service, method, protocol, deadline_s, metadata, self.config.default_deadline_s)
        if c.op.kind is not Kind.UNARY:
            raise InvalidArgument(
                f"{service}.{method} is a {c.op.kind.value} operation; use stream(), not call()",
                service=service, method=method,
            )
        request = to_message(c.op.request, payload)
        breaker = self._acquire(service, method)

        async def attempt(name: str, ep: Endpoint, md: Metadata, fail_fast: bool) -> Message:
            call = UnaryCall(ep, c.op, request, c.deadline, md, self.config.connect_timeout_s, fail_fast)
            return await self.rounds.unary(name, call)

        try:
            response = await self.rounds.run(c, attempt)
        except CallError as e:
            self._failed(e, breaker, service, method)
            raise
        except BaseException:  # cancelled: no verdict on the service's health
            breaker.release()
            raise
        breaker.success()
        return response

    async def stream(
        self,
        service: str,
        method: str,
        payload: Message | Mapping[str, Any] | AsyncIterable[Any] | Iterable[Any] | None = None,
        *,
        protocol: str | None = None,
        deadline_s: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[Message, None]:
        """Open a streaming ``service.method`` and yield its response messages as they arrive.

        ``payload`` is the one request (a message or a dict) of a SERVER_STREAM operation, or
        the requests (an async or plain iterable of messages or dicts) of a BIDI_STREAM one.
        Transports are tried in order until the first response message arrives; for bidi the
        requests sent so far are replayed on the next transport. After the first message the
        stream never moves: if it breaks, ``TransportError`` is raised to the consumer. The
        deadline (``deadline_s``, else ``stream_deadline_s``) covers the whole stream.
        Closing the generator (``aclose()``, or breaking out of ``async for``) cancels the
        remote call. Raises the same errors as :meth:`call`.
        """
        c = self._prepare(service, method, protocol, deadline_s, metadata, self._stream_deadline_s)
        opener = StreamOpener.for_payload(self.rounds, c.op, payload, service, method)
        breaker = self._acquire(service, method)
        try:
            opened = await self.rounds.run(c, opener.attempt(c.deadline))
        except CallError as e:
            await opener.close()
            self._failed(e, breaker, service, method)
            raise
        except BaseException:
            await opener.close()
            breaker.release()
            raise
        breaker.success()
        # aclosing: an ``async for`` does not close the generator it reads when it is itself closed
        async with contextlib.aclosing(relay(opener, opened, breaker, c.deadline)) as messages:
            async for msg in messages:
                yield msg

    def endpoint(self, service: str) -> Endpoint:
        """Where ``service`` is reached now (local ports, or its remote API); NotFound if unknown."""
        return self._endpoint(service)

    @contextlib.contextmanager
    def pinned(self, services: Iterable[str]) -> Iterator[None]:
        """Keep the calls made in this context (and in the tasks it starts) to ``services`` on the
        instances they resolve to now, while such an instance is being handed over (a profile
        switch): a conversation turn finishes on the instances that started it."""
        pins: dict[str, Endpoint] = {}
        for name in services:
            with contextlib.suppress(CallError):
                pins[name] = self._resolver.endpoint(name)
        token = _PINNED.set({**(_PINNED.get() or {}), **pins})
        keys = [(name, ep.grpc_target) for name, ep in pins.items()]
        for key in keys:
            self._pins[key] = self._pins.get(key, 0) + 1
        try:
            yield
        finally:
            _PINNED.reset(token)
            for key in keys:
                self._pins[key] -= 1
            self._pins_changed.set()
            self._pins_changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def handing_over(self, service: str, old: Endpoint, within_s: float) -> AsyncIterator[None]:
        """While ``old`` is replaced: calls pinned to it (turns in progress) keep going there; on
        exit, wait (up to ``within_s``) until no pinned turn uses it, then release the hold, so the
        old instance can drain."""
        key = (service, old.grpc_target)
        self._holding.add(key)
        try:
            yield  # the caller points the resolver at the new instance here
            deadline = asyncio.get_running_loop().time() + within_s
            while self._pins.get(key, 0) > 0:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    self._ctx.log.warning("hub: %d turn(s) still on the old %s instance after %.0fs; moving on",
                                          self._pins[key], service, within_s)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._pins_changed.wait(), left)
        finally:
            self._holding.discard(key)

    def breaker_state(self, service: str) -> str:
        """``closed``, ``half_open`` or ``open``; a service never called reads ``closed``."""
        b = self._breakers.get(service)
        return b.state.value if b is not None else BreakerState.CLOSED.value

    def snapshot(self) -> dict[str, Any]:
        """Per service: breaker state, protocols now skipped, counts per protocol and outcome."""
        services = set(self._breakers) | set(self.metrics.stats)
        out: dict[str, Any] = {}
        for svc in sorted(services):
            b = self._breakers.get(svc)
            out[svc] = {
                "breaker": self.breaker_state(svc),
                "consecutive_failures": b.consecutive_failures if b is not None else 0,
                "down": self.rounds.down(svc, self._order),
                **self.metrics.stats[svc].to_dict(),
            }
        return out

    def known_services(self) -> list[str]:
        """The profile's enabled services plus every service the hub has state for, sorted."""
        names = {c.name for c in self._ctx.settings.enabled_services()}
        names |= set(self._breakers) | set(self.metrics.stats) | {s for s, _ in self.rounds.down_marks()}
        return sorted(names)

    def resilience(self, services: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The resilience view (``resilience.py``) of ``known_services()`` and ``services``, by name."""
        names = sorted({*self.known_services(), *services})
        return [self._resilience_view(name) for name in names]

    def reset_breaker(self, service: str) -> dict[str, Any]:
        """Close ``service``'s breaker, zero its failures and clear its protocols' down marks.

        A known service the hub never called reads closed. Returns ``service``, the state and
        failures before the reset, the protocols whose down mark was cleared, and the service's
        view after it. Raises NotFound for a name the hub does not know.
        """
        if not self._is_known(service):
            raise NotFound(
                f"unknown service {service!r}: the hub has no breaker for it and it is not configured; "
                "see `GET /api/resilience` or `sm breakers` for the services there are", service=service,
            )
        b = self._breakers.get(service)
        before = b.state.value if b is not None else BreakerState.CLOSED.value
        failures = b.consecutive_failures if b is not None else 0
        if b is not None:
            b.reset()
        cleared = self.rounds.clear_down(service)
        self._ctx.log.warning(
            "hub: circuit breaker for %s reset by an operator (was %s after %d consecutive failure(s); "
            "down marks cleared: %s)", service, before, failures, ", ".join(cleared) or "none",
        )
        return {"service": service, "previous_state": before, "previous_failures": failures,
                "cleared_down": cleared, "now": self._resilience_view(service)}

    @property
    def protocols(self) -> tuple[str, ...]:
        """The fallback order in use (HubConfig.protocols that have a transport)."""
        return self._order

    async def close(self) -> None:
        """Close every transport (channels, HTTP clients). Idempotent."""
        if self._closed:
            return
        self._closed = True
        unique = {id(t): t for t in self._transports.values()}
        await asyncio.gather(*(t.close() for t in unique.values()), return_exceptions=True)

    async def __aenter__(self) -> CommunicationManager:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # ---- one call -----------------------------------------------------------------------------

    def _prepare(
        self, service: str, method: str, protocol: str | None, deadline_s: float | None,
        metadata: Mapping[str, str] | None, default_deadline_s: float,
    ) -> CallPlan:
        """Resolve everything a call needs before any I/O; bad names and deadlines fail here."""
        if self._closed:
            raise ServiceUnavailable("the hub is closed", service=service, method=method)
        endpoint = self._endpoint(service)
        op = self._operation(endpoint.role, method)
        order = self._protocols(protocol, endpoint)
        timeout = default_deadline_s if deadline_s is None else deadline_s
        if not timeout > 0:
            raise InvalidArgument(f"deadline_s must be > 0, got {deadline_s}", service=service, method=method)
        deadline = asyncio.get_running_loop().time() + timeout
        return CallPlan(endpoint, op, order, protocol is not None, deadline, _caller_metadata(metadata))

    def _acquire(self, service: str, method: str) -> CircuitBreaker:
        breaker = self._breaker(service)
        try:
            breaker.acquire()
        except CircuitOpen as e:
            e.method = method
            self.metrics.attempt(service, method, NO_PROTOCOL, e, 0.0)
            self.metrics.call_failed(e, service, method)
            raise
        return breaker

    def _failed(self, err: CallError, breaker: CircuitBreaker, service: str, method: str) -> None:
        """A call (or stream open) failed after every fallback and retry: count it, and give the
        breaker its verdict (a transient failure counts against the service; an answer, even a no,
        does not)."""
        self.metrics.call_failed(err, service, method)
        if _is_breaker_failure(err):
            breaker.failure(f"{method}: {type(err).__name__}: {err.message}")
        else:
            breaker.success()

    # ---- helpers ------------------------------------------------------------------------------

    def _is_known(self, service: str) -> bool:
        if service in self.known_services() or service in self._ctx.settings.services:
            return True
        try:
            self._resolver.endpoint(service)
        except (NotFound, KeyError):
            return False
        except CallError:  # known, but not reachable now (not started yet)
            return True
        return True

    def _resilience_view(self, service: str) -> dict[str, Any]:
        cfg = self._ctx.settings.services.get(service)
        protocols = (RUNPOD,) if cfg is not None and _on_runpod(cfg.remote) else self._order
        return service_view(
            service, breaker=self._breakers.get(service), stats=self.metrics.stats.get(service) or ServiceStats(),
            rounds=self.rounds, protocols=protocols,
            failure_threshold=self.config.breaker_failure_threshold, reset_s=self.config.breaker_reset_s,
        )

    def _endpoint(self, service: str) -> Endpoint:
        pins = _PINNED.get()
        if pins and service in pins and (service, pins[service].grpc_target) in self._holding:
            return pins[service]  # a turn in progress stays on the instance being handed over
        try:
            return self._resolver.endpoint(service)
        except KeyError as e:  # a resolver that forgot to translate its lookup error
            raise NotFound(f"unknown service {service!r}", service=service) from e

    def _operation(self, role: str, method: str) -> Operation:
        op = self._ops.get((role, method))
        if op is None:
            op = self._ops[(role, method)] = operation(role, method)
        return op

    def _protocols(self, protocol: str | None, endpoint: Endpoint) -> tuple[str, ...]:
        if _on_runpod(endpoint.remote):  # a RunPod endpoint speaks RunPod's job API and nothing else
            if protocol not in (None, RUNPOD) or RUNPOD not in self._transports:
                raise InvalidArgument(
                    f"service {endpoint.name!r} is a RunPod endpoint; it is reached over protocol "
                    f"{RUNPOD!r} only, not {protocol!r}", protocol=protocol or "",
                )
            return (RUNPOD,)
        if protocol == RUNPOD:
            raise InvalidArgument(
                f"service {endpoint.name!r} is not a RunPod endpoint; use one of: {', '.join(self._order)}",
                protocol=protocol,
            )
        if protocol is None:
            return self._order
        if protocol not in self._transports:
            raise InvalidArgument(
                f"unknown protocol {protocol!r}; use one of: {', '.join(self._order)}", protocol=protocol
            )
        return (protocol,)

    def _breaker(self, service: str) -> CircuitBreaker:
        b = self._breakers.get(service)
        if b is None:
            def on_change(state: BreakerState) -> None:
                self.metrics.breaker(service, state)
                self._ctx.log.warning("hub: circuit breaker for %s is now %s", service, state.value)

            b = self._breakers[service] = CircuitBreaker(
                service, failure_threshold=self.config.breaker_failure_threshold,
                reset_s=self.config.breaker_reset_s, clock=self._clock, on_change=on_change,
            )
            self.metrics.breaker(service, BreakerState.CLOSED)
        return b


# What both transports accept as a metadata entry: text keys (gRPC's `-bin` keys want bytes) and
# printable ASCII values without surrounding blanks.
_HEADER_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]*(?<!-bin)")
_HEADER_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


def _on_runpod(remote: RemoteEndpoint | None) -> bool:
    return remote is not None and remote.kind == RUNPOD


def _caller_metadata(metadata: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Lower-case keys, no token, and the logging context: the caller's ids first, then those of
    the current context (``core.logs``: request, session, turn); a request id is always present.

    Every value must be a valid header on both transports (gRPC refuses a tab or a byte past
    ASCII before sending anything, httpx cannot encode it), and ids may come from a client: an
    id is cut to 64 characters and kept only if ``clean_id`` accepts it (a bad request id is
    replaced by a new one, a bad session or turn id left out), other entries only if printable
    ASCII. One bad value must never fail the call."""
    md = {**context_metadata(), **{k.lower(): str(v) for k, v in (metadata or {}).items()}}
    md.pop("x-internal-token", None)
    for key in CONTEXT_HEADERS.keys() & md.keys():
        md[key] = clean_id(md[key][:MAX_ID_CHARS])
    rid = md.pop("x-request-id", "") or uuid.uuid4().hex
    safe = {k: v for k, v in md.items() if _HEADER_KEY.fullmatch(k) and _HEADER_VALUE.fullmatch(v)}  # drops ""
    return (("x-request-id", rid), *safe.items())

