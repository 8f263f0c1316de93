"""The real STT service as a subprocess: ``ServiceProcess`` for ``services.stt``.

Its HTTP client sends no token (the tests add it per request, or leave it out on purpose) and
calls time out after 120 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.helpers.service_process import ServiceProcess


@dataclass
class SttProcess(ServiceProcess):
    service: str = "stt"
