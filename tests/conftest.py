"""Shared pytest setup: no gRPC fork handlers (the supervisor forks), and the speech fixture."""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
