"""Prometheus in tests: the shipped config and queries, promtool, and a real Prometheus process.

* ``render_config`` is monitoring/prometheus.yml as ``scripts/start_monitoring.sh config``
  renders it for another main (one config, no copy for tests).
* ``dashboard_exprs`` / ``rule_exprs`` list every PromQL expression the repo ships, each named
  after where it comes from; ``Expr.evaluable`` substitutes Grafana's ``$__rate_interval``-style
  and template variables so Prometheus can run it, and ``measure`` cuts an alert rule's
  ``<measure> <comparison> <threshold>`` down to the measure (what must return series on a
  healthy stack, where the alert itself must not fire).
* ``check_exprs`` parses expressions with ``promtool check rules``.
* ``running_prometheus`` runs the real ``prometheus`` binary on a free loopback port in a temp dir
  and prints its log when the block fails; ``PrometheusApi`` talks to any Prometheus.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.helpers.stack import ROOT, free_port

MONITORING = ROOT / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
START_MONITORING = ROOT / "scripts" / "start_monitoring.sh"
APT_HINT = "apt-get install prometheus prometheus-alertmanager (promtool, amtool and prometheus come with them)"

# What Grafana would put in for its built-in variables, as PromQL durations.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
# Template variables of the dashboards, as "All" selects them (their allValue).
TEMPLATE_ALL = ".*"


def tool(name: str) -> str | None:
    return shutil.which(name)


def render_config(
    main_url: str, *, scrape_interval: str | None = None, alertmanager: str | None = None,
    api_key: str | None = None, monitoring_dir: Path | None = None,
) -> str:
    """``start_monitoring.sh config`` output. ``api_key`` is main's UV_API_KEY (the script writes it
    to ``monitoring_dir``/api_key); without it the key is taken out of the environment."""
    cmd = ["bash", str(START_MONITORING), "config", "--main", main_url]
    if scrape_interval:
        cmd += ["--scrape-interval", scrape_interval]
    if alertmanager:
        cmd += ["--alertmanager", alertmanager]
    env = {k: v for k, v in os.environ.items() if k not in ("UV_API_KEY", "UV_MONITORING_DIR")}
    if api_key:
        env["UV_API_KEY"] = api_key
    if monitoring_dir is not None:
        env["UV_MONITORING_DIR"] = str(monitoring_dir)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


# ---- the shipped expressions ----------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(expr: str, builtins: Mapping[str, str] = GRAFANA_BUILTINS, other: str = TEMPLATE_ALL) -> str:
    """Grafana variables (``$x``, ``${x}``, ``${x:fmt}``, ``[[x]]``) replaced: built-ins by a
    duration, template variables by ``other`` (what "All" selects)."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return builtins.get(name, other)

    return _VAR.sub(value, expr)


@dataclass(frozen=True)
class Expr:
    source: str  # e.g. "dashboards/hub.json: Fallbacks [A]" or "rules/ultravox-alerts.yml: ServiceDown"
    expr: str    # as written

    @property
    def evaluable(self) -> str:
        return substitute(self.expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels") or [])


_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def dashboard_exprs(files: list[Path] = DASHBOARD_FILES) -> list[Expr]:
    """Every panel target's ``expr``, and the metric selector of every ``label_values`` variable."""
    out = []
    for path in files:
        board = json.loads(path.read_text())
        for p in _panels(board.get("panels") or []):
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append(Expr(f"dashboards/{path.name}: {p['title']} [{t['refId']}]", t["expr"]))
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            m = _LABEL_VALUES.match(str(var.get("definition", "")).strip())
            if not m or not m.group(1):
                raise ValueError(f"{path.name}: variable {var['name']} is not label_values(<metric>, <label>)")
            out.append(Expr(f"dashboards/{path.name}: variable {var['name']}", m.group(1)))
    return out


def rule_exprs(files: list[Path] = RULE_FILES) -> list[Expr]:
    out = []
    for path in files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                out.append(Expr(f"rules/{path.name}: {name}", str(rule["expr"]).strip()))
    return out


def alert_rules(files: list[Path] = RULE_FILES) -> list[dict[str, Any]]:
    return [r for path in files for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
            if "alert" in r]


_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPS = re.compile(r"(?<![\w:])(and|or|unless)(?![\w:])")


def _top_level(expr: str) -> Iterator[tuple[int, str]]:
    """(index, char) of the characters outside brackets and string literals."""
    depth, quote, i = 0, "", 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            yield i, c
        i += 1


def split_comparison(expr: str) -> tuple[str, str, str]:
    """``<measure> <op> <threshold>`` -> (measure, op, threshold), at the top level of ``expr``.

    Raises ValueError when there is no top-level comparison, or when a top-level ``and``/``or``/
    ``unless`` makes "the left side" ambiguous.
    """
    top = dict(_top_level(expr))
    flat = "".join(top.get(i, " ") for i in range(len(expr)))
    if _SET_OPS.search(flat):
        raise ValueError(f"top-level and/or/unless in {expr!r}: split it into one alert per condition")
    for i in sorted(top):
        for op in _COMPARISONS:
            if flat.startswith(op, i):
                return expr[:i].strip(), op, expr[i + len(op):].strip()
    raise ValueError(f"no top-level comparison in {expr!r}")


def measure(expr: str) -> str:
    return split_comparison(expr)[0]


def check_exprs(exprs: list[Expr], workdir: Path) -> dict[str, str]:
    """Parse every expression with ``promtool check rules``; returns {source: error} for failures."""
    promtool = tool("promtool")
    if promtool is None:
        raise RuntimeError(f"promtool is missing: {APT_HINT}")

    def run(batch: list[Expr]) -> subprocess.CompletedProcess[str]:
        doc = {"groups": [{"name": "parse", "rules": [
            {"record": f"parse:expr_{i}", "expr": e.evaluable} for i, e in enumerate(batch)
        ]}]}
        path = workdir / "parse-check.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)

    if run(exprs).returncode == 0:
        return {}
    failures = {}
    for e in exprs:  # one by one, to name the culprits
        r = run([e])
        if r.returncode != 0:
            failures[e.source] = f"{e.evaluable}\n{r.stdout}{r.stderr}".strip()
    return failures


# ---- a real Prometheus ----------------------------------------------------------------------

class PrometheusError(AssertionError):
    pass


class PrometheusApi:
    """The HTTP API of a Prometheus at ``url`` (whoever started it), and its log file."""

    def __init__(self, url: str, log_path: Path) -> None:
        self.url, self.log_path = url, log_path

    def exited(self) -> str:
        """Why the server is gone, or "" (only known for a process we started)."""
        return ""

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if gone := self.exited():
                raise PrometheusError(f"prometheus {gone}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if check():
                    return
            time.sleep(0.5)
        raise PrometheusError(f"prometheus: not {what} after {timeout:.0f} s")

    def api(self, path: str, **params: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; a vector's or scalar's result as a list of {metric, value}."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", state="active")["activeTargets"])

    def log(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class PrometheusProcess(PrometheusApi):
    """The ``prometheus`` binary on 127.0.0.1:<free port>, config, data and log in ``workdir``."""

    def __init__(self, workdir: Path, config: str) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", workdir / "prometheus.log")
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config)

    def start(self) -> PrometheusProcess:
        binary = tool("prometheus")
        if binary is None:
            raise RuntimeError(f"prometheus is missing: {APT_HINT}")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def exited(self) -> str:
        if self.proc is not None and self.proc.poll() is not None:
            return f"exited with {self.proc.returncode}"
        return ""

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_for(lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200, timeout, "ready")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@contextlib.contextmanager
def running_prometheus(workdir: Path, config: str) -> Iterator[PrometheusProcess]:
    p = PrometheusProcess(workdir, config).start()
    ok = False
    try:
        p.wait_ready()
        yield p
        ok = True
    finally:
        p.stop()
        if not ok:
            print(f"\n===== prometheus log (last 80 lines) =====\n{p.log()}")
