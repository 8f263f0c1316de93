"""SttService without a real model: options, request validation, response shape, metrics, admission."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext, ServiceContext
from core.errors import ConfigError, InvalidArgument, ResourceExhausted
from services.runtime import CallInfo
from services.stt.engine import DecodeOptions, ModelLoadError
from services.stt.service import SttService
from tests.helpers.fake_stt import make_service

CALL = CallInfo(method="Transcribe", protocol="grpc", request_id="r1")


def pcm_request(svc: SttService, seconds: float = 1.0, **fields: Any) -> Any:
    data = np.zeros(int(16000 * seconds), dtype="<i2").tobytes()
    return svc.op.request(audio={"data": data, "encoding": "PCM_S16LE", "sample_rate": 16000}, **fields)


async def test_response_carries_text_segments_durations_and_model(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path, language="en")
    try:
        resp = await svc.transcribe(pcm_request(svc, 1.5), CALL)
    finally:
        svc.close()
    assert resp.text == "hello there"
    assert resp.audio_duration_s == pytest.approx(1.5)
    assert resp.segments[0].end_s == pytest.approx(1.5)
    assert resp.language == "en" and resp.model == "embedded:whisper-base"
    assert resp.processing_time_s >= 0
    assert engine.seen[0] == DecodeOptions(language="en", beam_size=1, initial_prompt=None)
    registry = svc.ctx.process.registry
    assert registry.get_sample_value("uv_stt_audio_seconds_total", {"service": "stt"}) == pytest.approx(1.5)
    assert registry.get_sample_value("uv_stt_real_time_factor_count", {"service": "stt"}) == 1


async def test_request_fields_override_the_defaults(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path, language="en", beam_size=2)
    try:
        await svc.transcribe(pcm_request(svc, language="auto", beam_size=5, initial_prompt="Stella"), CALL)
        await svc.transcribe(pcm_request(svc, language="PT"), CALL)
    finally:
        svc.close()
    assert engine.seen[0] == DecodeOptions(language=None, beam_size=5, initial_prompt="Stella")
    assert engine.seen[1].language == "pt" and engine.seen[1].beam_size == 2


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"beam_size": 50}, "beam_size must be 1..20"),
        ({"initial_prompt": "x" * 5000}, "initial_prompt is 5000"),
    ],
)
async def test_bad_request_fields_are_invalid_argument(tmp_path: Path, fields: dict[str, Any], reason: str) -> None:
    svc, _ = make_service(tmp_path)
    try:
        with pytest.raises(InvalidArgument, match=reason):
            await svc.transcribe(pcm_request(svc, **fields), CALL)
    finally:
        svc.close()


async def test_max_audio_s_option_applies(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path, max_audio_s=1)
    try:
        with pytest.raises(InvalidArgument, match="over this service's limit of 1 s"):
            await svc.transcribe(pcm_request(svc, 2.0), CALL)
    finally:
        svc.close()


async def test_full_line_is_refused_at_once(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path, max_concurrency=1, max_queue=0)
    engine.gate = threading.Event()
    try:
        first = asyncio.create_task(svc.transcribe(pcm_request(svc), CALL))
        assert await asyncio.to_thread(engine.started.wait, 30)  # the first call holds the only worker
        with pytest.raises(ResourceExhausted, match="STT is busy"):
            await svc.transcribe(pcm_request(svc), CALL)
        engine.gate.set()
        assert (await first).text == "hello there"
    finally:
        engine.gate.set()
        svc.close()


@pytest.mark.parametrize(
    ("options", "key"),
    [({"bogus": 1}, "services.stt.options.bogus"), ({"beam_size": 0}, "services.stt.options.beam_size")],
)
def test_bad_options_are_config_errors_naming_the_key(tmp_path: Path, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        make_service(tmp_path, **options)
    assert e.value.key == key


def test_unknown_engine_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(env={"UV_STT_ENGINE": "whisper.cpp"})
    g = GlobalContext.create(settings, Paths(root=tmp_path, var=tmp_path, cache=tmp_path, venvs=tmp_path))
    ctx = ServiceContext(ProcessContext(global_=g, name="stt"), settings.services["stt"], 0, 0)
    with pytest.raises(ConfigError, match=r"unknown STT engine 'whisper\.cpp'; available: faster-whisper"):
        SttService(ctx)


def test_engine_load_failure_is_a_config_error_on_the_model_key(tmp_path: Path) -> None:
    svc, engine = make_service(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin").write_bytes(b"x")
    svc.cfg = svc.cfg.model_copy(update={"model": str(tmp_path / "m")})

    def fail(ref: str) -> None:
        raise ModelLoadError(f"cannot read {ref}")

    engine.load = fail  # type: ignore[method-assign]
    with pytest.raises(ConfigError) as e:
        svc.load()
    assert e.value.key == "services.stt.model" and "cannot read" in e.value.reason
    svc.close()
