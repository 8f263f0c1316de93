"""The scripted streaming service (``tests.helpers.stream_service``) as a real subprocess.

Launched the way main launches a service (``UV_LAUNCH_SPEC``), on free loopback ports, with the
test interpreter (the main venv has the runtime's dependencies). ``endpoint()`` is what the
hub's resolver returns for it; ``metric()`` reads its /metrics (the service's own ``uv_test_``
metrics carry no ``service`` label).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from core.config.models import ServiceConfig, Settings
from core.managers.endpoint import Endpoint
from tests.helpers.service_process import ServiceProcess

NAME = "scripted-llm"
MODULE = "tests.helpers.stream_service"


class StreamServiceProcess(ServiceProcess):
    def __init__(self, workdir: Path, options: dict[str, Any] | None = None, stop_grace_s: float = 10.0) -> None:
        self.stop_grace_s = stop_grace_s
        super().__init__(sys.executable, workdir, "stt", options=options or {}, timeout=30)

    def config(self, settings: Settings) -> ServiceConfig:
        """A service of its own, made from the STT's entry: role llm, the scripted module and engine."""
        return settings.services["stt"].model_copy(update={
            "name": NAME, "role": "llm", "module": MODULE, "engine": "scripted", "model": "scripted",
            "options": self.options, "enabled": True, "stop_grace_s": self.stop_grace_s, "env": {},
        })

    def endpoint(self, **changes: Any) -> Endpoint:
        ep = Endpoint(NAME, "llm", "127.0.0.1", self.grpc_port, self.http_port, self.token)
        return dataclasses.replace(ep, **changes)

    def metric(self, name: str, **labels: str) -> float:
        return self.sample(name, labels if name.startswith("uv_test_") else {"service": NAME, **labels})
