"""The real STT service subprocess (its own venv, the embedded base model) over gRPC, HTTP and OpenAI.

Speech is made with Piper in the test. One service instance serves the call tests; readiness,
SIGTERM drain, port clashes, a bad model and a vanished parent each get their own process.
"""

from __future__ import annotations

import base64
import fcntl
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import msgpack
import openai
import pytest

from core.wire import CONTROL_OPS, operation
from tests.helpers.service_process import SERVING, eventually
from tests.helpers.speech import convert, convert_wav, speech_bytes
from tests.helpers.stt_process import SttProcess
from tests.helpers.text import normalize, word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SENTENCE = "Please call Stella and ask her to bring these things with her from the store."
RPC = "/rpc/ultravox.v1.SpeechToText/Transcribe"
MAX_AUDIO_S = 20
MAX_REQUEST_BYTES = 2 * 1024 * 1024
NOT_SERVING = 2
TRANSCRIBE = operation("stt", "Transcribe")

Logs = Callable[[Callable[[], str]], None]


@pytest.fixture(scope="module")
def stt(stt_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SttProcess]:
    with SttProcess(
        stt_python,
        tmp_path_factory.mktemp("stt"),
        options={"max_audio_s": MAX_AUDIO_S, "language": "en"},
        overrides={"max_request_bytes": MAX_REQUEST_BYTES},
    ).running() as proc:
        yield proc


@pytest.fixture
def own(stt_python: str, tmp_path: Path, service_logs: Logs) -> Iterator[Callable[..., SttProcess]]:
    """A factory for a dedicated service process, stopped at teardown."""
    started: list[SttProcess] = []

    def make(**kw: Any) -> SttProcess:
        proc = SttProcess(stt_python, tmp_path / f"svc{len(started)}", **kw)
        started.append(proc)
        service_logs(proc.log_text)
        return proc

    yield make
    for proc in started:
        proc.stop(signal.SIGKILL if proc.proc and proc.proc.poll() is None else signal.SIGTERM)


def wav_request(wav: bytes, **fields: Any) -> Any:
    return TRANSCRIBE.request(audio={"data": wav, "encoding": "WAV"}, **fields)


def http_msgpack(stt: SttProcess, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"content-type": "application/msgpack", "x-internal-token": token or stt.token}
    return stt.http.post(RPC, content=msgpack.packb(body, use_bin_type=True), headers=headers)


def http_json(stt: SttProcess, body: dict[str, Any]) -> Any:
    return stt.http.post(RPC, json=body, headers={"x-internal-token": stt.token})


def test_same_text_over_grpc_msgpack_and_json(stt: SttProcess) -> None:
    wav = speech_bytes(SENTENCE)
    over_grpc = stt.call("Transcribe", wav_request(wav))
    r_mp = http_msgpack(stt, {"audio": {"data": wav, "encoding": "WAV"}})
    r_js = http_json(stt, {"audio": {"data": base64.b64encode(wav).decode(), "encoding": "WAV"}})
    assert r_mp.status_code == 200 and r_js.status_code == 200, (r_mp.text, r_js.text)
    texts = [over_grpc.text, msgpack.unpackb(r_mp.content)["text"], r_js.json()["text"]]
    assert normalize(texts[0]) == normalize(SENTENCE)
    assert texts[1] == texts[0] and texts[2] == texts[0]
    assert over_grpc.language == "en" and over_grpc.model == "embedded:whisper-base"
    assert over_grpc.audio_duration_s == pytest.approx(len(wav) / 2 / 22050, abs=0.05)
    assert over_grpc.processing_time_s > 0 and over_grpc.segments
    assert over_grpc.segments[-1].end_s <= over_grpc.audio_duration_s + 0.5


def test_wav_at_8k_stereo_and_raw_pcm_at_22050(stt: SttProcess) -> None:
    wav = speech_bytes(SENTENCE)
    low = stt.call("Transcribe", wav_request(convert_wav(wav, rate=8000, channels=2)))
    pcm = convert(wav, rate=22050, channels=1)
    raw = stt.call(
        "Transcribe",
        TRANSCRIBE.request(
            audio={"data": pcm.data, "encoding": "PCM_S16LE", "sample_rate": 22050, "channels": 1}
        ),
    )
    assert word_error_rate(SENTENCE, low.text) <= 0.15, low.text
    assert normalize(raw.text) == normalize(SENTENCE)
    assert low.audio_duration_s == pytest.approx(raw.audio_duration_s, abs=0.05)


def test_language_detection_on_request(stt: SttProcess) -> None:
    reply = stt.call("Transcribe", wav_request(speech_bytes(SENTENCE), language="auto"))
    assert reply.language == "en" and reply.language_probability > 0.5


def _too_long_pcm() -> bytes:
    return b"\x00\x00" * 16000 * (MAX_AUDIO_S + 1)


@pytest.mark.parametrize(
    ("case", "audio", "reason"),
    [
        ("garbage", {"data": b"definitely not audio " * 200}, "could not decode the audio"),
        ("empty", {"data": b"", "encoding": "WAV"}, "audio is empty"),
        ("odd-pcm", {"data": b"\x00" * 301, "encoding": "PCM_S16LE", "sample_rate": 16000}, "whole number"),
        ("no-rate", {"data": b"\x00" * 300, "encoding": "PCM_S16LE"}, "needs its sample_rate"),
        ("too-long", {"data": _too_long_pcm(), "encoding": "PCM_S16LE", "sample_rate": 16000}, "split it"),
    ],
)
def test_bad_audio_is_rejected_and_the_next_call_works(
    stt: SttProcess, case: str, audio: dict[str, Any], reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as e:
        stt.call("Transcribe", TRANSCRIBE.request(audio=audio))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in e.value.details()
    r = http_msgpack(stt, {"audio": audio})
    assert r.status_code == 400
    assert msgpack.unpackb(r.content)["error"] == {"code": "INVALID_ARGUMENT", "message": e.value.details()}
    good = stt.call("Transcribe", wav_request(speech_bytes(SENTENCE)))
    assert normalize(good.text) == normalize(SENTENCE)


def test_request_over_max_request_bytes_is_refused_on_both_protocols(stt: SttProcess) -> None:
    big = {"data": b"\x00" * (MAX_REQUEST_BYTES + 1024), "encoding": "PCM_S16LE", "sample_rate": 16000}
    with pytest.raises(grpc.RpcError) as e:
        stt.call("Transcribe", TRANSCRIBE.request(audio=big))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    r = http_msgpack(stt, {"audio": big})
    assert r.status_code == 413
    assert "max_request_bytes" in msgpack.unpackb(r.content)["error"]["message"]
    assert stt.call("Transcribe", wav_request(speech_bytes(SENTENCE))).text


def test_calls_without_the_token_are_unauthenticated(stt: SttProcess) -> None:
    req = wav_request(speech_bytes(SENTENCE))
    for token in (None, "wrong-token"):
        with pytest.raises(grpc.RpcError) as e:
            stt.call("Transcribe", req, token=token)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "x-internal-token" in e.value.details()
    r = stt.http.post(RPC, content=msgpack.packb({}), headers={"content-type": "application/msgpack"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/msgpack"
    r = stt.http.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"x", "audio/wav")})
    assert r.status_code == 401
    assert stt.token not in stt.log_text()


def test_openai_sdk_transcriptions(stt: SttProcess) -> None:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{stt.http_port}/v1", api_key=stt.token, max_retries=0)
    wav = speech_bytes(SENTENCE)
    try:
        out = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", wav, "audio/wav"))
        assert normalize(out.text) == normalize(SENTENCE)
        text = client.audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", wav, "audio/wav"), response_format="text"
        )
        assert normalize(str(text)) == normalize(SENTENCE)
        verbose = client.audio.transcriptions.create(
            model="whisper-1",
            file=("speech.wav", wav, "audio/wav"),
            response_format="verbose_json",
            language="en",
        )
        assert verbose.language == "en" and verbose.duration and verbose.segments
        with pytest.raises(openai.BadRequestError) as e:
            client.audio.transcriptions.create(
                model="whisper-1", file=("x.wav", b"not audio at all", "audio/wav")
            )
        assert "could not decode the audio" in str(e.value)
    finally:
        client.close()


def test_control_info_and_metrics(stt: SttProcess) -> None:
    info_op = CONTROL_OPS["Info"]
    stub = stt.channel.unary_unary(
        info_op.grpc_path,
        request_serializer=info_op.request.SerializeToString,
        response_deserializer=info_op.response.FromString,
    )
    info = stub(info_op.request(), metadata=[("x-internal-token", stt.token)], timeout=10)
    assert (info.service, info.role, info.engine, info.ready) == ("stt", "stt", "faster-whisper", True)
    assert info.details["model_path"].endswith("whisper-base-ct2")
    stt.call("Transcribe", wav_request(speech_bytes(SENTENCE)))
    assert stt.metric("uv_service_calls_total", method="Transcribe", outcome="ok", protocol="grpc") >= 1
    assert stt.metric("uv_stt_audio_seconds_total") > 0
    assert stt.metric("uv_service_model_load_seconds") > 0
    assert stt.metric("uv_service_ready") == 1
    assert stt.http.get("/readyz").status_code == 200
    lines = [json.loads(line) for line in stt.log_text().splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "call ok" and line.get("request_id") for line in lines)


def test_readiness_follows_the_model_load(own: Callable[..., SttProcess], tmp_path: Path) -> None:
    """Hold the model-assembly lock so the load is provably in progress, then let it finish."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    with (cache / "models" / ".whisper-base-ct2.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        svc = own(cache=cache).start()
        eventually(lambda: svc.health() == NOT_SERVING, 120, "health NOT_SERVING during the load", svc)
        assert svc.health("ultravox.v1.SpeechToText") == NOT_SERVING
        assert svc.http.get("/livez").status_code == 200
        ready = svc.http.get("/readyz")
        assert ready.status_code == 503 and "loading its model" in ready.json()["reason"]
        with pytest.raises(grpc.RpcError) as e:
            svc.call("Transcribe", wav_request(speech_bytes(SENTENCE)))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        echo = CONTROL_OPS["Echo"]
        stub = svc.channel.unary_unary(
            echo.grpc_path,
            request_serializer=echo.request.SerializeToString,
            response_deserializer=echo.response.FromString,
        )
        assert stub(echo.request(payload=b"hi"), metadata=[("x-internal-token", svc.token)]).payload == b"hi"
        fcntl.flock(lock, fcntl.LOCK_UN)
    svc.wait_serving()
    assert svc.health("ultravox.v1.SpeechToText") == SERVING
    assert svc.http.get("/readyz").status_code == 200
    assert normalize(svc.call("Transcribe", wav_request(speech_bytes(SENTENCE))).text) == normalize(SENTENCE)


def test_sigterm_drains_in_flight_calls_then_exits_0(own: Callable[..., SttProcess]) -> None:
    svc = own(options={"language": "en"}).start().wait_serving()
    pending = svc.future("Transcribe", wav_request(speech_bytes(SENTENCE)))
    eventually(
        lambda: svc.metric("uv_service_calls_in_flight", method="Transcribe") >= 1, 60, "call in flight"
    )
    svc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert normalize(pending.result().text) == normalize(SENTENCE)
    assert svc.wait_exit(60) == 0
    lines = [json.loads(line) for line in svc.log_text().splitlines() if line.startswith("{")]
    assert [line["msg"] for line in lines if line["msg"] in ("stopping", "stopped")] == [
        "stopping",
        "stopped",
    ]


def test_port_in_use_exits_non_zero_naming_service_and_port(own: Callable[..., SttProcess]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        svc = own(http_port=port).start()
        assert svc.wait_exit(120) == 3
    assert f"service 'stt' cannot start: its http port {port}" in svc.log_text()


def test_bad_model_path_exits_non_zero_with_the_reason(
    own: Callable[..., SttProcess], tmp_path: Path
) -> None:
    svc = own(overrides={"model": str(tmp_path / "no-such-model")}).start()
    assert svc.wait_exit(120) == 3
    assert "no-such-model does not exist" in svc.log_text()


def test_exits_when_its_parent_disappears(own: Callable[..., SttProcess]) -> None:
    fake_main = subprocess.Popen(["sleep", "600"])
    try:
        svc = own(parent_pid=fake_main.pid).start()
        eventually(svc.http_alive, 120, "the HTTP port to answer", svc)
    finally:
        fake_main.kill()
        fake_main.wait()
    started = time.monotonic()
    code = svc.wait_exit(60)
    assert code == 4, f"exit code {code} after {time.monotonic() - started:.1f} s"
    assert f"main process {fake_main.pid} no longer exists" in svc.log_text()
