"""Context dataclasses and the launch spec that carries them from main to a service."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from core.config import ServiceConfig, Settings, load_settings
from core.errors import UnknownService

LAUNCH_SPEC_ENV = "UV_LAUNCH_SPEC"
REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True, slots=True)
class Paths:
    """Where a run keeps things. ``var`` is per checkout; ``cache`` is shared across checkouts."""

    root: Path
    var: Path
    cache: Path
    venvs: Path

    @property
    def logs(self) -> Path:
        return self.var / "log"

    @property
    def data(self) -> Path:
        return self.var / "data"

    @property
    def models(self) -> Path:
        return self.cache / "models"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, root: Path = REPO_ROOT) -> Paths:
        env = os.environ if env is None else env
        xdg = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cls(
            root=root,
            var=Path(env.get("UV_VAR_DIR") or root / "var"),
            cache=Path(env.get("UV_CACHE_DIR") or xdg / "ultravox"),
            venvs=Path(env.get("UV_VENVS_DIR") or root / ".venvs"),
        )

    def to_dict(self) -> dict[str, str]:
        return {"root": str(self.root), "var": str(self.var), "cache": str(self.cache), "venvs": str(self.venvs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, str]) -> Paths:
        return cls(root=Path(d["root"]), var=Path(d["var"]), cache=Path(d["cache"]), venvs=Path(d["venvs"]))


@dataclass(frozen=True, slots=True)
class GlobalContext:
    """One run of the platform, shared by main and every service it spawns."""

    settings: Settings
    paths: Paths
    run_id: str
    internal_token: str = field(repr=False)

    @classmethod
    def create(
        cls, settings: Settings, paths: Paths | None = None, *, internal_token: str | None = None
    ) -> GlobalContext:
        return cls(
            settings=settings,
            paths=paths or Paths.from_env(),
            run_id=uuid.uuid4().hex[:12],
            internal_token=internal_token or secrets.token_urlsafe(32),
        )


@dataclass(slots=True)
class ProcessContext:
    """One OS process: its name, its own metrics registry and logger."""

    global_: GlobalContext
    name: str
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    started_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"ultravox.{self.name}")

    @property
    def settings(self) -> Settings:
        return self.global_.settings


@dataclass(slots=True)
class ServiceContext:
    """Inside a model service: its effective config and the ports main assigned."""

    process: ProcessContext
    config: ServiceConfig
    grpc_port: int
    http_port: int
    parent_pid: int | None = None

    @property
    def token(self) -> str:
        return self.process.global_.internal_token

    @property
    def paths(self) -> Paths:
        return self.process.global_.paths

    def launch_env(self) -> dict[str, str]:
        """The env var main sets so the child can rebuild this context (see ``from_launch_env``)."""
        g = self.process.global_
        spec: dict[str, Any] = {
            "service": self.config.name,
            "settings": g.settings.model_dump(mode="json"),
            "paths": g.paths.to_dict(),
            "run_id": g.run_id,
            "token": g.internal_token,
            "grpc_port": self.grpc_port,
            "http_port": self.http_port,
            "parent_pid": self.parent_pid,
        }
        return {LAUNCH_SPEC_ENV: json.dumps(spec)}

    @classmethod
    def from_launch_env(cls, env: Mapping[str, str] | None = None) -> ServiceContext:
        env = os.environ if env is None else env
        spec = json.loads(env[LAUNCH_SPEC_ENV])
        settings = Settings.model_validate(spec["settings"])
        g = GlobalContext(
            settings=settings, paths=Paths.from_dict(spec["paths"]), run_id=spec["run_id"],
            internal_token=spec["token"],
        )
        name = spec["service"]
        return cls(
            process=ProcessContext(global_=g, name=name),
            config=settings.services[name],
            grpc_port=int(spec["grpc_port"]),
            http_port=int(spec["http_port"]),
            parent_pid=spec.get("parent_pid"),
        )


class StandaloneContext:
    """Build a ServiceContext without main: config from files, a token from env or fresh."""

    @staticmethod
    def for_service(
        name: str, *, config_dir: Path | None = None, env: Mapping[str, str] | None = None
    ) -> ServiceContext:
        env = os.environ if env is None else env
        settings = load_settings(config_dir, env)
        if name not in settings.services:
            raise UnknownService(name, list(settings.services))
        g = GlobalContext.create(
            settings, Paths.from_env(env), internal_token=env.get("UV_INTERNAL_TOKEN") or None
        )
        cfg = settings.services[name]
        return ServiceContext(
            process=ProcessContext(global_=g, name=name), config=cfg,
            grpc_port=cfg.grpc_port, http_port=cfg.http_port,
        )
