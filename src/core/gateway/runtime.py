"""What the gateway's routes share: the supervisor, the hub and the boot state of main.

One ``MainRuntime`` per main process, created in the FastAPI lifespan and stored on
``app.state.runtime``; routes reach it through ``runtime_of(request)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import httpx
from fastapi import Request

from core.context import ProcessContext
from core.errors import NotFound
from core.managers.hub import CommunicationManager
from core.managers.supervisor import ServiceSupervisor

log = logging.getLogger("ultravox.main")


@dataclass
class MainRuntime:
    ctx: ProcessContext
    supervisor: ServiceSupervisor
    hub: CommunicationManager
    proxy_client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=60.0))
    boot_error: str = ""
    booted: bool = False
    started_at: float = field(default_factory=time.time)
    _boot_task: asyncio.Task[None] | None = None

    async def boot(self) -> None:
        """Prepare venvs and spawn services in the background, so /health answers meanwhile."""
        self._boot_task = asyncio.create_task(self._boot(), name="main-boot")

    async def _boot(self) -> None:
        try:
            await self.supervisor.prepare()
            await self.supervisor.start_all()
            self.booted = True
            log.info("all services spawned; waiting for readiness")
        except Exception as e:  # boot failures are reported by /health, never crash main
            self.boot_error = f"{type(e).__name__}: {e}"
            log.exception("boot failed: %s", self.boot_error)

    async def close(self) -> None:
        if self._boot_task is not None and not self._boot_task.done():
            self._boot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._boot_task
        await self.supervisor.shutdown()
        await self.hub.close()
        await self.proxy_client.aclose()

    def service_for_role(self, role: str) -> str:
        """The first enabled service that serves ``role`` (stt, tts, llm)."""
        for s in self.ctx.settings.enabled_services():
            if s.role == role:
                return s.name
        raise NotFound(f"no enabled {role} service in profile {self.ctx.settings.profile.name!r}")


def runtime_of(request: Request) -> MainRuntime:
    rt: MainRuntime = request.app.state.runtime
    return rt
