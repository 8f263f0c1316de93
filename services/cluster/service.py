"""``ClusterService``: the cluster agent as a supervised service of role ``cluster``.

Its "model load" brings the Ray side up: in ``local`` mode it starts a Ray head it owns
(``head.py``), in ``address`` mode it joins ``options.address``; then it starts Serve's proxies
and deploys one application per entry of ``options.deployments`` (the role's services.yaml
entry, with the deployment's ``options`` merged in), and waits until they run. A watcher thread
polls Serve every ``watch_period_s``: replica gauges, restarts (WARNING log plus
``uv_cluster_replica_restarts_total``). ``Status`` and ``Scale`` (proto ``uvpb/cluster.proto``)
serve ``sm list`` and ``sm scale``. On stop, a local head is stopped with everything it
spawned; in address mode the applications keep running on the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from core.context import LAUNCH_SPEC_ENV, GlobalContext, ProcessContext, ServiceContext
from core.errors import ConfigError
from services.cluster import serve_app
from services.cluster.head import RayHead
from services.cluster.options import ClusterOptions, DeploymentOptions, Role, cluster_options
from services.cluster.watch import ReplicaWatch
from services.runtime.api import CallInfo, Handler, ModelDescription
from services.runtime.options import WHERE
from uvpb import cluster_pb2

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from services.runtime.http_app import HttpKit

log = logging.getLogger("ultravox.cluster")


def launch_spec(ctx: ServiceContext, role: Role, dep: DeploymentOptions) -> str:
    """The launch spec of ``role``'s service as the deployment runs it (options merged, local)."""
    settings = ctx.process.settings
    name = dep.service or role
    key = f"services.{ctx.config.name}.options.deployments.{role}.service"
    if name not in settings.services:
        raise ConfigError(WHERE, key, f"no service {name!r}; known: {', '.join(sorted(settings.services))}")
    base = settings.services[name]
    if base.role != role:
        raise ConfigError(WHERE, key, f"service {name!r} has role {base.role!r}, not {role!r}")
    cfg = base.model_copy(update={"options": {**base.options, **dep.options}, "remote": None, "enabled": True})
    g = ctx.process.global_
    settings = settings.model_copy(update={"services": {**settings.services, name: cfg}})
    spec_ctx = ServiceContext(
        ProcessContext(global_=GlobalContext(settings, g.paths, g.run_id, g.internal_token), name=name),
        cfg, 0, 0,
    )
    return str(spec_ctx.launch_env()[LAUNCH_SPEC_ENV])


class ClusterService:
    """Ray head (or join), Serve deployments, watcher; Status and Scale."""

    role = "cluster"

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx, self.name = ctx, ctx.config.name
        self.options: ClusterOptions = cluster_options(ctx.config)
        self.watch = ReplicaWatch(self.options, ctx.process.registry)
        self.specs: dict[Role, str] = {r: launch_spec(ctx, r, d) for r, d in self.options.deployments.items()}
        self.head: RayHead | None = None
        self.address = ""
        self.log_level = logging.getLevelName(logging.getLogger().level)
        self._ray = threading.Lock()  # one Ray call at a time from the agent (load, watcher, Scale)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def handlers(self) -> Mapping[str, Handler]:
        return {"Status": self._status, "Scale": self._scale}

    def load(self) -> None:
        o = self.options
        if o.mode == "local":
            self.head = RayHead(self.name, o, self.ctx.paths.logs / f"{self.name}.ray-head.log")
            self.address = self.head.start()
        else:
            self.address = o.address
        with self._ray:
            serve_app.connect(self.address)
            serve_app.start(o.proxy_host, o.serve_http_port, o.serve_grpc_port, o.proxy_location)
            targets = {o.application(r): (r, d, self.specs[r]) for r, d in o.deployments.items()}
            log.info("deploying %s on %s", ", ".join(targets), self.address)
            serve_app.deploy(targets, self.log_level)
        serve_app.wait_running(list(targets), o.deploy_timeout_s)
        self._refresh()
        self._watcher = threading.Thread(target=self._watch, name=f"{self.name}-watch", daemon=True)
        self._watcher.start()

    def _refresh(self) -> serve_app.Snapshot:
        with self._ray:
            snap = serve_app.snapshot()
        self.watch.observe(snap)
        return snap

    def _watch(self) -> None:
        while not self._stop.wait(self.options.watch_period_s):
            try:
                self._refresh()
            except Exception as e:  # a Ray hiccup must not end the watcher
                log.warning("cannot read Ray Serve's status: %s: %s", type(e).__name__, e)

    async def _status(self, request: cluster_pb2.ClusterStatusRequest, call: CallInfo) -> cluster_pb2.ClusterStatus:
        snap = await asyncio.to_thread(self._refresh)
        return self.watch.status(snap, self.address)

    async def _scale(self, request: cluster_pb2.ScaleRequest, call: CallInfo) -> cluster_pb2.ClusterStatus:
        o = self.options
        role = o.role_of(request.deployment)  # InvalidArgument names the deployed ones
        dep = o.deployments[role].scaled(request.replicas, request.max_replicas)  # InvalidArgument on bounds
        app = o.application(role)

        def work() -> None:
            with self._ray:
                serve_app.scale(app, role, dep, self.specs[role], self.log_level)

        await asyncio.to_thread(work)
        self.options = o.model_copy(update={"deployments": {**o.deployments, role: dep}})
        self.watch.options = self.options
        log.info("scaled %s to %s", app, dep.serve_options())
        return await self._status(cluster_pb2.ClusterStatusRequest(), call)

    def describe(self) -> ModelDescription:
        o = self.options
        apps = ", ".join(f"{o.application(r)} ({r})" for r in o.deployments)
        return ModelDescription(engine="ray-serve", model=apps, device="cluster", details={
            "mode": o.mode, "address": self.address or o.address, "serve_grpc_port": str(o.serve_grpc_port),
            "serve_http_port": str(o.serve_http_port),
        })

    def http_routes(self, kit: HttpKit) -> Sequence[BaseRoute]:
        return ()

    def close(self) -> None:
        log.info("stopping the cluster agent", extra={"mode": self.options.mode})
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=self.options.watch_period_s + 5)
        if self.head is not None:
            with self._ray:
                serve_app.disconnect()
            self.head.stop(grace_s=max(5.0, self.ctx.config.stop_grace_s - 5))
            self.head = None
        else:
            with self._ray:
                serve_app.disconnect()  # address mode: the applications keep serving


