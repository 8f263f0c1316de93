"""Pydantic models for the two config files. Every field says what it is for."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthPolicy(_Strict):
    period_s: float = Field(5.0, gt=0, description="Seconds between liveness probes (gRPC health Check).")
    timeout_s: float = Field(2.0, gt=0, description="A probe that takes longer than this counts as failed.")
    failure_threshold: int = Field(3, ge=1, description="Consecutive failed probes before a restart.")
    startup_timeout_s: float = Field(
        600.0, gt=0, description="Time allowed from spawn to SERVING (model load included) before a restart."
    )


class RestartPolicy(_Strict):
    policy: Literal["always", "on-failure", "never"] = Field(
        "on-failure", description="When an exited service is restarted; a clean exit 0 is not a failure."
    )
    backoff_base_s: float = Field(0.5, ge=0, description="First restart delay; doubles on each restart.")
    backoff_cap_s: float = Field(30.0, ge=0, description="Upper bound on the restart delay.")
    jitter: float = Field(0.2, ge=0, le=1, description="Fraction of the delay randomised (+/-) to avoid herds.")
    flapping_window_s: float = Field(120.0, gt=0, description="Window over which restarts are counted.")
    flapping_max_restarts: int = Field(
        5, ge=1, description="More restarts than this inside the window means FATAL (flapping)."
    )
    reset_after_s: float = Field(
        60.0, ge=0, description="Uptime after which the backoff exponent resets to zero."
    )


class LogPolicy(_Strict):
    max_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Rotate a service log past this size.")
    backups: int = Field(5, ge=0, description="Rotated log files kept per service.")


class RemoteEndpoint(_Strict):
    """Where a service runs when it is not spawned locally (another host, RunPod, an API)."""

    kind: Literal["grpc", "http", "runpod", "openai", "ray"] = Field(
        description="How the hub reaches it; ray: a Ray Serve application behind Serve's gRPC and HTTP proxies."
    )
    base_url: str = Field(
        "https://api.runpod.ai/v2",
        validation_alias=AliasChoices("base_url", "url"),
        description="Base URL of the API (RunPod: https://api.runpod.ai/v2; tests point it at local servers). "
        "Env override: UV_<SERVICE>_BASE_URL.",
    )
    api_key_env: str = Field(
        "", description="Name of the env var that holds the key; the key itself never goes in config."
    )
    endpoint_id: str = Field(
        "", description="RunPod serverless endpoint id (kind=runpod); env override UV_<SERVICE>_ENDPOINT_ID. "
        "Empty: base_url is the endpoint itself (the runpod SDK's local API server)."
    )
    local_api: bool = Field(
        False, description="kind=runpod: base_url is the runpod SDK's local test server (--rp_serve_api): "
        "POST for every path, /run waits for /status or /stream, no /cancel or /health."
    )
    queue_timeout_s: float = Field(
        90.0, gt=0, description="kind=runpod: longest a job may wait IN_QUEUE (a cold start loads the model) "
        "before it is cancelled and the call fails as UNAVAILABLE with a message that says so."
    )
    poll_interval_s: float = Field(
        0.1, gt=0, description="kind=runpod: pause between /status or /stream polls of a running job."
    )
    runsync_wait_s: float = Field(
        30.0, ge=1, le=300, description="kind=runpod: how long one /runsync waits before the job is polled."
    )
    health_period_s: float = Field(
        10.0, gt=0, description="kind=runpod: seconds between /health probes of the endpoint."
    )
    application: str = Field(
        "", description="kind=ray: the Serve application (sent as gRPC metadata 'application', and the HTTP "
                        "route prefix); the service's name when empty."
    )
    grpc_port: int = Field(9100, ge=1, le=65535, description="kind=ray: Serve's gRPC proxy port (base_url's host).")
    http_port: int = Field(8100, ge=1, le=65535, description="kind=ray: Serve's HTTP proxy port (base_url's host).")


class ServiceConfig(_Strict):
    """One model service as declared in services.yaml, after profile and env overrides."""

    name: str = Field(description="Service name, the key in services.yaml.")
    role: Literal["stt", "tts", "llm", "cluster"] = Field(
        description="Which protocol it serves (protos/uvpb/<role>.proto); cluster: the Ray Serve agent."
    )
    extra: str = Field(description="pyproject extra installed into the service's own venv.")
    module: str = Field(description="Python module run with -m inside that venv.")
    enabled: bool = Field(True, description="Spawn it in this profile.")
    engine: str = Field(description="Engine adapter name, e.g. faster-whisper, kokoro, llama.cpp.")
    model: str = Field(description="'embedded:<name>' for a packaged model, a local path, or a hub id.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the engine runs.")
    host: str = Field("127.0.0.1", description="Interface the service binds to.")
    grpc_port: int = Field(ge=0, le=65535, description="gRPC port; 0 picks a free port at spawn.")
    http_port: int = Field(ge=0, le=65535, description="HTTP port (msgpack/JSON/OpenAI routes); 0 = free port.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the process.")
    options: dict[str, Any] = Field(default_factory=dict, description="Engine options (threads, beam size...).")
    health: HealthPolicy = Field(default_factory=HealthPolicy)  # type: ignore[arg-type]
    restart: RestartPolicy = Field(default_factory=RestartPolicy)  # type: ignore[arg-type]
    log: LogPolicy = Field(default_factory=LogPolicy)  # type: ignore[arg-type]
    stop_grace_s: float = Field(10.0, ge=0, description="SIGTERM-to-SIGKILL grace period.")
    max_request_bytes: int = Field(
        25 * 1024 * 1024, gt=0, description="Largest request body the service accepts."
    )
    remote: RemoteEndpoint | None = Field(None, description="Set when the service is reached, not spawned.")

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServiceConfig:
        if self.grpc_port and self.grpc_port == self.http_port:
            raise ValueError(f"grpc_port and http_port are both {self.grpc_port}; give them different ports")
        return self


class ProfileServiceOverride(_Strict):
    """What a profile changes about a service; unset fields keep the services.yaml value."""

    enabled: bool | None = None
    extra: str | None = Field(None, description="Another pyproject extra for this profile (e.g. llm-gpu for vLLM).")
    engine: str | None = None
    model: str | None = None
    device: Literal["cpu", "cuda"] | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="Merged over the service's options.")
    env: dict[str, str] = Field(default_factory=dict, description="Merged over the service's env.")
    remote: RemoteEndpoint | None = None


class ProfileConfig(_Strict):
    name: str
    description: str = ""
    device: Literal["cpu", "cuda"] = Field("cpu", description="Default device for the profile's services.")
    services: dict[str, ProfileServiceOverride] = Field(default_factory=dict)


class IceServer(_Strict):
    """One STUN or TURN server handed to both peers (RTCIceServer's fields)."""

    urls: list[str] = Field(min_length=1, description="stun:host:port, turn:host:port?transport=udp, turns:...")
    username: str | None = Field(None, description="TURN user name.")
    credential: str | None = Field(None, description="TURN password.")


class WebRtcConfig(_Strict):
    """WebRTC (``POST /api/offer``): ICE servers and per-peer limits."""

    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers; empty works on loopback and a LAN (host candidates only).",
    )
    ice_servers_env: str = Field(
        "UV_ICE_SERVERS", description="Env var with a JSON list of ice_servers; when set it replaces the list."
    )
    max_peers: int = Field(50, ge=1, description="Open peer connections; past it, offers get 503.")
    connect_timeout_s: float = Field(
        20.0, gt=0, description="A peer that has not connected this long after its answer is dropped."
    )
    disconnected_grace_s: float = Field(
        5.0, gt=0, description="How long ICE may stay 'disconnected' before the peer is treated as gone."
    )


class MonitoringConfig(_Strict):
    """What main exports for Prometheus beyond its own metrics."""

    voice_to_voice_p95_alert_s: float = Field(
        3.5, gt=0, description="VoiceToVoiceP95High fires above this (exported as a gauge the rule compares to)."
    )
    error_rate_alert_ratio: float = Field(
        0.05, gt=0, le=1, description="HighErrorRate fires when this share of hub calls fails."
    )


Role = Literal["client", "operator", "admin"]
EPOCH_2100 = 4_102_444_800
"""The latest expiry a key may have (Unix time of 2100-01-01): anything later is a typo, not a date."""
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class RateLimits(_Strict):
    """Requests allowed per window (0: no limit in that window); one budget per key and per address."""

    per_minute: int = Field(120, ge=0, le=10**9, description="Requests per rolling minute.")
    per_hour: int = Field(5000, ge=0, le=10**9, description="Requests per rolling hour.")


class KeyEntry(_Strict):
    """An API key in the keys file: its SHA-256 only, never the key itself (``sm keys hash`` makes one)."""

    name: str = Field(pattern=KEY_NAME_PATTERN, description="Shown in logs and metrics instead of the key.")
    role: Role = Field(description="admin: everything; operator: read control API and metrics, restart "
                                   "services; client: conversations only.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key.")
    expires_at: float | None = Field(None, ge=0, le=EPOCH_2100, description="Unix time after which the key is refused.")
    rate_limits: RateLimits | None = Field(None, description="This key's limits; the gateway's when absent.")


class AuthConfig(_Strict):
    """Who may call main: API keys with roles, short-lived client tokens, public paths, rate limits."""

    keys_file: str = Field(
        "api_keys.yaml", description="YAML list of KeyEntry (hashed keys), relative to the config folder; "
                                     "a missing file means no file keys.",
    )
    env_key_role: Role = Field("admin", description="Role of the key in gateway.api_key_env (named after the env var).")
    jwt_secret_env: str = Field("UV_JWT_SECRET", description="Env var with the token signing secret (32+ bytes).")
    jwt_secret_file: str = Field(
        "", description="File holding the signing secret when the env var is unset; empty means "
                        "<var>/data/jwt_secret (created, mode 0600, on first start).",
    )
    token_ttl_s: int = Field(600, ge=10, le=3600, description="Lifetime of a client token that asks for none.")
    token_max_ttl_s: int = Field(3600, ge=10, le=3600, description="Longest lifetime a client token may ask for.")
    public_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/metrics", "/", "/favicon.ico", "/static/*"],
        description="Paths open without a key or token ('/x/*' covers everything under /x/). /metrics is "
                    "here so Prometheus scrapes main like its services; drop it to need an operator key.",
    )
    rate_limits: RateLimits = Field(
        default_factory=RateLimits,  # type: ignore[arg-type]
        description="Default limits of each key (and of each client address) on conversation routes.",
    )
    allowlist: list[str] = Field(
        default_factory=list,
        description="Exempt from rate limits: client addresses or networks (127.0.0.1, 10.0.0.0/8) and "
                    "key names as 'key:NAME'.",
    )

    @model_validator(mode="after")
    def _check(self) -> AuthConfig:
        for p in self.public_paths:
            if not p.startswith("/") or ("*" in p and not p.endswith("/*")) or p.count("*") > 1:
                raise ValueError(f"public path {p!r}: give an absolute path, or a prefix ending in '/*'")
        for a in self.allowlist:
            if a.startswith("key:"):
                continue
            try:
                ipaddress.ip_network(a, strict=False)
            except ValueError as e:
                raise ValueError(f"allowlist entry {a!r} is neither an address/network nor 'key:NAME'") from e
        if self.token_ttl_s > self.token_max_ttl_s:
            raise ValueError("token_ttl_s is longer than token_max_ttl_s")
        return self


class GatewayConfig(_Strict):
    host: str = Field("127.0.0.1", description="Main binds here; anything but loopback needs an API key.")
    port: int = Field(8080, ge=1, le=65535, description="Main's HTTP port.")
    api_key_env: str = Field("UV_API_KEY", description="Env var holding an API key (role auth.env_key_role).")
    auth: AuthConfig = Field(default_factory=AuthConfig)  # type: ignore[arg-type]
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose pages may call main from another origin; empty: "
                    "only the page's own origin. '*' is refused (requests carry credentials).",
    )
    max_json_bytes: int = Field(1024 * 1024, ge=1024, description="Largest JSON request body (413 past it).")
    max_json_depth: int = Field(32, ge=2, le=256, description="Deepest nesting of a JSON body or message.")
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _check_origins(self) -> GatewayConfig:
        for o in self.cors_origins:
            if o == "*":
                raise ValueError("cors_origins: '*' is refused because requests carry credentials; list the origins")
            if not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:-]+", o):
                raise ValueError(f"cors_origins: {o!r} is not an origin like https://app.example.com[:port]")
        return self


class HubConfig(_Strict):
    protocols: tuple[Literal["grpc", "msgpack", "json"], ...] = Field(
        ("grpc", "msgpack", "json"), description="Transport order; later ones are fallbacks."
    )
    default_deadline_s: float = Field(30.0, gt=0, description="Deadline of a call that sets none.")
    connect_timeout_s: float = Field(
        0.5, gt=0, description="How long one transport may wait for a connection before falling back."
    )
    max_retries: int = Field(3, ge=0, description="Retries of a transient failure (all transports down).")
    retry_base_s: float = Field(0.05, ge=0, description="First retry delay; doubles, with jitter.")
    retry_cap_s: float = Field(1.0, ge=0)
    breaker_failure_threshold: int = Field(5, ge=1, description="Consecutive failed calls that open the breaker.")
    breaker_reset_s: float = Field(5.0, gt=0, description="Open time before one half-open probe is let through.")


class TurnTaking(_Strict):
    """How a voice conversation takes turns: when the user's turn ends, and what counts as a barge-in.

    Every field is optional here: an agent (``turn:`` in its YAML) or a session (the WebSocket
    ``config`` message, ``turn`` object) sets only what it changes, over ``conversation.turn``.
    """

    detection: Literal["vad", "semantic"] | None = Field(
        None, description="'semantic': the end-of-turn model decides at a short pause; 'vad': a fixed silence.",
    )
    pause_ms: int | None = Field(
        None, ge=60, le=2000, description="Pause that asks the turn model and starts the speculative final decode.",
    )
    max_wait_ms: int | None = Field(
        None, ge=200, le=10_000, description="Semantic: the longest silence before the turn ends anyway.",
    )
    threshold: float | None = Field(
        None, ge=0.01, le=0.99, description="Semantic: P(complete) at or above which the turn ends at the pause.",
    )
    speculation: bool | None = Field(None, description="Start the final transcription at the pause.")
    barge_in_min_speech_ms: int | None = Field(
        None, ge=0, le=5000,
        description="While a reply plays, speech must last this long to interrupt it (0: at once).",
    )
    barge_in_min_words: int | None = Field(
        None, ge=0, le=20,
        description="...or say this many words (0: duration only). Less than that pauses the reply, then resumes it.",
    )
    resume_after_ms: int | None = Field(
        None, ge=200, le=10_000,
        description="A paused reply resumes when no words come within this long after the noise stopped.",
    )
    echo_cancellation: bool | None = Field(
        None, description="Remove the reply's own audio from the microphone (clients without echo cancellation).",
    )

    def over(self, base: TurnTaking) -> TurnTaking:
        """``base`` with this one's set fields on top."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


DEFAULT_TURN_TAKING = TurnTaking(
    detection="semantic", pause_ms=200, max_wait_ms=1600, threshold=0.5, speculation=True,
    barge_in_min_speech_ms=500, barge_in_min_words=1, resume_after_ms=1500, echo_cancellation=True,
)


class ConversationConfig(_Strict):
    """Sessions, turns and the conversation gateway (REST, WebSocket, polling)."""

    default_agent: str = Field("assistant", description="Agent used when a client names none.")
    agents_dir: str = Field("agents", description="Folder of agent YAMLs, relative to the config folder.")
    max_sessions: int = Field(200, ge=1, description="Live sessions kept in memory; past it, new ones get 503.")
    idle_timeout_s: float = Field(1800, gt=0, description="Sessions idle this long are evicted from memory.")
    max_concurrent_turns: int = Field(4, ge=1, description="Turns in flight across all sessions (admission).")
    admission_wait_s: float = Field(1.0, ge=0, le=2, description="How long a turn may wait for a slot first.")
    store_path: str = Field("", description="SQLite file; empty means <var>/data/conversations.sqlite3.")
    recordings: bool = Field(False, description="Keep per-turn WAVs of both sides under recordings_dir.")
    recordings_dir: str = Field("", description="Empty means <var>/data/recordings.")
    output_sample_rate: int = Field(24000, description="Default PCM16 rate of reply audio sent to clients.")
    max_text_chars: int = Field(2000, ge=1, description="Longest user message accepted.")
    max_audio_bytes: int = Field(10 * 1024 * 1024, ge=1, description="Largest uploaded or buffered utterance.")
    max_ws_frame_bytes: int = Field(256 * 1024, ge=1, description="Largest single WebSocket frame.")
    end_silence_ms: int = Field(600, ge=100, description="End-of-turn silence for voice sessions (turn.detection vad).")
    turn: TurnTaking = Field(
        default_factory=TurnTaking,  # type: ignore[arg-type]
        description="Turn-taking for voice sessions; unset fields take the built-in defaults (semantic turns, "
                    "speculation, barge-in after 500 ms or one word, echo cancellation).",
    )
    reply_audio_ttl_s: float = Field(600, gt=0, description="How long REST reply audio URLs stay fetchable.")


class Settings(_Strict):
    """Everything loaded from config/ plus env overrides, for one run."""

    profile: ProfileConfig
    profiles: dict[str, ProfileConfig]
    services: dict[str, ServiceConfig] = Field(description="Effective services of the active profile.")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)  # type: ignore[arg-type]
    hub: HubConfig = Field(default_factory=HubConfig)  # type: ignore[arg-type]
    conversation: ConversationConfig = Field(default_factory=ConversationConfig)  # type: ignore[arg-type]
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)  # type: ignore[arg-type]
    config_dir: str = Field(description="Folder the files were read from.")

    def enabled_services(self) -> list[ServiceConfig]:
        return [s for s in self.services.values() if s.enabled]
