"""Prometheus metrics of the LLM service, in the process's own registry (ProcessContext).

Prompt and completion tokens, generations by finish reason, time to first token, decode speed
(tokens/s), and the admission queue (waiting and running generations). Every series exists
(at 0) from the start.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from core.context import ServiceContext
from services.llm.engine import Finish, FinishReason

TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RATE_BUCKETS = (1, 2, 5, 8, 10, 15, 20, 30, 50, 75, 100, 200, 500)


class LlmMetrics:
    def __init__(self, ctx: ServiceContext) -> None:
        registry, self.service = ctx.process.registry, ctx.config.name
        labels = ["service"]
        self.prompt_tokens = Counter(
            "uv_llm_prompt_tokens_total", "Prompt tokens processed.", labels, registry=registry
        )
        self.completion_tokens = Counter(
            "uv_llm_completion_tokens_total", "Completion tokens generated.", labels, registry=registry
        )
        self.generations = Counter(
            "uv_llm_generations_total", "Generations by how they ended.", ["service", "finish_reason"],
            registry=registry,
        )
        self.ttft = Histogram(
            "uv_llm_time_to_first_token_seconds",
            "From request arrival to the first generated text (queue wait included).",
            labels, buckets=TTFT_BUCKETS, registry=registry,
        )
        self.rate = Histogram(
            "uv_llm_tokens_per_second", "Decode speed of a generation (after its first token).",
            labels, buckets=RATE_BUCKETS, registry=registry,
        )
        self.queue_depth = Gauge(
            "uv_llm_queue_depth", "Requests waiting for a generation slot.", labels, registry=registry
        )
        self.running = Gauge(
            "uv_llm_generations_running", "Generations holding a slot now.", labels, registry=registry
        )
        for metric in (self.prompt_tokens, self.completion_tokens, self.ttft, self.rate, self.queue_depth,
                       self.running):
            metric.labels(self.service)
        for reason in get_args(FinishReason):
            self.generations.labels(self.service, reason)

    def slots(self, waiting: int, running: int) -> None:
        self.queue_depth.labels(self.service).set(waiting)
        self.running.labels(self.service).set(running)

    def finished(self, finish: Finish, ttft_s: float | None, tokens_per_s: float) -> None:
        s = self.service
        self.prompt_tokens.labels(s).inc(finish.prompt_tokens)
        self.completion_tokens.labels(s).inc(finish.completion_tokens)
        self.generations.labels(s, finish.reason).inc()
        if ttft_s is not None:
            self.ttft.labels(s).observe(ttft_s)
        if tokens_per_s > 0:
            self.rate.labels(s).observe(tokens_per_s)
