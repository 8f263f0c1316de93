"""Ray Serve cluster benchmark: the same utterances through ``local-pc`` and through ``cluster`` (one node).

    .venv/bin/python scripts/bench/cluster.py [--utterances 4] [--calls 40] [--out var/bench/cluster.json]

Runs inside a loopback-only network namespace it creates (Ray gathers addresses; needs root).
Two mains, one after the other, each with its own services (never both at once: the machine
has two cores):

1. ``local-pc``, then 2. ``cluster`` (the agent starts a one-node Ray head and deploys STT, TTS
and LLM; STT's decodes, TTS and the LLM run in replicas). On each:

- **the Ray hop's per-call cost:** ``Echo`` on the TTS service through main's hub
  (``POST /call``), ``--calls`` times, median and p95: the same path on both but the last hop
  (local gRPC against Serve's gRPC proxy and a replica);
- **voice-to-voice, one session:** every utterance through ``/ws/voice`` at real time
  (client-measured: last speech frame -> first reply audio);
- **8 sessions** of 2 spoken turns each: p95, answered, rejected, lost; on the cluster with 1 STT
  replica, then again after ``Scale`` to 2.

Also: memory (RSS) of each replica and of Ray's own processes. It prints a table with ratios
cluster / local-pc and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from scripts.bench._voice_load import run_level
from scripts.bench._voice_speech import QUESTIONS, Utterance
from scripts.bench._voice_stack import ROOT, MainStack
from scripts.bench._voice_ws import TurnResult
from tests.helpers.cluster_stack import CLUSTER_ENV, RayPorts, cluster_config
from tests.helpers.netns import loopback_netns, netns_unavailable
from tests.helpers.service_process import service_python
from tests.helpers.speech import convert, speech_bytes

OUT_RATE = 24000
PORTS = RayPorts(gcs=6395, client=10031, grpc=9195, http=8195)


def utterances(n: int) -> list[Utterance]:
    """Piper speech of the first ``n`` questions, 16 kHz PCM16 (made before entering the namespace)."""
    return [Utterance(f"piper-q{i:02d}", "piper", "joe", q, convert(speech_bytes(q), 16000, 1).data)
            for i, q in enumerate(QUESTIONS[:n], 1)]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


async def hop_cost(url: str, calls: int) -> dict[str, Any]:
    """``Echo`` on tts through main's hub, ``calls`` times: median and p95 in ms."""
    body = {"service": "tts", "method": "Echo", "payload": {"payload": "cGluZw=="}}
    out = []
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(3):
            (await http.post(f"{url}/call", json=body)).raise_for_status()
        for _ in range(calls):
            t = time.perf_counter()
            (await http.post(f"{url}/call", json=body)).raise_for_status()
            out.append((time.perf_counter() - t) * 1000)
    return {"calls": calls, "median_ms": round(statistics.median(out), 2), "p95_ms": pct(out, 0.95)}


def level_row(turns: list[TurnResult]) -> dict[str, Any]:
    v2v = [t.client_v2v_s for t in turns if t.client_v2v_s is not None]
    return {
        "turns": len(turns), "answered": sum(1 for t in turns if t.outcome == "ok"),
        "rejected": sum(1 for t in turns if t.rejected), "lost": sum(1 for t in turns if t.lost),
        "p50_s": pct(v2v, 0.5), "p95_s": pct(v2v, 0.95),
    }


async def measure(stack: MainStack, pool: list[Utterance], calls: int, label: str) -> dict[str, Any]:
    print(f"[{label}] per-call hop ...", flush=True)
    out: dict[str, Any] = {"hop": await hop_cost(stack.url, calls)}
    print(f"[{label}] one session, {len(pool)} turns ...", flush=True)
    out["single"] = level_row(await run_level(stack.ws_url, OUT_RATE, pool, 1, len(pool), within_s=180, seed=1))
    print(f"[{label}] 8 sessions ...", flush=True)
    out["eight"] = level_row(await run_level(stack.ws_url, OUT_RATE, pool, 8, 2, within_s=300, seed=2))
    return out


def rss_mb(pid: int) -> float | None:
    try:
        return round(float(psutil.Process(pid).memory_info().rss) / 1e6, 1)
    except psutil.Error:
        return None


def ray_memory(temp_dir: str, replica_pids: set[int]) -> dict[str, Any]:
    total, parts = 0.0, {}
    for p in psutil.process_iter(["pid", "cmdline", "name"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if temp_dir in cmd and p.info["pid"] not in replica_pids:
            mb = rss_mb(p.info["pid"]) or 0.0
            total += mb
            parts[f"{p.info['name']}:{p.info['pid']}"] = mb
    return {"total_mb": round(total, 1), "processes": parts}


async def cluster_status(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.get(f"{url}/api/cluster")
        r.raise_for_status()
        return dict(r.json())


async def scale(url: str, role: str, n: int) -> None:
    async with httpx.AsyncClient(timeout=660) as http:
        (await http.post(f"{url}/api/cluster/deployments/{role}/scale", json={"replicas": n})).raise_for_status()
        deadline = time.monotonic() + 300
        while True:
            d = next(d for d in (await cluster_status(url))["deployments"] if d["role"] == role)
            if d["running"] >= n:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{role} did not reach {n} running replicas: {d}")
            await asyncio.sleep(1)


def run_stack(stack: MainStack, label: str, body: Any) -> dict[str, Any]:
    stack.start()
    try:
        asyncio.run(stack.wait_healthy(1200))
        result: dict[str, Any] = asyncio.run(body(stack))
        return result
    except Exception:
        print(stack.log_tails(), file=sys.stderr)
        raise
    finally:
        stack.stop(grace_s=90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utterances", type=int, default=4)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "var" / "bench" / "cluster.json"))
    args = ap.parse_args()
    if why := netns_unavailable():
        print(f"cluster bench needs a loopback network namespace: {why}", file=sys.stderr)
        return 2
    pool = utterances(args.utterances)
    service_python("cluster")   # the cluster venv, built before the namespace (no network in it)
    base = ROOT / "var" / "bench" / "cluster-run"
    temp_dir = f"/tmp/uvb{os.getpid()}"
    # 0.5 CPU a replica: three fill 1.5 of the head's 2, so a second STT replica fits on the one node
    config = cluster_config(base / "config", PORTS, temp_dir, replica_cpus=0.5)
    doc: dict[str, Any] = {"utterances": [u.info() for u in pool], "loadavg_start": os.getloadavg()}
    with loopback_netns("uvbench"):
        local = MainStack(base / "local-var")
        doc["local-pc"] = run_stack(local, "local-pc", lambda s: measure(s, pool, args.calls, "local-pc"))

        async def on_cluster(s: MainStack) -> dict[str, Any]:
            out = await measure(s, pool, args.calls, "cluster, 1 STT replica")
            status = await cluster_status(s.url)
            pids = {r["pid"]: d["role"] for d in status["deployments"] for r in d["replica_list"] if r["pid"]}
            out["replica_rss_mb"] = {f"{role}:{pid}": rss_mb(pid) for pid, role in pids.items()}
            out["ray_own"] = ray_memory(temp_dir, set(pids))
            print("[cluster] scaling stt to 2 ...", flush=True)
            await scale(s.url, "stt", 2)
            out["eight_stt2"] = level_row(await run_level(s.ws_url, OUT_RATE, pool, 8, 2, within_s=300, seed=2))
            return out

        clu = MainStack(base / "cluster-var")
        clu.env.update({**CLUSTER_ENV, "UV_CONFIG_DIR": str(config)})
        doc["cluster"] = run_stack(clu, "cluster", on_cluster)
    doc["loadavg_end"] = os.getloadavg()
    report(doc)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    lost = sum(doc[k][lvl]["lost"] for k in ("local-pc", "cluster") for lvl in ("single", "eight"))
    return 1 if lost or doc["cluster"]["eight_stt2"]["lost"] else 0


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(doc: dict[str, Any]) -> None:
    loc, clu = doc["local-pc"], doc["cluster"]
    print("\n| | local-pc | cluster | cluster / local |\n|---|---|---|---|")
    print(f"| Echo via hub, median ms | {loc['hop']['median_ms']} | {clu['hop']['median_ms']} | "
          f"{ratio(clu['hop']['median_ms'], loc['hop']['median_ms'])} |")
    print(f"| Echo via hub, p95 ms | {loc['hop']['p95_ms']} | {clu['hop']['p95_ms']} | "
          f"{ratio(clu['hop']['p95_ms'], loc['hop']['p95_ms'])} |")
    print(f"| v2v one session, p50 s | {loc['single']['p50_s']} | {clu['single']['p50_s']} | "
          f"{ratio(clu['single']['p50_s'], loc['single']['p50_s'])} |")
    for name, key in (("8 sessions", "eight"), ("8 sessions, 2 STT replicas", "eight_stt2")):
        c = clu[key]
        base = loc["eight"]
        print(f"| {name}: p95 s / answered / rejected / lost | {base['p95_s']} / {base['answered']} / "
              f"{base['rejected']} / {base['lost']} | {c['p95_s']} / {c['answered']} / {c['rejected']} / {c['lost']} "
              f"| {ratio(c['p95_s'], base['p95_s'])} |")
    print(f"\nreplica RSS (MB): {clu['replica_rss_mb']}")
    print(f"Ray's own processes: {clu['ray_own']['total_mb']} MB")


if __name__ == "__main__":
    sys.exit(main())
