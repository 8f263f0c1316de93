"""Startup checks that a service's handlers match its role's operations, by name and by Kind.

A unary operation needs an ``async def`` coroutine function; a SERVER_STREAM or BIDI_STREAM
operation needs an async generator function (``async def`` with ``yield``). Getting it wrong
is a startup error naming the operation, not a confusing failure on the first call.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from core.errors import SupervisorError
from core.wire import CONTROL_OPS, Kind, Operation, operations
from services.runtime.api import Handler


class HandlerMismatch(SupervisorError, TypeError):
    """The service's handlers do not fit its role: the process exits with EXIT_STARTUP and this message."""

_SHAPES = {
    Kind.UNARY: "an 'async def' coroutine function returning one response",
    Kind.SERVER_STREAM: "an async generator function ('async def' that yields responses) taking (request, call)",
    Kind.BIDI_STREAM: "an async generator function ('async def' that yields responses) taking (requests, call)",
}


def _shape_of(handler: object) -> str:
    if inspect.isasyncgenfunction(handler):
        return "an async generator function"
    if inspect.iscoroutinefunction(handler):
        return "a coroutine function"
    if callable(handler):
        return f"a plain callable ({type(handler).__name__})"
    return f"not callable ({type(handler).__name__})"


def _fits(kind: Kind, handler: object) -> bool:
    if kind is Kind.UNARY:
        return inspect.iscoroutinefunction(handler)
    return inspect.isasyncgenfunction(handler)


def bind_handlers(role: str, service_handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    """The handlers by operation name; HandlerMismatch unless they cover the role exactly, each of the right Kind."""
    ops: dict[str, Operation] = operations(role)
    wanted = sorted(n for n in ops if n not in CONTROL_OPS)
    missing = [n for n in wanted if n not in service_handlers]
    unknown = sorted(n for n in service_handlers if n not in wanted)
    if missing or unknown:
        raise HandlerMismatch(
            f"a {role!r} service must handle exactly {wanted}; missing {missing}, unexpected {unknown} "
            "(operations come from core.wire.catalog; Control ops are served by the runtime)"
        )
    wrong = [
        f"{name} is {ops[name].kind.value} and needs {_SHAPES[ops[name].kind]}, "
        f"but its handler is {_shape_of(service_handlers[name])}"
        for name in wanted
        if not _fits(ops[name].kind, service_handlers[name])
    ]
    if wrong:
        raise HandlerMismatch(f"{role!r} service handlers have the wrong shape: " + "; ".join(wrong))
    return dict(service_handlers)
