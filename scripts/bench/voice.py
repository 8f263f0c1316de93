"""Voice-to-voice benchmark: /ws/voice streaming beside the sequential and engine-floor baselines, plus load.

    .venv/bin/python scripts/bench/voice.py [--quick] [--utterances N] [--levels 1,2,4,8] [--out FILE]
    .venv/bin/python scripts/bench/voice.py --turn-taking [--levels 1,2,4,8,12]   (the A/B of _voice_turns)

One run starts its own ``main.py`` (free port, free service ports, ``UV_VAR_DIR`` under
var/bench/voice-run) and, on those services:

1. makes the test speech: N short questions spoken by Piper and Kokoro (main's
   ``/v1/audio/speech``) and by espeak-ng (a Debian package: ``apt-get install espeak-ng``),
   as 16 kHz PCM16 trimmed to the speech;
2. per utterance, interleaved so background load hits all three alike:
   - **streaming:** the utterance through ``/ws/voice`` as a microphone would (20 ms frames
     at real time, then silence), in a fresh session; the server's latency report (stage
     breakdown) and the client's own voice-to-voice (last speech frame sent -> first reply
     audio received);
   - **sequential** and **engine floor** baselines (``_voice_baselines``);
3. load: 1, 2, 4, 8 concurrent sessions of a few spoken turns each: p95 and admission
   rejections; then a burst of typed turns at one instant, above admission's capacity. A turn
   neither answered nor explicitly rejected is LOST.

It prints the tables and the targets (OK/MISS) and writes everything as JSON (``--out``), with
the machine's load average during the run (it is shared). A failure, or a lost turn, prints
main's and the services' log tails and exits 1; ``--strict`` also exits 3 on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import httpx

from core.config import load_settings
from scripts.bench import _voice_baselines as baselines
from scripts.bench._voice_load import LoadSampler, run_level, typed_burst
from scripts.bench._voice_report import accuracy, check_targets, load_row, print_report, summarize
from scripts.bench._voice_speech import (
    ESPEAK_HINT,
    QUESTIONS,
    SOURCES,
    Utterance,
    espeak_binary,
    make_utterances,
    project_tts,
)
from scripts.bench._voice_stack import ROOT, MainStack
from scripts.bench._voice_turns import HESITANT, HESITATION_S, TurnTakingBench, print_turns
from scripts.bench._voice_ws import TurnResult, VoiceClient

OUT_RATE = 24000
WARMUP = "Please say hello to everyone."


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack = MainStack(args.var_dir)
        settings = load_settings(env=self.stack.env)
        self.conv = settings.conversation
        self.agents_dir = Path(settings.config_dir) / self.conv.agents_dir
        self.silence_s = self.conv.end_silence_ms / 1000
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(180, connect=10))
        self.sections: dict[str, float] = {}

    async def run(self) -> dict[str, Any]:
        t = time.monotonic()
        say(f"starting main on {self.stack.url} (var {self.args.var_dir}) ...")
        self.stack.start()
        await self.stack.wait_healthy(self.args.startup_timeout)
        self.sections["startup_s"] = round(time.monotonic() - t, 1)
        url = self.stack.url
        if self.args.turn_taking:
            return await self.turn_taking()
        agent = await baselines.resolve_agent(self.http, url, self.agents_dir, self.conv.default_agent)
        voices = await self.source_voices()
        t = time.monotonic()
        utts = await make_utterances(self.http, url, list(QUESTIONS[: self.args.utterances]), voices)
        self.sections["speech_s"] = round(time.monotonic() - t, 1)
        say(f"{len(utts)} utterances ({', '.join(voices)}), {sum(u.duration_s for u in utts):.1f} s of speech")
        first = next(iter(voices))
        warm = (await make_utterances(self.http, url, [WARMUP], {first: voices[first]}))[0]
        stream, seq, floor = await self.interleaved(utts, warm, agent)
        load = await self.load(utts)
        summary = summarize(stream, seq, floor, self.silence_s)
        return {
            "config": {"end_silence_ms": self.conv.end_silence_ms,
                       "max_concurrent_turns": self.conv.max_concurrent_turns,
                       "admission_wait_s": self.conv.admission_wait_s, "out_rate": OUT_RATE, "voices": voices},
            "agent": agent.to_dict(), "utterances": [u.info() for u in utts], "summary": summary,
            "accuracy": accuracy(stream, seq), "targets": check_targets(summary, stream, load, self.silence_s),
            "load": load, "streaming": stream, "sequential": seq, "floor": floor,
        }

    async def turn_taking(self) -> dict[str, Any]:
        """The turn-taking A/B (scripts/bench/_voice_turns.py) instead of the classic sections."""
        url = self.stack.url
        voices = {k: v for k, v in (await self.source_voices()).items() if k != "espeak"}
        utts = await make_utterances(self.http, url, list(QUESTIONS[: self.args.utterances]), voices)
        piper = voices.get("piper") or next(iter(voices.values()))
        hesitant = []
        for i, (head, tail) in enumerate(HESITANT, 1):
            pcm = await project_tts(self.http, url, head, piper) + b"\x00\x00" * int(16000 * HESITATION_S)
            pcm += await project_tts(self.http, url, tail, piper)
            hesitant.append(Utterance(f"hesitant-{i}", "piper", piper, f"{head} ... {tail}", pcm))
        warm = utts[0]
        async with VoiceClient.open(self.stack.ws_url, OUT_RATE) as client:
            await client.turn(warm, within_s=self.args.turn_timeout)  # warm-up, not counted
        bench = TurnTakingBench(url, self.stack.ws_url, self.http, say, levels=self.args.levels,
                                load_timeout=self.args.load_timeout)
        rep = await bench.run(utts, hesitant)
        rep["utterances"] = [u.info() for u in utts + hesitant]
        rep["config"] = {"end_silence_ms": self.conv.end_silence_ms, "turn": self.conv.turn.model_dump(),
                         "max_concurrent_turns": self.conv.max_concurrent_turns,
                         "admission_wait_s": self.conv.admission_wait_s}
        return rep

    async def source_voices(self) -> dict[str, str]:
        out = {}
        for source in self.args.sources:
            if source == "espeak":
                out[source] = "en-us"
                continue
            r = await self.http.get(f"{self.stack.url}/v1/audio/voices", params={"engine": source})
            r.raise_for_status()
            out[source] = str(r.json()["default_voice"])
        return out

    async def interleaved(
        self, utts: list[Utterance], warm: Utterance, agent: baselines.AgentParams
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Round r: streaming of utterance r, sequential of r+1, floor of r+2 (mod n).

        Interleaved, so background load hits the three alike; offset, so no LLM call follows one
        with the same question (llama.cpp reuses the previous prompt's matching prefix, which
        would flatter whichever came second). Every call still reuses the system prompt.
        """
        url, n, stream, seq, floor = self.stack.url, len(utts), [], [], []
        t = time.monotonic()
        async with VoiceClient.open(self.stack.ws_url, OUT_RATE) as client:
            say(f"warm-up ({warm.text!r}, not counted) ...")
            await client.turn(warm, within_s=self.args.turn_timeout)
            await baselines.sequential(self.http, url, warm, agent, silence_s=self.silence_s, out_rate=OUT_RATE)
            await baselines.engine_floor(self.http, url, warm, agent, out_rate=OUT_RATE)
            for r in range(n):
                self.stack.check_alive()
                await client.reset()
                res = (await client.turn(utts[r], within_s=self.args.turn_timeout)).to_dict()
                stream.append(res)
                say(f"  {r + 1:2d}/{n} streaming  {res['utterance']:11s} v2v {_s(res['server_v2v_s'])} "
                    f"(client {_s(res['client_v2v_s'])}) {res['outcome'] or 'LOST'}; heard {res['transcript']!r}")
                u = utts[(r + 1) % n]
                seq.append(await baselines.sequential(self.http, url, u, agent, silence_s=self.silence_s,
                                                      out_rate=OUT_RATE))
                say(f"        sequential {u.id:11s} v2v {_s(seq[-1]['voice_to_voice_s'])}")
                u = utts[(r + 2) % n]
                floor.append(await baselines.engine_floor(self.http, url, u, agent, out_rate=OUT_RATE))
                say(f"        floor      {u.id:11s} {_s(floor[-1]['floor_s'])}")
        self.sections["interleaved_s"] = round(time.monotonic() - t, 1)
        return stream, seq, floor

    async def load(self, utts: list[Utterance]) -> list[dict[str, Any]]:
        pool = [u for u in utts if u.source != "espeak"] or utts
        rows = []
        for level in self.args.levels:
            self.stack.check_alive()
            t = time.monotonic()
            turns = await run_level(self.stack.ws_url, OUT_RATE, pool, level, self.args.load_turns,
                                    within_s=self.args.load_timeout, seed=level)
            rows.append(self._row(f"{level}", turns, time.monotonic() - t))
        if self.args.burst:
            self.stack.check_alive()
            t = time.monotonic()
            turns = await typed_burst(self.stack.ws_url, OUT_RATE, [u.text for u in pool], self.args.burst,
                                      within_s=self.args.load_timeout)
            rows.append(self._row(f"{self.args.burst} typed", turns, time.monotonic() - t))
        return rows

    def _row(self, label: str, turns: list[TurnResult], wall_s: float) -> dict[str, Any]:
        records = [x.to_dict() for x in turns]
        row = load_row(label, records, wall_s, self.conv.max_concurrent_turns)
        row["records"] = records
        say(f"  load {label} sessions: {row['answered']} answered, {row['rejected']} rejected, {row['lost']} lost, "
            f"p95 {_s(row['server_v2v']['p95'])} (client {_s(row['client_v2v']['p95'])}), {row['wall_s']} s")
        return row

    async def close(self) -> None:
        await self.http.aclose()
        self.stack.stop()


def git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return r.stdout.strip()


class BenchFailed(Exception):
    """The run could not finish; main's and the services' logs have been printed."""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sampler, load0, started = LoadSampler(), os.getloadavg(), time.monotonic()
    sampler.start()
    bench = Bench(args)
    try:
        rep = await bench.run()
    except BaseException as e:
        if not isinstance(e, KeyboardInterrupt | asyncio.CancelledError):
            traceback.print_exc()
        await bench.close()
        say(bench.stack.log_tails(args.log_lines))
        raise BenchFailed(f"{type(e).__name__}: {e}") from e
    finally:
        await sampler.stop()
    await bench.close()
    rep["meta"] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(), "python": platform.python_version(),
        "cpus": os.cpu_count(), "elapsed_s": round(time.monotonic() - started, 1), "sections_s": bench.sections,
        "utterances": len(rep["utterances"]), "levels": args.levels, "load_turns": args.load_turns,
        "end_silence_s": bench.silence_s, "agent": rep.get("agent"), "var_dir": str(args.var_dir),
        "loadavg": {"start": load0, "end": os.getloadavg(), **sampler.summary()},
        "note": "shared 2-core machine: other engineers' jobs run beside the bench (see loadavg)",
    }
    if args.turn_taking:
        if any(r["lost"] for rows in rep["load"].values() for r in rows):
            say(bench.stack.log_tails(args.log_lines))
    elif any(t["lost"] for t in rep["streaming"]) or any(r["lost"] for r in rep["load"]):
        say(bench.stack.log_tails(args.log_lines))  # lost turns are bugs: show why
    return rep


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 questions, 1 turn per load session")
    ap.add_argument("--utterances", type=int, default=None, help=f"questions per source (8..{len(QUESTIONS)}; "
                    "default 8, --quick 4)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="test speech sources: piper,kokoro,espeak")
    ap.add_argument("--levels", default="1,2,4,8", help="concurrent sessions per load level ('' skips load)")
    ap.add_argument("--burst", type=int, default=8,
                    help="after the levels, this many sockets send a typed turn at once (0 skips)")
    ap.add_argument("--load-turns", type=int, default=None, help="turns per load session (default 3, --quick 1)")
    ap.add_argument("--turn-timeout", type=float, default=120.0, help="seconds for one streamed turn to settle")
    ap.add_argument("--load-timeout", type=float, default=240.0, help="seconds for one load turn to settle")
    ap.add_argument("--startup-timeout", type=float, default=900.0, help="seconds for main to become healthy")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "voice.json")
    ap.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench" / "voice-run",
                    help="main's UV_VAR_DIR (wiped at start)")
    ap.add_argument("--log-lines", type=int, default=60, help="lines of each log printed on failure")
    ap.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    ap.add_argument("--turn-taking", action="store_true",
                    help="run the turn-taking A/B (VAD-only as before vs semantic + speculation + barge-in rules)")
    args = ap.parse_args(argv)
    args.utterances = args.utterances or (4 if args.quick else 8)
    args.load_turns = args.load_turns or (1 if args.quick else 3)
    if not 1 <= args.utterances <= len(QUESTIONS):
        ap.error(f"--utterances takes 1..{len(QUESTIONS)}, got {args.utterances}")
    args.sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not args.sources or set(args.sources) - set(SOURCES):
        ap.error(f"--sources takes a comma-separated subset of {','.join(SOURCES)}, got {args.sources}")
    try:
        args.levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--levels takes comma-separated session counts, e.g. 1,2,4,8; got {args.levels!r}")
    if any(n < 1 for n in args.levels) or args.load_turns < 1 or args.burst < 0:
        ap.error("--levels entries and --load-turns must be >= 1, --burst >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.turn_taking:
        args.sources = [s for s in args.sources if s != "espeak"] or ["piper"]
        if args.out == ROOT / "var" / "bench" / "voice.json":
            args.out = ROOT / "var" / "bench" / "turn_taking.json"
    if "espeak" in args.sources and espeak_binary() is None:
        say(f"espeak-ng is not installed: the benchmark speaks its questions with it too; {ESPEAK_HINT}")
        raise SystemExit(2)
    try:
        rep = asyncio.run(run(args))
    except BenchFailed as e:
        say(f"\nvoice benchmark FAILED: {e}")
        raise SystemExit(1) from e
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rep, indent=2))
    if args.turn_taking:
        print_turns(rep)
        print(f"\nwrote {args.out}")
        return
    print_report(rep)
    print(f"\nwrote {args.out}")
    lost = any(not t["ok"] for t in rep["targets"] if "lost" in t["target"] or "answered" in t["target"])
    if lost:
        say("voice benchmark: turns were lost (logs above)")
        raise SystemExit(1)
    if args.strict and not all(t["ok"] for t in rep["targets"]):
        raise SystemExit(3)


if __name__ == "__main__":
    main()
