"""The two baselines of the voice benchmark, on the same main, services and utterances.

* **Sequential** (the voice-ai-backend seed): after the user stops speaking, wait the same
  end-of-turn silence (added, not slept: it is a constant), transcribe the whole utterance
  (``/v1/audio/transcriptions``), get the whole reply (``/v1/chat/completions``, not streamed,
  the agent's system prompt, temperature and max_tokens), synthesise all of it
  (``/v1/audio/speech``, the agent's engine and voice, WAV at the client's rate), then send:
  voice-to-voice = silence + STT + LLM + TTS.
* **Engine floor**: each service's time for the work the streaming pipeline must finish before
  its first audio byte, added up: the Transcribe of the utterance, the LLM's time to the first
  speakable chunk (streamed, cut by the project's own chunker, the stream closed right there)
  and the TTS's time to the first audio of that chunk (streamed PCM).

Each call goes through main's HTTP routes and the hub, as the streaming path goes through the
hub: the floor includes that hop (a few ms per call on loopback), nothing else.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core.conversation.chunker import SpeakableChunker
from core.sessions.agents import load_agents
from scripts.bench._voice_speech import Utterance, pcm_to_wav
from tests.helpers.text import word_error_rate


@dataclass(frozen=True, slots=True)
class AgentParams:
    """What the streaming pipeline uses for a turn of the default agent, for the baselines to copy."""

    name: str
    system_prompt: str
    temperature: float
    max_tokens: int
    language: str
    engine: str
    voice: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "language": self.language, "engine": self.engine, "voice": self.voice,
                "system_prompt": self.system_prompt}


async def resolve_agent(http: httpx.AsyncClient, base: str, agents_dir: Path, name: str) -> AgentParams:
    """The agent's file as main loaded it, with its TTS engine's default voice filled in."""
    agent = load_agents(agents_dir)[name]
    engine = agent.tts_engine
    r = await http.get(f"{base}/v1/audio/voices", params={"engine": engine} if engine else {})
    r.raise_for_status()
    listing = r.json()
    voice = agent.voice or str(listing["default_voice"])
    if not engine:
        engine = next(str(v["engine"]) for v in listing["voices"] if v["id"] == voice)
    return AgentParams(agent.name, agent.system_prompt, agent.temperature, agent.max_tokens, agent.language,
                       engine, voice)


def _ok(r: httpx.Response, what: str) -> httpx.Response:
    if r.status_code != 200:
        raise RuntimeError(f"{what} answered {r.status_code}: {r.text[:300]}")
    return r


def _messages(agent: AgentParams, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": agent.system_prompt}, {"role": "user", "content": text}]


async def transcribe(http: httpx.AsyncClient, base: str, utt: Utterance, language: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    r = _ok(await http.post(f"{base}/v1/audio/transcriptions", data={"language": language},
                            files={"file": ("utterance.wav", pcm_to_wav(utt.pcm), "audio/wav")}),
            "/v1/audio/transcriptions")
    return str(r.json()["text"]).strip(), time.perf_counter() - t0


async def sequential(
    http: httpx.AsyncClient, base: str, utt: Utterance, agent: AgentParams, *, silence_s: float, out_rate: int
) -> dict[str, Any]:
    text, stt_s = await transcribe(http, base, utt, agent.language)
    t0 = time.perf_counter()
    r = _ok(await http.post(f"{base}/v1/chat/completions", json={
        "messages": _messages(agent, text), "temperature": agent.temperature, "max_tokens": agent.max_tokens,
    }), "/v1/chat/completions")
    reply = str(r.json()["choices"][0]["message"]["content"]).strip()
    llm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    audio = _ok(await http.post(f"{base}/v1/audio/speech", json={
        "input": reply or "Sorry.", "voice": agent.voice, "language": agent.language, "response_format": "wav",
        "sample_rate": out_rate,
    }), "/v1/audio/speech").content
    tts_s = time.perf_counter() - t0
    return {
        "utterance": utt.id, "source": utt.source, "transcript": text, "wer": round(word_error_rate(utt.text, text), 3),
        "reply": reply, "audio_s": round(max(0, len(audio) - 44) / 2 / out_rate, 3),
        "silence_s": silence_s, "stt_s": round(stt_s, 4), "llm_s": round(llm_s, 4), "tts_s": round(tts_s, 4),
        "voice_to_voice_s": round(silence_s + stt_s + llm_s + tts_s, 4),
    }


async def first_chunk(http: httpx.AsyncClient, base: str, agent: AgentParams, text: str) -> tuple[str, float, float]:
    """(first speakable chunk, time to first token, time to that chunk) of a streamed reply to ``text``."""
    chunker = SpeakableChunker()
    t0 = time.perf_counter()
    first_token: float | None = None
    body = {"messages": _messages(agent, text), "temperature": agent.temperature, "max_tokens": agent.max_tokens,
            "stream": True}
    async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"/v1/chat/completions (stream) answered {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            doc = json.loads(line[6:])
            if "error" in doc:
                raise RuntimeError(f"/v1/chat/completions stream failed: {doc['error']}")
            delta = doc["choices"][0]["delta"].get("content") or ""
            if not delta:
                continue
            first_token = first_token if first_token is not None else time.perf_counter() - t0
            if chunks := chunker.feed(delta):
                return chunks[0], first_token, time.perf_counter() - t0  # leaving the block closes the stream
    rest = chunker.flush()
    if not rest:
        raise RuntimeError(f"the LLM said nothing speakable to {text!r}")
    return rest[0], first_token or 0.0, time.perf_counter() - t0


async def first_audio(http: httpx.AsyncClient, base: str, agent: AgentParams, text: str, out_rate: int) -> float:
    t0 = time.perf_counter()
    body = {"input": text, "voice": agent.voice, "language": agent.language, "response_format": "pcm",
            "sample_rate": out_rate}
    async with http.stream("POST", f"{base}/v1/audio/speech", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"/v1/audio/speech (pcm) answered {r.status_code}: {(await r.aread())[:300]!r}")
        async for piece in r.aiter_bytes():
            if piece:
                return time.perf_counter() - t0
    raise RuntimeError(f"/v1/audio/speech returned no audio for {text!r}")


async def engine_floor(
    http: httpx.AsyncClient, base: str, utt: Utterance, agent: AgentParams, *, out_rate: int
) -> dict[str, Any]:
    text, stt_s = await transcribe(http, base, utt, agent.language)
    chunk, ttft_s, chunk_s = await first_chunk(http, base, agent, text or utt.text)
    tts_s = await first_audio(http, base, agent, chunk, out_rate)
    return {
        "utterance": utt.id, "source": utt.source, "transcript": text, "first_chunk": chunk,
        "stt_s": round(stt_s, 4), "llm_first_token_s": round(ttft_s, 4), "llm_first_chunk_s": round(chunk_s, 4),
        "tts_first_audio_s": round(tts_s, 4), "floor_s": round(stt_s + chunk_s + tts_s, 4),
    }
