"""Numbers and tables of the voice benchmark: distributions, stage breakdown, targets, accuracy, load.

``summarize`` turns the raw records into p50/p95 per stage for the streaming pipeline and both
baselines; ``check_targets`` applies the issue's targets (each as OK/MISS with the numbers it
compared); ``print_report`` prints it all as plain-text tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

STREAM_STAGES = ("vad_s", "stt_s", "llm_first_token_s", "first_chunk_s", "tts_first_audio_s", "send_s",
                 "voice_to_voice_s")
SEQ_STAGES = ("silence_s", "stt_s", "llm_s", "tts_s", "voice_to_voice_s")
FLOOR_STAGES = ("stt_s", "llm_first_token_s", "llm_first_chunk_s", "tts_first_audio_s", "floor_s")
HEADROOM_S = 0.060


def dist(values: Iterable[float | None]) -> dict[str, float | int | None]:
    xs = np.array([v for v in values if v is not None], dtype=float)
    if xs.size == 0:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None}
    return {"n": int(xs.size), "p50": round(float(np.percentile(xs, 50)), 4),
            "p95": round(float(np.percentile(xs, 95)), 4), "mean": round(float(xs.mean()), 4),
            "min": round(float(xs.min()), 4), "max": round(float(xs.max()), 4)}


def summarize(stream: Sequence[dict[str, Any]], seq: Sequence[dict[str, Any]], floor: Sequence[dict[str, Any]],
              silence_s: float) -> dict[str, Any]:
    answered = [t for t in stream if t["answered"]]
    out: dict[str, Any] = {
        "streaming": {k: dist(t["report"].get(k) for t in answered) for k in STREAM_STAGES},
        "sequential": {k: dist(r[k] for r in seq) for k in SEQ_STAGES},
        "floor": {k: dist(r[k] for r in floor) for k in FLOOR_STAGES},
    }
    out["streaming"]["client_voice_to_voice_s"] = dist(t["client_v2v_s"] for t in answered)
    floors = {r["utterance"]: r["floor_s"] for r in floor}
    out["overhead_over_floor_s"] = {  # per utterance: v2v - (its floor + end-of-turn silence)
        "server": dist(t["server_v2v_s"] - floors[t["utterance"]] - silence_s for t in answered
                       if t["server_v2v_s"] is not None and t["utterance"] in floors),
        "client": dist(t["client_v2v_s"] - floors[t["utterance"]] - silence_s for t in answered
                       if t["client_v2v_s"] is not None and t["utterance"] in floors),
    }
    seq50, floor50 = out["sequential"]["voice_to_voice_s"]["p50"], out["floor"]["floor_s"]["p50"]
    if seq50 and floor50 is not None:  # no pipeline can answer before the engines and the silence allow
        best = floor50 + silence_s
        out["bound"] = {"floor_plus_silence_p50_s": round(best, 4), "ratio_to_sequential_p50": round(best / seq50, 3),
                        "sequential_tail_p50_s": round(seq50 - best, 4)}
    return out


def accuracy(stream: Sequence[dict[str, Any]], seq: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per test-speech source: how well STT heard the questions (WER vs the question text)."""
    out = {}
    for source in dict.fromkeys(t["source"] for t in stream):
        mine = [t for t in stream if t["source"] == source]
        theirs = [r for r in seq if r["source"] == source]
        out[source] = {
            "utterances": len(mine),
            "streaming_wer_mean": round(float(np.mean([t["wer"] for t in mine])), 3),
            "streaming_exact": sum(t["wer"] == 0 for t in mine),
            "transcribe_wer_mean": round(float(np.mean([r["wer"] for r in theirs])), 3) if theirs else None,
            "transcribe_exact": sum(r["wer"] == 0 for r in theirs),
        }
    return out


def _target(name: str, value: float | None, limit: float | None, detail: str) -> dict[str, Any]:
    ok = value is not None and limit is not None and value <= limit
    return {"target": name, "value": value, "limit": None if limit is None else round(limit, 4), "ok": ok,
            "detail": detail}


def check_targets(summary: dict[str, Any], stream: Sequence[dict[str, Any]], load: Sequence[dict[str, Any]],
                  silence_s: float) -> list[dict[str, Any]]:
    s, seq, floor = summary["streaming"], summary["sequential"], summary["floor"]
    seq50, floor50 = seq["voice_to_voice_s"]["p50"], floor["floor_s"]["p50"]
    out = []
    for label, key in (("client", "client_voice_to_voice_s"), ("server", "voice_to_voice_s")):
        v = s[key]["p50"]
        out.append(_target(f"v2v p50 ({label}) <= 0.5 x sequential p50", v,
                           None if seq50 is None else 0.5 * seq50, f"sequential p50 {seq50}"))
        # paired per utterance (same audio, same STT work): the median of v2v - (floor + silence)
        over = summary["overhead_over_floor_s"][label]["p50"]
        unpaired = None if floor50 is None else round(floor50 + silence_s + HEADROOM_S, 4)
        out.append(_target(f"v2v ({label}) <= floor + silence + 60 ms: p50 of per-utterance v2v - floor - silence",
                           over, HEADROOM_S, f"unpaired: v2v p50 {v} vs floor p50 + silence + 60 ms = {unpaired}"))
    lost = [t["utterance"] for t in stream if t["lost"] or not t["answered"]]
    out.append(_target("no turn lost (final transcript, reply text and audio)", float(len(lost)), 0.0,
                       f"lost: {', '.join(lost) or 'none'} of {len(stream)}"))
    load_lost = sum(r["lost"] for r in load)
    out.append(_target("load: every turn answered or explicitly rejected", float(load_lost), 0.0,
                       f"{load_lost} lost of {sum(r['turns'] for r in load)}"))
    slow = max((r["reject_after_max_s"] or 0.0 for r in load), default=0.0)
    out.append(_target("load: rejections within 2 s", round(slow, 4), 2.0, "slowest final -> rejection"))
    return out


def load_row(level: str, turns: Sequence[dict[str, Any]], wall_s: float, capacity: int) -> dict[str, Any]:
    answered = [t for t in turns if t["answered"]]
    rejects = [t["reject_after_s"] for t in turns if t["rejected"] and t["reject_after_s"] is not None]
    return {
        "sessions": level, "capacity": capacity, "turns": len(turns), "answered": len(answered),
        "ok": sum(t["outcome"] == "ok" for t in answered), "degraded": sum(t["outcome"] == "degraded" for t in turns),
        "rejected": sum(t["rejected"] for t in turns), "lost": sum(t["lost"] for t in turns),
        "server_v2v": dist(t["server_v2v_s"] for t in answered),
        "client_v2v": dist(t["client_v2v_s"] for t in answered),
        "stages": {k: dist(t["report"].get(k) for t in answered) for k in STREAM_STAGES},
        "reject_after_max_s": max(rejects) if rejects else None, "wall_s": round(wall_s, 1),
    }


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [list(header)] + [[_f(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(rep: dict[str, Any]) -> None:
    m, s = rep["meta"], rep["summary"]
    print(f"\n== voice benchmark {m['when']}: {m['utterances']} utterances, {m['cpus']} CPUs, load average "
          f"{m['loadavg']['start'][0]:.2f} -> {m['loadavg']['end'][0]:.2f} (1-min samples: mean "
          f"{m['loadavg']['mean_1m']:.2f}, max {m['loadavg']['max_1m']:.2f}), end-of-turn silence "
          f"{m['end_silence_s']:.3f} s, agent {m['agent']['name']} ({m['agent']['engine']} {m['agent']['voice']})")
    print("\n-- voice-to-voice (seconds: end of speech -> first reply audio)")
    rows = [("streaming /ws/voice (client)", s["streaming"]["client_voice_to_voice_s"]),
            ("streaming /ws/voice (server)", s["streaming"]["voice_to_voice_s"]),
            ("sequential (STT -> LLM -> TTS)", s["sequential"]["voice_to_voice_s"]),
            ("engine floor (no silence)", s["floor"]["floor_s"]),
            ("engine floor + silence", {k: (v + m["end_silence_s"] if isinstance(v, float) and k != "n" else v)
                                        for k, v in s["floor"]["floor_s"].items()})]
    print(_table(("", "n", "p50", "p95", "mean", "min", "max"),
                 [(name, d["n"], d["p50"], d["p95"], d["mean"], d["min"], d["max"]) for name, d in rows]))
    print("\n-- stage breakdown (seconds)")
    stage_rows = [(f"streaming {k}", s["streaming"][k]) for k in STREAM_STAGES]
    stage_rows += [(f"sequential {k}", s["sequential"][k]) for k in SEQ_STAGES]
    stage_rows += [(f"floor {k}", s["floor"][k]) for k in FLOOR_STAGES]
    stage_rows += [(f"v2v - (floor + silence), {k}", d) for k, d in s["overhead_over_floor_s"].items()]
    print(_table(("stage", "n", "p50", "p95", "mean"), [(n, d["n"], d["p50"], d["p95"], d["mean"])
                                                        for n, d in stage_rows]))
    print("\n-- test speech accuracy (WER of the transcript vs the question)")
    print(_table(("source", "utterances", "streaming WER", "exact", "Transcribe WER", "exact"),
                 [(src, a["utterances"], a["streaming_wer_mean"], a["streaming_exact"], a["transcribe_wer_mean"],
                   a["transcribe_exact"]) for src, a in rep["accuracy"].items()]))
    if rep["load"]:
        print(f"\n-- load: concurrent /ws/voice sessions (admission capacity {rep['load'][0]['capacity']} turns in "
              "flight; 'typed': one text turn per socket at the same instant, its client column is text -> audio)")
        print(_table(("sessions", "turns", "answered", "degraded", "rejected", "LOST", "v2v p50", "v2v p95",
                      "client p95", "stt p95", "llm 1st p95", "reject max s", "wall s"),
                     [(r["sessions"], r["turns"], r["answered"], r["degraded"], r["rejected"], r["lost"],
                       r["server_v2v"]["p50"], r["server_v2v"]["p95"], r["client_v2v"]["p95"],
                       r["stages"]["stt_s"]["p95"], r["stages"]["llm_first_token_s"]["p95"],
                       r["reject_after_max_s"], r["wall_s"]) for r in rep["load"]]))
    print("\n-- targets")
    for t in rep["targets"]:
        print(f"  {'OK  ' if t['ok'] else 'MISS'}  {t['target']}: {_f(t['value'])} vs {_f(t['limit'])} ({t['detail']})")
    if b := s.get("bound"):
        print(f"  note: no pipeline answers before floor + silence = {b['floor_plus_silence_p50_s']:.3f} s (p50), "
              f"{b['ratio_to_sequential_p50']:.2f} x sequential p50; streaming can only save the sequential tail "
              f"after the first chunk ({b['sequential_tail_p50_s']:.3f} s p50 with these replies)")
    p50 = s["streaming"]["voice_to_voice_s"]["p50"]
    print(f"\nabsolute voice-to-voice p50 on this machine: {_f(p50)} s (server report), "
          f"{_f(s['streaming']['client_voice_to_voice_s']['p50'])} s (client)")
