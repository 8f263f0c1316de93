"""Replica bookkeeping: Serve's snapshots in, the Status message, restarts and metrics out.

Pure logic over ``serve_app.Snapshot`` (no Ray here, so it is unit-tested with made-up
snapshots). A replica actor that was ALIVE and is now DEAD (or gone from the actor table)
without Serve having stopped it on purpose (death cause RAY_KILL or an intended exit: a scale
down, a redeploy, a shutdown) is a restart: Ray replaces it, and the watcher logs a WARNING and
counts ``uv_cluster_replica_restarts_total{deployment}``. ``uv_cluster_replicas{deployment,state}``
mirrors Serve's replica states.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.cluster.options import ClusterOptions
from services.cluster.serve_app import ReplicaActor, Snapshot
from uvpb import cluster_pb2

log = logging.getLogger("ultravox.cluster.watch")
STATES = ("RUNNING", "STARTING", "UPDATING", "RECOVERING", "STOPPING", "UNHEALTHY", "PENDING_MIGRATION")
INTENDED = ("RAY_KILL", "INTENDED")


def unexpected_death(actor: ReplicaActor | None) -> bool:
    """Whether a replica that went away died on its own (crash, OOM, killed process, lost node)."""
    if actor is None:
        return True  # gone from the table without a death record: count it
    return not any(mark in actor.death for mark in INTENDED)


class ReplicaWatch:
    """Folds successive snapshots into restart counts, metrics and the Status reply."""

    def __init__(self, options: ClusterOptions, registry: CollectorRegistry) -> None:
        self.options = options
        self.restarts: dict[str, int] = {}
        self._alive: dict[str, str] = {}  # actor id -> application, as last seen ALIVE
        self._last: Snapshot | None = None
        self.replicas = Gauge("uv_cluster_replicas", "Replicas of each Ray Serve deployment by Serve state",
                              ["deployment", "state"], registry=registry)
        self.restart_total = Counter("uv_cluster_replica_restarts_total",
                                     "Replicas that died and were replaced by Ray", ["deployment"],
                                     registry=registry)
        self.nodes = Gauge("uv_cluster_nodes", "Alive Ray nodes", registry=registry)
        for role in options.deployments:
            self.restart_total.labels(options.application(role))

    def observe(self, snap: Snapshot) -> list[str]:
        """Take a snapshot; returns a line per replica that died unexpectedly since the last one."""
        by_id = {a.actor_id: a for a in snap.actors}
        events: list[str] = []
        for actor_id, app in list(self._alive.items()):
            now = by_id.get(actor_id)
            if now is not None and now.state != "DEAD":
                continue
            del self._alive[actor_id]
            if unexpected_death(now):
                self.restarts[app] = self.restarts.get(app, 0) + 1
                self.restart_total.labels(app).inc()
                why = now.death.strip().replace("\n", " ")[:300] if now else "gone from Ray's actor table"
                events.append(f"replica {actor_id[:12]} of {app!r} (pid {now.pid if now else '?'}) died: {why}; "
                              "Ray Serve replaces it")
        for a in snap.actors:
            if a.state == "ALIVE":
                self._alive[a.actor_id] = a.application
        for seen in snap.apps.values():
            for state in STATES:
                self.replicas.labels(seen.application, state).set(seen.replica_states.get(state, 0))
        self.nodes.set(snap.nodes)
        for line in events:
            log.warning(line)
        self._last = snap
        return events

    def status(self, snap: Snapshot | None = None, address: str = "") -> cluster_pb2.ClusterStatus:
        """The Status reply for ``snap`` (default: the last one observed)."""
        snap = snap or self._last
        o = self.options
        out = cluster_pb2.ClusterStatus(mode=o.mode, address=address, serve_grpc_port=o.serve_grpc_port,
                                        serve_http_port=o.serve_http_port, nodes=snap.nodes if snap else 0)
        for role, dep in o.deployments.items():
            app = o.application(role)
            seen = snap.apps.get(app) if snap else None
            states: Mapping[str, int] = seen.replica_states if seen else {}
            a = dep.autoscaling_config
            out.deployments.append(cluster_pb2.DeploymentStatus(
                role=role, application=app, deployment=seen.deployment if seen else role,
                app_status=seen.app_status if seen else "NOT_STARTED", status=seen.status if seen else "",
                message=seen.message if seen else "", running=states.get("RUNNING", 0),
                starting=states.get("STARTING", 0), unhealthy=states.get("UNHEALTHY", 0),
                replicas=[cluster_pb2.ReplicaCount(state=s, count=n) for s, n in sorted(states.items())],
                autoscaling=a is not None, target_replicas=dep.num_replicas or 0 if a is None else 0,
                min_replicas=a.min_replicas if a else dep.num_replicas or 1,
                max_replicas=a.max_replicas if a else dep.num_replicas or 1,
                restarts=self.restarts.get(app, 0),
                replica_list=[cluster_pb2.Replica(actor_id=x.actor_id, state=x.state, pid=x.pid, node_id=x.node_id)
                              for x in (snap.actors if snap else ()) if x.application == app and x.state != "DEAD"],
            ))
        return out
