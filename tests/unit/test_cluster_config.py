"""The cluster agent's options, scaling bounds and status shaping (no Ray needed)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from core.config import ServiceConfig
from core.errors import ConfigError, InvalidArgument
from core.wire import operations
from services.cluster.options import ClusterOptions, cluster_options
from services.cluster.serve_app import AppSnapshot, ReplicaActor, Snapshot
from services.cluster.watch import ReplicaWatch
from uvpb import cluster_pb2

ONE = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}, "max_ongoing_requests": 4}
AUTO = {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2}}


def cfg(**options: Any) -> ServiceConfig:
    base = {"deployments": {"stt": ONE, "tts": AUTO}}
    return ServiceConfig(name="cluster", role="cluster", extra="cluster", module="services.cluster",
                         engine="ray-serve", model="", grpc_port=50054, http_port=8104,
                         options={**base, **options})


def test_defaults_and_serve_options() -> None:
    o = cluster_options(cfg())
    assert (o.mode, o.gcs_port, o.serve_grpc_port, o.serve_http_port) == ("local", 6380, 9100, 8100)
    assert o.deployments["stt"].serve_options() == {
        "max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": 0.5}, "num_replicas": 1}
    assert o.deployments["tts"].serve_options()["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2.0}
    assert o.application("tts") == "tts" and o.role_of("tts") == "tts"


def test_both_num_replicas_and_autoscaling_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        cluster_options(cfg(deployments={"tts": {**ONE, **AUTO}}))
    assert e.value.key == "services.cluster.options.deployments.tts"
    assert "num_replicas or autoscaling_config, not both" in str(e.value)


@pytest.mark.parametrize(("options", "key", "words"), [
    ({"deployments": {"tts": {"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}}},
     "deployments.tts.autoscaling_config", "above max_replicas"),
    ({"deployments": {"tts": {"num_replicas": 0}}}, "deployments.tts.num_replicas", "greater than or equal"),
    ({"deployments": {"vad": ONE}}, "deployments.vad.[key]", "'stt', 'tts' or 'llm'"),
    ({"deployments": {"tts": {"ray_actor_options": {"num_cpu": 1}}}}, "deployments.tts", "num_cpu"),
    ({"mode": "address"}, "", "needs `address`"),
    ({"serve_grpc_port": 8100}, "", "both 8100"),
    ({"gcs_port": 20050}, "", "inside the worker port range"),
    ({"deployments": {}}, "", "no deployments"),
    ({"replicas": 2}, "replicas", "Extra inputs"),
])
def test_bad_options_name_the_key(options: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        cluster_options(cfg(**options))
    assert e.value.key == f"services.cluster.options.{key}"  # validate_options: model-level errors end in "."
    assert words in str(e.value)


def test_scale_bounds() -> None:
    o = cluster_options(cfg())
    assert o.deployments["stt"].scaled(2).serve_options()["num_replicas"] == 2
    for bad in (0, 65):
        with pytest.raises(InvalidArgument):
            o.deployments["stt"].scaled(bad)
    with pytest.raises(InvalidArgument, match="autoscaling deployment only"):
        o.deployments["stt"].scaled(2, max_replicas=3)
    auto = o.deployments["tts"].scaled(4).autoscaling_config
    assert auto is not None and (auto.min_replicas, auto.max_replicas) == (4, 4)
    auto = o.deployments["tts"].scaled(0, max_replicas=2).autoscaling_config
    assert auto is not None and (auto.min_replicas, auto.max_replicas) == (0, 2)
    with pytest.raises(InvalidArgument, match="below replicas"):
        o.deployments["tts"].scaled(3, max_replicas=2)
    with pytest.raises(InvalidArgument, match="no deployment 'llm'"):
        o.role_of("llm")


def test_cluster_role_in_the_catalog() -> None:
    ops = operations("cluster")
    assert ops["Status"].grpc_path == "/ultravox.v1.Cluster/Status"
    assert ops["Scale"].request is cluster_pb2.ScaleRequest


def actor(aid: str, app: str, state: str = "ALIVE", death: str = "", pid: int = 1) -> ReplicaActor:
    return ReplicaActor(aid, app, app, state, pid, "node1", death)


def snap(actors: tuple[ReplicaActor, ...], running: int = 1) -> Snapshot:
    apps = {"stt": AppSnapshot("stt", "RUNNING", "stt", "HEALTHY", "", {"RUNNING": running}),
            "tts": AppSnapshot("tts", "DEPLOYING", "tts", "UPDATING", "", {"RUNNING": 1, "STARTING": 1})}
    return Snapshot(apps=apps, actors=actors, nodes=2, taken_at=0.0)


def test_status_shaping_restarts_and_metrics() -> None:
    registry = CollectorRegistry()
    o: ClusterOptions = cluster_options(cfg())
    w = ReplicaWatch(o, registry)
    w.observe(snap((actor("a", "stt", pid=10), actor("b", "tts", pid=11))))
    # a: killed (Ray replaces it); b: stopped by Serve on purpose (scale down): not a restart
    events = w.observe(snap((actor("a", "stt", "DEAD", "reason: WORKER_DIED"), actor("c", "stt", pid=12),
                             actor("b", "tts", "DEAD", "reason: RAY_KILL"))))
    assert len(events) == 1 and "'stt'" in events[0] and "WORKER_DIED" in events[0]
    status = w.status(address="127.0.0.1:6380")
    stt, tts = status.deployments
    assert (stt.role, stt.running, stt.restarts, [r.pid for r in stt.replica_list]) == ("stt", 1, 1, [12])
    assert (stt.min_replicas, stt.max_replicas, stt.autoscaling) == (1, 1, False)
    assert (tts.app_status, tts.starting, tts.autoscaling, tts.min_replicas, tts.max_replicas) == (
        "DEPLOYING", 1, True, 1, 3)
    assert {r.state: r.count for r in tts.replicas} == {"RUNNING": 1, "STARTING": 1}
    assert (status.nodes, status.mode, status.serve_grpc_port) == (2, "local", 9100)
    assert registry.get_sample_value("uv_cluster_replica_restarts_total", {"deployment": "stt"}) == 1
    assert registry.get_sample_value("uv_cluster_replica_restarts_total", {"deployment": "tts"}) == 0
    assert registry.get_sample_value("uv_cluster_replicas", {"deployment": "tts", "state": "STARTING"}) == 1
    # gone from the table without a record also counts
    assert len(w.observe(snap(()))) == 1 and w.restarts["stt"] == 2
