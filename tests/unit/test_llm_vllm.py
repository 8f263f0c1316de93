"""The vLLM adapter: command line, and its child's lifecycle against a fake vLLM server process.

The fake (written to a temp dir and run as ``python -m fake_vllm``) speaks the three routes the
adapter uses, /health, /v1/models and streaming /v1/chat/completions, and checks the per-run
API key. No GPU or vllm package is needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from core.config import load_settings
from core.context import Paths
from services.llm.engine import Finish, Message, ModelLoadError, Sampling
from services.llm.options import LlmOptions
from services.llm.vllm_engine import VllmEngine, vllm_command

FAKE_VLLM = r'''
import argparse, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--model"); ap.add_argument("--host"); ap.add_argument("--port", type=int)
args, _ = ap.parse_known_args()
if os.environ.get("FAKE_VLLM_CRASH"):
    print("torch.OutOfMemoryError: CUDA out of memory", flush=True)
    sys.exit(3)
KEY = os.environ["VLLM_API_KEY"]

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def _authed(self):
        if self.headers.get("authorization") != f"Bearer {KEY}":
            self._json(401, {"error": {"message": "bad key"}}); return False
        return True
    def do_GET(self):
        if self.path == "/health": return self._json(200, {})
        if self.path == "/v1/models" and self._authed():
            return self._json(200, {"object": "list", "data": [
                {"id": args.model, "object": "model", "created": 0, "owned_by": "vllm", "max_model_len": 2048}]})
    def do_POST(self):
        if not self._authed(): return
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200); self.send_header("content-type", "text/event-stream"); self.end_headers()
        base = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        for piece in ["Pa", "ris", "."]:
            ch = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(b"data: " + json.dumps(ch).encode() + b"\n\n"); self.wfile.flush()
        end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {**base, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}
        for ch in (end, usage):
            self.wfile.write(b"data: " + json.dumps(ch).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n"); self.wfile.flush()

print(f"fake vllm serving {args.model} on {args.port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", args.port), H).serve_forever()
'''


def test_command_line_carries_the_model_port_and_gpu_options() -> None:
    opts = LlmOptions(gpu_memory_utilization=0.85, max_model_len=8192, dtype="float16", tensor_parallel_size=2,
                      vllm_args=["--enforce-eager"])
    cmd = vllm_command("/venv/bin/python", "vllm.entrypoints.openai.api_server", "Qwen/Qwen2.5-1.5B-Instruct",
                       40123, opts)
    assert cmd == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "Qwen/Qwen2.5-1.5B-Instruct",
        "--host", "127.0.0.1", "--port", "40123", "--gpu-memory-utilization", "0.85", "--dtype", "float16",
        "--tensor-parallel-size", "2", "--max-model-len", "8192", "--enforce-eager",
    ]
    assert "--max-model-len" not in vllm_command("py", "m", "x", 1, LlmOptions())


def test_gpu_profile_configures_vllm_with_a_small_instruct_model() -> None:
    cfg = load_settings(env={}, profile="gpu-machine").services["llm"]
    assert cfg.engine == "vllm" and cfg.extra == "llm-gpu" and cfg.device == "cuda"
    assert "Instruct" in cfg.model
    opts = LlmOptions.from_config(cfg)
    assert 0 < opts.gpu_memory_utilization <= 0.95 and opts.max_concurrency > 1


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "fake_vllm.py").write_text(FAKE_VLLM)
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(root), str(root / "src")]))
    cfg = load_settings(env={}).services["llm"].model_copy(
        update={"engine": "vllm", "model": "Qwen/Qwen2.5-1.5B-Instruct", "options": {"startup_timeout_s": 60}}
    )
    paths = Paths(root=tmp_path, var=tmp_path / "var", cache=tmp_path, venvs=tmp_path)
    eng = VllmEngine(cfg, LlmOptions.from_config(cfg), paths, python=sys.executable, module="fake_vllm")
    yield eng
    eng.close()


def gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_starts_the_server_in_its_own_group_streams_and_stops_it(engine: Any) -> None:
    engine.load()
    proc = engine.proc
    assert proc is not None and os.getpgid(proc.pid) == proc.pid != os.getpgrp()  # its own process group
    info = engine.info()
    assert (info.id, info.context_length, info.owned_by) == ("Qwen/Qwen2.5-1.5B-Instruct", 2048, "vllm")
    assert "fake vllm serving Qwen/Qwen2.5-1.5B-Instruct" in engine.log_path.read_text()
    cancel = threading.Event()
    items = [x async for x in engine.generate([Message("user", "capital of France?")],
                                              Sampling(max_tokens=8, temperature=0, top_p=1), cancel)]
    assert items == ["Pa", "ris", ".", Finish("stop", 11, 3)]
    engine.close()
    assert engine.proc is None and gone(proc.pid)


def test_a_server_that_dies_while_loading_is_a_load_error_with_its_output(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_CRASH", "1")
    with pytest.raises(ModelLoadError) as ei:
        engine.load()
    msg = str(ei.value)
    assert "vLLM exited with code 3 while loading 'Qwen/Qwen2.5-1.5B-Instruct'" in msg
    assert "CUDA out of memory" in msg and engine.proc is None


def test_the_watcher_stops_vllm_when_the_llm_service_is_gone(tmp_path: Path) -> None:
    """Regression guard: a SIGKILLed LLM service must not leave vLLM holding the GPU."""
    marker = tmp_path / "child.pid"
    child = f"import os,time; open({str(marker)!r},'w').write(str(os.getpid())); time.sleep(60)"
    bogus_parent = 1 if os.getppid() != 1 else 2  # never our watcher's parent
    watcher = subprocess.Popen(
        [sys.executable, "-m", "services.llm.vllm_child", str(bogus_parent), "--", sys.executable, "-c", child],
        start_new_session=True,
    )
    try:
        rc = watcher.wait(30)
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGKILL)
    assert rc == -signal.SIGKILL  # it swept its whole process group, itself included
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if marker.exists():
        pid = int(marker.read_text())
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert gone(watcher.pid)


def test_watcher_usage_error() -> None:
    r = subprocess.run([sys.executable, "-m", "services.llm.vllm_child", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
