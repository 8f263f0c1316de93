"""RemoteServices: RunPod endpoints and Ray Serve applications as first-class services of main.

Each enabled service whose ``remote.kind`` is ``runpod`` or ``ray`` gets an :class:`Endpoint` for the hub
(with the API key read once from ``remote.api_key_env``) and a state, kept current by a probe
every ``remote.health_period_s``:

- ``REMOTE_READY``: RunPod's ``/health`` shows workers idle or running (jobs start at once);
- ``REMOTE_COLD``: the endpoint answers but has no worker up (scaled to zero): the next job
  waits for a cold start, which ``queue_timeout_s`` bounds;
- ``REMOTE_DOWN``: the probe failed (no key, key refused, unknown endpoint id, unreachable);
  ``last_error`` says which and what to do;
- ``REMOTE_UNKNOWN``: not probed yet.

The runpod SDK's local test server has no ``/health``; with ``local_api`` the probe runs the
worker's ``Info`` operation through ``/runsync`` instead (a worker that answers is READY).

A Ray Serve application (``kind: ray``) is reached on Serve's shared proxies: gRPC with the
``application`` metadata, HTTP under ``/<application>``. Its probe reads the HTTP proxy's
``/-/routes``: READY when the application's route is there, COLD while it is being deployed
(the proxy answers, the route is not there yet), DOWN when the proxy does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from core.config import ServiceConfig
from core.context import ProcessContext
from core.errors import CallError, NotFound
from core.logs import register_secret
from core.managers.endpoint import Endpoint
from core.managers.hub.transports.base import UnaryCall
from core.managers.hub.transports.runpod import RunpodTransport, endpoint_label
from core.wire import operation

log = logging.getLogger("ultravox.remote")
PROBE_TIMEOUT_S = 10.0


class RemoteState(enum.Enum):
    UNKNOWN = "REMOTE_UNKNOWN"
    READY = "REMOTE_READY"
    COLD = "REMOTE_COLD"
    DOWN = "REMOTE_DOWN"

    @property
    def usable(self) -> bool:
        """Calls can be sent (a cold endpoint starts a worker for them)."""
        return self in (RemoteState.READY, RemoteState.COLD)


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """What main knows about one remote service; the same keys as a local ServiceStatus, plus its endpoint."""

    name: str
    role: str
    state: RemoteState
    kind: str
    endpoint: str
    workers: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    checked_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role, "state": self.state.value, "remote": True, "kind": self.kind,
            "endpoint": self.endpoint, "workers": self.workers, "jobs": self.jobs, "last_error": self.last_error,
            "checked_at": self.checked_at, "pid": None, "host": "", "grpc_port": 0, "http_port": 0,
            "restarts": 0, "uptime_s": None, "rss_bytes": None, "cpu_percent": None, "health_failures": 0,
            "venv": "",
        }


def _counts(obj: Any) -> dict[str, int]:
    if not isinstance(obj, Mapping):
        return {}
    return {str(k): int(v) for k, v in obj.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def verdict(health: Mapping[str, Any]) -> tuple[RemoteState, dict[str, int], dict[str, int]]:
    """READY or COLD from a RunPod ``/health`` body, with its worker and job counts."""
    workers, jobs = _counts(health.get("workers")), _counts(health.get("jobs"))
    up = workers.get("idle", 0) + workers.get("running", 0) + workers.get("ready", 0)
    return (RemoteState.READY if up > 0 else RemoteState.COLD), workers, jobs


class RemoteServices:
    """The remote (RunPod) services of this profile: endpoints, states and their probe loop."""

    def __init__(
        self, ctx: ProcessContext, transport: RunpodTransport | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if env is None else env
        self._ctx = ctx
        self._transport = transport or RunpodTransport()
        self._configs: dict[str, ServiceConfig] = {
            c.name: c for c in ctx.settings.enabled_services()
            if c.remote is not None and c.remote.kind in ("runpod", "ray")
        }
        self._http: httpx.AsyncClient | None = None
        self._endpoints: dict[str, Endpoint] = {}
        self._status: dict[str, RemoteStatus] = {}
        self._key_problem: dict[str, str] = {}
        for name, cfg in self._configs.items():
            assert cfg.remote is not None
            if cfg.remote.kind == "ray":
                ep = ray_endpoint(cfg, ctx.global_.internal_token)
                self._endpoints[name] = ep
                self._status[name] = RemoteStatus(name, cfg.role, RemoteState.UNKNOWN, "ray", ray_label(ep))
                continue
            key = env.get(cfg.remote.api_key_env, "") if cfg.remote.api_key_env else ""
            register_secret(key)
            if cfg.remote.api_key_env and not key and not cfg.remote.local_api:
                self._key_problem[name] = (
                    f"${cfg.remote.api_key_env} is not set: export your RunPod API key in it before ./start.sh"
                )
            ep = Endpoint(name=name, role=cfg.role, host="", grpc_port=0, http_port=0,
                          token=ctx.global_.internal_token, remote=cfg.remote, api_key=key)
            self._endpoints[name] = ep
            self._status[name] = RemoteStatus(name, cfg.role, RemoteState.UNKNOWN, "runpod", endpoint_label(ep))
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, name: object) -> bool:
        return name in self._endpoints

    def names(self) -> list[str]:
        return list(self._endpoints)

    def endpoint(self, name: str) -> Endpoint:
        try:
            return self._endpoints[name]
        except KeyError as e:
            raise NotFound(f"{name!r} is not a remote service", service=name) from e

    def status(self, name: str) -> RemoteStatus:
        self.endpoint(name)
        return self._status[name]

    def statuses(self) -> list[RemoteStatus]:
        return list(self._status.values())

    # ---- probing --------------------------------------------------------------------------------

    async def probe(self, name: str) -> RemoteStatus:
        """Probe one endpoint now and record its state."""
        ep, old = self.endpoint(name), self._status[name]
        assert ep.remote is not None
        workers: dict[str, int] = {}
        jobs: dict[str, int] = {}
        error = self._key_problem.get(name, "")
        if error:
            state = RemoteState.DOWN
        elif ep.remote.kind == "ray":
            state, error = await self._ray_state(ep)
        else:
            try:
                if ep.remote.local_api:
                    await self._info(ep)
                    state = RemoteState.READY
                else:
                    state, workers, jobs = verdict(await self._transport.health(ep, PROBE_TIMEOUT_S))
            except CallError as e:
                state, error = RemoteState.DOWN, f"{e.code}: {e.message}"
        new = RemoteStatus(name, old.role, state, old.kind, old.endpoint, workers, jobs, error, time.time())
        self._status[name] = new
        if new.state is not old.state:
            level = logging.WARNING if state is RemoteState.DOWN else logging.INFO
            log.log(level, "remote service %s: %s -> %s%s", name, old.state.value, state.value,
                    f" ({error})" if error else "", extra={"service": name, "endpoint": old.endpoint})
        return new

    async def probe_all(self) -> list[RemoteStatus]:
        return list(await asyncio.gather(*(self.probe(n) for n in self._endpoints)))

    async def _ray_state(self, ep: Endpoint) -> tuple[RemoteState, str]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S)
        url = f"http://{ep.host}:{ep.http_port}/-/routes"
        try:
            r = await self._http.get(url)
            routes = r.json() if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as e:
            return RemoteState.DOWN, (f"Ray Serve's HTTP proxy at {url} does not answer ({type(e).__name__}); "
                                      "is the cluster service up (./sm list)?")
        if ep.http_prefix in routes:
            return RemoteState.READY, ""
        return RemoteState.COLD, f"application {ep.http_prefix[1:]!r} is not deployed on Ray Serve yet"

    async def _info(self, ep: Endpoint) -> None:
        op = operation(ep.role, "Info")
        deadline = asyncio.get_running_loop().time() + PROBE_TIMEOUT_S
        await self._transport.unary(UnaryCall(ep, op, op.request(), deadline, (("x-request-id", "probe"),), 5.0))

    def start(self) -> None:
        """Probe every endpoint now and then every ``health_period_s`` until :meth:`close`."""
        if self._endpoints and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="remote-probes")

    async def _loop(self) -> None:
        next_at = dict.fromkeys(self._endpoints, 0.0)
        while True:
            now = time.monotonic()
            due = [n for n, t in next_at.items() if t <= now]
            await asyncio.gather(*(self.probe(n) for n in due))
            for n in due:
                remote = self._endpoints[n].remote
                assert remote is not None
                next_at[n] = time.monotonic() + remote.health_period_s
            await asyncio.sleep(max(0.05, min(next_at.values()) - time.monotonic()))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._transport.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def ray_endpoint(cfg: ServiceConfig, token: str) -> Endpoint:
    """The hub's endpoint of a Ray Serve application: the proxies' host and ports, the application
    as gRPC metadata and as the HTTP route prefix."""
    assert cfg.remote is not None
    app = cfg.remote.application or cfg.name
    host = urlsplit(cfg.remote.base_url).hostname or "127.0.0.1"
    return Endpoint(
        name=cfg.name, role=cfg.role, host=host, grpc_port=cfg.remote.grpc_port, http_port=cfg.remote.http_port,
        token=token, remote=cfg.remote, metadata=(("application", app),), http_prefix=f"/{app}",
    )


def ray_label(ep: Endpoint) -> str:
    return f"ray serve {ep.host}:{ep.grpc_port} (grpc), {ep.http_base} (http)"

