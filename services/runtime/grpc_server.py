"""The gRPC side: generic handlers built from the catalog, plus standard grpc.health.v1.

No hand-written servicers: every operation of the role becomes a unary-unary method handler
whose (de)serializers are the Operation's message classes, and whose behaviour is the
dispatcher. Errors abort the call with the matching status code and the error's message.
"""

from __future__ import annotations

import errno
import socket
import time
import uuid

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from core.errors import CallError, PortInUse, SupervisorError, grpc_status
from core.wire import Operation
from services.runtime.api import CallInfo
from services.runtime.dispatch import Dispatcher


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


def _unary_handler(dispatcher: Dispatcher, op: Operation) -> grpc.RpcMethodHandler:
    async def behaviour(request: Message, context: grpc.aio.ServicerContext) -> Message:
        md = _metadata(context)
        rid = md.get("x-request-id") or uuid.uuid4().hex[:16]
        left = context.time_remaining()
        call = CallInfo(
            method=op.name, protocol="grpc", request_id=rid, peer=context.peer() or "",
            deadline=None if left is None else time.monotonic() + left,
        )
        try:
            return await dispatcher.invoke(op.name, request, call, md.get("x-internal-token"))
        except CallError as err:
            await context.abort(grpc_status(err), err.message, trailing_metadata=(("x-request-id", rid),))
            raise AssertionError("context.abort returned") from err  # abort always raises

    return grpc.unary_unary_rpc_method_handler(
        behaviour,
        request_deserializer=op.request.FromString,
        response_serializer=op.response.SerializeToString,
    )


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
        by_service.setdefault(op.grpc_service, {})[op.name] = _unary_handler(dispatcher, op)
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
