"""What the gateway's routes share: the supervisor, the hub, the conversation layer, boot state.

One ``MainRuntime`` per main process, created in the FastAPI lifespan and stored on
``app.state.runtime``; routes reach it through ``runtime_of(request)``. The conversation layer
(sessions, admission, recorder, orchestrator, REST reply audio, polling buffers, access)
is attached by the lifespan right after the runtime is built, before the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import Request

from core.context import ProcessContext
from core.errors import NotFound
from core.managers.hub import CommunicationManager
from core.managers.profiles import ProfileSwitcher
from core.managers.remote import RemoteServices
from core.managers.supervisor import ServiceSupervisor
from core.sessions import Admission, PollRegistry, Recorder, ReplyAudioCache, SessionManager

if TYPE_CHECKING:  # the orchestrator imports nothing from the gateway; this keeps it that way
    from core.access import Access
    from core.conversation.orchestrator import Orchestrator

log = logging.getLogger("ultravox.main")


@dataclass
class MainRuntime:
    ctx: ProcessContext
    supervisor: ServiceSupervisor
    hub: CommunicationManager
    remote: RemoteServices
    """Services reached through a remote API (RunPod): endpoints and their probed state."""
    profiles: ProfileSwitcher = field(init=False)
    """Switches the running profile (attached by the lifespan; see core.managers.profiles)."""
    proxy_client: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=60.0))
    boot_error: str = ""
    booted: bool = False
    started_at: float = field(default_factory=time.time)
    _boot_task: asyncio.Task[None] | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Run first (in reverse order of registration) when the conversation layer closes: transports
    that hold live connections (WebRTC peers) register here."""
    # the conversation layer, attached by the lifespan (see core.gateway.app)
    sessions: SessionManager = field(init=False)
    admission: Admission = field(init=False)
    recorder: Recorder = field(init=False)
    orchestrator: Orchestrator = field(init=False)
    access: Access = field(init=False)
    """Keys, tokens and rate limits (core.access); the AccessGuard middleware applies them."""
    replies: ReplyAudioCache = field(init=False)
    polls: PollRegistry = field(init=False)

    async def boot(self) -> None:
        """Prepare venvs and spawn services in the background, so /health answers meanwhile."""
        self._boot_task = asyncio.create_task(self._boot(), name="main-boot")

    async def _boot(self) -> None:
        self.remote.start()  # remote endpoints are probed while local services are prepared
        try:
            await self.supervisor.prepare()
            await self.supervisor.start_all()
            self.booted = True
            log.info("all services spawned; waiting for readiness")
        except Exception as e:  # boot failures are reported by /health, never crash main
            self.boot_error = f"{type(e).__name__}: {e}"
            log.exception("boot failed: %s", self.boot_error)

    async def close_conversation(self) -> None:
        """Close live transports (``closers``), stop polling turns, then the orchestrator, then flush
        sessions and the store (in that order)."""
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception as e:  # one transport's failure must not stop the rest of the shutdown
                log.exception("closing a transport failed: %s", e)
        self.closers.clear()
        if hasattr(self, "polls"):
            await self.polls.close()
        if hasattr(self, "orchestrator") and (aclose := getattr(self.orchestrator, "aclose", None)) is not None:
            await aclose()
        if hasattr(self, "sessions"):
            await self.sessions.close()

    async def close(self) -> None:
        if self._boot_task is not None and not self._boot_task.done():
            self._boot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._boot_task
        await self.supervisor.shutdown()
        await self.remote.close()
        await self.hub.close()
        await self.proxy_client.aclose()

    def service_rows(self) -> list[dict[str, Any]]:
        """``/services``: every local service's status, then every remote one's."""
        return [*(s.to_dict() for s in self.supervisor.statuses()), *(s.to_dict() for s in self.remote.statuses())]

    def services_by_role(self) -> dict[str, str]:
        """role -> service name of the first enabled service per role (what the orchestrator calls)."""
        out: dict[str, str] = {}
        for s in self.ctx.settings.enabled_services():
            out.setdefault(s.role, s.name)
        return out

    def service_for_role(self, role: str) -> str:
        """The first enabled service that serves ``role`` (stt, tts, llm)."""
        for s in self.ctx.settings.enabled_services():
            if s.role == role:
                return s.name
        raise NotFound(f"no enabled {role} service in profile {self.ctx.settings.profile.name!r}")


def runtime_of(request: Request) -> MainRuntime:
    rt: MainRuntime = request.app.state.runtime
    return rt
