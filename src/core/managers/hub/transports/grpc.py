"""gRPC transport: one reused ``grpc.aio`` channel per service, rebuilt when its port changes.

Channel options matter here (see ``CHANNEL_OPTIONS``):

* keepalive pings during calls, with ``grpc.http2.ping_timeout_ms`` set beside
  ``grpc.keepalive_timeout_ms`` (gRPC Core's ping timeout defaults to 60 s and overrides the
  keepalive timeout), so a hung service fails its calls in ~13 s instead of staying unseen;
* reconnect backoff of 100-300 ms, so a service restarted on the same port is reached again
  within about 0.3 s. ``grpc.min_reconnect_backoff_ms`` is, despite its name, gRPC Core's
  *minimum connect timeout* (how long one attempt, TCP plus HTTP/2 handshake, may take), so it
  is set to the hub's ``connect_timeout_s`` rather than to a backoff-sized 100 ms, which would
  fail every handshake slower than that (a remote host, a busy service);
* 64 MiB message limits for long audio.

Calls use ``wait_for_ready=True`` (a reconnecting channel is waited for rather than failed),
but the wait for a channel that is not READY is bounded by the call's ``connect_timeout_s``;
a channel already in TRANSIENT_FAILURE fails at once when another transport follows. So a
dead gRPC port costs milliseconds (refused) or ``connect_timeout_s`` (black-holed) before the
hub falls back to HTTP, never the whole deadline.

Streams: ``stream()`` opens a unary-stream or stream-stream call and reads it with
``call.read()``; closing the generator (the consumer broke out, or the hub gave up) runs
``call.cancel()``, so the service sees CANCELLED and stops its handler at once. For bidi, gRPC
consumes the request iterator in its own task while responses are read here (full duplex).

Status mapping: UNAVAILABLE (refused, reset, GOAWAY, a draining server) and CANCELLED (the
channel was closed under the call) are ``TransportError``; every other status goes through
``core.errors.error_from_code``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from core.errors import CallError, DeadlineExceeded, TransportError, error_from_code, parse_retry_after
from core.managers.endpoint import Endpoint
from core.managers.hub.transports.base import StreamCall, UnaryCall
from core.wire import Kind, Operation

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Ping every 10 s while calls are in flight; a ping unanswered for 3 s closes the
    # connection, failing its calls with UNAVAILABLE. No pings on idle channels, and at most
    # the default two pings without data, so servers with default ping policies never send
    # GOAWAY(too_many_pings).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.ping_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 0),
    # Reconnect quickly to a restarted service (min_reconnect_backoff_ms, the connect timeout
    # of one attempt, is added per transport from connect_timeout_s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 300),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Our own subchannels: a rebuilt channel never inherits another channel's backoff state.
    ("grpc.use_local_subchannel_pool", 1),
)

_TRANSPORT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
_CORE_INTERNAL = "Internal error from Core"
SHUTDOWN_GRACE_S = 1.0
_READY = grpc.ChannelConnectivity.READY
_FAILING = grpc.ChannelConnectivity.TRANSIENT_FAILURE
_SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN


def _serialize(msg: Message) -> bytes:
    data: bytes = msg.SerializeToString()
    return data


@dataclass(slots=True)
class _Channel:
    """A channel to one target plus its cached multi-callables (one per gRPC path)."""

    target: str
    channel: grpc.aio.Channel
    methods: dict[str, grpc.aio.UnaryUnaryMultiCallable] = field(default_factory=dict)
    streams: dict[str, Any] = field(default_factory=dict)

    def method(self, op: Operation) -> grpc.aio.UnaryUnaryMultiCallable:
        mc = self.methods.get(op.grpc_path)
        if mc is None:
            mc = self.channel.unary_unary(
                op.grpc_path, request_serializer=_serialize, response_deserializer=op.response.FromString
            )
            self.methods[op.grpc_path] = mc
        return mc

    def stream_method(self, op: Operation) -> Any:
        """The unary-stream or stream-stream multi-callable for a streaming ``op``."""
        mc = self.streams.get(op.grpc_path)
        if mc is None:
            factory = self.channel.unary_stream if op.kind is Kind.SERVER_STREAM else self.channel.stream_stream
            mc = factory(op.grpc_path, request_serializer=_serialize, response_deserializer=op.response.FromString)
            self.streams[op.grpc_path] = mc
        return mc


def map_rpc_error(e: grpc.aio.AioRpcError) -> CallError:
    """The ``core.errors`` exception for a failed RPC (UNAVAILABLE/CANCELLED: transport failures)."""
    code = e.code()
    details = e.details() or code.name
    if code in _TRANSPORT_CODES:
        return TransportError(f"gRPC {code.name}: {details}")
    if code is grpc.StatusCode.INTERNAL and details == _CORE_INTERNAL:
        # gRPC's own client core failed the call (a request written to a stream the peer had
        # already ended or dropped): no answer from the service, so a transport failure
        return TransportError(f"gRPC stream broke in the client ({details}: {e.debug_error_string()})")
    trailers = dict(e.trailing_metadata() or ())
    return error_from_code(code.name, details, retry_after_s=parse_retry_after(trailers.get("retry-after")))


class GrpcTransport:
    """Unary calls over gRPC with one reused channel per service."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 0.5,
        options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS,
        close_grace_s: float = 30.0,
    ) -> None:
        """``connect_timeout_s`` bounds one connection attempt (HubConfig.connect_timeout_s).
        ``close_grace_s``: a channel retired because its service moved (a restart on new ports, a
        profile switch) lets its calls and streams in flight finish for this long; a switched-out
        instance drains them for its own stop_grace_s."""
        connect_ms = max(100, round(connect_timeout_s * 1000))
        self._options = (*options, ("grpc.min_reconnect_backoff_ms", connect_ms))
        self._close_grace_s = close_grace_s
        self._channels: dict[str, _Channel] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    def _channel(self, ep: Endpoint) -> _Channel:
        ch = self._channels.get(ep.name)
        if ch is not None and ch.target == ep.grpc_target:
            return ch
        if self._closed:
            raise TransportError("the gRPC transport is closed")
        if ch is not None:  # the service came back on another port: retire the old channel
            self._retire(ch)
        ch = _Channel(ep.grpc_target, grpc.aio.insecure_channel(ep.grpc_target, options=self._options))
        self._channels[ep.name] = ch
        return ch

    def _retire(self, ch: _Channel, grace_s: float | None = None) -> None:
        grace = self._close_grace_s if grace_s is None else grace_s
        task = asyncio.get_running_loop().create_task(ch.channel.close(grace=grace))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _wait_ready(self, ch: _Channel, call: UnaryCall | StreamCall) -> None:
        """Return once the channel is READY; raise TransportError past ``connect_timeout_s``."""
        state = ch.channel.get_state(try_to_connect=True)
        loop = asyncio.get_running_loop()
        budget = min(call.connect_timeout_s, call.deadline - loop.time())
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                while state is not _READY:
                    if state is _SHUTDOWN or (state is _FAILING and call.fail_fast):
                        raise TransportError(f"gRPC channel to {ch.target} is {state.name}")
                    await ch.channel.wait_for_state_change(state)
                    state = ch.channel.get_state(try_to_connect=True)
        except TimeoutError as e:
            if loop.time() >= call.deadline:
                raise DeadlineExceeded(f"deadline passed while connecting to {ch.target}") from e
            raise TransportError(
                f"no gRPC connection to {ch.target} within {call.connect_timeout_s:g} s (state {state.name})"
            ) from e

    async def unary(self, call: UnaryCall) -> Message:
        ch = self._channel(call.endpoint)
        if ch.channel.get_state(try_to_connect=True) is not _READY:
            await self._wait_ready(ch, call)
        timeout = call.remaining()
        if timeout <= 0:
            raise DeadlineExceeded("the call's deadline passed before it was sent")
        try:
            response: Message = await ch.method(call.operation)(
                call.request, timeout=timeout, metadata=call.metadata, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as e:
            raise map_rpc_error(e) from e
        except grpc.aio.UsageError as e:  # the channel was closed while the call was being set up
            raise TransportError(f"gRPC channel to {ch.target} closed: {e}") from e
        return response

    async def stream(self, call: StreamCall) -> AsyncGenerator[Message, None]:
        ch = self._channel(call.endpoint)
        if ch.channel.get_state(try_to_connect=True) is not _READY:
            await self._wait_ready(ch, call)
        timeout = call.remaining()
        if timeout <= 0:
            raise DeadlineExceeded("the stream's deadline passed before it was opened")
        first_arg = call.request if call.operation.kind is Kind.SERVER_STREAM else call.requests
        try:
            rpc = ch.stream_method(call.operation)(
                first_arg, timeout=timeout, metadata=call.metadata, wait_for_ready=True
            )
        except grpc.aio.UsageError as e:
            raise TransportError(f"gRPC channel to {ch.target} closed: {e}") from e
        try:
            while True:
                try:
                    msg = await rpc.read()
                except grpc.aio.AioRpcError as e:
                    raise map_rpc_error(e) from e
                except grpc.aio.UsageError as e:
                    raise TransportError(f"gRPC channel to {ch.target} closed mid-stream: {e}") from e
                if msg is grpc.aio.EOF:
                    return
                yield msg
        finally:
            rpc.cancel()  # a no-op once the call has finished

    async def close(self) -> None:
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            self._retire(ch, grace_s=SHUTDOWN_GRACE_S)  # main is stopping: no long wait for streams
        pending = list(self._retiring)
        if pending:  # channels retired earlier (a restart, a profile switch) may still be in their long grace
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE_S + 1.0)
            for task in late:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
