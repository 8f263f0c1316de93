"""Turn the services benchmark's A/B records into figures, target checks and the printed table.

For every case and figure: the median and p95 of the service side and of the bare side, and
``x bare``, the service's slowdown against its bare engine (median service / median bare for
times and real-time factors; median bare / median service for tokens/s, so above 1 is always
slower). p95 is the slow tail: the 95th percentile of a time, the 5th of tokens/s. ``+first ms``
is the median, over the A/B pairs, of (service - bare) time to the first chunk. Per group
(``stt``, ``tts kokoro``, ``tts piper``, ``llm``) the same is pooled over its cases, with
``x bare`` as the median of the per-pair slowdowns; the targets are checked on those. The
first-chunk difference is split using the service's own clock of its first chunk: the part
spent inside the service (engine thread hand-off, request planning, encoding) and the part spent
between service and caller (hub, gRPC, serialisation). ``CPU ms`` (the CPU time the service's
process and the probe used per call; /proc ticks are 10 ms) is shown but not a target: on a
shared machine it tells a difference in work from a difference in luck with the scheduler.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

TARGETS = {"x_bare": 1.1, "first_chunk_ms": 20.0}
# (figure key, label, unit scale, higher is better)
CPU = ("cpu_s", "CPU ms", 1e3, False)
"""Not a target: the CPU time of the service's process vs the probe's, blind to what else runs."""
FIGURES: dict[str, tuple[tuple[str, str, float, bool], ...]] = {
    "stt": (("first_s", "latency ms", 1e3, False), ("rtf", "RTF", 1.0, False), CPU),
    "tts": (("first_s", "first audio ms", 1e3, False), ("rtf", "RTF", 1.0, False), CPU),
    "llm": (("first_s", "first token ms", 1e3, False), ("tokens_per_s", "tokens/s", 1.0, True), CPU),
}


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def figures_of(group: str) -> tuple[tuple[str, str, float, bool], ...]:
    return FIGURES[group.split(maxsplit=1)[0]]


def pairs(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(service, bare) values of ``key`` for each A/B pair that has it on both sides."""
    by: dict[tuple[str, int], dict[str, float]] = {}
    for r in records:
        if key in r:
            by.setdefault((r["case"], r["iteration"]), {})[r["side"]] = float(r[key])
    return [(v["service"], v["bare"]) for v in by.values() if "service" in v and "bare" in v]


def split(records: list[dict[str, Any]]) -> dict[str, float]:
    """Where the first chunk's extra time goes: inside the service (its own clock vs the bare engine,
    paired) and between the service and the caller (hub, gRPC, serialisation)."""
    server = pairs([{**r, "first_s": r["server_first_s"]} if "server_first_s" in r else r for r in records],
                   "first_s")
    hub = [(r["first_s"] - r["server_first_s"]) * 1e3 for r in records if "server_first_s" in r]
    if not server or not hub:
        return {}
    return {"in_service_ms": statistics.median((s - b) * 1e3 for s, b in server),
            "via_hub_ms": statistics.median(hub)}


def row(group: str, case: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for key, label, scale, higher in figures_of(group):
        ps = pairs(records, key)
        if not ps:
            continue
        svc, bare = [p[0] for p in ps], [p[1] for p in ps]
        tail = 0.05 if higher else 0.95
        slowdown: Callable[[float, float], float] = (lambda s, b: b / s) if higher else (lambda s, b: s / b)
        r: dict[str, Any] = {
            "group": group, "case": case, "figure": label, "key": key, "n": len(ps),
            "service_median": statistics.median(svc) * scale, "service_p95": percentile(svc, tail) * scale,
            "bare_median": statistics.median(bare) * scale, "bare_p95": percentile(bare, tail) * scale,
            "x_bare": slowdown(statistics.median(svc), statistics.median(bare)),
            "x_bare_paired": statistics.median(slowdown(s, b) for s, b in ps),
        }
        if key == "first_s":
            r["first_chunk_diff_ms"] = statistics.median((s - b) * 1e3 for s, b in ps)
            r |= split(records)
        out.append(r)
    return out


def build(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows per case, rows per group, checks)."""
    groups = list(dict.fromkeys(r["group"] for r in records))
    rows, summary, checks = [], [], []
    for g in groups:
        mine = [r for r in records if r["group"] == g]
        for case in dict.fromkeys(r["case"] for r in mine):
            rows += row(g, case, [r for r in mine if r["case"] == case])
        pooled = [{**r, "case": f"{r['case']}/{r['iteration']}"} for r in mine]  # every pair its own key
        for r in row(g, "all", pooled):
            summary.append(r)
            if r["key"] == "cpu_s":
                hub = [x["hub_cpu_s"] * 1e3 for x in mine if "hub_cpu_s" in x]
                r["hub_cpu_ms"] = statistics.median(hub) if hub else 0.0
                continue
            where = f"{g} {r['figure']}"
            checks.append({"check": "x_bare", "where": where, "value": r["x_bare_paired"],
                           "target": TARGETS["x_bare"]})
            if "first_chunk_diff_ms" in r:
                checks.append({"check": "first_chunk_ms", "where": where, "value": r["first_chunk_diff_ms"],
                               "target": TARGETS["first_chunk_ms"]})
    for c in checks:
        c["ok"] = c["value"] <= c["target"]
    return rows, summary, checks


def _fmt(value: float, key: str) -> str:
    return f"{value:9.1f}" if key in ("first_s", "tokens_per_s", "cpu_s") else f"{value:9.3f}"


def print_table(rep: dict[str, Any]) -> None:
    m = rep["meta"]
    print(
        f"\nServices benchmark: service through the hub (gRPC) vs its bare engine, A/B interleaved; "
        f"{m['iterations']} pairs per case after {m['warmup']} warmup; {m['cpus']} CPUs, load "
        f"{m['loadavg_start'][0]:.2f} at start, {m['loadavg_end'][0]:.2f} at end; {m['elapsed_s']:.0f} s"
    )
    head = (f"{'group':<11} {'case':<18} {'figure':<15} {'svc med':>9} {'svc p95':>9} {'bare med':>9} "
            f"{'bare p95':>9} {'x bare':>7} {'+first ms':>9}")
    print(head)
    print("-" * len(head))
    for sec in ("rows", "summary"):
        if sec == "summary":
            print("-" * len(head))
        for r in rep[sec]:
            diff = f"{r['first_chunk_diff_ms']:+9.1f}" if "first_chunk_diff_ms" in r else " " * 9
            x = r["x_bare_paired"] if sec == "summary" else r["x_bare"]
            print(f"{r['group']:<11} {r['case']:<18} {r['figure']:<15} {_fmt(r['service_median'], r['key'])} "
                  f"{_fmt(r['service_p95'], r['key'])} {_fmt(r['bare_median'], r['key'])} "
                  f"{_fmt(r['bare_p95'], r['key'])} {x:7.3f} {diff}")
    print("\nfirst chunk, service minus bare (median of pairs), split by the service's own clock:")
    for r in rep["summary"]:
        if "in_service_ms" in r:
            print(f"  {r['group']:<11} {r['first_chunk_diff_ms']:+7.1f} ms = inside the service "
                  f"{r['in_service_ms']:+7.1f} ms + hub and gRPC {r['via_hub_ms']:+6.1f} ms (medians; need not add up)")
    print("\nCPU time per call (not a target; blind to the scheduler): service process / probe, median of pairs:")
    for r in rep["summary"]:
        if "hub_cpu_ms" in r:
            print(f"  {r['group']:<11} x{r['x_bare_paired']:.3f}, and the hub's client side used "
                  f"{r['hub_cpu_ms']:.1f} ms per call in the caller")
    print("\nRSS (supervisor status of the service; the bare probe process beside it):")
    for name, r in rep["rss"].items():
        svc = f"{r['service_bytes'] / 2**20:.0f} MB" if r["service_bytes"] else "?"
        print(f"  {name:<4} service {svc:>8}   bare probe {r['bare_bytes'] / 2**20:.0f} MB")
    print(f"\ntargets: x bare <= {TARGETS['x_bare']:g}, first chunk through the service <= "
          f"{TARGETS['first_chunk_ms']:g} ms over the bare engine's")
    for c in rep["checks"]:
        unit = " ms" if c["check"] == "first_chunk_ms" else "x"
        print(f"  {'OK  ' if c['ok'] else 'MISS'} {c['where']:<28} {c['check']:<15} {c['value']:+.3f}{unit} "
              f"(target {c['target']:g})")
    for note in rep.get("notes", []):
        print(f"  note: {note}")
