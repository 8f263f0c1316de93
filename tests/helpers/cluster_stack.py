"""A config folder for a main on the ``cluster`` profile with its own Ray ports (tests and the bench).

The Ray head's GCS and client ports, Serve's two proxies and the deployments' sizes are written
into services.yaml (``services.cluster.options``), and the profile's TTS/LLM remotes and the
STT's ``cluster_address`` are pointed at the same proxies, so one run never meets another's Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.stack import make_config_dir


@dataclass(frozen=True)
class RayPorts:
    gcs: int
    client: int
    grpc: int
    http: int


def cluster_config(dest: Path, ports: RayPorts, temp_dir: str, *, num_cpus: float = 2, replica_cpus: float = 0.6,
                   rate_limit: int = 100000) -> Path:
    """``dest`` as a config folder: services.yaml and profiles.yaml set for ``PROFILE=cluster``."""
    def edit(doc: dict[str, Any]) -> None:
        doc["gateway"]["auth"]["rate_limits"] = {"per_minute": rate_limit, "per_hour": 0}
        one = {"num_replicas": 1, "max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": replica_cpus}}
        doc["services"]["cluster"]["options"].update(
            gcs_port=ports.gcs, client_port=ports.client, serve_grpc_port=ports.grpc, serve_http_port=ports.http,
            num_cpus=num_cpus, temp_dir=temp_dir, proxy_location="HeadOnly", watch_period_s=1.0,
            deployments={"stt": {**one, "options": {"cpu_threads": 1, "max_concurrency": 1}}, "tts": one, "llm": one},
        )
    config = make_config_dir(dest, edit)
    profiles = yaml.safe_load((config / "profiles.yaml").read_text())
    svc = profiles["profiles"]["cluster"]["services"]
    svc["stt"]["options"]["cluster_address"] = f"127.0.0.1:{ports.grpc}"
    for role in ("tts", "llm"):
        svc[role]["remote"].update(grpc_port=ports.grpc, http_port=ports.http)
    (config / "profiles.yaml").write_text(yaml.safe_dump(profiles, sort_keys=False))
    return config


CLUSTER_ENV = {"PROFILE": "cluster", "UV_CLUSTER_GRPC_PORT": "0", "UV_CLUSTER_HTTP_PORT": "0"}
"""Env for main on the cluster profile (the agent's own ports free, like the services')."""
