"""The cluster agent's ``options:`` (services.yaml ``cluster``), validated once at start.

Per role, a deployment has either ``num_replicas`` or ``autoscaling_config`` (never both),
``ray_actor_options`` (num_cpus, num_gpus, memory...) and ``max_ongoing_requests``. ``service``
names the services.yaml entry whose engine, model and options the replicas run (default: the
role's name), and ``options`` is merged over that entry's options for the cluster only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.config import ServiceConfig
from core.errors import InvalidArgument
from services.runtime.options import validate_options

Role = Literal["stt", "tts", "llm"]
ROLES: tuple[Role, ...] = ("stt", "tts", "llm")
MAX_REPLICAS = 64
"""A bound for ``sm scale``: a typo (``sm scale tts 100``) is refused, not scheduled."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(_Strict):
    """Ray Serve's request-based autoscaling for one deployment."""

    min_replicas: int = Field(1, ge=0, le=MAX_REPLICAS, description="Never fewer replicas than this.")
    max_replicas: int = Field(1, ge=1, le=MAX_REPLICAS, description="Never more replicas than this.")
    target_ongoing_requests: float = Field(2.0, gt=0, description="Requests per replica Serve aims for.")
    initial_replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS, description="Replicas at deploy time.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class DeploymentOptions(_Strict):
    """One role's deployment: replicas, resources, concurrency."""

    service: str = Field("", description="services.yaml entry the replicas run (engine, model, options); "
                                         "default: the role's name. Also the Serve application's name.")
    num_replicas: int | None = Field(None, ge=1, le=MAX_REPLICAS, description="Fixed replica count.")
    autoscaling_config: Autoscaling | None = Field(None, description="Autoscale instead of num_replicas.")
    ray_actor_options: dict[str, Any] = Field(
        default_factory=dict, description="Per replica: num_cpus, num_gpus, memory (bytes), resources..."
    )
    max_ongoing_requests: int = Field(4, ge=1, le=1024, description="Calls one replica serves at once.")
    options: dict[str, Any] = Field(default_factory=dict, description="Merged over the service's options.")

    @model_validator(mode="after")
    def _one_scaling(self) -> DeploymentOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        bad = set(self.ray_actor_options) - {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type",
                                             "runtime_env"}
        if bad:
            raise ValueError(f"unknown ray_actor_options {sorted(bad)}; use num_cpus, num_gpus, memory, resources")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.autoscaling_config is not None

    def serve_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options``."""
        out: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": dict(self.ray_actor_options),
        }
        if self.autoscaling_config is not None:
            out["autoscaling_config"] = self.autoscaling_config.model_dump(exclude_none=True)
        else:
            out["num_replicas"] = self.num_replicas or 1
        return out

    def scaled(self, replicas: int, max_replicas: int = 0) -> DeploymentOptions:
        """These options with ``replicas`` (``sm scale``): num_replicas, or autoscaling min (max raised to it)."""
        if not 0 <= replicas <= MAX_REPLICAS or not 0 <= max_replicas <= MAX_REPLICAS:
            raise InvalidArgument(f"replicas must be between 0 and {MAX_REPLICAS}, not {replicas}")
        a = self.autoscaling_config
        if a is None:
            if replicas < 1:
                raise InvalidArgument("a deployment without autoscaling needs at least 1 replica")
            if max_replicas:
                raise InvalidArgument("max_replicas applies to an autoscaling deployment only")
            return self.model_copy(update={"num_replicas": replicas})
        top = max_replicas or max(a.max_replicas, replicas)
        if top < replicas:
            raise InvalidArgument(f"max_replicas ({top}) is below replicas ({replicas})")
        scaled = a.model_copy(update={"min_replicas": replicas, "max_replicas": top, "initial_replicas": None})
        return self.model_copy(update={"autoscaling_config": scaled})


class ClusterOptions(_Strict):
    """The agent: where Ray runs, Serve's proxies, and one deployment per role."""

    mode: Literal["local", "address"] = Field("local", description="local: start a Ray head here; "
                                                                   "address: join `address` and only deploy.")
    address: str = Field("", description="mode address: auto, 127.0.0.1:6380 or ray://head:10001.")
    gcs_port: int = Field(6380, ge=1, le=65535, description="mode local: the head's GCS port (127.0.0.1).")
    client_port: int = Field(10001, ge=1, le=65535, description="mode local: the Ray client server port.")
    num_cpus: float = Field(2, gt=0, description="mode local: CPUs the head offers to replicas.")
    min_worker_port: int = Field(20000, ge=1024, le=65535, description="mode local: Ray worker ports, first.")
    max_worker_port: int = Field(20100, ge=1024, le=65535, description="mode local: Ray worker ports, last.")
    temp_dir: str = Field("", description="mode local: Ray's session folder ('' = /tmp/uvray-<gcs_port>); "
                                          "keep it short, Ray's socket paths must stay under 108 bytes.")
    proxy_host: str = Field("127.0.0.1", description="Serve's HTTP proxy host (its gRPC proxy binds every "
                                                     "interface: Ray has no setting for it).")
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode", description="Serve's proxies on every node, or on the head only (nodes sharing one IP).")
    serve_grpc_port: int = Field(9100, ge=1, le=65535, description="Serve's gRPC proxy (our protos).")
    serve_http_port: int = Field(8100, ge=1, le=65535, description="Serve's HTTP proxy (services' HTTP wire).")
    watch_period_s: float = Field(2.0, gt=0, le=60, description="Seconds between replica status polls.")
    deploy_timeout_s: float = Field(900, gt=0, description="How long the deployments may take to be RUNNING.")
    deployments: dict[Role, DeploymentOptions] = Field(default_factory=dict, description="One per role.")

    @model_validator(mode="after")
    def _coherent(self) -> ClusterOptions:
        if self.mode == "address" and not self.address:
            raise ValueError("mode address needs `address` (auto, host:port or ray://host:10001)")
        if not self.deployments:
            raise ValueError("no deployments: set at least one of stt, tts, llm")
        if self.min_worker_port > self.max_worker_port:
            raise ValueError("min_worker_port is above max_worker_port")
        ports = {"gcs_port": self.gcs_port, "client_port": self.client_port,
                 "serve_grpc_port": self.serve_grpc_port, "serve_http_port": self.serve_http_port}
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}")
            seen[port] = name
            if self.mode == "local" and self.min_worker_port <= port <= self.max_worker_port:
                raise ValueError(f"{name} {port} is inside the worker port range "
                                 f"{self.min_worker_port}-{self.max_worker_port}")
        return self

    def application(self, role: Role) -> str:
        """The Serve application (and services.yaml entry) of ``role``'s deployment."""
        return self.deployments[role].service or role

    def role_of(self, name: str) -> Role:
        """The role whose deployment is ``name`` (a role or an application name)."""
        for role in self.deployments:
            if name in (role, self.application(role)):
                return role
        known = ", ".join(f"{r} ({self.application(r)})" for r in self.deployments)
        raise InvalidArgument(f"no deployment {name!r}; deployed: {known}")


def cluster_options(cfg: ServiceConfig) -> ClusterOptions:
    """The agent's options, or a ConfigError naming the key (services.cluster.options.deployments...)."""
    return validate_options(ClusterOptions, cfg)
