"""Services benchmark: each model service through the hub beside its bare engine, in one run.

    .venv/bin/python scripts/bench/services.py [--only stt,tts,llm] [--iterations N] [--out FILE]

It starts the real services through the real supervisor in this process (their own venvs,
free ports, ``UV_VAR_DIR`` under var/bench/) and calls them through the hub
(``CommunicationManager``, gRPC). Beside each service, a probe (``_services_probe.py``) run by
the same venv's interpreter loads the same engine with the same options and model file and does
the same work bare. The two sides alternate (A/B, B/A) case by case, so background load on this
shared machine hits both alike (its load average is in the JSON's meta):

* STT: Transcribe of Piper test speech (1-6 s) vs faster-whisper ``transcribe``: latency, RTF;
* TTS: SynthesizeStream per engine (kokoro, piper), a short and a long reply, vs the engine
  synthesising the pieces of the service's own splitter: time to first audio, RTF;
* LLM: Generate (temperature 0, fixed seed, same max_tokens) vs llama-cpp-python
  ``create_chat_completion(stream=True)``: time to first token, tokens/s.

It prints a table (``_services_report``) against the issue's targets (each service within 1.1x of
its bare engine, its first chunk within 20 ms of the bare engine's), with each service's RSS and
the CPU time each side used per call (wall times on a busy 2-core box swing by tens of percent
from run to run; CPU time does not), and writes everything as JSON to ``--out``. Missing a
target is reported, not an error; if anything fails it prints the service and probe logs and
exits 1. The defaults take about 4-6 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext
from core.managers.hub import CommunicationManager
from core.managers.supervisor import ServiceSupervisor, VenvBuilder
from scripts.bench._services_cases import Case, llm_cases, run_ab, stt_cases, tts_cases
from scripts.bench._services_client import Probe
from scripts.bench._services_report import build, print_table

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("stt", "tts", "llm")
LOG_LINES = 60


class BenchFailed(Exception):
    """A service or probe did not come up, or a call failed; the logs have been printed."""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_env(only: list[str], var_dir: Path) -> dict[str, str]:
    """This process's env with the measured services enabled (the others off) on free ports."""
    env = dict(os.environ, UV_VAR_DIR=str(var_dir))
    for svc in SERVICES:
        up = svc.upper()
        env[f"UV_{up}_ENABLED"] = "true" if svc in only else "false"
        env[f"UV_{up}_GRPC_PORT"] = "0"
        env[f"UV_{up}_HTTP_PORT"] = "0"
    return env


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.var = args.var_dir
        env = bench_env(args.only, self.var)
        self.settings = load_settings(env=env)
        self.paths = Paths.from_env(env)
        self.ctx = ProcessContext(GlobalContext.create(self.settings, self.paths), "bench")
        self.sup = ServiceSupervisor(self.ctx)
        self.hub = CommunicationManager(self.ctx, self.sup, config=self.settings.hub)
        self.probes: dict[str, Probe] = {}

    async def start(self) -> None:
        only, timeout = self.args.only, self.args.startup_timeout
        say(f"preparing venvs of {', '.join(only)} ...")
        await self.sup.prepare(only)
        await self.sup.start_all()
        venvs = VenvBuilder(self.paths)
        for name in only:
            cfg = self.settings.services[name]
            log = self.var / "log" / f"probe-{name}.log"
            self.probes[name] = await Probe.start(cfg, venvs.python_for(cfg), self.paths, log)
        say("waiting for the services and the bare probes to load their models ...")
        if not await self.sup.wait_ready(timeout, only):
            states = "; ".join(f"{s.name} {s.state.value} {s.last_error}".strip()
                               for s in self.sup.statuses() if s.name in only)
            raise BenchFailed(f"services not ready within {timeout:.0f} s: {states}")
        for probe in self.probes.values():
            ready = await probe.wait_ready(timeout)
            say(f"  {probe.name} probe ready in {ready['load_s']:.1f} s")

    async def measure(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        sections: dict[str, Any] = {}
        records: list[dict[str, Any]] = []
        for name in self.args.only:
            cases = self.cases(name)
            load = os.getloadavg()
            t0 = time.perf_counter()
            say(f"{name}: {len(cases)} cases x ({self.args.warmup} warmup + {self.args.iterations}) A/B pairs")
            pid = self.sup.status(name).pid
            if pid is None:
                raise BenchFailed(f"service {name} has no process (state {self.sup.status(name).state.value})")
            records += await run_ab(cases, self.probes[name], pid, self.args.iterations, self.args.warmup, say)
            sections[name] = {"loadavg_before": load, "loadavg_after": os.getloadavg(),
                              "seconds": time.perf_counter() - t0,
                              "cases": [{"group": c.group, "case": c.name, **c.info} for c in cases]}
        return records, sections

    def cases(self, name: str) -> list[Case]:
        if name == "stt":
            return stt_cases(self.hub)
        if name == "tts":
            engines = self.probes["tts"].ready["details"]["engines"]
            return tts_cases(self.hub, {e: d["voice"] for e, d in engines.items()})
        return llm_cases(self.hub)

    async def rss(self) -> dict[str, Any]:
        out = {}
        for name, probe in self.probes.items():
            st = self.sup.status(name)
            out[name] = {"service_bytes": st.rss_bytes, "bare_bytes": await probe.rss(), "service_pid": st.pid}
        return out

    def print_logs(self) -> None:
        for name in self.args.only:
            try:
                lines = self.sup.tail_logs(name, LOG_LINES)
            except Exception as e:  # the log may not exist if the service never started
                lines = [f"(no log: {e})"]
            print(f"\n===== service {name} log (last {LOG_LINES} lines) =====", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)
        for probe in self.probes.values():
            print(f"\n===== bare probe {probe.name} ({probe.log_path}, last {LOG_LINES} lines) =====",
                  file=sys.stderr)
            print("\n".join(probe.tail(LOG_LINES)), file=sys.stderr)

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.probes.values()), return_exceptions=True)
        await self.hub.close()
        await self.sup.shutdown()


def notes(records: list[dict[str, Any]]) -> list[str]:
    """Checks that both sides did the same work: same LLM text, same TTS audio length, both heard right."""
    out = []
    by: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["case"], r["iteration"]), {})[r["side"]] = r
    pairs = list(by.values())
    llm = [p for p in pairs if p["service"]["group"] == "llm"]
    if llm:
        same = sum(p["service"]["text"] == p["bare"]["text"] for p in llm)
        out.append(f"llm: service and bare replies identical in {same}/{len(llm)} pairs")
    for group in dict.fromkeys(p["service"]["group"] for p in pairs if p["service"]["group"].startswith("tts")):
        tts = [p for p in pairs if p["service"]["group"] == group]
        worst = max(abs(p["service"]["audio_s"] / p["bare"]["audio_s"] - 1) for p in tts)
        why = " (Piper samples its durations: they vary from call to call)" if group == "tts piper" else ""
        out.append(f"{group}: service and bare audio durations differ by at most {worst:.2%}{why}")
    stt = [p for p in pairs if p["service"]["group"] == "stt"]
    if stt:
        wer = max(max(p["service"]["wer"], p["bare"]["wer"]) for p in stt)
        same = sum(p["service"]["text"] == p["bare"]["text"] for p in stt)
        out.append(f"stt: transcripts identical in {same}/{len(stt)} pairs; worst WER {wer:.2f}")
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started, load0 = time.perf_counter(), os.getloadavg()
    bench = Bench(args)
    try:
        await bench.start()
        records, sections = await bench.measure()
        rss = await bench.rss()
        details = {n: p.ready.get("details", {}) for n, p in bench.probes.items()}
    except BaseException as e:
        if not isinstance(e, KeyboardInterrupt | asyncio.CancelledError):
            traceback.print_exc()
        bench.print_logs()
        raise BenchFailed(f"{type(e).__name__}: {e}") from e
    finally:
        await bench.close()
    rows, summary, checks = build(records)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "only": args.only, "iterations": args.iterations,
        "warmup": args.warmup, "cpus": os.cpu_count(), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "elapsed_s": time.perf_counter() - started, "python": platform.python_version(),
        "machine": platform.machine(), "protocol": "grpc", "var_dir": str(args.var_dir),
        "sched_autogroup": _read("/proc/sys/kernel/sched_autogroup_enabled"),
    }
    return {"meta": meta, "rows": rows, "summary": summary, "checks": checks, "rss": rss, "sections": sections,
            "engines": details, "notes": notes(records), "records": records}


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", default=",".join(SERVICES), help="comma-separated services to measure")
    ap.add_argument("--iterations", type=int, default=4, help="timed A/B pairs per case")
    ap.add_argument("--warmup", type=int, default=1, help="untimed A/B pairs per case first")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "services.json")
    ap.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench" / "services-var",
                    help="UV_VAR_DIR of the services (logs, data)")
    ap.add_argument("--startup-timeout", type=float, default=900.0, help="seconds for services and probes to load")
    args = ap.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SERVICES]
    if unknown or not args.only:
        ap.error(f"--only takes a comma-separated subset of {','.join(SERVICES)}, got {unknown or 'nothing'}")
    args.only = [s for s in SERVICES if s in args.only]  # fixed order: stt, tts, llm
    if args.iterations < 1 or args.warmup < 0:
        ap.error("--iterations must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        rep = asyncio.run(run(args))
    except BenchFailed as e:
        say(f"\nservices benchmark FAILED: {e}")
        raise SystemExit(1) from e
    print_table(rep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
