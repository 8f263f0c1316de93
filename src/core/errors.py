"""One exception tree for the whole platform.

Every error says whether it is *transient* (retrying the same call may succeed) and whether
it is a *transport* failure (another protocol may succeed). The hub falls back to the next
protocol only on transport failures and never on a rejected request.

    UltravoxError
    ├── ConfigError                 permanent  a config file or env override is invalid
    ├── SupervisorError             permanent  a service cannot be prepared or started
    │   ├── UnknownService
    │   ├── PortInUse
    │   └── VenvBuildError
    └── CallError                              a call to a model service failed
        ├── RequestRejected         permanent  the service understood and refused the request
        │   ├── InvalidArgument          400 / INVALID_ARGUMENT
        │   ├── Unauthenticated          401 / UNAUTHENTICATED
        │   │   └── PermissionDenied     403 / PERMISSION_DENIED
        │   ├── NotFound                 404 / NOT_FOUND
        │   └── ResourceExhausted        429 / RESOURCE_EXHAUSTED (transient: retry after)
        ├── ServiceFailed           permanent  the service raised while handling the call (500 / INTERNAL)
        ├── DeadlineExceeded        transient  the call's deadline passed (504 / DEADLINE_EXCEEDED)
        ├── ServiceUnavailable      transient  the service is loading, draining or down (503 / UNAVAILABLE)
        │   ├── CircuitOpen              the hub's breaker for the service is open
        │   └── Overloaded               admission control is full (503 + Retry-After)
        └── TransportError          transient  this protocol could not carry the call; try the next
"""

from __future__ import annotations

import math
from typing import ClassVar

import grpc


class UltravoxError(Exception):
    """Base of every error this project raises on purpose."""

    transient: ClassVar[bool] = False


class ConfigError(UltravoxError):
    """A config file or override is invalid. The message names the file, the key and the reason."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"{path}: {key}: {reason}")


class SupervisorError(UltravoxError):
    """A service could not be prepared or started."""


class UnknownService(SupervisorError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown service {name!r}; configured services are: {', '.join(sorted(known)) or 'none'}")


class PortInUse(SupervisorError):
    def __init__(self, service: str, port: int, purpose: str) -> None:
        self.service, self.port, self.purpose = service, port, purpose
        super().__init__(
            f"service {service!r} cannot start: its {purpose} port {port} on 127.0.0.1 is already in use "
            f"by another process; stop that process or set a free port in config/services.yaml "
            f"(or the UV_{service.upper()}_{purpose.upper()}_PORT env var)"
        )


class VenvBuildError(SupervisorError):
    """Creating or filling a service's virtualenv failed."""


class CallError(UltravoxError):
    """A call to a model service failed. ``code`` is the gRPC status name."""

    code: ClassVar[str] = "UNKNOWN"
    http_status: ClassVar[int] = 500
    is_transport: ClassVar[bool] = False

    def __init__(self, message: str, *, service: str = "", method: str = "", protocol: str = "") -> None:
        self.message, self.service, self.method, self.protocol = message, service, method, protocol
        super().__init__(message)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class RequestRejected(CallError):
    """The service understood the request and refused it. Never retried, never re-sent on another protocol."""

    code = "FAILED_PRECONDITION"
    http_status = 400


class InvalidArgument(RequestRejected):
    code = "INVALID_ARGUMENT"
    http_status = 400


class Unauthenticated(RequestRejected):
    code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(Unauthenticated):
    """Authenticated, but not allowed (the role or the token's scope); an Unauthenticated for callers
    that treat both alike."""

    code = "PERMISSION_DENIED"
    http_status = 403


class NotFound(RequestRejected):
    code = "NOT_FOUND"
    http_status = 404


class ResourceExhausted(RequestRejected):
    code = "RESOURCE_EXHAUSTED"
    http_status = 429
    transient = True

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw: str) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)


class ServiceFailed(CallError):
    code = "INTERNAL"
    http_status = 500


class DeadlineExceeded(CallError):
    code = "DEADLINE_EXCEEDED"
    http_status = 504
    transient = True


class ServiceUnavailable(CallError):
    code = "UNAVAILABLE"
    http_status = 503
    transient = True


class CircuitOpen(ServiceUnavailable):
    pass


class Overloaded(ServiceUnavailable):
    """Admission control refused new work (too many turns in flight); retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw: str) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, **kw)


class TransportError(CallError):
    """This protocol could not carry the call (refused, reset, broken stream). The next one may."""

    code = "UNAVAILABLE"
    http_status = 503
    transient = True
    is_transport = True


_BY_CODE: dict[str, type[CallError]] = {
    c.code: c
    for c in (
        InvalidArgument, Unauthenticated, PermissionDenied, NotFound, ResourceExhausted, ServiceFailed,
        DeadlineExceeded,
    )
}
_BY_CODE["UNAVAILABLE"] = ServiceUnavailable
_BY_CODE["FAILED_PRECONDITION"] = RequestRejected
_BY_CODE["UNIMPLEMENTED"] = NotFound


def error_from_code(code: str, message: str, *, retry_after_s: float | None = None, **kw: str) -> CallError:
    """Rebuild the right CallError from a status name (and Retry-After, if any) sent over the wire."""
    cls = _BY_CODE.get(code, ServiceFailed)
    if cls is ResourceExhausted:
        return ResourceExhausted(message, retry_after_s=retry_after_s or 1.0, **kw)
    return cls(message, **kw)


def retry_after_header(err: CallError) -> str | None:
    """``Retry-After`` value (whole seconds, at least 1) for a refusal that says when to retry."""
    if isinstance(err, ResourceExhausted | Overloaded):
        return str(max(1, math.ceil(err.retry_after_s)))
    return None


def parse_retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def grpc_status(err: CallError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, err.code, grpc.StatusCode.UNKNOWN)


HTTP_TO_CODE: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
