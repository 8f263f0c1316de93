"""Build the Ultravox Grafana dashboards into monitoring/grafana/dashboards/*.json.

    python3 monitoring/grafana/build.py            # rewrite the committed JSON
    python3 monitoring/grafana/build.py --check    # exit 1 if the committed JSON differs
    python3 monitoring/grafana/build.py --out DIR  # write elsewhere

Five dashboards: Overview, Latency (stages and voice-to-voice percentiles), Services (states,
restarts, RSS, CPU, what each engine does), Hub (protocol mix, fallbacks, breaker) and Sessions.
Every query uses the ``${datasource}`` variable and ``$__rate_interval`` (or ``$__range`` for
"over the dashboard's time range" numbers). tests/unit/test_monitoring_config.py checks the
committed files equal this output and that every query parses; tests/e2e/test_prometheus_scrape.py
checks every query returns data from a real Prometheus scraping a real stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from panels import (
    Q,
    bargauge,
    dashboard,
    heatmap,
    query_variable,
    row,
    stat,
    state_timeline,
    timeseries,
)

OUT = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"
RANGE = "$__range"
SVC = 'service=~"$service"'

# core.managers.supervisor.State, in lifecycle order (a unit test keeps this list in step).
SERVICE_STATES = ("STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "DRAINING")
STATE_COLORS = ("text", "blue", "green", "orange", "purple", "yellow", "red", "light-blue")
BREAKER = {0: ("closed", "green"), 1: ("half-open", "orange"), 2: ("open", "red")}
V2V_THRESHOLD = 'max(ultravox_alert_threshold{alert="VoiceToVoiceP95High"})'
ERROR_THRESHOLD = 'max(ultravox_alert_threshold{alert="HighErrorRate"})'


def quantile(q: float, metric: str, by: str = "", window: str = RATE, selector: str = "") -> str:
    """``histogram_quantile`` of ``metric``'s buckets, summed by ``by`` (plus ``le``)."""
    labels = f"{by}, le" if by else "le"
    sel = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{sel}[{window}])))"


def per_service(metric: str, fn: str = "rate", window: str = RATE) -> str:
    """``sum by (service) (fn(metric{service=~"$service"}[window]))``."""
    return f"sum by (service) ({fn}({metric}{{{SVC}}}[{window}]))"


def service_state_code(selector: str = "") -> str:
    """Each service's state as a number (its index in SERVICE_STATES), for state timelines."""
    extra = f", {selector}" if selector else ""
    terms = " or ".join(
        f'ultravox_service_state{{state="{s}"{extra}}} * {i}' for i, s in enumerate(SERVICE_STATES)
    )
    return f"max by (service) ({terms})"


def service_states() -> dict[int, tuple[str, str]]:
    return {i: (s, c) for i, (s, c) in enumerate(zip(SERVICE_STATES, STATE_COLORS, strict=True))}


def hub_failure_share(by: str = "service", window: str = RATE, selector: str = "") -> str:
    """Failed hub calls / all calls, as in the HighErrorRate alert (0, not absent, with no failure).

    Calls, not attempts: a call that failed over gRPC and then succeeded over msgpack is no
    failure. Every call ends in one ``ok`` or ``cancelled`` attempt of ultravox_hub_calls_total,
    or in one ultravox_hub_failed_calls_total; client mistakes (invalid_argument) are calls but
    not failures.
    """
    sel = f", {selector}" if selector else ""
    bare = f"{{{selector}}}" if selector else ""
    zero = f"sum by ({by}) (rate(ultravox_hub_calls_total{bare}[{window}])) * 0"
    not_client = f'code!~"INVALID_ARGUMENT|CANCELLED"{sel}'
    failed = f"sum by ({by}) (rate(ultravox_hub_failed_calls_total{{{not_client}}}[{window}]))"
    ended = f'sum by ({by}) (rate(ultravox_hub_calls_total{{outcome=~"ok|cancelled"{sel}}}[{window}]))'
    all_failed = f"sum by ({by}) (rate(ultravox_hub_failed_calls_total{bare}[{window}]))"
    return f"({failed} or {zero}) / ({ended} + ({all_failed} or {zero}))"


def attempt_failure_share(by: str = "service, protocol", window: str = RATE, selector: str = "") -> str:
    """Failed transport attempts / all attempts, per protocol: how healthy each path is, fallbacks aside."""
    sel = f", {selector}" if selector else ""
    bare = f"{{{selector}}}" if selector else ""
    failed = f'ultravox_hub_calls_total{{outcome!~"ok|cancelled|invalid_argument"{sel}}}'
    total = f"sum by ({by}) (rate(ultravox_hub_calls_total{bare}[{window}]))"
    return f"(sum by ({by}) (rate({failed}[{window}])) or {total} * 0) / {total}"


def overview() -> dict[str, Any]:
    return dashboard("ultravox-overview", "Ultravox / Overview",
                     "Is the stack healthy and answering fast? Services, sessions, turns, latency, errors.", [
        row("Now"),
        stat("Services running", Q("sum(ultravox_service_up)", "running"),
             Q("count(ultravox_service_up)", "configured"), graph=False,
             description="Services RUNNING (model loaded, health SERVING), of those main supervises."),
        stat("Active sessions", Q("sum(ultravox_sessions_active)")),
        stat("Turns in flight", Q("sum(ultravox_turns_in_flight)"),
             description="Turns holding an admission slot now (capacity: conversation.max_concurrent_turns)."),
        stat("Voice-to-voice p95", Q(quantile(0.95, "ultravox_voice_to_voice_seconds", window=RANGE), "p95"),
             Q(V2V_THRESHOLD, "alert above"), unit="s", decimals=2, graph=False,
             description="Over the dashboard's time range; the alert threshold comes from config monitoring."),
        stat("Firing alerts", Q('count(ALERTS{alertstate="firing"}) or vector(0)'), graph=False,
             thresholds=[(None, "green"), (1, "red")]),
        stat("Build", Q("ultravox_build_info",
                        "{{version}} · {{profile}} · {{stt_engine}} / {{llm_engine}} / {{tts_engine}}"),
             text_mode="name", graph=False, description="Version, profile and engines of this main."),
        row("Turns"),
        timeseries("Turns by outcome", Q(f"sum by (outcome) (rate(ultravox_turns_total[{RATE}]))", "{{outcome}}"),
                   unit="ops", stack=True, w=8),
        timeseries("Voice-to-voice latency",
                   Q(quantile(0.5, "ultravox_voice_to_voice_seconds"), "p50"),
                   Q(quantile(0.95, "ultravox_voice_to_voice_seconds"), "p95"),
                   Q(V2V_THRESHOLD, "p95 alert threshold"), unit="s", w=8),
        timeseries("Errors by source", Q(f"sum by (source) (rate(ultravox_errors_total[{RATE}]))", "{{source}}"),
                   unit="ops", w=8, description="ultravox_errors_total: one failure can count under two sources."),
        row("Services"),
        state_timeline("Service states", Q(service_state_code(), "{{service}}"), states=service_states(), w=16, h=8),
        timeseries("Hub call failure share", Q(hub_failure_share(), "{{service}}"),
                   Q(ERROR_THRESHOLD, "alert threshold"), unit="percentunit", w=8, maximum=None,
                   description="Calls that failed after fallbacks and retries, of all calls (HighErrorRate)."),
    ])


def latency() -> dict[str, Any]:
    v2v = "ultravox_voice_to_voice_seconds"
    return dashboard("ultravox-latency", "Ultravox / Latency",
                     "Where a turn's time goes: voice-to-voice percentiles, each stage, each engine.", [
        row("Voice to voice (end of the user's speech to the first reply audio sent)"),
        timeseries("Voice-to-voice p50 / p95 / p99", Q(quantile(0.5, v2v), "p50"), Q(quantile(0.95, v2v), "p95"),
                   Q(quantile(0.99, v2v), "p99"), Q(V2V_THRESHOLD, "p95 alert threshold"), unit="s", w=16),
        stat("Over the range", Q(quantile(0.5, v2v, window=RANGE), "p50"),
             Q(quantile(0.95, v2v, window=RANGE), "p95"),
             Q(f"sum(increase({v2v}_count[{RANGE}]))", "turns", unit="short"),
             unit="s", decimals=2, graph=False, w=8, h=8),
        heatmap("Voice-to-voice distribution", Q(f"sum by (le) (increase({v2v}_bucket[{RATE}]))")),
        row("Turn stages"),
        timeseries("Stage p95", Q(quantile(0.95, "ultravox_turn_stage_seconds", "stage"), "{{stage}}"), unit="s"),
        bargauge("Mean stage duration over the range",
                 Q(f'sum by (stage) (increase(ultravox_turn_stage_seconds_sum{{stage!="total"}}[{RANGE}]))'
                   f' / sum by (stage) (increase(ultravox_turn_stage_seconds_count{{stage!="total"}}[{RANGE}]))',
                   "{{stage}}"), unit="s", decimals=3,
                 description="vad, stt, llm_first_token, first_chunk, tts_first_audio, send: the stages in order."),
        row("Engines"),
        timeseries("STT real-time factor", Q(quantile(0.5, "uv_stt_real_time_factor", "service"), "{{service}} p50"),
                   Q(quantile(0.95, "uv_stt_real_time_factor", "service"), "{{service}} p95"), w=8,
                   description="Processing time / audio duration per transcription; below 1 is faster than real time."),
        timeseries("STT speech end to final p95",
                   Q(quantile(0.95, "uv_stt_final_latency_seconds", "service"), "{{service}}"), unit="s", w=8),
        timeseries("LLM time to first token",
                   Q(quantile(0.5, "uv_llm_time_to_first_token_seconds", "service"), "{{service}} p50"),
                   Q(quantile(0.95, "uv_llm_time_to_first_token_seconds", "service"), "{{service}} p95"),
                   unit="s", w=8),
        timeseries("LLM decode speed p50", Q(quantile(0.5, "uv_llm_tokens_per_second", "service"), "{{service}}"),
                   unit="short", w=8, description="Tokens per second after the first token, per generation."),
        timeseries("TTS time to first audio p95",
                   Q(quantile(0.95, "uv_tts_time_to_first_audio_seconds", "service, engine"),
                     "{{service}} {{engine}}"), unit="s", w=8),
        timeseries("TTS real-time factor p50",
                   Q(quantile(0.5, "uv_tts_real_time_factor", "service, engine"), "{{service}} {{engine}}"), w=8),
        row("Hub"),
        timeseries("Hub call latency p95 by method",
                   Q(quantile(0.95, "ultravox_hub_call_duration_seconds", "service, method"),
                     "{{service}} {{method}}"), unit="s", w=24,
                   description="Successful attempts; for a stream, the whole stream."),
    ])


def services() -> dict[str, Any]:
    var = query_variable("service", "Service", "ultravox_service_up", "service")
    return dashboard("ultravox-services", "Ultravox / Services",
                     "The supervised services: state, restarts, memory, CPU, and what each engine is doing.", [
        row("Supervisor"),
        state_timeline("State", Q(service_state_code(SVC), "{{service}}"), states=service_states()),
        bargauge("Restarts over the range",
                 Q(per_service("ultravox_service_restarts_total", "increase", RANGE), "{{service}}"),
                 decimals=0, w=8, thresholds=[(None, "green"), (1, "orange"), (3, "red")],
                 description="Automatic restarts after crashes or failed health checks (ServiceFlapping: 3 in 10m)."),
        bargauge("Uptime", Q(f"max by (service) (ultravox_service_uptime_seconds{{{SVC}}})", "{{service}}"),
                 unit="s", w=8),
        timeseries("Supervisor errors by type",
                   Q(f'sum by (type) (increase(ultravox_errors_total{{source="supervisor"}}[{RATE}]))', "{{type}}"),
                   w=8, description="EXITED (crashed), STARTUP_FAILED, KILLED (liveness), FLAPPING (gave up)."),
        timeseries("Resident memory",
                   Q(f"sum by (service) (ultravox_service_resident_memory_bytes{{{SVC}}})", "{{service}}"),
                   unit="bytes", w=8),
        timeseries("CPU", Q(per_service("ultravox_service_cpu_seconds_total"), "{{service}}"), unit="percentunit",
                   w=8, description="CPU seconds per second of each service's process tree; 100% is one core."),
        timeseries("Health-check failures",
                   Q(per_service("ultravox_service_health_check_failures_total", "increase"), "{{service}}"), w=8),
        row("Calls served (as the services see them)"),
        timeseries("Calls by method",
                   Q(f"sum by (service, method) (rate(uv_service_calls_total{{{SVC}}}[{RATE}]))",
                     "{{service}} {{method}}"), unit="ops", w=6),
        timeseries("Latency p95 by method",
                   Q(quantile(0.95, "uv_service_call_duration_seconds", "service, method", selector=SVC),
                     "{{service}} {{method}}"), unit="s", w=6),
        timeseries("Failed calls by code",
                   Q(f"sum by (service, code) (rate(uv_service_errors_total{{{SVC}}}[{RATE}]))",
                     "{{service}} {{code}}"), unit="ops", w=6,
                   description="Calls the service refused, rejected or failed, by status code."),
        timeseries("In flight", Q(f"sum by (service) (uv_service_calls_in_flight{{{SVC}}})", "{{service}}"), w=6),
        row("Models and engines"),
        bargauge("Model load time", Q(f"max by (service) (uv_service_model_load_seconds{{{SVC}}})", "{{service}}"),
                 unit="s", w=6),
        timeseries("Model loaded", Q(f"max by (service) (uv_service_ready{{{SVC}}})", "{{service}}"), w=6,
                   maximum=1, description="1 once the service's model is loaded and it serves."),
        timeseries("STT audio transcribed", Q(per_service("uv_stt_audio_seconds_total"), "{{service}}"), w=6,
                   description="Seconds of audio per second: 1 means one real-time stream's worth."),
        timeseries("STT streams open", Q(f"sum by (service) (uv_stt_streams_active{{{SVC}}})", "{{service}}"), w=6),
        timeseries("TTS characters in, audio out",
                   Q(per_service("uv_tts_characters_total"), "{{service}} characters/s"),
                   Q(per_service("uv_tts_audio_seconds_total"), "{{service}} audio s/s"), w=8),
        timeseries("LLM tokens", Q(per_service("uv_llm_prompt_tokens_total"), "{{service}} prompt"),
                   Q(per_service("uv_llm_completion_tokens_total"), "{{service}} completion"),
                   unit="short", w=8, description="Tokens per second."),
        timeseries("LLM queue", Q(f"sum by (service) (uv_llm_queue_depth{{{SVC}}})", "{{service}} waiting"),
                   Q(f"sum by (service) (uv_llm_generations_running{{{SVC}}})", "{{service}} running"), w=8),
    ], variables=[var])


def hub() -> dict[str, Any]:
    var = query_variable("service", "Service", "ultravox_hub_breaker_state", "service")
    calls = f"ultravox_hub_calls_total{{{SVC}}}"
    return dashboard("ultravox-hub", "Ultravox / Hub",
                     "Main's calls to the services: gRPC, then HTTP+msgpack, then HTTP+JSON; fallbacks and breakers.", [
        row("Breakers and failures"),
        state_timeline("Circuit breaker", Q(f"max by (service) (ultravox_hub_breaker_state{{{SVC}}})", "{{service}}"),
                       states=BREAKER, w=16, h=8),
        timeseries("Call failure share", Q(hub_failure_share(selector=SVC), "{{service}}"),
                   Q(ERROR_THRESHOLD, "alert threshold"), unit="percentunit", w=8, maximum=None,
                   description="Calls that failed after fallbacks and retries, of all calls (HighErrorRate)."),
        row("Protocols"),
        timeseries("Attempts by protocol", Q(f"sum by (protocol) (rate({calls}[{RATE}]))", "{{protocol}}"),
                   unit="ops", stack=True, w=8),
        bargauge("Protocol mix over the range",
                 Q(f'sum by (protocol) (increase(ultravox_hub_calls_total{{outcome="ok", {SVC}}}[{RANGE}]))',
                   "{{protocol}}"), decimals=0, w=8, description="Successful attempts per transport."),
        timeseries("Attempt failure share by protocol",
                   Q(attempt_failure_share(selector=SVC), "{{service}} {{protocol}}"),
                   unit="percentunit", w=8, maximum=None,
                   description="Failed transport attempts per protocol. A broken gRPC path shows here "
                               "while fallbacks keep the call failure share at 0."),
        timeseries("Attempts by outcome", Q(f"sum by (service, outcome) (rate({calls}[{RATE}]))",
                                            "{{service}} {{outcome}}"), unit="ops", w=8),
        timeseries("Fallbacks", Q(f"sum by (service, from_protocol, to_protocol) "
                                  f"(rate(ultravox_hub_fallbacks_total{{{SVC}}}[{RATE}]))",
                                  "{{service}} {{from_protocol}} → {{to_protocol}}"), unit="ops", w=8,
                   description="Calls moved to the next protocol after a transport failure."),
        timeseries("Retries", Q(per_service("ultravox_hub_retries_total"),
                                "{{service}}"), unit="ops", w=8,
                   description="New rounds after every transport of a call failed transiently."),
        timeseries("Errors after fallbacks and retries",
                   Q(f'sum by (type) (rate(ultravox_errors_total{{source="hub"}}[{RATE}]))', "{{type}}"),
                   unit="ops", w=8),
        row("Latency"),
        timeseries("Latency p95 by protocol",
                   Q(quantile(0.95, "ultravox_hub_call_duration_seconds", "service, protocol", selector=SVC),
                     "{{service}} {{protocol}}"), unit="s"),
        timeseries("Stream time to first message p95",
                   Q(quantile(0.95, "ultravox_hub_stream_first_message_seconds", "service, method", selector=SVC),
                     "{{service}} {{method}}"), unit="s"),
        timeseries("Stream messages", Q(f"sum by (service, method) "
                                        f"(rate(ultravox_hub_stream_messages_total{{{SVC}}}[{RATE}]))",
                                        "{{service}} {{method}}"), unit="ops", w=24),
    ], variables=[var])


def sessions() -> dict[str, Any]:
    def range_count(metric: str) -> str:
        return f"sum(increase({metric}[{RANGE}]))"

    return dashboard("ultravox-sessions", "Ultravox / Sessions",
                     "Sessions, admission control and how turns end.", [
        row("Now and over the range"),
        stat("Active sessions", Q("sum(ultravox_sessions_active)")),
        stat("Created", Q(range_count("ultravox_sessions_created_total")), decimals=0, graph=False),
        stat("Evicted (idle)", Q(range_count("ultravox_sessions_evicted_total")), decimals=0, graph=False),
        stat("Turns refused (admission)", Q(range_count("ultravox_admission_rejections_total")), decimals=0,
             graph=False, thresholds=[(None, "green"), (1, "orange")]),
        stat("Sessions refused (max_sessions)", Q(range_count("ultravox_sessions_rejected_total")), decimals=0,
             graph=False, thresholds=[(None, "green"), (1, "orange")]),
        stat("Rate-limited requests", Q(range_count("ultravox_rate_limited_total")), decimals=0, graph=False,
             thresholds=[(None, "green"), (1, "orange")]),
        row("Sessions"),
        timeseries("Active sessions", Q("sum(ultravox_sessions_active)", "active"), w=8),
        timeseries("Session lifecycle",
                   Q(f"sum(rate(ultravox_sessions_created_total[{RATE}]))", "created"),
                   Q(f"sum(rate(ultravox_sessions_resumed_total[{RATE}]))", "resumed"),
                   Q(f"sum(rate(ultravox_sessions_evicted_total[{RATE}]))", "evicted"),
                   Q(f"sum(rate(ultravox_sessions_rejected_total[{RATE}]))", "refused"), unit="ops", w=16),
        row("Admission"),
        timeseries("Turns in flight and waiting", Q("sum(ultravox_turns_in_flight)", "in flight"),
                   Q("sum(ultravox_turns_waiting)", "waiting"), w=8),
        timeseries("Admission wait p95", Q(quantile(0.95, "ultravox_admission_wait_seconds"), "p95"), unit="s", w=8),
        timeseries("Refused", Q(f"sum(rate(ultravox_admission_rejections_total[{RATE}]))", "admission full (503)"),
                   Q(f"sum(rate(ultravox_rate_limited_total[{RATE}]))", "rate limited (429)"), unit="ops", w=8),
        row("How turns end"),
        timeseries("Turns saved by outcome",
                   Q(f"sum by (outcome) (rate(ultravox_turns_saved_total[{RATE}]))", "{{outcome}}"),
                   unit="ops", stack=True, w=8),
        timeseries("Degraded turns by failed stage",
                   Q(f"sum by (stage) (rate(ultravox_turn_degraded_total[{RATE}]))", "{{stage}}"), unit="ops", w=8,
                   description="STT failed: 'didn't catch that'; LLM failed: fallback phrase; TTS failed: text only."),
        timeseries("Barge-ins", Q(f"sum(rate(ultravox_barge_ins_total[{RATE}]))", "barge-ins"), unit="ops", w=8),
        row("WebRTC"),
        timeseries("WebRTC calls open", Q("sum(ultravox_webrtc_peers_active)", "open"), w=12),
        timeseries("WebRTC calls ended by reason",
                   Q(f"sum by (reason) (rate(ultravox_webrtc_peers_total[{RATE}]))", "{{reason}}"), unit="ops", w=12),
    ])


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview": overview, "latency": latency, "services": services, "hub": hub, "sessions": sessions,
}


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the JSON files")
    ap.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = ap.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = args.out / f"{name}.json"
        text = render(build())
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python3 monitoring/grafana/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
