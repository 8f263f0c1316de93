"""Voice-to-voice through the ``runpod`` profile beside ``local-pc``: the same utterances, one run.

    .venv/bin/python scripts/bench/runpod.py [--utterances N] [--out FILE]

Starts, all on 127.0.0.1:

- a ``local-pc`` main (STT, TTS and LLM as local services);
- the TTS RunPod worker (the real Kokoro/Piper handler) behind ``tests/helpers/runpod_api.py``,
  which follows RunPod's production job API (``/run``, ``GET /stream`` polled, ``/cancel``);
- an OpenAI-compatible upstream for the LLM (this project's LLM service, standalone), which is
  how the ``runpod`` profile reaches a vLLM worker;
- a ``runpod`` main pointed at those two (STT local, as the profile says).

Then per utterance (Piper speech, 16 kHz), alternating which main goes first, one spoken turn
over ``/ws/voice`` in a fresh session with Piper's voice on both: the server's latency report
(stages) and the client's voice-to-voice. It prints p50/p95 per profile, the ratio runpod /
local-pc, and where the extra time goes: the TTS job's queueing (``delayTime``) and the polling
interval (the double's job log), the extra HTTP hop to the LLM (first-token stage), and base64
(bytes and the in-process encode+decode cost of the reply audio as JSON). Writes JSON (``--out``).
There is no network here: a real endpoint adds the round trips to RunPod (tens of ms each, per
poll) and cold starts; this measures what the design itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from scripts.bench._side_by_side import OUT_RATE, print_table, say, side_by_side, summary
from scripts.bench._voice_report import dist
from scripts.bench._voice_stack import ROOT, MainStack
from tests.helpers.runpod_workers import KEY, OpenAIUpstream, RunpodWorker


def base64_cost(audio_s: float, rounds: int = 20) -> dict[str, float]:
    """Bytes and in-process seconds to carry ``audio_s`` of 24 kHz PCM16 as base64 in JSON and back."""
    pcm = os.urandom(int(audio_s * OUT_RATE) * 2)
    t0 = time.perf_counter()
    for _ in range(rounds):
        body = json.dumps({"message": {"audio": base64.b64encode(pcm).decode()}})
        base64.b64decode(json.loads(body)["message"]["audio"])
    return {"pcm_bytes": len(pcm), "json_bytes": len(body), "ratio": round(len(body) / len(pcm), 4),
            "encode_decode_s": round((time.perf_counter() - t0) / rounds, 6)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    var = ROOT / "var" / "bench" / "runpod-run"
    var.mkdir(parents=True, exist_ok=True)
    tts = RunpodWorker("tts", var / "tts-worker.log", api="production")
    await asyncio.to_thread(tts.start)
    llm = await asyncio.to_thread(OpenAIUpstream, var / "llm-upstream.log")
    try:
        model = await asyncio.to_thread(llm.model)
        await asyncio.to_thread(tts.wait_ready)
        local, remote = MainStack(var / "local-pc"), MainStack(var / "runpod")
        remote.env.update(PROFILE="runpod", RUNPOD_API_KEY=KEY, UV_TTS_BASE_URL=tts.base_url,
                          UV_TTS_ENDPOINT_ID="ep-tts", UV_LLM_BASE_URL=llm.base_url, UV_LLM_MODEL=model)
        results = await side_by_side({"local-pc": local, "runpod": remote}, args.utterances)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            jobs = (await http.get(f"http://127.0.0.1:{tts.port}/stats")).json()["recent"]
    finally:
        tts.stop()
        llm.stop()
    stream_jobs = [j for j in jobs if j.get("op") == "SynthesizeStream"]
    mean_audio = sum(r["audio_s"] for r in results["runpod"]) / max(1, len(results["runpod"]))
    extra = {
        "tts_job_queue_ms": dist(j.get("delayTime") for j in stream_jobs),
        "tts_job_execution_ms": dist(j.get("executionTime") for j in stream_jobs),
        "poll_interval_s": 0.1,
        "base64": base64_cost(mean_audio),
    }
    return {"results": results, "summary": summary(results), "extra": extra, "utterances": args.utterances,
            "load_avg": os.getloadavg()}


def report(out: dict[str, Any]) -> None:
    print_table(out["summary"])
    e = out["extra"]
    say(f"\nTTS jobs: queue p50 {e['tts_job_queue_ms']['p50']} ms, execution p50 {e['tts_job_execution_ms']['p50']} ms;"
        f" polling every {e['poll_interval_s']} s adds up to that per chunk read")
    b = e["base64"]
    say(f"base64: a reply of {b['pcm_bytes']} PCM bytes travels as {b['json_bytes']} JSON bytes ({b['ratio']}x), "
        f"{b['encode_decode_s'] * 1000:.2f} ms to encode and decode")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--utterances", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "runpod.json")
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    report(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    say(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
