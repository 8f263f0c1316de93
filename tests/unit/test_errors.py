"""The error tree's wire mapping: codes round-trip, Retry-After survives every transport."""

from __future__ import annotations

import grpc
import pytest

from core.errors import (
    InvalidArgument,
    ResourceExhausted,
    ServiceFailed,
    error_from_code,
    grpc_status,
    parse_retry_after,
    retry_after_header,
)


@pytest.mark.parametrize("cls", [InvalidArgument, ResourceExhausted, ServiceFailed])
def test_codes_round_trip(cls: type) -> None:
    err = cls("why and what to do")
    back = error_from_code(err.code, err.message)
    assert type(back) is cls and back.message == err.message
    assert grpc_status(err) == getattr(grpc.StatusCode, err.code)


def test_retry_after_is_rounded_up_and_rebuilt() -> None:
    busy = ResourceExhausted("queue full", retry_after_s=2.2)
    assert retry_after_header(busy) == "3"
    assert retry_after_header(InvalidArgument("x")) is None
    back = error_from_code("RESOURCE_EXHAUSTED", "queue full", retry_after_s=parse_retry_after("3"))
    assert isinstance(back, ResourceExhausted) and back.retry_after_s == 3.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
