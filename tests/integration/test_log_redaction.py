"""No log file of a real stack holds an API key, a client token, the token secret, the internal token,
raw audio or conversation text;
``--log-format text`` reaches main's file and every service.

A real main.py (API key set) with the real STT, LLM and TTS services serves: a /ws/voice turn
spoken as 20 ms PCM frames (key in the Authorization header), a second socket that sends the
key as ``?api_key=`` (uvicorn logs the path of every accepted WebSocket, query included), a
REST turn sent with a nasty ``X-Request-Id`` (a tab and a non-ASCII byte: it must be replaced,
not passed to the hub, where gRPC and httpx would refuse it), a refused wrong key (header and
``?api_key=``), a proxied service request (main adds the internal token), keys from the keys
file, a client token (used as ``?token=``, then revoked) and a key made through the API.
Then every log under var/log, and main's own stderr, is searched for the secrets, for bytes
written as ``\\x..`` escapes or long base64 runs, and for the user's transcript and the
assistant's reply (they belong in the conversation store, not in logs: docs/observability.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.helpers.access import JWT_SECRET, KEYS, bearer, write_keys_file
from tests.helpers.speech import convert, speech_bytes
from tests.helpers.stack import ROOT, MainProcess, make_config_dir, running_main, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

API_KEY = "redaction-test-KEY-7d2e91b4c0"
WRONG_KEY = "wrong-guess-3f9a"
NASTY_REQUEST_ID = b"nasty\tid-caf\xc3\xa9"
AUTH = {"authorization": f"Bearer {API_KEY}"}
QUESTION = "What is the capital of France?"
TYPED = "Name one famous painting by Leonardo da Vinci."
FRAME = 640  # 20 ms of PCM16 at 16 kHz
TIMEOUT = httpx.Timeout(180.0, connect=10.0)
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{160,}={0,2}")


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    var = tmp_path_factory.mktemp("redaction")
    config = make_config_dir(var.parent / "redaction-config")
    write_keys_file(config)   # client and operator keys, by hash, from the keys file
    with running_main(var, stack_env(var, config, UV_API_KEY=API_KEY, UV_JWT_SECRET=JWT_SECRET), "log_redaction") as m:
        yield m


async def voice_turn(m: MainProcess, pcm: bytes) -> dict[str, Any]:
    """Speak ``pcm`` at real time on /ws/voice; return the turn_complete event."""
    url = m.url.replace("http", "ws") + "/ws/voice"
    async with connect(url, additional_headers=AUTH, max_size=None) as ws:
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        audio = b"\x00\x00" * 4800 + pcm + b"\x00\x00" * 32000  # 0.3 s silence, speech, 2 s silence

        async def mic() -> None:
            t = time.monotonic()
            for i in range(0, len(audio), FRAME):
                await ws.send(audio[i:i + FRAME])
                t += 0.02
                await asyncio.sleep(max(0.0, t - time.monotonic()))
            while True:  # silence until the turn is over
                await ws.send(b"\x00\x00" * 320)
                t += 0.02
                await asyncio.sleep(max(0.0, t - time.monotonic()))

        sender = asyncio.create_task(mic())
        try:
            async with asyncio.timeout(240):
                async for message in ws:
                    if isinstance(message, str) and (event := json.loads(message))["type"] == "turn_complete":
                        return dict(event)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    raise AssertionError("the socket closed before turn_complete")


async def query_key_socket(m: MainProcess) -> None:
    url = m.url.replace("http", "ws") + f"/ws/voice?api_key={API_KEY}"
    async with connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"


async def wrong_key_socket(m: MainProcess) -> None:
    """A socket with a wrong ``?api_key=``: accepted, then closed with 1008; uvicorn still logs its path,
    and the log filter masks the key."""
    url = m.url.replace("http", "ws") + f"/ws/voice?api_key={WRONG_KEY}"
    async with connect(url, max_size=None) as ws:
        with pytest.raises(ConnectionClosed) as refused:
            await ws.recv()
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 1008


async def token_socket(m: MainProcess, token: str) -> None:
    """A browser's way in: a client token as ``?token=`` (uvicorn logs the path with it)."""
    url = m.url.replace("http", "ws") + f"/ws/voice?token={token}"
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "config"}))
        assert json.loads(await ws.recv())["type"] == "ready"


def internal_token(m: MainProcess) -> str:
    """The token main gave its services, read from a service's launch spec (we run as its parent's user)."""
    stt = httpx.get(f"{m.url}/services/stt", headers=AUTH, timeout=30).json()
    environ = Path(f"/proc/{stt['pid']}/environ").read_bytes().split(b"\0")
    spec = next(v for v in environ if v.startswith(b"UV_LAUNCH_SPEC="))
    token = json.loads(spec.split(b"=", 1)[1])["token"]
    assert isinstance(token, str) and len(token) >= 16
    return token


def log_text(m: MainProcess) -> dict[str, str]:
    files = [*sorted((m.var_dir / "log").glob("*.log*")), m.stdout_path]
    return {p.name: p.read_text(errors="replace") for p in files}


def test_logs_hold_no_secret_audio_or_conversation_text(main_proc: MainProcess) -> None:
    m = main_proc
    token = internal_token(m)
    pcm = convert(speech_bytes(QUESTION), 16000, 1).data
    spoken = asyncio.run(voice_turn(m, pcm))
    assert spoken["outcome"] == "ok" and spoken["assistant_text"], spoken
    asyncio.run(query_key_socket(m))
    asyncio.run(wrong_key_socket(m))
    headers = [(b"authorization", f"Bearer {API_KEY}".encode()), (b"x-request-id", NASTY_REQUEST_ID)]
    typed = httpx.post(f"{m.url}/api/orchestrator/conversation", headers=headers, timeout=TIMEOUT,
                       json={"message": TYPED, "audio": "none"})
    assert typed.status_code == 200, typed.text
    assert typed.json()["text"], typed.json()  # the hub reached the LLM despite the header
    rid = typed.headers["x-request-id"]
    assert rid.isalnum() and len(rid) == 16, rid  # replaced by a fresh id, not echoed
    wrong = httpx.get(f"{m.url}/services", headers={"authorization": "Bearer not-the-key"}, timeout=30)
    assert wrong.status_code == 401
    proxied = httpx.get(f"{m.url}/proxy/stt/readyz", headers=AUTH, timeout=30)
    assert proxied.status_code == 200, proxied.text
    # keys from the keys file, a client token (minted, used, revoked), an API-made key
    minted = httpx.post(f"{m.url}/api/tokens", json={}, headers=bearer(KEYS["alice"][1]), timeout=30).json()
    asyncio.run(token_socket(m, minted["token"]))
    assert httpx.get(f"{m.url}/services", headers=bearer(KEYS["ops"][1]), timeout=30).status_code == 200
    made = httpx.post(f"{m.url}/api/keys", json={"name": "made", "role": "client"}, headers=AUTH, timeout=30).json()
    assert httpx.get(f"{m.url}/api/agents", headers=bearer(made["key"]), timeout=30).status_code == 200
    assert httpx.delete(f"{m.url}/api/tokens/{minted['jti']}", headers=bearer(KEYS["alice"][1]),
                        timeout=30).status_code == 200
    refused = httpx.get(f"{m.url}/api/agents", headers=bearer(minted["token"]), timeout=30)
    assert refused.status_code == 401 and "revoked" in refused.text
    m.stop()  # flush every log: main's, and the services' on their way down

    logs = log_text(m)
    assert {"main.log", "stt.log", "tts.log", "llm.log", "main.stdout.log"} <= set(logs), sorted(logs)
    everything = "\n".join(logs.values())
    assert 'WebSocket /ws/voice?api_key=***' in everything  # the guard met a real leak path: uvicorn's line
    assert 'WebSocket /ws/voice?token=***' in everything
    assert "turn latency" in logs["main.log"]
    forbidden = {
        "the API key": API_KEY,
        "a wrong API key": WRONG_KEY,
        "the internal token": token,
        "the token signing secret": JWT_SECRET,
        "a client token": minted["token"],
        "a client token's signature": minted["token"].rsplit(".", 1)[1],
        "an API-made key": made["key"],
        **{f"the keys file's key {n}": k for n, (_, k) in KEYS.items()},
        "the user's transcript": spoken["user_text"],
        "the typed message": TYPED,
        "the spoken reply": spoken["assistant_text"],
        "the typed reply": typed.json()["text"],
    }
    for name, logs_text in logs.items():
        for what, secret in forbidden.items():
            assert secret and secret not in logs_text, f"{what} is in {name}"
        assert "\\x00" not in logs_text and "b'\\x" not in logs_text, f"raw bytes in {name}"
        assert not BASE64_RUN.search(logs_text), f"a base64 run (audio?) in {name}: {BASE64_RUN.search(logs_text)}"


def test_log_format_text_reaches_main_file_and_services(tmp_path: Path) -> None:
    env = {k: v for k, v in stack_env(tmp_path).items() if k != "UV_LOG_FORMAT"}
    m = MainProcess(tmp_path, env, cmd=[sys.executable, str(ROOT / "main.py"), "--log-format", "text"]).start()
    try:
        m.wait_healthy(600)
    finally:
        m.stop()
    for name, service in (("main.log", "main"), ("stt.log", "stt"), ("llm.log", "llm"), ("tts.log", "tts")):
        lines = [ln for ln in (tmp_path / "log" / name).read_text().splitlines()
                 if ln and not ln.startswith(("[supervisor]", " ", "Traceback"))]
        ours = [ln for ln in lines if f"[{service}] " in ln]
        assert ours, f"no text line of {service} in {name}: {lines[:5]}"
        assert not any(ln.startswith("{") for ln in lines), f"a JSON line in {name}"
