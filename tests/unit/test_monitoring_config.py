"""monitoring/ without a stack: promtool and amtool accept the config, rules and alert tests;
the dashboards are the builder's output, valid current-schema Grafana JSON, and every PromQL
expression in them and in the alert rules parses.

(tests/e2e/test_prometheus_scrape.py runs the same expressions against a real Prometheus
scraping a real stack.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.managers.supervisor import State
from tests.helpers.prometheus import (
    APT_HINT,
    DASHBOARD_FILES,
    MONITORING,
    RULE_FILES,
    Expr,
    alert_rules,
    check_exprs,
    dashboard_exprs,
    measure,
    render_config,
    rule_exprs,
    split_comparison,
    substitute,
    tool,
)

GRAFANA = MONITORING / "grafana"
BUILD = GRAFANA / "build.py"
ALERTS = {"TargetDown", "ServiceDown", "ServiceFlapping", "CircuitBreakerOpen", "VoiceToVoiceP95High",
          "HighErrorRate", "AdmissionRejections"}
DASHBOARD_UIDS = {"ultravox-overview", "ultravox-latency", "ultravox-services", "ultravox-hub", "ultravox-sessions"}
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline", "bargauge", "heatmap"}


def needs(name: str) -> str:
    path = tool(name)
    if path is None:
        pytest.skip(f"{name} is missing: {APT_HINT}")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=MONITORING)


# ---- Prometheus config, rules, Alertmanager -------------------------------------------------

def test_the_rendered_config_points_at_the_given_main_and_promtool_accepts_it(tmp_path: Path) -> None:
    promtool = needs("promtool")
    text = render_config("http://127.0.0.1:18123", scrape_interval="1s", alertmanager="127.0.0.1:19123")
    cfg = yaml.safe_load(text)
    job = cfg["scrape_configs"][0]
    assert job["http_sd_configs"][0]["url"] == "http://127.0.0.1:18123/api/monitoring/targets"
    assert job["http_sd_configs"][0]["refresh_interval"] == "1s"
    assert cfg["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19123"]
    assert cfg["rule_files"] == [str(MONITORING / "rules" / "*.yml")]
    # everything else is the file itself: rendering only substitutes
    base = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert job["relabel_configs"] == base["scrape_configs"][0]["relabel_configs"]
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    r = run(promtool, "check", "config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in r.stdout + r.stderr


def test_with_an_api_key_discovery_reads_it_from_a_private_file(tmp_path: Path) -> None:
    promtool = needs("promtool")
    key = 'key with "quotes" and #hash'
    text = render_config("http://127.0.0.1:18123", api_key=key, monitoring_dir=tmp_path / "mon")
    job = yaml.safe_load(text)["scrape_configs"][0]
    key_file = tmp_path / "mon" / "api_key"
    assert job["http_sd_configs"][0]["authorization"] == {"type": "Bearer", "credentials_file": str(key_file)}
    assert key not in text  # the key itself never enters the config
    assert key_file.read_text() == key and key_file.stat().st_mode & 0o777 == 0o600
    # main's /metrics is open (core.gateway.app._OPEN_PATHS), services' never take main's key
    assert "authorization" not in job
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    r = run(promtool, "check", "config", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    # without a key: the committed file's comment stays a comment
    plain = yaml.safe_load(render_config("http://127.0.0.1:18123", monitoring_dir=tmp_path / "mon"))
    assert "authorization" not in plain["scrape_configs"][0]["http_sd_configs"][0]


def test_the_default_config_is_the_committed_file() -> None:
    assert render_config("http://127.0.0.1:8080").replace(str(MONITORING) + "/", "") == (
        MONITORING / "prometheus.yml").read_text()


def test_the_config_script_refuses_a_bad_main_url() -> None:
    r = subprocess.run(["bash", str(MONITORING.parent / "scripts" / "start_monitoring.sh"), "config", "--main",
                        "127.0.0.1:8080"], capture_output=True, text=True)
    assert r.returncode == 1 and "--main must be a URL like http://127.0.0.1:8080" in r.stderr


def test_promtool_accepts_the_rules() -> None:
    r = run(needs("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_the_issue_asks_for_exists_with_a_runbook_section() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert set(rules) == ALERTS
    readme = (MONITORING / "README.md").read_text().lower()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"### {name.lower()}" in readme and anchor == name.lower(), name


def test_thresholds_from_config_are_compared_through_the_gauge() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    for name in ("VoiceToVoiceP95High", "HighErrorRate"):
        _, op, threshold = split_comparison(str(rules[name]["expr"]))
        assert op == ">" and f'ultravox_alert_threshold{{alert="{name}"}}' in threshold, name
    assert "histogram_quantile(0.95," in str(rules["VoiceToVoiceP95High"]["expr"])


def test_every_alert_has_a_promtool_unit_test_and_they_pass() -> None:
    promtool = needs("promtool")
    tests = sorted((MONITORING / "tests").glob("*.yml"))
    covered = set()
    for path in tests:
        doc = yaml.safe_load(path.read_text())
        covered |= {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", [])}
        firing = {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
        quiet = {t["alertname"] for case in doc["tests"] for t in case.get("alert_rule_test", [])
                 if not t["exp_alerts"]}
        assert firing and firing == quiet, f"{path.name}: each alert needs firing and not-firing cases"
    assert covered == ALERTS
    r = run(promtool, "test", "rules", *map(str, tests))
    assert r.returncode == 0, r.stdout + r.stderr


def test_service_flapping_threshold_is_tested_exactly_at_and_just_below() -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "ServiceFlapping")
    _, op, threshold = split_comparison(str(rule["expr"]))
    assert (op, threshold) == (">=", "3")
    doc = yaml.safe_load((MONITORING / "tests" / "service_flapping.yml").read_text())
    series = {s["series"]: s["values"] for s in doc["tests"][0]["input_series"]}
    assert series['ultravox_service_restarts_total{job="ultravox", instance="main", service="stt"}'] == "0x9 2x10"
    assert series['ultravox_service_restarts_total{job="ultravox", instance="main", service="llm"}'] == "0x9 3x10"
    at_ten = next(t for t in doc["tests"][0]["alert_rule_test"] if t["eval_time"] == "10m")
    assert [a["exp_labels"]["service"] for a in at_ten["exp_alerts"]] == ["llm"]


def test_amtool_accepts_the_alertmanager_example() -> None:
    r = run(needs("amtool"), "check-config", str(MONITORING / "alertmanager.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    urls = [w["url"] for rcv in cfg["receivers"] for w in rcv.get("webhook_configs", [])]
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls)


# ---- Grafana dashboards ---------------------------------------------------------------------

def test_the_committed_dashboards_are_the_builders_output(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    built = sorted(p.name for p in tmp_path.glob("*.json"))
    assert built == sorted(p.name for p in DASHBOARD_FILES)
    for name in built:
        assert (tmp_path / name).read_text() == (GRAFANA / "dashboards" / name).read_text(), (
            f"{name} is stale: run python3 monitoring/grafana/build.py")
    check = subprocess.run([sys.executable, str(BUILD), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_builder_check_notices_a_stale_file(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path)], check=True)
    (tmp_path / "hub.json").write_text("{}\n")
    r = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path), "--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "hub.json" in r.stderr


def test_the_builders_service_states_follow_the_supervisor() -> None:
    text = (GRAFANA / "dashboards" / "services.json").read_text()
    codes = [f'ultravox_service_state{{state=\\"{s.value}\\"' for s in State]
    assert all(c in text for c in codes), "SERVICE_STATES in build.py is out of step with supervisor State"


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_dashboard_is_current_schema_grafana_json(path: Path) -> None:
    board = load(path)
    assert board["uid"] in DASHBOARD_UIDS and board["title"].startswith("Ultravox / ")
    assert board["schemaVersion"] >= 39 and "ultravox" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = board["panels"]
    assert panels and len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{p['title']} overlaps another panel"
        cells |= area
        if p["type"] == "row":
            continue
        assert p["title"] and p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"] and t["datasource"]["uid"] == "${datasource}" and t["refId"]
            if "$service" in t["expr"]:
                assert "service" in variables, f"{p['title']} uses $service without the variable"
            windows = re.findall(r"\[([^\]]+)\]", t["expr"])
            assert all(w in ("$__rate_interval", "$__range") for w in windows), (
                f"{p['title']}: range windows must be $__rate_interval or $__range, not {windows}")


def test_dashboards_cover_what_the_issue_lists() -> None:
    wanted = {
        "overview": ["ultravox_service_up", "ultravox_turns_total", "ultravox_errors_total",
                     "ultravox_voice_to_voice_seconds_bucket"],
        "latency": ["ultravox_turn_stage_seconds_bucket", "histogram_quantile(0.5, sum by (le) (rate("
                    "ultravox_voice_to_voice", "histogram_quantile(0.95", "histogram_quantile(0.99"],
        "services": ["ultravox_service_state", "ultravox_service_restarts_total",
                     "ultravox_service_resident_memory_bytes", "ultravox_service_cpu_seconds_total"],
        "hub": ["by (protocol)", "ultravox_hub_fallbacks_total", "ultravox_hub_breaker_state",
                # call failure share (HighErrorRate's measure) and attempt failure share per protocol
                "ultravox_hub_failed_calls_total", "by (service, protocol)"],
        "sessions": ["ultravox_sessions_active", "ultravox_sessions_created_total",
                     "ultravox_sessions_evicted_total", "ultravox_admission_rejections_total"],
    }
    exprs = dashboard_exprs()
    for name, needles in wanted.items():
        joined = " ".join(e.expr for e in exprs if e.source.startswith(f"dashboards/{name}.json:"))
        missing = [n for n in needles if n not in joined]
        assert not missing, f"{name}.json lacks {missing}"


def test_provisioning_points_at_the_dashboards_and_a_prometheus_datasource() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ultravox.yml").read_text())
    provider = prov["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "${ULTRAVOX_DASHBOARDS}"


# ---- every PromQL expression parses ---------------------------------------------------------

def test_substitution_of_grafana_variables() -> None:
    assert substitute('rate(x{service=~"$service"}[$__rate_interval])') == 'rate(x{service=~".*"}[1m])'
    assert substitute("increase(x[${__range}]) + y[[service]]") == "increase(x[1h]) + y.*"


def test_split_comparison_takes_the_top_level_operator_only() -> None:
    assert split_comparison('sum by (a) (x{a!="b", c=~"d>e"}) >= on (a) group_left () y') == (
        'sum by (a) (x{a!="b", c=~"d>e"})', ">=", "on (a) group_left () y")
    assert measure("(a or b * 0) / c > 0.5") == "(a or b * 0) / c"
    with pytest.raises(ValueError, match="and/or/unless"):
        split_comparison("a > 1 or b > 2")
    with pytest.raises(ValueError, match="no top-level comparison"):
        split_comparison("rate(x[5m])")


def test_every_dashboard_and_rule_expression_parses(tmp_path: Path) -> None:
    needs("promtool")
    rules = rule_exprs()
    exprs = [*dashboard_exprs(), *rules, *(Expr(f"{e.source} (measure)", measure(e.expr)) for e in rules)]
    assert len(exprs) > 60
    failures = check_exprs(exprs, tmp_path)
    assert not failures, "\n\n".join(f"{src}:\n{err}" for src, err in failures.items())


def test_the_parse_check_catches_a_bad_expression(tmp_path: Path) -> None:
    needs("promtool")
    bad = Expr("test: bad", 'sum by (service (rate(x[$__rate_interval]))')
    good = Expr("test: good", 'sum by (service) (rate(x{service=~"$service"}[$__rate_interval]))')
    assert set(check_exprs([good, bad], tmp_path)) == {"test: bad"}
