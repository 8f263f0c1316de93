"""Typed configuration: ``config/services.yaml`` + ``config/profiles.yaml`` + env overrides.

Load once with :func:`load_settings` and pass the result down; nothing below re-reads files
or the environment.
"""

from core.config.loader import load_settings
from core.config.models import (
    HealthPolicy,
    LogPolicy,
    ProfileConfig,
    ProfileServiceOverride,
    RemoteEndpoint,
    RestartPolicy,
    ServiceConfig,
    Settings,
)

__all__ = [
    "HealthPolicy",
    "LogPolicy",
    "ProfileConfig",
    "ProfileServiceOverride",
    "RemoteEndpoint",
    "RestartPolicy",
    "ServiceConfig",
    "Settings",
    "load_settings",
]
