"""Every Ray and Ray Serve call of the agent, in one place (mock this module to test the rest).

``connect`` joins the cluster, ``start`` starts Serve's proxies (HTTP on ``proxy_host``, gRPC
with our servicers), ``deploy`` runs one application per role (``ModelDeployment`` with the
role's options, route prefix ``/<application>``), ``scale`` updates one in place (only the
replica count or the autoscaling bounds change: Serve keeps the running replicas), and
``snapshot`` reads Serve's status plus the replica actors from the GCS (works without Ray's
dashboard, which the local head does not start).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.cluster.options import DeploymentOptions

log = logging.getLogger("ultravox.cluster.serve")

SERVICERS = [
    "uvpb.stt_pb2_grpc.add_SpeechToTextServicer_to_server",
    "uvpb.tts_pb2_grpc.add_TextToSpeechServicer_to_server",
    "uvpb.llm_pb2_grpc.add_LanguageModelServicer_to_server",
    "uvpb.common_pb2_grpc.add_ControlServicer_to_server",
]
"""Our protos on Serve's gRPC proxy (imported by the proxy actor: the venv must have ``uvpb``)."""
NAMESPACE = "ultravox"
REPLICA_PREFIX = "SERVE_REPLICA::"


@dataclass(frozen=True, slots=True)
class ReplicaActor:
    """One replica's Ray actor, from the GCS actor table."""

    actor_id: str
    application: str
    deployment: str
    state: str
    """Ray's actor state: ALIVE, PENDING_CREATION, RESTARTING, DEAD."""
    pid: int
    node_id: str
    death: str = ""
    """Ray's death cause of a DEAD actor (RAY_KILL for a replica Serve stopped, WORKER_DIED...)."""


@dataclass(frozen=True, slots=True)
class AppSnapshot:
    """What Serve says about one application and its (single) deployment."""

    application: str
    app_status: str
    deployment: str = ""
    status: str = ""
    message: str = ""
    replica_states: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    apps: Mapping[str, AppSnapshot]
    actors: tuple[ReplicaActor, ...]
    nodes: int
    taken_at: float


def connect(address: str) -> None:
    """Join the Ray cluster at ``address`` as a driver (idempotent).

    Ray's absl failure-signal handler is turned off first: it caught the supervisor's SIGTERM,
    printed a stack and re-raised it, killing the agent before it could stop its head."""
    os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    import ray  # noqa: PLC0415  (only in the cluster venv)

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)


def start(proxy_host: str, http_port: int, grpc_port: int, proxy_location: str = "EveryNode") -> None:
    """Start Serve (or reuse the running one) with our gRPC servicers on ``grpc_port``."""
    from ray import serve  # noqa: PLC0415
    from ray.serve.config import gRPCOptions  # noqa: PLC0415

    serve.start(
        proxy_location=proxy_location,
        http_options={"host": proxy_host, "port": http_port},
        grpc_options=gRPCOptions(port=grpc_port, grpc_servicer_functions=SERVICERS),
    )


def deploy(targets: Mapping[str, tuple[str, DeploymentOptions, str]], log_level: str = "INFO") -> None:
    """Deploy ``{application: (role, options, launch_spec)}`` without waiting (see ``wait_running``)."""
    from ray import serve  # noqa: PLC0415

    runs = [serve.RunTarget(_bound(app, role, opts, spec, log_level), name=app, route_prefix=f"/{app}")
            for app, (role, opts, spec) in targets.items()]
    serve.run_many(runs, wait_for_applications_running=False)


def _bound(app: str, role: str, opts: DeploymentOptions, spec: str, log_level: str) -> Any:
    from ray import serve  # noqa: PLC0415

    from services.cluster.deployment import ModelDeployment  # noqa: PLC0415

    cls = serve.deployment(serve.ingress()(ModelDeployment), name=role)
    return cls.options(**opts.serve_options(), health_check_period_s=10, health_check_timeout_s=30,
                       graceful_shutdown_timeout_s=20).bind(role, spec, log_level)


def wait_running(apps: list[str], timeout_s: float, poll_s: float = 1.0) -> None:
    """Wait until every application is RUNNING; RuntimeError with Ray's message if one fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = snapshot(with_actors=False)
        failed = [a for a in apps if snap.apps.get(a) and snap.apps[a].app_status == "DEPLOY_FAILED"]
        if failed:
            raise RuntimeError("; ".join(f"application {a!r} failed to deploy: {snap.apps[a].message}"
                                         for a in failed))
        pending = [a for a in apps if snap.apps.get(a) is None or snap.apps[a].app_status != "RUNNING"]
        if not pending:
            return
        if time.monotonic() > deadline:
            states = ", ".join(f"{a}: {snap.apps[a].app_status if a in snap.apps else 'absent'}" for a in pending)
            raise RuntimeError(f"deployments not RUNNING within {timeout_s:.0f} s ({states})")
        time.sleep(poll_s)


def scale(app: str, role: str, opts: DeploymentOptions, spec: str, log_level: str = "INFO") -> None:
    """Redeploy ``app`` with new replica options; Serve updates the count in place."""
    deploy({app: (role, opts, spec)}, log_level)


def snapshot(with_actors: bool = True) -> Snapshot:
    """Serve's applications and deployments, plus the replica actors (pid, node, actor state)."""
    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    apps: dict[str, AppSnapshot] = {}
    for name, app in serve.status().applications.items():
        deps = list(app.deployments.items())
        dep_name, dep = deps[0] if deps else ("", None)
        apps[name] = AppSnapshot(
            application=name, app_status=str(getattr(app.status, "value", app.status)), deployment=dep_name,
            status=str(getattr(dep.status, "value", dep.status)) if dep else "",
            message=(app.message or (dep.message if dep else "")) or "",
            replica_states={str(getattr(k, "value", k)): int(v)
                            for k, v in (dep.replica_states if dep else {}).items()},
        )
    actors: list[ReplicaActor] = []
    nodes = 0
    if with_actors:
        for actor_id, info in ray._private.state.actors().items():
            name = info.get("Name") or ""
            if not name.startswith(REPLICA_PREFIX):
                continue
            app, _, rest = name[len(REPLICA_PREFIX):].partition("#")
            deployment = rest.partition("#")[0]
            actors.append(ReplicaActor(
                actor_id=actor_id, application=app, deployment=deployment, state=str(info.get("State", "")),
                pid=int(info.get("Pid") or 0), node_id=str((info.get("Address") or {}).get("NodeID", "")),
                death=str(info.get("DeathCause") or ""),
            ))
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Snapshot(apps=apps, actors=tuple(actors), nodes=nodes, taken_at=time.time())


def shutdown_apps(apps: list[str]) -> None:
    """Delete our applications (address mode: the cluster stays, our replicas go)."""
    from ray import serve  # noqa: PLC0415

    for app in apps:
        serve.delete(app, _blocking=True)


def disconnect() -> None:
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        ray.shutdown()
