"""Concurrent STT finals on this box: one decode at a time, decodes side by side, or one batched decode?

    .venvs/stt-<hash>/bin/python scripts/bench/stt_pool.py [--n 1,2,4,8] [--repeat 3] [--out FILE]

(``.venv/bin/python`` works too: it runs itself again with the STT venv's Python.) Piper speaks eight
utterances of 1.5 to 4 s once, in main's venv (the STT venv has no Piper), into a temp folder as
16 kHz WAVs. Then, in the STT venv, the engine is loaded as the service loads it (the local-pc
profile's stt config and env: whisper-base int8, language en, beam 1, OMP_WAIT_POLICY=PASSIVE),
and N finals arrive at the same instant (N = 1, 2, 4, 8), for each mode:

- ``1x2``: max_concurrency 1, cpu_threads 2: one decode at a time on both cores (the baseline);
- ``2x1``: max_concurrency 2, cpu_threads 1: two decodes side by side;
- ``2x2``: max_concurrency 2, cpu_threads 2: two decodes, each asking for both cores;
- ``batch``: the 1x2 model, all waiting clips in one faster-whisper ``BatchedInferencePipeline``
  call (one clip per ``clip_timestamps`` entry, so each is its own 30 s window: one encoder batch and
  one CTranslate2 ``generate`` over N prompts). All N finish together. This is batching's best case:
  a real stream would also wait for a batch to fill.

The pool modes go through the service's own ``FasterWhisperEngine`` and ``WorkerPool`` (a key per
final, as streams do). Modes alternate within each repeat (rotated), so background load hits all
alike; each figure is the median over repeats. Per mode and N it prints p50, p95 and max seconds
from arrival to transcript, throughput (utterances/s), CPU seconds per utterance, and ratios
against ``1x2``; then the transcripts' agreement with ``1x2`` and with the spoken text (word edits).
JSON goes to ``--out`` (var/bench/stt_pool.json).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# run as a file, its own folder comes first on sys.path, where scripts/bench/services.py would hide the
# services package: the repo root goes there instead
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RATE = 16_000
TEXTS = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Please book a table for two people at seven tonight.",
    "Which ocean is the largest on our planet?",
    "Tell me the boiling point of water in Celsius.",
    "Who wrote Romeo and Juliet?",
    "What language do people speak in Brazil these days?",
    "Could you remind me tomorrow morning to call my sister about the party?",
)
LAYOUTS = {"1x2": (1, 2), "2x1": (2, 1), "2x2": (2, 2)}
"""Pool modes: name -> (max_concurrency, cpu_threads)."""
BASELINE = "1x2"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- step 1, main's venv: Piper speech --------------------------------------------------------------

def make_audio(folder: Path) -> None:
    from tests.helpers.speech import convert, pcm_to_wav, speech_bytes  # noqa: PLC0415 - Piper: main's venv

    for i, text in enumerate(TEXTS):
        (folder / f"{i}.wav").write_bytes(pcm_to_wav(convert(speech_bytes(text), RATE, 1)))


def venv_python(prefix: str) -> str:
    if prefix == "main":
        return str(ROOT / ".venv" / "bin" / "python")
    venvs = [v for v in (ROOT / ".venvs").glob(f"{prefix}-*") if not v.name.startswith(f"{prefix}-runpod")]
    venvs = [v for v in venvs if (v / "bin" / "python").exists()]
    if not venvs:
        raise SystemExit(f"no {prefix} venv under .venvs/: run `.venv/bin/python main.py --prepare-only` first")
    return str(max(venvs, key=lambda p: p.stat().st_mtime) / "bin" / "python")


# ---- step 2, the STT venv: the engine ---------------------------------------------------------------

def read_clip(path: Path) -> Any:
    import numpy as np  # noqa: PLC0415

    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


class Bench:
    """The engines, one per pool layout, plus the batched pipeline on the baseline's model."""

    def __init__(self, clips: list[Any]) -> None:
        from core.config import load_settings  # noqa: PLC0415
        from core.context import Paths  # noqa: PLC0415

        self.cfg = load_settings(profile="local-pc").services["stt"]
        for k, v in self.cfg.env.items():  # what the supervisor sets for the service; before ctranslate2 loads
            os.environ.setdefault(k, v)

        from faster_whisper import BatchedInferencePipeline  # noqa: PLC0415

        from services.stt.engine import DecodeOptions  # noqa: PLC0415
        from services.stt.model_store import resolve_model  # noqa: PLC0415
        from services.stt.options import SttOptions  # noqa: PLC0415
        from services.stt.whisper_engine import FasterWhisperEngine  # noqa: PLC0415
        from services.stt.workers import WorkerPool  # noqa: PLC0415

        paths = Paths.from_env()
        base = SttOptions.from_config(self.cfg)
        self.model_ref = resolve_model(self.cfg.model, paths.models, self.cfg.name).ref
        self.decode = DecodeOptions(language=base.language, beam_size=base.beam_size, initial_prompt=None)
        self.clips = clips
        self.engines: dict[str, Any] = {}
        self.pools: dict[str, Any] = {}
        for name, (workers, threads) in LAYOUTS.items():
            opts = base.model_copy(update={"max_concurrency": workers, "cpu_threads": threads})
            engine = FasterWhisperEngine(opts, self.cfg.device, str(paths.models / "hub"))
            engine.load(self.model_ref)
            self.engines[name], self.pools[name] = engine, WorkerPool(workers, 64, f"bench-{name}", "STT")
        self.pools["batch"] = WorkerPool(1, 64, "bench-batch", "STT")
        self.batched = BatchedInferencePipeline(self.engines[BASELINE]._model)  # the same model

    def modes(self) -> list[str]:
        return [*LAYOUTS, "batch"]

    def decode_one(self, name: str, i: int) -> str:
        text: str = self.engines[name].transcribe(self.clips[i], self.decode).text
        return text

    def decode_batch(self, idx: list[int]) -> list[str]:
        """Every clip in one batched call: concatenated, each its own clip_timestamps window."""
        import numpy as np  # noqa: PLC0415

        clips = [self.clips[i] for i in idx]
        starts = [0]
        for c in clips[:-1]:
            starts.append(starts[-1] + len(c))
        windows = [{"start": s / RATE, "end": (s + len(c)) / RATE} for s, c in zip(starts, clips, strict=True)]
        segments, _ = self.batched.transcribe(
            np.concatenate(clips), language=self.decode.language, beam_size=self.decode.beam_size,
            clip_timestamps=windows, batch_size=len(clips), without_timestamps=False,  # as the engine decodes
            vad_filter=False,
        )
        texts: list[list[str]] = [[] for _ in clips]
        begins = [w["start"] for w in windows]
        for seg in segments:  # a segment starts inside its own clip's window
            texts[max(0, bisect.bisect_right(begins, seg.start + 1e-3) - 1)].append(seg.text)
        return ["".join(t).strip() for t in texts]

    async def case(self, mode: str, n: int) -> dict[str, Any]:
        """N finals arrive now; seconds from arrival until each has its transcript."""
        idx = [i % len(self.clips) for i in range(n)]
        pool = self.pools[mode]
        t0, cpu0 = time.perf_counter(), time.process_time()
        if mode == "batch":
            texts = await pool.run(lambda: self.decode_batch(idx), admit=False, key="batch")
            done = [time.perf_counter() - t0] * n
            waits = [0.0] * n
        else:
            async def final(i: int) -> tuple[float, float, str]:
                waited: list[float] = []
                text = await pool.run(lambda: self.decode_one(mode, idx[i]), admit=False, key=f"s{i}",
                                      on_wait=waited.append)
                return time.perf_counter() - t0, waited[0], text

            got = await asyncio.gather(*(final(i) for i in range(n)))
            done, waits, texts = [g[0] for g in got], [g[1] for g in got], [g[2] for g in got]
        cpu = time.process_time() - cpu0
        return {"latency_s": done, "wait_s": waits, "texts": texts, "wall_s": max(done), "cpu_s": cpu}

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        for engine in self.engines.values():
            engine.close()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarise(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Each figure per run, then the median over runs."""
    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return round(statistics.median(f(r) for r in runs), 3)

    return {
        "n": n, "runs": len(runs),
        "p50_s": med(lambda r: percentile(r["latency_s"], 0.5)),
        "p95_s": med(lambda r: percentile(r["latency_s"], 0.95)),
        "max_s": med(lambda r: max(r["latency_s"])),
        "throughput_per_s": med(lambda r: n / r["wall_s"]),
        "cpu_s_per_utt": med(lambda r: r["cpu_s"] / n),
        "wait_p50_s": med(lambda r: percentile(r["wait_s"], 0.5)),
        "raw": [{k: r[k] for k in ("latency_s", "wait_s", "cpu_s")} for r in runs],
    }


Texts = dict[str, dict[int, list[list[str]]]]
"""mode -> N -> each run's transcripts, in clip order."""


async def measure(bench: Bench, ns: list[int], repeat: int) -> tuple[dict[str, Any], Texts]:
    modes = bench.modes()
    for mode in modes:  # warm-up: first calls allocate
        await bench.case(mode, 2)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {m: {n: [] for n in ns} for m in modes}
    texts: dict[str, dict[int, list[list[str]]]] = {m: {n: [] for n in ns} for m in modes}
    for r in range(repeat):
        for n in ns:
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            for mode in order:
                got = await bench.case(mode, n)
                runs[mode][n].append(got)
                texts[mode][n].append(got["texts"])
                say(f"  repeat {r + 1}/{repeat} n={n} {mode:5s}: max {got['wall_s']:.2f} s, cpu {got['cpu_s']:.2f} s")
    return {m: {str(n): summarise(runs[m][n], n) for n in ns} for m in modes}, texts


# ---- quality ----------------------------------------------------------------------------------------

def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def edits(a: list[str], b: list[str]) -> int:
    """Word-level Levenshtein distance."""
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        cur = [i]
        for j, wb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb)))
        prev = cur
    return prev[-1]


def agreement(texts: Texts) -> dict[str, Any]:
    """Per mode: the largest N's first transcripts against the baseline's and the spoken text; stable
    says whether every run at every N gave each clip the same transcript."""
    base_n = max(texts[BASELINE])
    base = texts[BASELINE][base_n][0]
    ref_words = sum(len(words(TEXTS[i % len(TEXTS)])) for i in range(len(base)))
    out: dict[str, Any] = {}
    for mode, by_n in texts.items():
        got = by_n[base_n][0]
        vs_base = [edits(words(b), words(g)) for b, g in zip(base, got, strict=True)]
        vs_text = [edits(words(TEXTS[i % len(TEXTS)]), words(g)) for i, g in enumerate(got)]
        same_across_n = all(run == got[: len(run)] for runs in by_n.values() for run in runs)
        out[mode] = {
            "identical_to_baseline": sum(e == 0 for e in vs_base), "clips": len(got),
            "word_edits_vs_baseline": sum(vs_base), "wer_vs_text": round(sum(vs_text) / ref_words, 3),
            "same_across_n": same_across_n, "texts": got,
            "differences": [
                {"clip": i, "baseline": b, "this": g}
                for i, (b, g, e) in enumerate(zip(base, got, vs_base, strict=True)) if e
            ],
        }
    return out


# ---- report -----------------------------------------------------------------------------------------

def print_table(results: dict[str, Any], quality: dict[str, Any]) -> None:
    base = results[BASELINE]
    print(f"{'mode':6s} {'n':>2s} {'p50 s':>7s} {'p95 s':>7s} {'max s':>7s} {'utt/s':>6s} {'cpu s/utt':>9s} "
          f"{'wait p50':>8s} {'p95 vs 1x2':>10s} {'utt/s vs 1x2':>12s}")
    for mode, by_n in results.items():
        for key, r in by_n.items():
            b = base[key]
            print(f"{mode:6s} {r['n']:>2} {r['p50_s']:>7.2f} {r['p95_s']:>7.2f} {r['max_s']:>7.2f} "
                  f"{r['throughput_per_s']:>6.2f} {r['cpu_s_per_utt']:>9.2f} {r['wait_p50_s']:>8.2f} "
                  f"{r['p95_s'] / b['p95_s']:>9.2f}x {r['throughput_per_s'] / b['throughput_per_s']:>11.2f}x")
    print()
    print(f"{'mode':6s} {'same as 1x2':>11s} {'word edits vs 1x2':>17s} {'WER vs text':>11s} {'stable over N':>13s}")
    for mode, q in quality.items():
        print(f"{mode:6s} {q['identical_to_baseline']:>5}/{q['clips']:<5} {q['word_edits_vs_baseline']:>17} "
              f"{q['wer_vs_text']:>11.3f} {q['same_across_n']!s:>13}")
        for d in q["differences"]:
            print(f"        clip {d['clip']}: 1x2 {d['baseline']!r} / {mode} {d['this']!r}")


def run_stt(args: argparse.Namespace, folder: Path) -> None:
    clips = [read_clip(folder / f"{i}.wav") for i in range(len(TEXTS))]
    durations = [round(len(c) / RATE, 2) for c in clips]
    say(f"clips: {durations} s; loading {len(LAYOUTS)} engines")
    load_before = os.getloadavg()
    bench = Bench(clips)
    try:
        t0 = time.perf_counter()
        results, texts = asyncio.run(measure(bench, args.n, args.repeat))
        took = time.perf_counter() - t0
    finally:
        bench.close()
    quality = agreement(texts)
    print_table(results, quality)
    meta = {
        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "machine": platform.machine(), "python": platform.python_version(), "model": bench.model_ref,
        "env": dict(bench.cfg.env),
        "clip_durations_s": durations, "repeat": args.repeat, "bench_s": round(took, 1),
        "layouts": {k: {"max_concurrency": w, "cpu_threads": t} for k, (w, t) in LAYOUTS.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results, "quality": quality}, indent=2))
    print(f"wrote {args.out} ({took:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", default="1,2,4,8", help="finals arriving at once, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; figures are medians")
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "stt_pool.json")
    ap.add_argument("--audio", type=Path, help="a folder of 0.wav.. made already (16 kHz mono)")
    ap.add_argument("--make-audio", type=Path, help=argparse.SUPPRESS)  # step 1, in main's venv
    args = ap.parse_args()
    if args.make_audio:
        make_audio(args.make_audio)
        return
    args.n = [int(x) for x in args.n.split(",") if x.strip()]
    if importlib.util.find_spec("faster_whisper") is None:  # main's venv: run again in the STT venv
        os.execv(venv_python("stt"), [venv_python("stt"), __file__, *sys.argv[1:]])
    if args.audio:
        run_stt(args, args.audio)
        return
    with tempfile.TemporaryDirectory(prefix="stt-pool-") as tmp:
        say("speaking the utterances with Piper (main's venv)")
        subprocess.run([venv_python("main"), __file__, "--make-audio", tmp], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        run_stt(args, Path(tmp))


if __name__ == "__main__":
    main()
