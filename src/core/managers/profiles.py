"""ProfileSwitcher: move a running main to another profile, service by service, dropping no conversation.

``activate(name)`` loads the profile's effective config (services.yaml, the profile, this
process's env overrides) and compares it with the running one, service by service:

- a service whose config did not change is not touched;
- a changed local service is replaced by ``ServiceSupervisor.replace`` (blue-green by default:
  the new instance starts beside the old one, takes the new calls once RUNNING, the old one
  drains its calls in flight and exits);
- before a second instance starts, free memory is checked against the running instance's RSS;
  when it is short the switch is refused with the numbers and the alternative: ``stop-start``,
  which stops the old instance first (the service is down for about its last start time);
- a new instance that fails to start leaves the old one serving; the report says why, with the
  new instance's log tail, and the switch stops there (services already replaced stay replaced).

Moving a service between local and remote (RunPod), enabling or disabling one, or running a
CUDA profile without a GPU is refused with what to do instead. The active profile (and the
config ``/health``, ``/services/{name}`` and every later spawn read) changes only when every
service switched. Each switch is logged and counted in ``ultravox_profile_switches_total{from,
to,outcome}``; ``ultravox_active_profile{profile}`` is 1 for the active one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterable, Mapping
from typing import Any

import psutil
from prometheus_client import Counter, Gauge

from core.config import ServiceConfig, Settings, load_settings
from core.context import ProcessContext
from core.errors import ConfigError, InvalidArgument, NotFound, RequestRejected
from core.managers.hub import CommunicationManager
from core.managers.supervisor import ServiceSupervisor

log = logging.getLogger("ultravox.profiles")
MODES = ("blue-green", "stop-start")
#: A second instance is assumed to need its twin's RSS times this, plus the margin below.
MEMORY_FACTOR = 1.2
MEMORY_MARGIN_BYTES = 256 * 1024 * 1024
_PORTS = {"grpc_port", "http_port"}
#: How long a switch lets conversation turns in progress finish on the instance they started on.
TURN_WAIT_S = 60.0


class SwitchConflict(RequestRejected):
    """Another switch is running, or there is not memory enough for a second instance (409)."""

    code = "ABORTED"
    http_status = 409


def comparable(cfg: ServiceConfig) -> dict[str, Any]:
    """What a switch compares: everything but the ports (a switched instance listens on free ones)."""
    return cfg.model_dump(mode="json", exclude=_PORTS)


def load_profile(current: Settings, name: str) -> Settings:
    """What ``./start.sh NAME`` would run, from the running config's folder; NotFound or InvalidArgument."""
    if name not in current.profiles:
        raise NotFound(f"no profile {name!r}; profiles: {', '.join(current.profiles)} (config/profiles.yaml)")
    try:
        return load_settings(current.config_dir, profile=name)
    except ConfigError as e:
        raise InvalidArgument(f"profile {name!r} does not load: {e}; fix it in {current.config_dir}") from e


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None


class ProfileSwitcher:
    def __init__(self, ctx: ProcessContext, supervisor: ServiceSupervisor, hub: CommunicationManager) -> None:
        self._ctx, self._sup, self._hub = ctx, supervisor, hub
        self._lock = asyncio.Lock()
        self.switches = Counter(
            "ultravox_profile_switches", "Profile switches, by the profile left, the one asked for and the outcome "
            "(ok, unchanged, failed, refused).", ["from", "to", "outcome"], registry=ctx.registry,
        )
        self.active = Gauge("ultravox_active_profile", "1 for the profile main runs now.", ["profile"],
                            registry=ctx.registry)
        for p in ctx.settings.profiles:
            self.active.labels(p).set(1.0 if p == ctx.settings.profile.name else 0.0)

    # ---- planning ----------------------------------------------------------------------------------

    def plan(self, name: str, services: Iterable[str] | None = None) -> tuple[Settings, list[ServiceConfig]]:
        """The profile's settings and the services a switch to it would replace; refusals raise."""
        current = self._ctx.settings
        target = load_profile(current, name)
        wanted = list(services) if services else list(current.services)
        unknown = [s for s in wanted if s not in current.services]
        if unknown:
            raise NotFound(f"no service {', '.join(unknown)}; services: {', '.join(current.services)}")
        changed = []
        for s in wanted:
            old, new = current.services[s], target.services[s]
            if comparable(old) == comparable(new):
                continue
            restart = f"stop main and run ./start.sh {name}"
            if (old.remote is None) != (new.remote is None) or (old.remote and old.remote != new.remote):
                raise InvalidArgument(f"profile {name!r} moves {s} between this machine and a remote endpoint, "
                                      f"which a running switch does not do; {restart}")
            if old.enabled != new.enabled:
                raise InvalidArgument(f"profile {name!r} {'enables' if new.enabled else 'disables'} {s}, which a "
                                      f"running switch does not do; {restart}")
            if new.device == "cuda" and not gpu_present():
                raise InvalidArgument(f"profile {name!r} runs {s} on CUDA and this machine has no NVIDIA GPU "
                                      "(nvidia-smi not found); pick a CPU profile (sm profile list)")
            changed.append(new)
        return target, changed

    def check_memory(self, changed: list[ServiceConfig]) -> dict[str, int]:
        """Refuse a blue-green switch that would not fit beside the running instances."""
        need = 0
        for cfg in changed:
            rss = self._sup.status(cfg.name).rss_bytes or 0
            need = max(need, int(rss * MEMORY_FACTOR) + MEMORY_MARGIN_BYTES)  # one service at a time
        available = psutil.virtual_memory().available
        if need > available:
            down = ", ".join(f"{c.name} ~{self._sup.startup_seconds(c.name) or 0:.0f} s" for c in changed)
            raise SwitchConflict(
                f"a second instance beside the running one needs about {need / 2**20:.0f} MiB and "
                f"{available / 2**20:.0f} MiB are available; switch with mode stop-start "
                f"(sm profile activate NAME --stop-start), which stops each service first: it is down "
                f"while its new instance starts ({down}, its last start time)"
            )
        return {"need_bytes": need, "available_bytes": int(available)}

    # ---- switching --------------------------------------------------------------------------------

    async def activate(self, name: str, *, services: Iterable[str] | None = None,
                       mode: str = "blue-green") -> dict[str, Any]:
        if mode not in MODES:
            raise InvalidArgument(f"mode {mode!r}: use one of {', '.join(MODES)}")
        if self._lock.locked():
            raise SwitchConflict("a profile switch is already running; wait for it (sm profile list shows the "
                                 "active profile)")
        async with self._lock:
            frm = self._ctx.settings.profile.name
            try:
                target, changed = self.plan(name, services)
                memory = self.check_memory(changed) if mode == "blue-green" and changed else {}
            except RequestRejected:
                self.switches.labels(frm, name, "refused").inc()
                raise
            report: dict[str, Any] = {"from": frm, "to": name, "mode": mode, "memory": memory,
                                      "services": {}, "unchanged": sorted(
                                          set(services or self._ctx.settings.services) - {c.name for c in changed})}
            log.info("profile switch %s -> %s: replacing %s (%s)", frm, name,
                     ", ".join(c.name for c in changed) or "nothing", mode)
            t0 = time.monotonic()
            report["memory"]["used_before_bytes"] = int(psutil.virtual_memory().used)
            peak = asyncio.get_running_loop().create_task(_peak_memory())
            replaced: dict[str, ServiceConfig] = {}
            try:
                for cfg in changed:
                    r = await self._sup.replace(cfg.name, cfg, mode=mode, handover=lambda ep: self._hub.handing_over(
                        ep.name, ep, TURN_WAIT_S))
                    report["services"][cfg.name] = dataclasses.asdict(r)
                    log.info("profile switch %s -> %s: %s %s", frm, name, cfg.name,
                             f"replaced in {r.total_s:.1f}s (start {r.start_s:.1f}s, turns {r.turns_s:.1f}s, "
                             f"drain {r.drain_s:.1f}s)"
                             if r.ok else f"FAILED: {r.error}")
                    if not r.ok:
                        break
                    replaced[cfg.name] = cfg
            finally:
                peak.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    report["memory"]["peak_used_bytes"] = await peak
            complete = len(replaced) == len(changed)
            whole = complete and not services
            self._commit(target if whole else None, replaced)
            outcome = "unchanged" if not changed else "ok" if complete else "failed"
            report.update(outcome=outcome, total_s=round(time.monotonic() - t0, 3),
                          active_profile=self._ctx.settings.profile.name)
            self.switches.labels(frm, name, outcome).inc()
            return report

    def _commit(self, target: Settings | None, replaced: Mapping[str, ServiceConfig]) -> None:
        """Make the switched config the running one: the whole profile, or the services replaced."""
        g = self._ctx.global_
        if target is not None:
            settings = target
        elif replaced:
            settings = g.settings.model_copy(update={"services": {**g.settings.services, **replaced}})
        else:
            return
        self._ctx.global_ = dataclasses.replace(g, settings=settings)
        for p in settings.profiles:
            self.active.labels(p).set(1.0 if p == settings.profile.name else 0.0)


async def _peak_memory(period_s: float = 0.2) -> int:
    """Highest used memory (bytes) seen until cancelled; returned from the cancellation."""
    peak: int = psutil.virtual_memory().used
    try:
        while True:
            await asyncio.sleep(period_s)
            peak = max(peak, int(psutil.virtual_memory().used))
    except asyncio.CancelledError:
        return peak
