"""The hub: CommunicationManager calls any service over gRPC, then HTTP+msgpack, then HTTP+JSON.

Public face: :class:`CommunicationManager` and the :class:`Transport` protocol (with
:class:`UnaryCall`) for plugging in or faking transports. Modules:

    manager.py            call(): fallback order, retries, deadline, breaker, metrics
    transports/base.py    the Transport protocol and the UnaryCall it carries
    transports/grpc.py    grpc.aio, one channel per service
    transports/http.py    httpx, msgpack or JSON bodies, one client per service
    breaker.py            the per-service circuit breaker
    retry.py              backoff and jitter arithmetic
    metrics.py            Prometheus metrics and the counts behind snapshot()
"""

from core.managers.hub.breaker import BreakerState, CircuitBreaker
from core.managers.hub.manager import CommunicationManager, default_transports
from core.managers.hub.retry import RetryPolicy
from core.managers.hub.transports import GrpcTransport, HttpClientPool, HttpTransport, Transport, UnaryCall

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CommunicationManager",
    "GrpcTransport",
    "HttpClientPool",
    "HttpTransport",
    "RetryPolicy",
    "Transport",
    "UnaryCall",
    "default_transports",
]
