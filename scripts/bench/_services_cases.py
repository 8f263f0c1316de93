"""The services benchmark's workloads, their calls through the hub, and the A/B loop.

Every case is one piece of work done two ways: through the hub to the running service
(``via_hub``), and by the bare engine in its probe (``bare``, a probe command). ``run_ab`` runs
each case's two sides back to back, alternating which goes first (A/B, then B/A), so that
whatever else loads the machine at that moment hits both sides alike. Figures per side:
``first_s`` (time to the first chunk; for unary STT, the whole call), ``total_s`` and what the
report derives from them (real-time factor, tokens/s). The service side also keeps the service's
own clock of its first chunk (``server_first_s``: TTS ``elapsed_s``, STT ``processing_time_s``,
LLM ``time_to_first_token_s``), which splits its extra time into inside the service and on the
way through the hub.
"""

from __future__ import annotations

import contextlib
import functools
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.managers.hub import CommunicationManager
from scripts.bench._services_client import Probe, cpu_seconds
from tests.helpers.speech import speech_path
from tests.helpers.text import word_error_rate

STT_SENTENCES = (
    "Yes, please.",
    "Turn off the lights in the kitchen.",
    "What time is it in Tokyo right now?",
    "Please call Stella and ask her to bring these things with her from the store.",
    "I would like to book a table for four people at half past seven tomorrow evening, by the window if possible.",
)
TTS_TEXTS = {
    "short": "Sure, I can help with that.",
    "long": "Sure, I can help with that. The next train to Boston leaves at nine fifteen from platform four, "
    "so you should get there a little early. Bring your ticket and a photo ID. If you miss it, the one "
    "after that leaves at half past ten.",
}
TTS_LANGUAGE = "en-us"
LLM_PROMPTS = (
    "Explain in three sentences why the sky is blue.",
    "Write a short poem about a lighthouse in a storm.",
    "Give me four tips for sleeping better, one line each.",
)
LLM_PARAMS: dict[str, Any] = {"temperature": 0.0, "top_p": 0.95, "max_tokens": 48, "seed": 42}
PROTOCOL = "grpc"
"""Forced, so that a silent fallback to HTTP can never skew the figures."""

Side = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Case:
    group: str
    """What the targets are checked per: ``stt``, ``tts kokoro``, ``tts piper``, ``llm``."""
    name: str
    via_hub: Side
    bare: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda _m: {})
    """Extra fields per measurement (WER of a transcript...), to show both sides did the same work."""


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def wer_of(reference: str, measured: dict[str, Any]) -> dict[str, Any]:
    return {"wer": word_error_rate(reference, measured["text"])}


def stt_cases(hub: CommunicationManager) -> list[Case]:
    cases = []
    for i, sentence in enumerate(STT_SENTENCES, 1):
        path = speech_path(sentence)
        wav = path.read_bytes()

        async def transcribe(wav: bytes = wav) -> dict[str, Any]:
            t0 = time.perf_counter()
            r = await hub.call("stt", "Transcribe", {"audio": {"data": wav, "encoding": "WAV"}, "language": "en"},
                                protocol=PROTOCOL)
            took = time.perf_counter() - t0
            return {"first_s": took, "total_s": took, "audio_s": r.audio_duration_s, "text": r.text,
                    "server_first_s": r.processing_time_s}

        cases.append(Case(
            "stt", f"u{i} {wav_seconds(path):.1f}s", transcribe, {"op": "stt", "wav": str(path), "language": "en"},
            info={"text": sentence, "audio_s": wav_seconds(path), "wav_bytes": len(wav)},
            check=functools.partial(wer_of, sentence),
        ))
    return cases


def tts_cases(hub: CommunicationManager, voices: dict[str, str]) -> list[Case]:
    cases = []
    for engine, voice in voices.items():
        for label, text in TTS_TEXTS.items():
            req = {"text": text, "engine": engine, "voice": voice, "language": TTS_LANGUAGE, "format": "pcm"}

            async def synthesize(req: dict[str, Any] = req) -> dict[str, Any]:
                t0 = time.perf_counter()
                first = server_first = 0.0
                audio = 0.0
                pieces = 0
                async with contextlib.aclosing(hub.stream("tts", "SynthesizeStream", req, protocol=PROTOCOL)) as chunks:
                    async for chunk in chunks:
                        if not pieces:
                            first, server_first = time.perf_counter() - t0, chunk.elapsed_s
                        audio += chunk.audio_duration_s
                        pieces += 1
                return {"first_s": first, "total_s": time.perf_counter() - t0, "audio_s": audio, "pieces": pieces,
                        "server_first_s": server_first}

            bare = {"op": "tts", "engine": engine, "voice": voice, "language": TTS_LANGUAGE, "text": text}
            cases.append(Case(f"tts {engine}", f"{engine} {label}", synthesize, bare,
                              info={"text": text, "voice": voice, "chars": len(text)}))
    return cases


def llm_cases(hub: CommunicationManager) -> list[Case]:
    cases = []
    for i, prompt in enumerate(LLM_PROMPTS, 1):
        messages = [{"role": "user", "content": prompt}]
        req = {"messages": messages, **LLM_PARAMS}

        async def generate(req: dict[str, Any] = req) -> dict[str, Any]:
            t0 = time.perf_counter()
            first = last = 0.0
            parts: list[str] = []
            final: Any = None
            async with contextlib.aclosing(hub.stream("llm", "Generate", req, protocol=PROTOCOL)) as chunks:
                async for chunk in chunks:
                    if chunk.delta:
                        last = time.perf_counter() - t0
                        first = first or last
                        parts.append(chunk.delta)
                    if chunk.finish_reason:
                        final = chunk
            out = {"first_s": first, "last_s": last, "total_s": time.perf_counter() - t0, "chunks": len(parts),
                   "text": "".join(parts)}
            if final is not None:
                out |= {"finish_reason": final.finish_reason, "completion_tokens": final.usage.completion_tokens,
                        "server_first_s": final.time_to_first_token_s, "server_tokens_per_s": final.tokens_per_s}
            return out

        cases.append(Case("llm", f"p{i}", generate, {"op": "llm", "messages": messages, **LLM_PARAMS},
                          info={"prompt": prompt, **LLM_PARAMS}))
    return cases


def derive(m: dict[str, Any]) -> dict[str, Any]:
    """Real-time factor where there is audio, decode tokens/s where there are tokens."""
    out = dict(m)
    if m.get("audio_s"):
        out["rtf"] = m["total_s"] / m["audio_s"]
    if m.get("chunks", 0) >= 2 and m["last_s"] > m["first_s"]:
        out["tokens_per_s"] = (m["chunks"] - 1) / (m["last_s"] - m["first_s"])
    return out


async def run_ab(
    cases: list[Case], probe: Probe, service_pid: int, iterations: int, warmup: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Each case ``warmup`` + ``iterations`` times, service and bare back to back in alternating order.

    Each side also gets ``cpu_s``: the CPU time its process (the service's, or the probe's) used
    for the work, so a difference in wall time can be told apart from a difference in work; the
    service side adds ``hub_cpu_s``, what this process (the hub's client side) used meanwhile."""
    records: list[dict[str, Any]] = []
    pids = {"service": service_pid, "bare": probe.proc.pid}
    for it in range(warmup + iterations):
        for k, case in enumerate(cases):
            order = ("service", "bare") if (it + k) % 2 == 0 else ("bare", "service")
            got: dict[str, dict[str, Any]] = {}
            for side in order:
                cpu0, own0 = cpu_seconds(pids[side]), time.process_time()
                raw = await case.via_hub() if side == "service" else await probe.ask(case.bare)
                cpu = {"cpu_s": cpu_seconds(pids[side]) - cpu0}
                if side == "service":  # this process's share: the hub's client side of the call
                    cpu["hub_cpu_s"] = time.process_time() - own0
                got[side] = derive(raw) | case.check(raw) | cpu
            if it < warmup:
                continue
            for side, m in got.items():
                records.append({"group": case.group, "case": case.name, "side": side, "iteration": it - warmup,
                                "first": order[0], **m})
            s, b = got["service"], got["bare"]
            say(f"  {case.name:<16} #{it - warmup + 1}: first {s['first_s'] * 1e3:7.1f} ms vs bare "
                f"{b['first_s'] * 1e3:7.1f} ms; total {s['total_s'] * 1e3:7.1f} vs {b['total_s'] * 1e3:7.1f} ms; "
                f"cpu {s['cpu_s'] * 1e3:6.0f} vs {b['cpu_s'] * 1e3:6.0f} ms")
    return records
