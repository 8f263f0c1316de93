"""gRPC status mapping: UNAVAILABLE and CANCELLED are transport failures; the rest are answers."""

from __future__ import annotations

import grpc
import pytest

from core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RequestRejected,
    ResourceExhausted,
    ServiceFailed,
    TransportError,
    Unauthenticated,
)
from core.managers.hub.transports.grpc import CHANNEL_OPTIONS, GrpcTransport, map_rpc_error


def _rpc_error(code: grpc.StatusCode, details: str = "why") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, TransportError),
        (grpc.StatusCode.CANCELLED, TransportError),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNIMPLEMENTED, NotFound),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.FAILED_PRECONDITION, RequestRejected),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, ServiceFailed),
        (grpc.StatusCode.UNKNOWN, ServiceFailed),
    ],
    ids=lambda v: v.name if isinstance(v, grpc.StatusCode) else v.__name__,
)
def test_status_codes_map_to_core_errors(code: grpc.StatusCode, expected: type[Exception]) -> None:
    err = map_rpc_error(_rpc_error(code, "the details"))
    assert type(err) is expected
    assert "the details" in err.message


def test_channel_options_bound_hang_detection_and_reconnects() -> None:
    opts = dict(CHANNEL_OPTIONS)
    assert opts["grpc.http2.ping_timeout_ms"] <= 5_000  # gRPC Core's 60 s default would hide a hang
    assert opts["grpc.keepalive_timeout_ms"] <= 5_000
    assert opts["grpc.max_reconnect_backoff_ms"] <= 300
    assert opts["grpc.max_receive_message_length"] >= 64 * 1024 * 1024


def test_min_reconnect_backoff_is_the_connect_timeout() -> None:
    t = GrpcTransport(connect_timeout_s=0.75)
    assert dict(t._options)["grpc.min_reconnect_backoff_ms"] == 750
