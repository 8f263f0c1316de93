"""The HTTP face of main: control API, OpenAI-compatible routes, metrics."""

from core.gateway.app import create_app

__all__ = ["create_app"]
