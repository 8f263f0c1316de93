"""The LLM service's engine options (``options:`` of the service in config/services.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.config import ServiceConfig
from core.errors import ConfigError
from services.runtime.options import WHERE, validate_options


class LlmOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # ---- every engine -------------------------------------------------------------------
    max_tokens: int = Field(256, ge=1, description="Default and largest max_tokens a request may ask for.")
    temperature: float = Field(0.7, ge=0, le=2, description="Default temperature; 0 is greedy.")
    top_p: float = Field(0.95, gt=0, le=1, description="Default nucleus-sampling mass.")
    max_queue: int = Field(4, ge=0, description="Requests allowed to wait for a slot; beyond that: 429.")
    max_concurrency: int = Field(
        1, ge=1, le=256, description="Generations at once; llama.cpp must be 1 (it is not re-entrant)."
    )
    max_messages: int = Field(256, ge=1, description="Most messages one request may carry.")
    max_prompt_chars: int = Field(100_000, ge=1, description="Most characters of message content per request.")
    # ---- llama.cpp ----------------------------------------------------------------------
    n_ctx: int = Field(4096, ge=256, description="llama.cpp context window (prompt plus reply), in tokens.")
    n_threads: int = Field(0, ge=0, description="llama.cpp threads; 0 lets it pick (all cores).")
    n_batch: int = Field(512, ge=8, description="llama.cpp prompt-evaluation batch size.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to a GPU build of llama.cpp; -1 = all.")
    hub_file: str = Field(
        "*q4_k_m.gguf", description="Which GGUF of a hub repo to fetch when model is a hub id (a glob)."
    )
    # ---- OpenAI-compatible API (engine openai, and vllm's own server) --------------------
    base_url: str = Field("", description="engine=openai: the API's base URL, e.g. https://api.groq.com/openai/v1.")
    api_key_env: str = Field("", description="engine=openai: name of the env var that holds the API key.")
    request_timeout_s: float = Field(120.0, gt=0, description="Upstream request timeout (connect, read).")
    # ---- vLLM ---------------------------------------------------------------------------
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM: share of GPU memory it may take.")
    max_model_len: int = Field(0, ge=0, description="vLLM: context length; 0 uses the model's.")
    dtype: str = Field("auto", description="vLLM: weight dtype (auto, float16, bfloat16).")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs to shard the model over.")
    vllm_args: list[str] = Field(default_factory=list, description="vLLM: extra api_server arguments.")
    startup_timeout_s: float = Field(900.0, gt=0, description="vLLM: how long its server may take to come up.")

    @classmethod
    def from_config(cls, cfg: ServiceConfig) -> LlmOptions:
        opts = validate_options(cls, cfg)
        if cfg.engine == "llama.cpp" and opts.max_concurrency != 1:
            raise ConfigError(
                WHERE, f"services.{cfg.name}.options.max_concurrency",
                f"llama.cpp runs one generation at a time (it is not re-entrant), got {opts.max_concurrency}; "
                "set 1 and use max_queue for waiting requests",
            )
        if opts.max_tokens >= opts.n_ctx and cfg.engine == "llama.cpp":
            raise ConfigError(
                WHERE, f"services.{cfg.name}.options.max_tokens",
                f"max_tokens {opts.max_tokens} leaves no room for a prompt in n_ctx {opts.n_ctx}",
            )
        return opts
