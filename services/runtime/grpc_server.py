"""The gRPC side: generic handlers built from the catalog, plus standard grpc.health.v1.

No hand-written servicers: every operation of the role becomes a method handler of its Kind
(unary-unary, unary-stream or stream-stream) whose behaviour is the dispatcher. Responses are
serialized by grpcio; requests arrive as raw bytes and are parsed in the handler
(``decode.py``), so a body that is not the operation's message is INVALID_ARGUMENT naming the
method and message type, not grpcio's UNKNOWN "Exception deserializing request!". Errors abort
the call with the matching status code and the error's message, mid-stream too. Streams are
written with ``context.write`` from a coroutine rather than yielded from a generator, so when
the client cancels, the cancellation lands in our code and the handler's generator is closed at
once (``aclosing``), never left for the garbage collector to finalize.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from core.errors import CallError, PortInUse, SupervisorError, grpc_status, retry_after_header
from core.logs import MAX_ID_CHARS, clean_id, new_request_id
from core.wire import Kind, Operation
from services.runtime.api import CallInfo
from services.runtime.decode import ParsedRequests, grpc_parser
from services.runtime.dispatch import Dispatcher


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


def _call_info(op: Operation, context: grpc.aio.ServicerContext) -> tuple[CallInfo, str | None]:
    md = _metadata(context)
    rid = clean_id(md.get("x-request-id", "")[:MAX_ID_CHARS]) or new_request_id()
    left = context.time_remaining()
    call = CallInfo(
        method=op.name, protocol="grpc", request_id=rid, peer=context.peer() or "",
        session_id=clean_id(md.get("x-session-id", "")[:MAX_ID_CHARS]),
        turn_id=clean_id(md.get("x-turn-id", "")[:MAX_ID_CHARS]),
        deadline=None if left is None else time.monotonic() + left,
    )
    return call, md.get("x-internal-token")


async def _abort(context: grpc.aio.ServicerContext, err: CallError, call: CallInfo) -> None:
    trailers = [("x-request-id", call.request_id)]
    if retry := retry_after_header(err):
        trailers.append(("retry-after", retry))
    await context.abort(grpc_status(err), err.message, trailing_metadata=tuple(trailers))
    raise AssertionError("context.abort returned") from err  # abort always raises


async def _refuse(
    context: grpc.aio.ServicerContext, dispatcher: Dispatcher, err: CallError, call: CallInfo, token: str | None
) -> None:
    """Abort a call whose request could not be parsed (a wrong token is reported first, as over HTTP)."""
    try:
        dispatcher.check_token(token)
    except CallError as auth:
        err = auth
    dispatcher.refuse(call, err)
    await _abort(context, err, call)


def _unary_handler(dispatcher: Dispatcher, op: Operation) -> grpc.RpcMethodHandler:
    parse = grpc_parser(op)

    async def behaviour(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        call, token = _call_info(op, context)
        try:
            request = parse(raw)
        except CallError as err:
            await _refuse(context, dispatcher, err, call, token)
            raise
        try:
            return await dispatcher.invoke(op.name, request, call, token)
        except CallError as err:
            await _abort(context, err, call)
            raise

    return grpc.unary_unary_rpc_method_handler(behaviour, response_serializer=op.response.SerializeToString)


def _stream_handler(dispatcher: Dispatcher, op: Operation) -> grpc.RpcMethodHandler:
    parse = grpc_parser(op)

    async def behaviour(raw: Any, context: grpc.aio.ServicerContext) -> None:
        call, token = _call_info(op, context)
        if op.kind is Kind.BIDI_STREAM:
            request: Message | ParsedRequests = ParsedRequests(raw, parse)
        else:
            try:
                request = parse(raw)
            except CallError as err:
                await _refuse(context, dispatcher, err, call, token)
                return
        try:
            async with contextlib.aclosing(dispatcher.stream(op.name, request, call, token)) as responses:
                async for msg in responses:
                    await context.write(msg)
        except CallError as err:
            await _abort(context, err, call)

    factory = (
        grpc.unary_stream_rpc_method_handler if op.kind is Kind.SERVER_STREAM
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(behaviour, response_serializer=op.response.SerializeToString)


def method_handler(dispatcher: Dispatcher, op: Operation) -> grpc.RpcMethodHandler:
    """The gRPC method handler for ``op``, of the shape its Kind asks for."""
    if op.kind is Kind.UNARY:
        return _unary_handler(dispatcher, op)
    return _stream_handler(dispatcher, op)


def build_grpc_server(
    dispatcher: Dispatcher, health: health_aio.HealthServicer, host: str, port: int, max_request_bytes: int
) -> tuple[grpc.aio.Server, int]:
    """An unstarted server bound to ``host:port``; returns it with the port actually bound."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.so_reuseport", 0),  # a second process on our port must fail, not share it
        ]
    )
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for op in dispatcher.operations.values():
        by_service.setdefault(op.grpc_service, {})[op.name] = method_handler(dispatcher, op)
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(name, handlers) for name, handlers in by_service.items())
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise bind_error(dispatcher.service_name, host, port, "grpc", e) from e
    return server, bound


def bind_error(service: str, host: str, port: int, purpose: str, cause: Exception) -> SupervisorError:
    """PortInUse when the port is taken, else a bind error that names service, address and cause."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return PortInUse(service, port, purpose)
            return SupervisorError(
                f"service {service!r} cannot bind its {purpose} port to {host}:{port}: {e.strerror}; "
                "check the service's host and port in config/services.yaml"
            )
    return SupervisorError(
        f"service {service!r} cannot bind its {purpose} port to {host}:{port}: {cause}; "
        "check the service's host and port in config/services.yaml"
    )
