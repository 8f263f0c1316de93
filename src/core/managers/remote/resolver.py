"""One resolver for the hub: a remote service's endpoint from RemoteServices, any other from the supervisor."""

from __future__ import annotations

from core.managers.endpoint import Endpoint, EndpointResolver
from core.managers.remote.services import RemoteServices


class ServiceResolver:
    """Lets a profile mix local and remote services (STT local, LLM on RunPod) behind one hub."""

    def __init__(self, local: EndpointResolver, remote: RemoteServices) -> None:
        self._local, self._remote = local, remote

    def endpoint(self, service: str) -> Endpoint:
        if service in self._remote:
            return self._remote.endpoint(service)
        return self._local.endpoint(service)
