"""How the hub finds a service: the supervisor (or a static/remote config) resolves names to endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from core.config.models import RemoteEndpoint


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one service can be reached right now. Ports can change across restarts (port 0)."""

    name: str
    role: str
    host: str
    grpc_port: int
    http_port: int
    token: str = field(repr=False)
    remote: RemoteEndpoint | None = None
    """Set for a service reached through a remote API (RunPod): the hub then uses that API's transport."""
    api_key: str = field(default="", repr=False)
    """The remote API's key, read from ``remote.api_key_env`` (never logged, never in config)."""
    metadata: tuple[tuple[str, str], ...] = ()
    """Sent with every call on every transport (gRPC metadata, HTTP headers): Ray Serve's
    ``application`` routes a call to its application on the shared proxy."""
    http_prefix: str = ""
    """Put before every HTTP path: a Ray Serve application's route prefix on the shared HTTP proxy."""

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.http_port}{self.http_prefix}"


class EndpointResolver(Protocol):
    def endpoint(self, service: str) -> Endpoint:
        """Current endpoint of ``service``; raises core.errors.NotFound for an unknown name."""
        ...
