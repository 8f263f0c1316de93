"""A real Prometheus scraping a real stack through monitoring/prometheus.yml.

One scenario (module fixture), then checks on what Prometheus saw:

1. main.py with the real STT, TTS and LLM services; Prometheus on a free loopback port, scraping
   every second with the config ``scripts/start_monitoring.sh config`` renders for that main
   (targets from main's http_sd endpoint, the shipped alert rules loaded);
2. conversation turns: a typed REST turn, a spoken REST upload, a spoken question streamed in
   real time over /ws/voice, a /ws/voice reply cut by a ``kill -9`` of the LLM, a REST turn sent
   right after the kill (the hub falls back and retries), and a REST turn once the supervisor
   has the LLM RUNNING again;
3. Prometheus has scraped all of it.

Then: every target is up (the LLM's at its new port), every dashboard query and every alert
rule's measure returns a finite value (the key panels, a value above 0: a series alone proves
nothing, since every series starts at 0 and an unobserved histogram's quantile is NaN), with an
explicit allowlist of queries this scenario cannot feed; ``promtool check metrics`` is clean on
every target, and the restart shows in ultravox_service_restarts_total.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.helpers.prometheus import (
    APT_HINT,
    START_MONITORING,
    PrometheusApi,
    PrometheusProcess,
    alert_rules,
    dashboard_exprs,
    measure,
    render_config,
    running_prometheus,
    substitute,
    tool,
)
from tests.helpers.speech import convert, speech_bytes
from tests.helpers.stack import MainProcess, free_port, make_config_dir, pid_alive, running_main, stack_env
from tests.helpers.voice_client import VoiceClient, silence

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

CONV = "/api/orchestrator/conversation"
QUESTION = "What is the capital of France?"
LONG_ASK = "Tell me about the history of Rome in great detail."
COMPONENTS = {"main", "stt", "tts", "llm"}
TURN_S = 240.0
V2V_P95 = "histogram_quantile(0.95, sum by (le) (rate(ultravox_voice_to_voice_seconds_bucket[5m])))"


@dataclass
class Run:
    main: MainProcess
    prom: PrometheusProcess
    llm_before: dict[str, Any]
    llm_after: dict[str, Any]
    outcomes: dict[str, str]


async def service(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    row: dict[str, Any] = (await http.get(f"/services/{name}")).json()
    return row


async def rest_turn(http: httpx.AsyncClient, session: str, message: str) -> dict[str, Any]:
    r = await http.post(CONV, json={"session_id": session, "message": message, "audio": "none"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def converse(main: MainProcess) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """The turns of the scenario; returns the LLM's status before the kill and after its restart."""
    outcomes: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=main.url, timeout=httpx.Timeout(TURN_S, connect=10)) as http:
        outcomes["rest text"] = (await rest_turn(http, "prom-rest", QUESTION))["outcome"]
        r = await http.post(f"{CONV}/audio", files={"file": ("q.wav", speech_bytes(QUESTION), "audio/wav")},
                            data={"session_id": "prom-spoken"})
        assert r.status_code == 200, r.text
        assert r.json()["latency"]["voice_to_voice_s"] > 0, r.json()
        outcomes["rest spoken"] = r.json()["outcome"]

        before = await service(http, "llm")
        async with VoiceClient.open(main) as voice:
            voice.speak(silence(0.3) + convert(speech_bytes(QUESTION), 16000, 1).data)
            spoken = await voice.wait("turn_complete", timeout=TURN_S)
            outcomes["ws spoken"] = spoken["outcome"]
            mark = len(voice.items)
            await voice.send_json({"type": "text", "text": LONG_ASK})
            await voice.wait("llm_text", since=mark, timeout=TURN_S)
            os.kill(before["pid"], signal.SIGKILL)
            # At once, while no new LLM process listens yet (it takes seconds to start): the hub's
            # gRPC, msgpack and JSON attempts are refused, so it falls back and retries.
            while_down = asyncio.create_task(rest_turn(http, "prom-down", QUESTION))
            cut = await voice.wait("turn_complete", since=mark, timeout=TURN_S)
            assert cut["outcome"] == "degraded" and cut["degraded"] == "llm", cut
            outcomes["ws crash"] = cut["outcome"]
            outcomes["rest while llm down"] = (await while_down)["outcome"]

        deadline = time.monotonic() + 300
        while (after := await service(http, "llm"))["state"] != "RUNNING" or after["pid"] == before["pid"]:
            assert time.monotonic() < deadline, f"the supervisor did not restart the LLM: {after}"
            await asyncio.sleep(0.5)
        outcomes["rest after restart"] = (await rest_turn(http, "prom-after", QUESTION))["outcome"]
    return before, after, outcomes


def wait_scraped(prom: PrometheusProcess, main: MainProcess, llm_port: int) -> None:
    """Until Prometheus holds every target up (the LLM at its new port) and main's latest counts."""
    turns = sum(float(line.split()[-1]) for line in httpx.get(f"{main.url}/metrics", timeout=10).text.splitlines()
                if line.startswith("ultravox_turns_total{"))

    def caught_up() -> bool:
        targets = prom.targets()
        up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
        llm_urls = [t["scrapeUrl"] for t in targets if t["labels"]["instance"] == "llm"]
        seen = prom.query("sum(ultravox_turns_total)")
        # three samples of the restarted LLM's counters, so rate() over them has a value
        fresh = prom.query("min(count_over_time(uv_llm_completion_tokens_total[15s]))")
        return (up == COMPONENTS and llm_urls == [f"http://127.0.0.1:{llm_port}/metrics"]
                and bool(seen) and float(seen[0]["value"][1]) >= turns
                and bool(fresh) and float(fresh[0]["value"][1]) >= 3)

    prom.wait_for(caught_up, 120, "caught up with the stack")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if tool("prometheus") is None:
        pytest.skip(f"prometheus is missing: {APT_HINT}")
    tmp = tmp_path_factory.mktemp("prometheus-scrape")
    cfg = make_config_dir(tmp / "config", lambda d: d["gateway"]["auth"].update(
        rate_limits={"per_minute": 1000, "per_hour": 0}))
    with running_main(tmp / "var", stack_env(tmp / "var", cfg), "prometheus_scrape") as main:
        config = render_config(main.url, scrape_interval="1s", alertmanager=f"127.0.0.1:{free_port()}")
        with running_prometheus(tmp / "prometheus", config) as prom:
            prom.wait_for(lambda: {t["labels"]["instance"] for t in prom.targets() if t["health"] == "up"}
                          == COMPONENTS, 120, "scraping main and every service")
            before, after, outcomes = asyncio.run(converse(main))
            wait_scraped(prom, main, after["http_port"])
            yield Run(main, prom, before, after, outcomes)


def test_the_turns_went_as_planned(run: Run) -> None:
    assert run.outcomes["rest text"] == run.outcomes["rest spoken"] == run.outcomes["ws spoken"] == "ok"
    assert run.outcomes["ws crash"] == "degraded"
    assert run.outcomes["rest after restart"] == "ok", run.outcomes


def test_every_target_is_up_with_its_labels(run: Run) -> None:
    targets = {t["labels"]["instance"]: t for t in run.prom.targets()}
    assert set(targets) == COMPONENTS
    for name, t in targets.items():
        assert t["health"] == "up", (name, t["lastError"])
        assert t["labels"]["job"] == "ultravox" and t["labels"]["component"] == name
        assert t["labels"]["role"] == ("gateway" if name == "main" else name)
    info = run.prom.query("ultravox_build_info")
    assert len(info) == 1 and info[0]["metric"]["profile"]
    assert {t["labels"]["profile"] for t in targets.values()} == {info[0]["metric"]["profile"]}
    # discovery followed the restart: the LLM is scraped where its new process listens
    assert run.llm_after["pid"] != run.llm_before["pid"]
    assert targets["llm"]["scrapeUrl"] == f"http://127.0.0.1:{run.llm_after['http_port']}/metrics"


def test_promtool_check_metrics_is_clean_on_every_target(run: Run) -> None:
    promtool = tool("promtool")
    assert promtool is not None
    for t in run.prom.targets():
        exposition = httpx.get(t["scrapeUrl"], timeout=10).text
        r = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
        assert r.returncode == 0 and not r.stdout.strip(), f"{t['scrapeUrl']}:\n{r.stdout}{r.stderr}"


def test_start_monitoring_sh_scrapes_the_stack_and_stops(run: Run, tmp_path: Path) -> None:
    """The operator's path: the script's Prometheus finds every target up and its Alertmanager."""
    script = str(START_MONITORING)
    env = {**os.environ, "UV_MONITORING_DIR": str(tmp_path), "PROMETHEUS_PORT": str(free_port()),
           "ALERTMANAGER_PORT": str(free_port()), "GRAFANA_PORT": str(free_port())}
    started = subprocess.run(["bash", script, "start", "--main", run.main.url], env=env, capture_output=True,
                             text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"Prometheus:   http://127.0.0.1:{env['PROMETHEUS_PORT']}" in started.stdout
        pids = {name: int((tmp_path / f"{name}.pid").read_text()) for name in ("prometheus", "alertmanager")}
        prom = PrometheusApi(f"http://127.0.0.1:{env['PROMETHEUS_PORT']}", tmp_path / "prometheus.log")
        prom.wait_for(lambda: {t["labels"]["instance"] for t in prom.targets() if t["health"] == "up"}
                      == COMPONENTS, 120, "scraping main and every service")
        prom.wait_for(lambda: [a["url"] for a in prom.api("alertmanagers")["activeAlertmanagers"]]
                      == [f"http://127.0.0.1:{env['ALERTMANAGER_PORT']}/api/v2/alerts"], 60, "sending to Alertmanager")
        status = subprocess.run(["bash", script, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.stdout.count(" up ") == len(COMPONENTS), status.stdout
    finally:
        stopped = subprocess.run(["bash", script, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not list(tmp_path.glob("*.pid"))


# Grafana's $__rate_interval grows with the dashboard's range; 10m is what a range showing this
# whole scenario (a few minutes of turns, then the LLM's restart) gives, so every panel covers it.
SCENARIO_BUILTINS = {"__rate_interval": "10m", "__interval": "15s", "__range": "1h"}

# Key panels: after a conversation they must show a value above 0, not just a (zero) series.
MUST_BE_POSITIVE = {
    "ultravox_voice_to_voice_seconds": "voice-to-voice percentiles and heatmap",
    "ultravox_turn_stage_seconds": "the stage breakdown",
    "uv_llm_prompt_tokens_total": "LLM tokens",
    "uv_llm_completion_tokens_total": "LLM tokens",
    "uv_stt_audio_seconds_total": "STT audio seconds in",
    "uv_tts_audio_seconds_total": "TTS audio seconds out",
}

# Queries (by source) that may legitimately have no finite value in this scenario, with why.
# Empty: the scenario feeds every panel and alert measure (an admitted turn observes its wait,
# 0 s included; the crash feeds the failure series). An entry whose query does return a finite
# value is reported too, so the list cannot go stale.
MAY_BE_NAN: dict[str, str] = {}


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(r["value"][1]) for r in result]
    return [v for v in values if math.isfinite(v)]


def failures_of(prom: PrometheusApi, exprs: list[tuple[str, str]]) -> list[str]:
    """Each query must parse, return a series and at least one finite value (unless allowlisted in
    MAY_BE_NAN), and a value above 0 when it reads a MUST_BE_POSITIVE metric."""
    bad = []
    for source, expr in exprs:
        try:
            result = prom.query(expr)
        except AssertionError as e:
            bad.append(f"{source}: {expr}\n  error: {e}")
            continue
        values = finite_values(result)
        shown = [r["value"][1] for r in result][:6]
        if not result:
            bad.append(f"{source}: {expr}\n  no series")
        elif not values and source not in MAY_BE_NAN:
            bad.append(f"{source}: {expr}\n  no finite value: {shown}")
        elif values and source in MAY_BE_NAN:
            bad.append(f"{source}: {expr}\n  allowlisted in MAY_BE_NAN but has data ({shown}): remove the entry")
        elif (key := next((m for m in MUST_BE_POSITIVE if m in expr), None)) and not any(v > 0 for v in values):
            bad.append(f"{source}: {expr}\n  {MUST_BE_POSITIVE[key]} must be > 0 after the conversation: {shown}")
    return bad


def test_every_dashboard_query_returns_data(run: Run) -> None:
    exprs = [(e.source, substitute(e.expr, SCENARIO_BUILTINS)) for e in dashboard_exprs()]
    assert len(exprs) > 60
    assert set(MAY_BE_NAN) <= {source for source, _ in exprs}, "a stale MAY_BE_NAN entry"
    assert sum(any(m in expr for m in MUST_BE_POSITIVE) for _, expr in exprs) >= 10  # the key panels are there
    bad = failures_of(run.prom, exprs)
    assert not bad, f"{len(bad)} of {len(exprs)} dashboard queries:\n" + "\n".join(bad)


def test_failures_of_refuses_nan_zero_and_empty_results() -> None:
    """The check above cannot pass on zeros: a fake Prometheus answering what a silent stack would."""

    class Silent(PrometheusApi):
        def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
            self.answers = answers

        def query(self, expr: str) -> list[dict[str, Any]]:
            return self.answers[expr]

    nan, zero = [{"metric": {}, "value": [0, "NaN"]}], [{"metric": {}, "value": [0, "0"]}]
    prom = Silent({"a": nan, "b": [], "ultravox_voice_to_voice_seconds_count": zero, "c": zero})
    bad = failures_of(prom, [("s1", "a"), ("s2", "b"), ("s3", "ultravox_voice_to_voice_seconds_count"), ("s4", "c")])
    assert [b.split(":")[0] for b in bad] == ["s1", "s2", "s3"]
    MAY_BE_NAN.update({"s1": "test", "s4": "test"})
    try:  # an allowlisted NaN passes; an allowlisted query with data is a stale entry
        assert [b.split(":")[0] for b in failures_of(prom, [("s1", "a"), ("s4", "c")])] == ["s4"]
    finally:
        MAY_BE_NAN.clear()


def test_every_alert_rules_measure_returns_data_and_the_rule_evaluates(run: Run) -> None:
    rules = alert_rules()
    bad = failures_of(run.prom, [(r["alert"], measure(str(r["expr"]))) for r in rules])
    assert not bad, "\n".join(bad)
    for r in rules:
        run.prom.query(str(r["expr"]))  # the whole rule runs (it may or may not hold now)
    groups = run.prom.api("rules")["groups"]
    health = {rule["name"]: rule["health"] for g in groups for rule in g["rules"]}
    assert set(health) == {r["alert"] for r in rules} and set(health.values()) == {"ok"}, health


def test_the_crash_shows_in_the_restarts_metric(run: Run) -> None:
    restarts = run.prom.query('ultravox_service_restarts_total{service="llm"}')
    assert [r["metric"]["instance"] for r in restarts] == ["main"]
    assert float(restarts[0]["value"][1]) >= run.llm_before["restarts"] + 1
    others = run.prom.query('ultravox_service_restarts_total{service=~"stt|tts"}')
    assert others and all(float(r["value"][1]) == 0 for r in others)
    errors = run.prom.query('ultravox_errors_total{source="supervisor", type="EXITED"}')
    assert errors and float(errors[0]["value"][1]) >= 1


def test_the_turn_while_the_llm_was_down_fell_back_and_retried(run: Run) -> None:
    fallbacks = run.prom.query('sum by (from_protocol, to_protocol) (ultravox_hub_fallbacks_total{service="llm"})')
    retries = run.prom.query('ultravox_hub_retries_total{service="llm"}')
    assert fallbacks and retries and float(retries[0]["value"][1]) >= 1, (fallbacks, retries)


def test_voice_to_voice_p95_is_measured(run: Run) -> None:
    result = run.prom.query(V2V_P95)
    assert len(result) == 1
    p95 = float(result[0]["value"][1])
    count = float(run.prom.query("sum(ultravox_voice_to_voice_seconds_count)")[0]["value"][1])
    print(f"\n{V2V_P95}\n  = {p95:.3f} s over {count:.0f} spoken turns; full result: {json.dumps(result)}"
          f"\n  turn outcomes: {run.outcomes}")
    keep = Path(os.environ.get("UV_TEST_LOG_DIR", Path(__file__).resolve().parents[2] / "var" / "test-logs"))
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "prometheus-voice-to-voice-p95.json").write_text(json.dumps({"query": V2V_P95, "result": result}))
    assert count >= 2 and math.isfinite(p95) and p95 > 0


class _KeyedDiscovery(http.server.BaseHTTPRequestHandler):
    """Main's two routes Prometheus uses: http_sd behind the API key, /metrics open."""

    key: ClassVar[str] = ""
    port: ClassVar[int] = 0
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path == "/api/monitoring/targets":
            given = self.headers.get("authorization", "")
            self.seen.append(given)
            if given != f"Bearer {self.key}":
                return self._reply(401, b'{"error": {"code": "UNAUTHENTICATED"}}')
            body = [{"targets": [f"127.0.0.1:{self.port}"], "labels": {"component": "main", "role": "gateway"}}]
            return self._reply(200, json.dumps(body).encode())
        if self.path == "/metrics":
            return self._reply(200, b"# TYPE keyed_up gauge\nkeyed_up 1\n")
        return self._reply(404, b"")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/plain" if self.path == "/metrics" else "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_with_an_api_key_the_rendered_config_discovers_through_it(tmp_path: Path) -> None:
    """A real Prometheus on the config start_monitoring.sh renders with UV_API_KEY set sends the key
    on discovery (a main with a key answers 401 without it) and scrapes the open /metrics."""
    if tool("prometheus") is None:
        pytest.skip(f"prometheus is missing: {APT_HINT}")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeyedDiscovery)
    _KeyedDiscovery.key, _KeyedDiscovery.port, _KeyedDiscovery.seen = "short-K3y", server.server_port, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = render_config(f"http://127.0.0.1:{server.server_port}", scrape_interval="1s",
                               alertmanager=f"127.0.0.1:{free_port()}", api_key="short-K3y",
                               monitoring_dir=tmp_path / "mon")
        assert "short-K3y" not in config
        with running_prometheus(tmp_path / "prometheus", config) as prom:
            prom.wait_for(lambda: [t["health"] for t in prom.targets()] == ["up"], 60, "scraping the keyed main")
            assert prom.query("keyed_up") and _KeyedDiscovery.seen
            assert set(_KeyedDiscovery.seen) == {"Bearer short-K3y"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
