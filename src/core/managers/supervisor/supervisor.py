"""ServiceSupervisor: the facade main uses to prepare, start, watch and stop the model services.

It owns one ``ServiceRunner`` (state machine) per locally spawned service, builds their
venvs, composes how each is launched (interpreter, env, launch spec) and resolves names to
endpoints for the hub. Services with a ``remote`` endpoint are not spawned and not listed.

Use it as an async context manager, or call ``shutdown()`` on every exit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType

from core.config import ServiceConfig
from core.context import ProcessContext, ServiceContext
from core.errors import NotFound, ServiceUnavailable, SupervisorError, UnknownService
from core.managers.endpoint import Endpoint
from core.managers.supervisor.health import GrpcHealthProber, HealthProber
from core.managers.supervisor.logs import ServiceLog
from core.managers.supervisor.process import PosixProcessAPI, ProcessAPI, SpawnSpec
from core.managers.supervisor.runner import RunnerDeps, ServiceRunner, TransitionListener
from core.managers.supervisor.states import RESTING_STATES, State
from core.managers.supervisor.status import ServiceStatus
from core.managers.supervisor.venv import VenvBuilder


@dataclasses.dataclass(slots=True)
class ReplaceReport:
    """What a replacement did and how long each part took (seconds)."""

    service: str
    mode: str
    ok: bool = False
    old_pid: int | None = None
    new_pid: int | None = None
    venv_s: float = 0.0
    start_s: float = 0.0
    """From the spawn of the new instance to RUNNING (its model loaded)."""
    turns_s: float = 0.0
    """From the switch of new calls to the new instance until no turn in progress used the old one."""
    drain_s: float = 0.0
    """From then until the old instance exited (its calls in flight finished)."""
    total_s: float = 0.0
    error: str = ""
    log_tail: list[str] = dataclasses.field(default_factory=list)


#: Wraps the moment new calls move to the new instance; gets the old instance's endpoint.
Handover = Callable[[Endpoint], AbstractAsyncContextManager[None]]
#: Builds the argv of a service instead of ``<venv>/bin/python -m <module>`` (tests, debugging).
CommandFactory = Callable[[ServiceConfig], Sequence[str]]


class ServiceSupervisor:
    def __init__(
        self,
        ctx: ProcessContext,
        *,
        process_api: ProcessAPI | None = None,
        venv_builder: VenvBuilder | None = None,
        prober: HealthProber | None = None,
        command: CommandFactory | None = None,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        ready_poll_s: float = 0.2,
    ) -> None:
        """``command`` replaces the venv interpreter (no venvs are built then); ``clock``, ``rng``
        and ``ready_poll_s`` exist for tests."""
        self._ctx = ctx
        self._paths = ctx.global_.paths
        self._venvs = venv_builder or VenvBuilder(self._paths)
        self._prober = prober or GrpcHealthProber()
        self._command = command
        self._listeners: list[TransitionListener] = []
        self._changed = asyncio.Event()
        self._prepare_lock = asyncio.Lock()
        self._deps = deps = RunnerDeps(
            api=process_api or PosixProcessAPI(),
            prober=self._prober,
            spec_for=self._spawn_spec,
            log=ctx.log,
            clock=clock or time.monotonic,
            rng=rng or random.Random(),
            ready_poll_s=ready_poll_s,
            on_transition=self._on_transition,
        )
        self._runners: dict[str, ServiceRunner] = {
            name: ServiceRunner(cfg, deps, ServiceLog(self._paths.logs / f"{name}.log", cfg.log))
            for name, cfg in ctx.settings.services.items()
            if cfg.remote is None
        }

    async def __aenter__(self) -> ServiceSupervisor:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    # ---- lookup -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._runners)

    def _runner(self, name: str) -> ServiceRunner:
        try:
            return self._runners[name]
        except KeyError as e:
            raise UnknownService(name, list(self._runners)) from e

    def _enabled(self, names: list[str] | None) -> list[ServiceRunner]:
        if names is not None:
            return [self._runner(n) for n in names]
        enabled = self._ctx.settings.enabled_services()
        return [self._runners[c.name] for c in enabled if c.name in self._runners]

    # ---- venvs ------------------------------------------------------------------------------
    async def prepare(self, names: list[str] | None = None) -> None:
        """Build or refresh the venvs of ``names`` (default: enabled services), one at a time."""
        if self._command is not None:
            return  # launched by a command override: no venvs involved
        async with self._prepare_lock:
            for r in self._enabled(names):
                try:
                    await self._venvs.ensure(r.config)
                except SupervisorError as e:
                    r.last_error = str(e)
                    raise

    # ---- lifecycle ------------------------------------------------------------------------
    async def start_all(self) -> None:
        """Spawn every enabled service; readiness is not awaited (see wait_ready)."""
        for r in self._enabled(None):
            try:
                await r.start()
            except SupervisorError as e:  # that service is FATAL with last_error; start the others
                self._ctx.log.error("service %s did not start: %s", r.name, e)

    # ASYNC109: ``timeout`` is part of the public contract that main and the tests use.
    async def wait_ready(self, timeout: float, names: list[str] | None = None) -> bool:  # noqa: ASYNC109
        """True once all ``names`` (default: enabled) are RUNNING; False on timeout or if one gives up."""
        runners = self._enabled(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if all(r.state is State.RUNNING for r in runners):
                return True
            if any(r.state in RESTING_STATES for r in runners):
                return False  # FATAL, EXITED or STOPPED will not become RUNNING by waiting
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False

    async def start(self, name: str) -> ServiceStatus:
        r = self._runner(name)
        await r.start()
        return r.status()

    async def stop(self, name: str) -> ServiceStatus:
        r = self._runner(name)
        await r.stop()
        return r.status()

    async def restart(self, name: str) -> ServiceStatus:
        r = self._runner(name)
        await r.stop()
        await r.start()
        return r.status()

    async def replace(
        self, name: str, config: ServiceConfig, *, mode: str = "blue-green", handover: Handover | None = None
    ) -> ReplaceReport:
        """Replace the running instance of ``name`` by one with ``config``; no call is dropped.

        ``blue-green``: the new instance starts beside the old one, on free ports (its venv is
        built first if its extra or pins differ); once it is RUNNING, ``endpoint(name)`` resolves
        to it, so new calls go there, and the old one DRAINS: it refuses new calls and finishes
        those in flight (up to its stop_grace_s), then exits. If the new one fails to start, it is
        stopped, the old one keeps serving, and the report says why, with the new one's log tail.
        ``stop-start``: the old one stops first (no second instance in memory; the service is
        down until the new one is RUNNING); a failed start brings the old config back.
        ``handover(old_endpoint)`` wraps the switch of new calls to the new instance (the hub
        keeps turns in progress on the old one until they end, see CommunicationManager.pinned).
        """
        old = self._runner(name)
        clock = self._deps.clock
        t0 = clock()
        report = ReplaceReport(service=name, mode=mode, old_pid=old.status().pid)
        if self._command is None:
            await self._venvs.ensure(config, prune=False)  # the old instance may run from a venv it would prune
        report.venv_s = round(clock() - t0, 3)
        fresh = config.model_copy(update={"grpc_port": 0, "http_port": 0}) if mode == "blue-green" else config
        new = ServiceRunner(fresh, self._deps, old.log)
        if mode == "stop-start":
            await old.stop()
        started = clock()
        error = ""
        try:
            await new.start()
        except SupervisorError as e:
            error = str(e)
        if not error and not await self._until_running(new, config.health.startup_timeout_s):
            error = new.last_error or f"it did not become ready in {config.health.startup_timeout_s:g}s"
        report.start_s = round(clock() - started, 3)
        if error:
            report.error = f"the new {name} instance did not start ({new.state.value}): {error}"
            report.log_tail = new.log.tail(30)
            await new.stop()
            if mode == "stop-start":
                await old.start()  # back to the old config, which served until now
            report.total_s = round(clock() - t0, 3)
            return report
        old_ep = self._endpoint_of(old) if mode == "blue-green" else None
        swapped = clock()
        async with handover(old_ep) if handover is not None and old_ep is not None else contextlib.nullcontext():
            self._runners[name] = new  # from here on endpoint(name) is the new instance
        report.turns_s = round(clock() - swapped, 3)
        report.new_pid = new.status().pid
        self._ctx.log.info("service %s: new instance pid %s serving; draining pid %s", name, report.new_pid,
                           report.old_pid)
        drain_at = clock()
        if mode == "blue-green":
            await old.drain()
        report.drain_s = round(clock() - drain_at, 3)
        report.total_s = round(clock() - t0, 3)
        report.ok = True
        self._changed.set()
        self._changed = asyncio.Event()
        return report

    async def _until_running(self, runner: ServiceRunner, timeout: float) -> bool:  # noqa: ASYNC109
        """True once ``runner`` is RUNNING; False if it gives up (or backs off) or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while runner.state is not State.RUNNING:
            if runner.state in RESTING_STATES or runner.state is State.BACKOFF:
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return True

    async def shutdown(self) -> None:
        """Stop every service gracefully and in parallel, then release channels and log files."""
        results = await asyncio.gather(*(r.stop() for r in self._runners.values()), return_exceptions=True)
        for r, res in zip(self._runners.values(), results, strict=True):
            if isinstance(res, BaseException):
                self._ctx.log.error("service %s: stop failed: %r", r.name, res, exc_info=res)
        await self._prober.close()
        for r in self._runners.values():
            r.close()

    # ---- views ------------------------------------------------------------------------------
    def status(self, name: str) -> ServiceStatus:
        return self._runner(name).status()

    def statuses(self) -> list[ServiceStatus]:
        """Every service of the active profile, and any other that runs (one ``sm start`` started)."""
        enabled = {c.name for c in self._ctx.settings.enabled_services()}
        out = []
        for name, r in self._runners.items():
            st = r.status()
            if name in enabled or st.pid is not None:
                out.append(st)
        return out

    def startup_seconds(self, name: str) -> float | None:
        """How long the service's last start took, spawn to RUNNING; None before one completed."""
        return self._runner(name).startup_s

    def _endpoint_of(self, r: ServiceRunner) -> Endpoint | None:
        if not r.grpc_port or not r.http_port:
            return None
        return Endpoint(name=r.name, role=r.config.role, host=r.config.host, grpc_port=r.grpc_port,
                        http_port=r.http_port, token=self._ctx.global_.internal_token)

    def endpoint(self, name: str) -> Endpoint:
        """Where ``name`` listens now (ports may change across restarts when configured as 0)."""
        r = self._runners.get(name)
        if r is None:
            cfg = self._ctx.settings.services.get(name)
            why = "it is remote: the hub reaches it through its remote config" if cfg else "not configured"
            raise NotFound(f"the supervisor has no endpoint for service {name!r}: {why}", service=name)
        if not r.grpc_port or not r.http_port:
            raise ServiceUnavailable(
                f"service {name!r} has not been started yet, so it has no ports; `sm start {name}` first",
                service=name,
            )
        return Endpoint(
            name=name, role=r.config.role, host=r.config.host, grpc_port=r.grpc_port, http_port=r.http_port,
            token=self._ctx.global_.internal_token,
        )

    def log_path(self, name: str) -> Path:
        return self._runner(name).log_path()

    def tail_logs(self, name: str, n: int) -> list[str]:
        return self._runner(name).log.tail(n)

    def add_listener(self, cb: TransitionListener) -> None:
        """``cb(service, old, new, reason)`` after every transition; it must not block."""
        self._listeners.append(cb)

    # ---- internals --------------------------------------------------------------------------
    def _on_transition(self, name: str, old: State, new: State, reason: str) -> None:
        for cb in list(self._listeners):
            try:
                cb(name, old, new, reason)
            except Exception:  # a broken metrics hook must not break supervision
                self._ctx.log.exception("transition listener %r failed for %s %s->%s", cb, name, old, new)
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn_spec(self, cfg: ServiceConfig, grpc_port: int, http_port: int) -> tuple[SpawnSpec, str]:
        if self._command is not None:
            argv, venv = list(self._command(cfg)), ""
        else:
            python = self._venvs.python_for(cfg)
            argv, venv = [str(python), "-m", cfg.module], str(python.parent.parent)
        g = self._ctx.global_
        if g.settings.services.get(cfg.name) != cfg:  # the child reads its config from the spec's settings
            g = dataclasses.replace(g, settings=g.settings.model_copy(
                update={"services": {**g.settings.services, cfg.name: cfg}}))
        sctx = ServiceContext(
            process=ProcessContext(global_=g, name=cfg.name), config=cfg,
            grpc_port=grpc_port, http_port=http_port, parent_pid=os.getpid(),
        )
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env.update(cfg.env)
        env.update(sctx.launch_env())
        env["PYTHONUNBUFFERED"] = "1"
        if venv:
            env["VIRTUAL_ENV"] = venv
            env["PATH"] = f"{venv}/bin{os.pathsep}{env.get('PATH', '')}"
        return SpawnSpec(argv=argv, cwd=self._paths.root, env=env), venv

