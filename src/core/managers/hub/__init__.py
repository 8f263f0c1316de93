"""The hub: CommunicationManager calls any service over gRPC, then HTTP+msgpack, then HTTP+JSON.

Public face: :class:`CommunicationManager` and the :class:`Transport` protocol (with
:class:`UnaryCall` and :class:`StreamCall`) for plugging in or faking transports. Modules:

    manager.py            call() and stream(): deadline, breaker, the public face
    rounds.py             fallback order, transport-down marks, retries (shared by both)
    streaming.py          opening a stream with fallback, relaying it without
    replay.py             bidi request replay for a fallback before the first response
    transports/base.py    the Transport protocol and the UnaryCall / StreamCall it carries
    transports/grpc.py    grpc.aio, one channel per service
    transports/http.py    httpx, msgpack or JSON bodies, one client per service
    breaker.py            the per-service circuit breaker
    resilience.py         the per-service view of breakers, down marks and retries (GET /api/resilience)
    retry.py              backoff and jitter arithmetic
    metrics.py            Prometheus metrics and the counts behind snapshot()
"""

from core.managers.hub.breaker import BreakerState, CircuitBreaker
from core.managers.hub.manager import CommunicationManager, default_transports
from core.managers.hub.retry import RetryPolicy
from core.managers.hub.transports import (
    GrpcTransport,
    HttpClientPool,
    HttpTransport,
    StreamCall,
    Transport,
    UnaryCall,
)

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CommunicationManager",
    "GrpcTransport",
    "HttpClientPool",
    "HttpTransport",
    "RetryPolicy",
    "StreamCall",
    "Transport",
    "UnaryCall",
    "default_transports",
]
