"""Turn-taking A/B for ``voice.py --turn-taking``: today's settings against the new ones, in one run.

Both modes run on the same main, with the same utterances, interleaved; a session picks its mode
with the ``turn`` object of its ``config`` message:

- ``before``: VAD-only end of turn (a fixed ``end_silence_ms``), no speculation, any speech over
  a reply interrupts it at once, no echo cancellation (the platform as it was);
- ``after``: the defaults (semantic end of turn with Smart Turn, speculative final decode,
  barge-in that needs lasting speech or words, echo cancellation).

Sections: complete questions (voice-to-voice, end-of-turn delay: end of speech to the turn's end,
and how each turn ended); hesitant utterances with a 0.9 s pause mid-sentence (cut-offs: more
than one turn); a reply's echo at -20 dB and 160 ms mixed into the microphone (false barge-ins:
pauses and flushes with nobody speaking); and load at 1..12 sessions (p95, answered, rejected,
lost, rejection latency). The STT service's own counters give the speculation hit rate, the CPU
time spent on thrown-away decodes and the turn model's inference time.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from typing import Any

import httpx

from scripts.bench._voice_load import run_level
from scripts.bench._voice_speech import Utterance
from scripts.bench._voice_ws import TurnResult, VoiceClient
from tests.helpers.voice_client import Speaker
from tests.helpers.voice_client import VoiceClient as EchoClient

MODES: dict[str, dict[str, Any]] = {
    "before": {"detection": "vad", "speculation": False, "barge_in_min_speech_ms": 0, "barge_in_min_words": 0,
               "echo_cancellation": False},
    "after": {},
}
HESITANT = (
    ("So I was wondering if", "you could tell me the capital of France."),
    ("I'd like to book a table for um", "four people at seven tonight."),
    ("and then I", "saw a spider with eight legs."),
    ("My name is, uh", "Sam, and I like the planet Jupiter."),
)
STORY = "Tell me a long story about a brave knight and a dragon."
HESITATION_S = 0.9
ECHO_DB, ECHO_DELAY_S = -20.0, 0.16
STT_COUNTERS = ("uv_stt_speculation_total", "uv_stt_speculation_wasted_seconds_total", "uv_stt_turn_model_seconds_sum",
                "uv_stt_turn_model_seconds_count", "uv_stt_utterance_ends_total", "uv_stt_audio_seconds_total")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


class EchoMain:
    """What tests.helpers.voice_client needs of a main: its base URL."""

    def __init__(self, url: str) -> None:
        self.url = url


class TurnTakingBench:
    def __init__(self, url: str, ws_url: str, http: httpx.AsyncClient, say: Any, *, levels: list[int],
                 load_timeout: float) -> None:
        self.url, self.ws_url, self.http, self.say = url, ws_url, http, say
        self.levels, self.load_timeout = levels, load_timeout

    async def stt_counters(self) -> dict[str, float]:
        svc = (await self.http.get(f"{self.url}/services/stt")).json()
        text = (await self.http.get(f"http://{svc['host']}:{svc['http_port']}/metrics")).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r"^(\w+)(\{[^}]*\})? ([0-9.eE+-]+)$", line)
            if m and m.group(1) in STT_COUNTERS:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                key = m.group(1) + "".join(f":{v}" for k, v in sorted(labels.items()) if k != "service")
                out[key] = float(m.group(3))
        return out

    async def run(self, utts: list[Utterance], hesitant: list[Utterance]) -> dict[str, Any]:
        out: dict[str, Any] = {"modes": MODES, "complete": {}, "hesitant": {}, "echo": {}, "load": {}, "stt": {}}
        for mode, turn in MODES.items():
            before = await self.stt_counters()
            t = time.monotonic()
            out["complete"][mode] = await self.complete(utts, turn, mode)
            out["hesitant"][mode] = await self.hesitant(hesitant, turn, mode)
            after = await self.stt_counters()
            out["stt"][mode] = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 4) for k in after}
            out["echo"][mode] = await self.echo(turn, mode)
            self.say(f"[{mode}] quality sections took {time.monotonic() - t:.0f} s")
        for mode, turn in MODES.items():
            out["load"][mode] = await self.load(utts, turn, mode)
        out["summary"] = summarize(out)
        return out

    async def complete(self, utts: list[Utterance], turn: dict[str, Any], mode: str) -> list[dict[str, Any]]:
        rows = []
        for u, res, ends in await self.spoken(utts, turn):
            rows.append({
                "utterance": u.id, "client_v2v_s": res.client_v2v_s, "server_v2v_s": res.server_v2v_s,
                "end_of_turn_s": res.report.get("vad_s"), "stt_s": res.report.get("stt_s"),
                "reasons": [e.get("reason") for e in ends], "turns": len(ends), "outcome": res.outcome,
                "lost": res.lost, "transcript": res.transcript,
            })
            self.say(f"  [{mode}] {u.id:10s} v2v {res.client_v2v_s} eot {res.report.get('vad_s')} "
                     f"{[e.get('reason') for e in ends]}")
        return rows

    async def hesitant(self, utts: list[Utterance], turn: dict[str, Any], mode: str) -> list[dict[str, Any]]:
        rows = []
        for u, res, ends in await self.spoken(utts, turn, settle_s=1.0):
            rows.append({"utterance": u.text, "turns": len(ends), "cut_off": len(ends) > 1,
                         "transcript": res.transcript, "client_v2v_s": res.client_v2v_s})
            self.say(f"  [{mode}] hesitant: {len(ends)} turn(s) for {u.text!r}")
        return rows

    async def spoken(
        self, utts: list[Utterance], turn: dict[str, Any], *, settle_s: float = 0.0
    ) -> list[tuple[Utterance, TurnResult, list[dict[str, Any]]]]:
        """Each utterance in a fresh session of one socket: its result and the turn ends it caused."""
        out = []
        async with VoiceClient.open(self.ws_url, 16000, turn=turn) as client:
            for u in utts:
                await client.reset()
                mark = len(client.items)
                res = await client.turn(u, within_s=120)
                await asyncio.sleep(settle_s)
                out.append((u, res, client.events("speech_ended", mark)))
        return out

    async def echo(self, turn: dict[str, Any], mode: str) -> dict[str, Any]:
        """A story's reply echoes back at -20 dB; nobody speaks over it: every pause or flush is false."""
        speaker = Speaker(gain_db=ECHO_DB, delay_s=ECHO_DELAY_S)
        from tests.helpers.speech import convert, speech_bytes  # noqa: PLC0415  (Piper, main's venv)

        story = convert(speech_bytes(STORY), 16000, 1).data
        async with EchoClient.open(EchoMain(self.url), {"sample_rate": 16000, "turn": turn}, echo=speaker) as c:  # type: ignore[arg-type]
            c.speak(b"\x00\x00" * 4800 + story)
            start = c.index(await c.wait("audio_start", timeout=120))
            async with asyncio.timeout(120):
                while speaker.played_bytes < 8 * 16000 * 2 and not c.events("flush", since=start):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            kinds = [e["type"] for e in c.events(since=start)]
        row = {"pauses": kinds.count("pause"), "flushes": kinds.count("flush"),
               "speech_started": kinds.count("speech_started"), "played_s": round(speaker.played_bytes / 32000, 1)}
        row["false_barge_ins"] = row["flushes"]
        self.say(f"  [{mode}] echo at {ECHO_DB:g} dB: {row}")
        return row

    async def load(self, utts: list[Utterance], turn: dict[str, Any], mode: str) -> list[dict[str, Any]]:
        pool = [u for u in utts if u.source != "espeak"] or utts
        rows = []
        for level in self.levels:
            t = time.monotonic()
            turns = await run_level(self.ws_url, 16000, pool, level, 1, within_s=self.load_timeout, seed=level,
                                    turn=turn)
            v2v = [x.client_v2v_s for x in turns if x.answered and x.client_v2v_s is not None]
            rejections = [x.reject_after_s for x in turns if x.rejected and x.reject_after_s is not None]
            row = {
                "sessions": level, "turns": len(turns), "answered": sum(x.answered for x in turns),
                "rejected": sum(x.rejected for x in turns), "lost": sum(x.lost for x in turns),
                "p50_s": pct(v2v, 0.5), "p95_s": pct(v2v, 0.95), "max_reject_s": max(rejections, default=None),
                "wall_s": round(time.monotonic() - t, 1),
                "why_lost": [x.why for x in turns if x.lost][:3],
            }
            rows.append(row)
            self.say(f"  [{mode}] load {level}: {row}")
        return rows


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for mode in MODES:
        rows = [r for r in out["complete"][mode] if not r["lost"]]
        v2v = [r["client_v2v_s"] for r in rows if r["client_v2v_s"] is not None]
        eot = [r["end_of_turn_s"] for r in rows if r["end_of_turn_s"] is not None]
        stt = out["stt"][mode]
        hits, misses = stt.get("uv_stt_speculation_total:hit", 0.0), stt.get("uv_stt_speculation_total:miss", 0.0)
        model_n = stt.get("uv_stt_turn_model_seconds_count", 0.0)
        turns = len(rows) + len(out["hesitant"][mode])
        s[mode] = {
            "v2v_p50_s": pct(v2v, 0.5), "v2v_p95_s": pct(v2v, 0.95),
            "end_of_turn_median_s": round(statistics.median(eot), 3) if eot else None,
            "semantic_ends": sum(r["reasons"] == ["semantic"] for r in rows), "complete_turns": len(rows),
            "early_cut_offs": sum(r["cut_off"] for r in out["hesitant"][mode]),
            "hesitant": len(out["hesitant"][mode]),
            "speculation_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
            "speculation_wasted_cpu_s_per_turn": round(stt.get("uv_stt_speculation_wasted_seconds_total", 0.0)
                                                       / max(1, turns), 4),
            "turn_model_ms_per_call": round(1000 * stt.get("uv_stt_turn_model_seconds_sum", 0.0) / model_n, 1)
            if model_n else None,
            "turn_model_calls_per_turn": round(model_n / max(1, turns), 2),
            "false_barge_ins_echo": out["echo"][mode]["false_barge_ins"],
        }
    b, a = s["before"], s["after"]
    s["ratios"] = {
        "v2v_p50_after_over_before": round(a["v2v_p50_s"] / b["v2v_p50_s"], 3)
        if a["v2v_p50_s"] and b["v2v_p50_s"] else None,
    }
    load_after = {r["sessions"]: r for r in out["load"]["after"]}
    single = a["v2v_p50_s"]
    eight = load_after.get(8)
    s["targets"] = {
        "v2v_p50 <= 0.7x before": s["ratios"]["v2v_p50_after_over_before"] is not None
        and s["ratios"]["v2v_p50_after_over_before"] <= 0.7,
        "end_of_turn median <= 0.3 s": a["end_of_turn_median_s"] is not None and a["end_of_turn_median_s"] <= 0.3,
        "0 early cut-offs": a["early_cut_offs"] == 0,
        "0 false barge-ins from echo": a["false_barge_ins_echo"] == 0,
        "8 sessions: p95 <= 2.5x single p50, none lost, rejections within 2 s": bool(
            eight and single and eight["p95_s"] is not None and eight["p95_s"] <= 2.5 * single and eight["lost"] == 0
            and (eight["max_reject_s"] is None or eight["max_reject_s"] <= 2.0)
        ),
    }
    return s


def print_turns(rep: dict[str, Any]) -> None:
    s = rep["summary"]
    keys = [k for k in s["before"] if k != "complete_turns"]
    print(f"\n{'turn-taking A/B':38s} {'before':>10s} {'after':>10s}")
    for k in keys:
        print(f"{k:38s} {s['before'][k]!s:>10s} {s['after'][k]!s:>10s}")
    print(f"{'v2v p50 after/before':38s} {s['ratios']['v2v_p50_after_over_before']!s:>21s}")
    print(f"\n{'load':8s} " + " ".join(f"{m + ' ' + c:>14s}" for m in MODES for c in ("p95", "ans/rej/lost")))
    for i, level in enumerate(r["sessions"] for r in rep["load"]["after"]):
        cells = []
        for m in MODES:
            r = rep["load"][m][i]
            cells += [f"{r['p95_s']!s:>14s}", f"{r['answered']}/{r['rejected']}/{r['lost']:>10}"]
        print(f"{level:<8d} " + " ".join(cells))
    print("\ntargets:")
    for name, ok in s["targets"].items():
        print(f"  {'OK  ' if ok else 'MISS'} {name}")
