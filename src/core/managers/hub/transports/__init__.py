"""The hub's interchangeable transports: gRPC, HTTP+msgpack and HTTP+JSON behind one Protocol."""

from core.managers.hub.transports.base import Metadata, StreamCall, Transport, UnaryCall
from core.managers.hub.transports.grpc import GrpcTransport
from core.managers.hub.transports.http import HttpClientPool, HttpTransport

__all__ = ["GrpcTransport", "HttpClientPool", "HttpTransport", "Metadata", "StreamCall", "Transport", "UnaryCall"]
