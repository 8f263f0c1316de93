"""The bare-engine side of the services benchmark: runs inside a service's own venv.

    <service venv>/bin/python -m scripts.bench._services_probe stt|tts|llm   (from the repo root)

The first stdin line is ``{"config": <ServiceConfig as JSON>, "paths": <Paths as dict>}``: the
same effective config the supervisor hands the service. The probe loads the engine the way the
service does (same class or library call, same options, same model file), prints one ``ready``
line, then answers one JSON line per command line with the time the engine took, measured
inside this process (no IPC in the figures). The process env is the service's (``cfg.env``), so
thread settings such as OMP_NUM_THREADS match.

* ``stt``: faster-whisper's ``WhisperModel`` built with the FasterWhisperEngine's arguments;
  the WAV bytes decoded to 16 kHz by the service's own ``decode_audio`` (faster-whisper's PyAV
  decoder took 20-35 ms more per clip here, which would flatter the service), then ``transcribe``.
* ``tts``: the service's own engine classes (KokoroEngine, PiperEngine) with its TtsOptions; the
  text is cut by the service's ``text_split`` and the pieces synthesised one after another.
* ``llm``: llama-cpp-python ``Llama`` with the LlamaCppEngine's arguments and
  ``create_chat_completion(stream=True)``.

stdout carries only the protocol: C libraries that print are sent to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from core.config import ServiceConfig
from core.context import Paths

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stt_engine(cfg: ServiceConfig, paths: Paths) -> tuple[Handler, dict[str, Any]]:
    from faster_whisper import WhisperModel  # noqa: PLC0415 - only in the stt venv

    from services.stt.audio import decode_audio  # noqa: PLC0415
    from services.stt.model_store import resolve_model  # noqa: PLC0415
    from services.stt.options import SttOptions  # noqa: PLC0415

    o = SttOptions.from_config(cfg)
    ref = resolve_model(cfg.model, paths.models, cfg.name).ref
    model = WhisperModel(  # exactly FasterWhisperEngine.load's arguments
        ref, device=cfg.device, compute_type=o.compute_type, cpu_threads=o.cpu_threads,
        num_workers=o.max_concurrency, download_root=str(paths.models / "hub"),
    )

    def transcribe(cmd: dict[str, Any]) -> dict[str, Any]:
        data = Path(cmd["wav"]).read_bytes()  # read before the clock starts: the service gets bytes too
        t0 = time.perf_counter()
        audio = decode_audio(data, "wav", max_audio_s=o.max_audio_s).samples
        t1 = time.perf_counter()
        segments, info = model.transcribe(
            audio, language=cmd.get("language") or None, beam_size=o.beam_size, initial_prompt=None,
            vad_filter=o.vad_filter,
        )
        text = "".join(s.text for s in segments).strip()  # a generator: decoding happens here
        t2 = time.perf_counter()
        return {"first_s": t2 - t0, "total_s": t2 - t0, "decode_s": t1 - t0, "text": text,
                "audio_s": len(audio) / model.feature_extractor.sampling_rate, "language": info.language}

    return transcribe, {"model": ref, "compute_type": o.compute_type, "cpu_threads": o.cpu_threads,
                        "beam_size": o.beam_size}


def tts_engine(cfg: ServiceConfig, paths: Paths) -> tuple[Handler, dict[str, Any]]:
    import numpy as np  # noqa: PLC0415

    from services.tts.audio import PAUSES  # noqa: PLC0415
    from services.tts.options import TtsOptions  # noqa: PLC0415
    from services.tts.service import ENGINES  # noqa: PLC0415 - the very classes the service uses
    from services.tts.text_split import split_text  # noqa: PLC0415

    o = TtsOptions.from_config(cfg)
    engines = {name: ENGINES[name](o, cfg.model, str(paths.models), cfg.name) for name in o.engines}
    infos = {name: engine.load() for name, engine in engines.items()}

    def synthesize(cmd: dict[str, Any]) -> dict[str, Any]:
        name, text, language = cmd["engine"], cmd["text"], cmd["language"]
        engine, info = engines[name], infos[name]
        voice = cmd.get("voice") or info.default_voice
        t0 = time.perf_counter()
        pieces = split_text(text, first_clause_min_words=o.first_clause_min_words, max_chars=o.max_piece_chars)
        first = 0.0
        samples = 0
        pauses = 0.0
        for i, piece in enumerate(pieces):
            audio = np.asarray(engine.synthesize(piece.text, voice, language, 1.0))
            samples += len(audio)
            if i == 0:
                first = time.perf_counter() - t0
            if i < len(pieces) - 1:
                pauses += PAUSES[piece.pause]
        total = time.perf_counter() - t0
        return {"first_s": first, "total_s": total, "audio_s": samples / info.sample_rate + pauses,
                "pieces": len(pieces), "voice": voice}

    details = {name: {"voice": info.default_voice, "sample_rate": info.sample_rate, **info.details}
               for name, info in infos.items()}
    return synthesize, {"engines": details, "intra_op_threads": o.intra_op_threads}


def llm_engine(cfg: ServiceConfig, paths: Paths) -> tuple[Handler, dict[str, Any]]:
    from llama_cpp import Llama  # noqa: PLC0415 - only in the llm venv

    from services.llm.model_store import resolve_model  # noqa: PLC0415
    from services.llm.options import LlmOptions  # noqa: PLC0415

    o = LlmOptions.from_config(cfg)
    resolved = resolve_model(cfg.model, paths.models, cfg.name)
    kwargs: dict[str, Any] = {  # exactly LlamaCppEngine.load's arguments
        "n_ctx": o.n_ctx, "n_batch": o.n_batch, "n_gpu_layers": o.n_gpu_layers, "verbose": False,
    }
    if o.n_threads:
        kwargs["n_threads"] = o.n_threads
    if resolved.kind == "hub":
        llm = Llama.from_pretrained(resolved.ref, o.hub_file, cache_dir=str(paths.models / "hub"), **kwargs)
    else:
        llm = Llama(model_path=resolved.ref, **kwargs)

    def generate(cmd: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        stream = llm.create_chat_completion(
            messages=cmd["messages"], temperature=cmd["temperature"], top_p=cmd["top_p"],
            max_tokens=cmd["max_tokens"], seed=cmd["seed"], stream=True,
        )
        first = last = 0.0
        parts: list[str] = []
        for chunk in stream:
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                last = time.perf_counter() - t0
                first = first or last
                parts.append(delta)
        total = time.perf_counter() - t0
        return {"first_s": first, "last_s": last, "total_s": total, "chunks": len(parts), "text": "".join(parts)}

    return generate, {"model": resolved.ref, "n_ctx": o.n_ctx, "n_threads": o.n_threads, "n_batch": o.n_batch}


LOADERS = {"stt": stt_engine, "tts": tts_engine, "llm": llm_engine}


def serve(service: str, out: TextIO) -> None:
    def say(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    spec = json.loads(sys.stdin.readline())
    cfg = ServiceConfig.model_validate(spec["config"])
    paths = Paths.from_dict(spec["paths"])
    t0 = time.perf_counter()
    handler, details = LOADERS[service](cfg, paths)
    say({"ready": True, "load_s": time.perf_counter() - t0, "rss_bytes": rss_bytes(), "details": details,
         "pid": os.getpid()})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "rss":
            say({"rss_bytes": rss_bytes()})
            continue
        try:
            say(handler(cmd))
        except Exception as e:  # reported to the bench, which stops with it
            say({"error": f"{type(e).__name__}: {e}"})


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in LOADERS:
        raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(LOADERS)}")
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    serve(sys.argv[1], out)


if __name__ == "__main__":
    main()
