"""One service's state machine: spawn, readiness, liveness, crash handling, backoff and stop.

A ``ServiceRunner`` owns one lifecycle task per start. The task drives
STARTING -> RUNNING -> (failure) -> BACKOFF -> STARTING ... until the service is stopped,
exits for good, or is declared FATAL. Commands (start/stop) serialise on a lock; stop
cancels the lifecycle task first, so a manual stop never triggers an automatic restart.

Every change of state goes through ``_to``, which checks the transition table, logs the
edge with its reason (main's log and the service's own log) and tells the listeners.
All OS work goes through ``ProcessAPI`` and all probing through ``HealthProber``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.config import ServiceConfig
from core.errors import PortInUse, SupervisorError
from core.managers.supervisor.backoff import Backoff, FlappingDetector
from core.managers.supervisor.health import HealthProber, HealthResult
from core.managers.supervisor.logs import ServiceLog
from core.managers.supervisor.process import ProcessAPI, ProcessHandle, SpawnSpec, describe_exit
from core.managers.supervisor.states import RESTING_STATES, State, check_transition
from core.managers.supervisor.status import ServiceStatus

T = TypeVar("T")
TransitionListener = Callable[[str, State, State, str], None]
#: How long to wait for the kernel to reap a process after SIGKILL before reporting it stuck.
_KILL_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class RunnerDeps:
    """What every runner shares: the OS seam, the prober, how to launch, time and randomness."""

    api: ProcessAPI
    prober: HealthProber
    spec_for: Callable[[ServiceConfig, int, int], tuple[SpawnSpec, str]]  # -> (spec, venv); SupervisorError
    log: logging.Logger
    clock: Callable[[], float]
    rng: random.Random
    ready_poll_s: float
    on_transition: TransitionListener


@dataclass(frozen=True, slots=True)
class _Exit:
    returncode: int


@dataclass(frozen=True, slots=True)
class Exited:
    returncode: int
    during_startup: bool


@dataclass(frozen=True, slots=True)
class StartupTimedOut:
    last: HealthResult | None


@dataclass(frozen=True, slots=True)
class Unhealthy:
    last: HealthResult
    failures: int


Outcome = Exited | StartupTimedOut | Unhealthy


class ServiceRunner:
    def __init__(self, config: ServiceConfig, deps: RunnerDeps, log: ServiceLog) -> None:
        self.config = config
        self.state = State.STOPPED
        self.grpc_port, self.http_port = config.grpc_port, config.http_port
        self.restarts = 0
        self.health_failures = 0
        self.last_error = ""
        self.venv = ""
        self.log = log
        self._d = deps
        self._backoff = Backoff(config.restart, deps.rng)
        rp = config.restart
        self._flapping = FlappingDetector(rp.flapping_window_s, rp.flapping_max_restarts)
        self._handle: ProcessHandle | None = None
        self._exit_task: asyncio.Future[int] | None = None
        self._spawned_at = 0.0
        self.startup_s: float | None = None
        """Spawn to RUNNING of the last start (model load included); a profile switch quotes it."""
        self._running_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    # ---- commands ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn the service (readiness is awaited in the background). PortInUse etc. after FATAL."""
        async with self._lock:
            if self.state not in RESTING_STATES:
                return  # already starting or running, or restarting on its own
            await self._cancel_task()
            reason = "start requested"
            if self.state is State.FATAL:
                self._reset_counters()
                reason = "start requested; restart counters reset"
            self.last_error = ""
            self._to(State.STARTING, reason)
            err = await self._spawn()
            if err is not None:
                raise err
            self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")
            self._task.add_done_callback(self._on_task_done)

    async def stop(self) -> None:
        """SIGTERM the process group, wait stop_grace_s, SIGKILL it; no automatic restart follows."""
        async with self._lock:
            await self._stop_locked()

    async def drain(self) -> None:
        """Hand over to a new instance: DRAINING (SIGTERM; the service refuses new calls and finishes
        those in flight for up to stop_grace_s, then SIGKILL), then STOPPED. Not RUNNING: a stop."""
        async with self._lock:
            await self._cancel_task()
            if self.state is not State.RUNNING:
                await self._stop_locked()
                return
            self._to(State.DRAINING, "replaced by a new instance: finishing the calls in flight")
            rc = await self._terminate()
            self._to(State.STOPPED, f"drained ({describe_exit(rc)})" if rc is not None else "drained")

    async def _stop_locked(self) -> None:
        await self._cancel_task()
        if self.state is State.STOPPED:
            return
        if self.state in (State.BACKOFF, State.EXITED, State.FATAL):
            await self._process_gone()
            self._to(State.STOPPED, "stop requested")
            return
        if self.state in (State.STARTING, State.RUNNING):
            self._to(State.STOPPING, "stop requested")
        rc = await self._terminate()
        self._to(State.STOPPED, f"stopped ({describe_exit(rc)})" if rc is not None else "stopped")

    def status(self) -> ServiceStatus:
        h = self._handle
        alive = h is not None and h.returncode is None
        stats = h.stats() if alive and h is not None else None
        return ServiceStatus(
            name=self.name, role=self.config.role, state=self.state,
            pid=h.pid if alive and h is not None else None,
            host=self.config.host, grpc_port=self.grpc_port, http_port=self.http_port,
            restarts=self.restarts,
            uptime_s=round(self._d.clock() - self._spawned_at, 3) if alive else None,
            rss_bytes=stats.rss_bytes if stats else None,
            cpu_percent=stats.cpu_percent if stats else None,
            health_failures=self.health_failures, last_error=self.last_error, venv=self.venv,
        )

    # ---- transitions ------------------------------------------------------------------------
    def _to(self, new: State, reason: str) -> None:
        old = self.state
        check_transition(self.name, old, new)
        self.state = new
        if new is State.RUNNING:
            self.startup_s = round(self._d.clock() - self._spawned_at, 3)
        level = logging.WARNING if new in (State.FATAL, State.EXITED, State.BACKOFF) else logging.INFO
        self._d.log.log(
            level, "service %s: %s -> %s: %s", self.name, old.value, new.value, reason,
            extra={"svc": self.name, "from_state": old.value, "to_state": new.value, "reason": reason},
        )
        self.log.note(f"{old.value} -> {new.value}: {reason}")
        self._d.on_transition(self.name, old, new, reason)

    def _reset_counters(self) -> None:
        self.restarts = 0
        self.health_failures = 0
        self._backoff.reset()
        self._flapping.reset()

    # ---- spawning ---------------------------------------------------------------------------
    def _pick_ports(self) -> tuple[int, int]:
        cfg, api = self.config, self._d.api
        grpc_port = cfg.grpc_port or api.free_port(cfg.host)
        http_port = cfg.http_port or api.free_port(cfg.host)
        while http_port == grpc_port:
            http_port = api.free_port(cfg.host)
        for purpose, port, fixed in (("grpc", grpc_port, cfg.grpc_port), ("http", http_port, cfg.http_port)):
            if fixed and not api.port_available(cfg.host, port):
                raise PortInUse(cfg.name, port, purpose)
        return grpc_port, http_port

    async def _spawn(self) -> SupervisorError | None:
        """In STARTING: spawn the process. On failure go FATAL and return the error."""
        try:
            self.grpc_port, self.http_port = self._pick_ports()
            spec, self.venv = self._d.spec_for(self.config, self.grpc_port, self.http_port)
        except SupervisorError as e:
            return self._spawn_failed(e)
        spawn = asyncio.ensure_future(self._d.api.spawn(spec, self.log.write))
        try:
            handle = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            # stop() cancelled us mid-spawn: adopt the process anyway, so that stop() kills it.
            with contextlib.suppress(Exception):
                self._adopt(await spawn)
            raise
        except OSError as e:
            err = SupervisorError(
                f"service {self.name!r} could not be spawned: `{' '.join(spec.argv)}` failed: {e}; "
                f"check that its venv is complete (delete {self.venv or 'the venv'} to rebuild it) "
                f"and that config.module {self.config.module!r} is right"
            )
            err.__cause__ = e
            return self._spawn_failed(err)
        self._adopt(handle)
        self.log.note(
            f"spawned pid {handle.pid}: {' '.join(spec.argv)} (grpc {self.config.host}:{self.grpc_port}, "
            f"http {self.config.host}:{self.http_port})"
        )
        return None

    def _spawn_failed(self, err: SupervisorError) -> SupervisorError:
        self.last_error = str(err)
        self._to(State.FATAL, f"cannot spawn: {err}")
        return err

    def _adopt(self, handle: ProcessHandle) -> None:
        self._handle = handle
        self._exit_task = asyncio.ensure_future(handle.wait())
        self._spawned_at = self._d.clock()
        self._running_since = None

    # ---- the lifecycle task -----------------------------------------------------------------
    async def _supervise(self) -> None:
        while True:
            outcome = await self._until_ready()
            if outcome is None:
                self._to(State.RUNNING, "gRPC health is SERVING")
                outcome = await self._watch()
            if not await self._after_failure(outcome):
                return
            delay = self._backoff.next_delay()
            self.log.note(f"restarting in {delay:.2f}s (backoff attempt {self._backoff.attempt})")
            await asyncio.sleep(delay)
            self.restarts += 1
            self._to(State.STARTING, f"restart #{self.restarts} after {delay:.2f}s backoff")
            if await self._spawn() is not None:
                return

    async def _race(self, aw: Awaitable[T]) -> T | _Exit:
        """Await ``aw`` unless the process exits first; an exit wins a tie."""
        exit_task = self._exit_task
        assert exit_task is not None
        task = asyncio.ensure_future(aw)
        both: set[asyncio.Future[Any]] = {task, exit_task}
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if exit_task.done():
            return _Exit(exit_task.result())
        return task.result()

    async def _until_ready(self) -> Outcome | None:
        """Probe every ready_poll_s until SERVING (None), an exit, or startup_timeout_s."""
        hp, clock = self.config.health, self._d.clock
        deadline = clock() + hp.startup_timeout_s
        last: HealthResult | None = None
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                return StartupTimedOut(last)
            probe = self._d.prober.probe(self.config.host, self.grpc_port, min(hp.timeout_s, remaining))
            res = await self._race(probe)
            if isinstance(res, _Exit):
                return Exited(res.returncode, during_startup=True)
            if res.serving:
                return None
            last = res
            slept = await self._race(asyncio.sleep(max(0.0, min(self._d.ready_poll_s, deadline - clock()))))
            if isinstance(slept, _Exit):
                return Exited(slept.returncode, during_startup=True)

    async def _watch(self) -> Outcome:
        """While RUNNING: probe every period_s; failure_threshold failures in a row is Unhealthy."""
        hp = self.config.health
        self._running_since = self._d.clock()
        in_a_row = 0
        while True:
            slept = await self._race(asyncio.sleep(hp.period_s))
            if isinstance(slept, _Exit):
                return Exited(slept.returncode, during_startup=False)
            res = await self._race(self._d.prober.probe(self.config.host, self.grpc_port, hp.timeout_s))
            if isinstance(res, _Exit):
                return Exited(res.returncode, during_startup=False)
            if res.serving:
                if in_a_row:
                    self.log.note(f"liveness recovered after {in_a_row} failed probe(s)")
                in_a_row = 0
                continue
            in_a_row += 1
            self.health_failures += 1
            self._d.log.warning(
                "service %s: liveness probe failed (%d/%d): %s",
                self.name, in_a_row, hp.failure_threshold, res,
            )
            self.log.note(f"liveness probe failed ({in_a_row}/{hp.failure_threshold}): {res}")
            if in_a_row >= hp.failure_threshold:
                return Unhealthy(res, in_a_row)

    async def _after_failure(self, outcome: Outcome) -> bool:
        """Move to BACKOFF (return True: restart) or to a resting state (return False)."""
        policy = self.config.restart.policy
        if self._running_since is not None:
            healthy_s = self._d.clock() - self._running_since
            if self._backoff.note_uptime(healthy_s):
                self.log.note(f"backoff reset: it had been healthy for {healthy_s:.0f}s")
        if isinstance(outcome, Exited):
            await self._process_gone()
            desc = describe_exit(outcome.returncode)
            if outcome.during_startup:
                self.last_error = (
                    f"exited during startup ({desc}) before gRPC health said SERVING; see {self.log.path}"
                )
                if policy == "never":
                    self._to(State.FATAL, f"{desc} during startup; restart policy is never")
                    return False
                self._to(State.BACKOFF, f"{desc} during startup")
            else:
                failed = outcome.returncode != 0
                if failed:
                    self.last_error = f"exited unexpectedly ({desc}); see {self.log.path}"
                self._to(State.EXITED, desc)
                if not (policy == "always" or (policy == "on-failure" and failed)):
                    return False
                self._to(State.BACKOFF, f"restart policy {policy}")
        else:
            if isinstance(outcome, StartupTimedOut):
                self.last_error = (
                    f"not SERVING within health.startup_timeout_s={self.config.health.startup_timeout_s:g}s "
                    f"(last probe: {outcome.last or 'none'}); see {self.log.path}"
                )
                reason = "startup timed out"
            else:
                self.last_error = (
                    f"failed {outcome.failures} liveness probes in a row (last: {outcome.last}); "
                    "it was hung or overloaded and was restarted"
                )
                reason = f"liveness failed {outcome.failures}x ({outcome.last.status.value})"
            self._to(State.STOPPING, reason)
            rc = await self._terminate()
            how = describe_exit(rc) if rc is not None else "gone"
            if policy == "never":
                self._to(State.FATAL, f"killed ({how}); restart policy is never")
                return False
            self._to(State.BACKOFF, f"killed ({how}); restart scheduled")
        rp = self.config.restart
        if self._flapping.record(self._d.clock()):
            self.last_error = (
                f"flapping: {self._flapping.count} failures within {rp.flapping_window_s:g}s "
                f"(more than restart.flapping_max_restarts={rp.flapping_max_restarts}), so it is not "
                f"restarted again. Last failure: {self.last_error}. Fix the cause, then start it again"
            )
            self._to(State.FATAL, f"flapping: {self._flapping.count} failures in {rp.flapping_window_s:g}s")
            return False
        return True

    # ---- stopping -----------------------------------------------------------------------
    async def _terminate(self) -> int | None:
        """SIGTERM (+SIGCONT) the group, wait stop_grace_s, SIGKILL it; return the returncode."""
        h, ex = self._handle, self._exit_task
        if h is None or ex is None:
            return None
        grace = self.config.stop_grace_s
        if not ex.done():
            h.signal_group(signal.SIGTERM)
            h.signal_group(signal.SIGCONT)  # a SIGSTOPped process can only act on SIGTERM once continued
            try:
                await asyncio.wait_for(asyncio.shield(ex), grace)
            except TimeoutError:
                self.log.note(f"pid {h.pid} alive {grace:g}s after SIGTERM; sending SIGKILL to its group")
                h.signal_group(signal.SIGKILL)
                try:
                    await asyncio.wait_for(asyncio.shield(ex), _KILL_WAIT_S)
                except TimeoutError:
                    self._d.log.error(
                        "service %s: pid %d survived SIGKILL for %.0fs (uninterruptible I/O?); giving up",
                        self.name, h.pid, _KILL_WAIT_S,
                    )
        rc = ex.result() if ex.done() else None
        await self._process_gone()
        return rc

    async def _process_gone(self) -> None:
        """After the leader exited: kill what is left of its group, drop the health channel."""
        h, ex = self._handle, self._exit_task
        if h is None:
            return
        h.signal_group(signal.SIGKILL)  # workers it forked would otherwise outlive it
        if ex is not None and ex.done():
            self.log.note(f"pid {h.pid} {describe_exit(ex.result())}")
        self._handle, self._exit_task = None, None
        await self._d.prober.forget(self.config.host, self.grpc_port)

    async def _cancel_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.last_error = f"supervisor error: {exc!r}"
        self._d.log.error("service %s: lifecycle task failed", self.name, exc_info=exc)
        if self._handle is not None:  # never leave an unwatched process behind
            self._handle.signal_group(signal.SIGKILL)

    def close(self) -> None:
        self.log.close()

    def log_path(self) -> Path:
        return self.log.path
