"""A real ServiceSupervisor and hub in this process, with the real STT service subprocess.

Covers issue 2's integration list: same transcript over each forced protocol, fallback when the
gRPC port is unreachable, bad audio rejected without fallback, kill -9 and SIGSTOP recovery,
a port already in use, and a service that crashes at start ending FATAL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from core.config import load_settings
from core.context import GlobalContext, Paths, ProcessContext
from core.errors import InvalidArgument, PortInUse
from core.managers.endpoint import Endpoint
from core.managers.hub import CommunicationManager
from core.managers.supervisor import ServiceSupervisor, State
from tests.helpers.stack import dump_logs, free_port, make_config_dir, stack_env
from tests.helpers.text import normalize, word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SENTENCE = "Please call Stella and ask her to bring these things with her from the store."


def _fast_policies(doc: dict[str, Any]) -> None:
    stt = doc["services"]["stt"]
    stt["health"] = {"period_s": 1.0, "timeout_s": 1.0, "failure_threshold": 2, "startup_timeout_s": 300}
    stt["restart"] = {"backoff_base_s": 0.2, "backoff_cap_s": 2, "flapping_window_s": 60, "flapping_max_restarts": 5}
    stt["stop_grace_s"] = 3


def _context(tmp: Path, edit: Any = _fast_policies, **env_extra: str) -> GlobalContext:
    cfg = make_config_dir(tmp / "config", edit)
    only_stt = {"UV_TTS_ENABLED": "false", "UV_LLM_ENABLED": "false"}
    env = stack_env(tmp / "var", cfg, **{**only_stt, **env_extra})
    return GlobalContext.create(load_settings(cfg, env), Paths.from_env(env))


@dataclasses.dataclass
class Stack:
    g: GlobalContext
    ctx: ProcessContext
    sup: ServiceSupervisor
    hub: CommunicationManager


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    g = _context(tmp)
    ctx = ProcessContext(g, "main")
    sup = ServiceSupervisor(ctx)
    hub = CommunicationManager(ctx, sup, config=g.settings.hub)
    failed = True
    try:
        await sup.prepare()
        await sup.start_all()
        assert await sup.wait_ready(600), f"STT not ready: {sup.status('stt').to_dict()}"
        yield Stack(g, ctx, sup, hub)
        failed = False
    finally:
        await hub.close()
        await sup.shutdown()
        if failed:
            dump_logs(g.paths.var, "stack")


def _request(wav: bytes) -> dict[str, Any]:
    return {"audio": {"data": wav, "encoding": "WAV"}, "language": "en"}


async def _wait_for(pred: Any, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


def _sample_sum(registry: CollectorRegistry, fragment: str, **labels: str) -> float:
    total = 0.0
    for fam in registry.collect():
        if fragment not in fam.name:
            continue
        for s in fam.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_same_transcript_over_each_protocol(stack: Stack, speech_wav: Any) -> None:
    wav = speech_wav(SENTENCE)
    texts = {}
    for proto in ("grpc", "msgpack", "json"):
        resp = await stack.hub.call("stt", "Transcribe", _request(wav), protocol=proto)
        texts[proto] = normalize(resp.text)
        assert resp.audio_duration_s > 1.0 and resp.processing_time_s > 0
        assert resp.language == "en" and resp.segments
    assert len(set(texts.values())) == 1, texts
    assert word_error_rate(SENTENCE, texts["grpc"]) <= 0.2, texts


async def test_grpc_port_unreachable_falls_back_to_msgpack(stack: Stack, speech_wav: Any) -> None:
    closed = free_port()  # nothing listens here: connections are refused

    class GrpcBlocked:
        def endpoint(self, service: str) -> Endpoint:
            return dataclasses.replace(stack.sup.endpoint(service), grpc_port=closed)

    ctx = ProcessContext(stack.g, "main-blocked")
    hub = CommunicationManager(ctx, GrpcBlocked(), config=stack.g.settings.hub)
    try:
        resp = await hub.call("stt", "Transcribe", _request(speech_wav(SENTENCE)))
        assert word_error_rate(SENTENCE, resp.text) <= 0.2
        assert _sample_sum(ctx.registry, "fallback", service="stt") >= 1
        assert _sample_sum(ctx.registry, "calls", service="stt", protocol="msgpack", outcome="ok") == 1
    finally:
        await hub.close()


@pytest.mark.parametrize("proto", ["grpc", "msgpack", "json"])
async def test_bad_audio_is_rejected_and_service_keeps_serving(stack: Stack, speech_wav: Any, proto: str) -> None:
    bad = [
        {"audio": {"data": b"this is not audio at all" * 40, "encoding": "WAV"}},
        {"audio": {"data": b"", "encoding": "WAV"}},
        {"audio": {"data": b"\x01\x02\x03", "encoding": "PCM_S16LE", "sample_rate": 16000}},
        {"audio": {"data": b"\x00\x00" * 1600, "encoding": "PCM_S16LE"}},  # no sample rate
    ]
    for req in bad:
        with pytest.raises(InvalidArgument) as e:
            await stack.hub.call("stt", "Transcribe", req, protocol=proto)
        assert len(e.value.message) > 10
    ok = await stack.hub.call("stt", "Transcribe", _request(speech_wav(SENTENCE)), protocol=proto)
    assert word_error_rate(SENTENCE, ok.text) <= 0.2


async def test_rejection_is_not_retried_on_another_protocol(stack: Stack) -> None:
    ctx = ProcessContext(stack.g, "main-reject")
    hub = CommunicationManager(ctx, stack.sup, config=stack.g.settings.hub)
    try:
        with pytest.raises(InvalidArgument):
            await hub.call("stt", "Transcribe", {"audio": {"data": b"garbage!" * 10, "encoding": "WAV"}})
        assert _sample_sum(ctx.registry, "fallback", service="stt") == 0
        assert _sample_sum(ctx.registry, "calls", service="stt", protocol="msgpack") == 0
    finally:
        await hub.close()


async def test_kill_9_is_restarted_and_reached_again(stack: Stack, speech_wav: Any) -> None:
    before = stack.sup.status("stt")
    assert before.state == State.RUNNING and before.pid
    os.kill(before.pid, signal.SIGKILL)
    await _wait_for(lambda: stack.sup.status("stt").restarts == before.restarts + 1)
    await _wait_for(lambda: stack.sup.status("stt").state == State.RUNNING)
    after = stack.sup.status("stt")
    assert after.pid != before.pid and after.restarts == before.restarts + 1
    resp = await stack.hub.call("stt", "Transcribe", _request(speech_wav(SENTENCE)))
    assert word_error_rate(SENTENCE, resp.text) <= 0.2


async def test_sigstop_hang_is_detected_and_restarted(stack: Stack) -> None:
    before = stack.sup.status("stt")
    assert before.state == State.RUNNING and before.pid
    os.kill(before.pid, signal.SIGSTOP)
    try:
        await _wait_for(lambda: stack.sup.status("stt").restarts == before.restarts + 1, timeout=60)
        await _wait_for(lambda: stack.sup.status("stt").state == State.RUNNING)
    finally:
        if before.pid and _alive(before.pid):
            os.kill(before.pid, signal.SIGCONT)
    after = stack.sup.status("stt")
    assert after.pid != before.pid
    assert after.health_failures >= 2
    assert not _alive(before.pid), "the hung process must be killed, not left behind"


def _alive(pid: int) -> bool:
    from tests.helpers.stack import pid_alive

    return pid_alive(pid)


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        g = _context(tmp_path, UV_STT_GRPC_PORT=str(port))
        sup = ServiceSupervisor(ProcessContext(g, "main"))
        try:
            await sup.prepare()
            with pytest.raises(PortInUse) as e:
                await sup.start("stt")
            assert "stt" in str(e.value) and str(port) in str(e.value)
            st = sup.status("stt")
            assert st.state == State.FATAL and str(port) in st.last_error
        finally:
            await sup.shutdown()


async def test_service_that_crashes_at_start_ends_fatal(tmp_path: Path) -> None:
    def flap_fast(doc: dict[str, Any]) -> None:
        _fast_policies(doc)
        doc["services"]["stt"]["restart"].update(flapping_max_restarts=2, backoff_base_s=0.1)

    # the env override beats both services.yaml and the profile
    g = _context(tmp_path, flap_fast, UV_STT_MODEL=str(tmp_path / "no-such-model-folder"))
    sup = ServiceSupervisor(ProcessContext(g, "main"))
    try:
        await sup.prepare()
        await sup.start_all()
        await _wait_for(lambda: sup.status("stt").state == State.FATAL, timeout=180)
        st = sup.status("stt")
        assert st.pid is None or not _alive(st.pid)
        assert st.last_error, "FATAL must say why"
        log = "\n".join(sup.tail_logs("stt", 200))
        assert "no-such-model-folder" in log, "the service log must name the bad model path"
    finally:
        await sup.shutdown()
