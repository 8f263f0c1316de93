"""Typed configuration: ``config/services.yaml`` + ``config/profiles.yaml`` + env overrides.

Load once with :func:`load_settings` and pass the result down; nothing below re-reads files
or the environment.
"""

from core.config.loader import load_settings
from core.config.models import (
    DEFAULT_TURN_TAKING,
    HealthPolicy,
    LogPolicy,
    ProfileConfig,
    ProfileServiceOverride,
    RemoteEndpoint,
    RestartPolicy,
    ServiceConfig,
    Settings,
    TurnTaking,
)

__all__ = [
    "DEFAULT_TURN_TAKING",
    "HealthPolicy",
    "LogPolicy",
    "ProfileConfig",
    "ProfileServiceOverride",
    "RemoteEndpoint",
    "RestartPolicy",
    "ServiceConfig",
    "Settings",
    "TurnTaking",
    "load_settings",
]
