"""Services that main reaches but does not spawn: RunPod serverless endpoints.

    services.py   RemoteServices: their endpoints for the hub, their state from /health probes
    resolver.py   ServiceResolver: local services from the supervisor, remote ones from here
"""

from core.managers.remote.resolver import ServiceResolver
from core.managers.remote.services import RemoteServices, RemoteState, RemoteStatus

__all__ = ["RemoteServices", "RemoteState", "RemoteStatus", "ServiceResolver"]
