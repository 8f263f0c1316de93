"""A Ray Serve application as the hub sees it: the proxies' ports, the application as gRPC
metadata and as the HTTP route prefix; a cluster-profile config loads and validates."""

from __future__ import annotations

from pathlib import Path

from core.config import load_settings
from core.config.models import RemoteEndpoint, ServiceConfig
from core.managers.remote.services import ray_endpoint, ray_label

ROOT = Path(__file__).resolve().parents[2]


def test_the_endpoint_carries_the_application() -> None:
    cfg = ServiceConfig(
        name="tts", role="tts", extra="tts", module="services.tts", engine="kokoro", model="m", grpc_port=0,
        http_port=0, remote=RemoteEndpoint(kind="ray", base_url="http://10.0.0.5", grpc_port=9100, http_port=8100),
    )
    ep = ray_endpoint(cfg, "tok")
    assert ep.grpc_target == "10.0.0.5:9100"
    assert ep.http_base == "http://10.0.0.5:8100/tts"   # the application's route prefix
    assert ep.metadata == (("application", "tts"),) and ep.token == "tok"
    assert "9100" in ray_label(ep)
    named = cfg.model_copy(update={"remote": cfg.remote.model_copy(update={"application": "voices"})})  # type: ignore[union-attr]
    assert ray_endpoint(named, "t").http_base.endswith("/voices")


def test_the_cluster_profile_loads() -> None:
    s = load_settings(ROOT / "config", env={"PROFILE": "cluster"})
    enabled = {c.name: c for c in s.enabled_services()}
    assert enabled["cluster"].role == "cluster" and enabled["cluster"].extra == "cluster"
    assert enabled["stt"].engine == "ray-serve" and enabled["stt"].remote is None   # the live stream stays local
    for role in ("tts", "llm"):
        remote = enabled[role].remote
        assert remote is not None and remote.kind == "ray"
        assert remote.grpc_port == enabled["cluster"].options["serve_grpc_port"]
        assert remote.http_port == enabled["cluster"].options["serve_http_port"]
    assert enabled["stt"].options["cluster_address"].endswith(f":{enabled['cluster'].options['serve_grpc_port']}")
    assert "cluster" not in {c.name for c in load_settings(ROOT / "config", env={}).enabled_services()}
