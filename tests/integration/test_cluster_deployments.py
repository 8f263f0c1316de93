"""The cluster agent on a real two-node Ray cluster, with the REAL stt, tts and llm deployments.

Inside a loopback-only network namespace: ``python -m services.cluster`` (local mode) starts a
Ray head and deploys the three roles (1 replica each, embedded CPU models); a second Ray node
joins. Then, through Serve's gRPC proxy with the ``application`` metadata: Transcribe of Piper
speech, SynthesizeStream chunks, Generate tokens; bad requests are INVALID_ARGUMENT with our
message and the same replica keeps answering; HTTP through Serve's HTTP proxy; ``Scale`` stt to
2; a replica's process killed mid-stream is replaced by Ray, counted as a restart, and answers.
Timings and memory go to var/test-reports/cluster_deployments.json.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import msgpack
import psutil
import pytest

from core.wire import operation
from tests.helpers.netns import loopback_netns, netns_unavailable
from tests.helpers.ray_cluster import RayNode, ray_process_rss, rss_mb
from tests.helpers.service_process import ServiceProcess, eventually, service_python
from tests.helpers.speech import speech_bytes
from uvpb import cluster_pb2, common_pb2, llm_pb2, stt_pb2, tts_pb2

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "var" / "test-reports" / "cluster_deployments.json"
GCS, CLIENT, GRPC_PORT, HTTP_PORT = 6390, 10011, 9190, 8190
SPOKEN = "The quick brown fox jumps over the lazy dog."
CPU = 0.6  # three replicas fill the 2-CPU head (1.8); a second stt replica must go to the other node


def deployments() -> dict[str, Any]:
    one = {"num_replicas": 1, "max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": CPU}}
    return {"stt": {**one, "options": {"cpu_threads": 1, "max_concurrency": 1}}, "tts": one, "llm": one}


class Cluster:
    """The agent process plus clients for Serve's proxies."""

    def __init__(self, agent: ServiceProcess, node: RayNode) -> None:
        self.agent, self.node = agent, node
        self.channel = grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{HTTP_PORT}", timeout=120,
                                 headers={"x-internal-token": agent.token})
        self.report: dict[str, Any] = {}

    def md(self, app: str) -> list[tuple[str, str]]:
        return [("application", app), ("x-internal-token", self.agent.token)]

    def unary(self, role: str, method: str, request: Any, timeout: float = 120) -> Any:
        op = operation(role, method)
        call = self.channel.unary_unary(op.grpc_path, request_serializer=op.request.SerializeToString,
                                        response_deserializer=op.response.FromString)
        return call(request, metadata=self.md(role), timeout=timeout)

    def stream(self, role: str, method: str, request: Any, timeout: float = 120) -> Any:
        op = operation(role, method)
        call = self.channel.unary_stream(op.grpc_path, request_serializer=op.request.SerializeToString,
                                         response_deserializer=op.response.FromString)
        return call(request, metadata=self.md(role), timeout=timeout)

    def status(self) -> cluster_pb2.ClusterStatus:
        return self.agent.call("Status", cluster_pb2.ClusterStatusRequest(), timeout=60)

    def deployment(self, role: str) -> cluster_pb2.DeploymentStatus:
        return next(d for d in self.status().deployments if d.role == role)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if why := netns_unavailable():
        pytest.skip(f"needs a loopback network namespace: {why}")
    python = service_python("cluster")
    speech_bytes(SPOKEN)  # Piper, before the namespace (cached)
    work = tmp_path_factory.mktemp("cluster")
    temp_dir = f"/tmp/uvr{os.getpid()}"  # Ray's socket paths must stay short
    opts = {"gcs_port": GCS, "client_port": CLIENT, "serve_grpc_port": GRPC_PORT, "serve_http_port": HTTP_PORT,
            "num_cpus": 2, "temp_dir": temp_dir, "proxy_location": "HeadOnly", "watch_period_s": 1.0,
            "deployments": deployments()}
    with loopback_netns("uvray"):
        agent = ServiceProcess(python, work, "cluster", options=opts, timeout=120)
        node = RayNode(Path(python).with_name("ray"), f"127.0.0.1:{GCS}", work / "node2.log", num_cpus=1,
                       temp_dir=temp_dir)
        t0 = time.monotonic()
        agent.start()
        try:
            agent.wait_serving(timeout=600)
            deploy_s = time.monotonic() - t0
            node.start()
            c = Cluster(agent, node)
            c.report["deploy_s"] = round(deploy_s, 1)
            print(f"\nagent up (Ray head + 3 deployments RUNNING) in {deploy_s:.1f} s")
            yield c
            REPORT.parent.mkdir(parents=True, exist_ok=True)
            REPORT.write_text(json.dumps(c.report, indent=2))
            print(json.dumps(c.report, indent=2))
        finally:
            node.stop()
            rc = agent.stop(timeout=90)
            print(f"agent exit code {rc}; log tail:\n" + "\n".join(agent.log_text().splitlines()[-8:]))
        left = leftovers(temp_dir)
        assert not left, f"Ray processes outlived the agent: {left}"
        assert rc == 0, f"agent exit code {rc}"


def leftovers(temp_dir: str) -> list[str]:
    """Processes still running from this test's Ray session folder (the agent must stop them all)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if temp_dir in cmd:
            out.append(f"{p.info['pid']}: {cmd[:120]}")
    return out


def test_grpc_calls_through_serve(cluster: Cluster) -> None:
    c = cluster
    audio = common_pb2.Audio(data=speech_bytes(SPOKEN), encoding=common_pb2.WAV)
    t = time.perf_counter()
    r = c.unary("stt", "Transcribe", stt_pb2.TranscribeRequest(audio=audio, language="en"))
    c.report["transcribe_s"] = round(time.perf_counter() - t, 3)
    assert "quick brown fox" in r.text.lower()

    t = time.perf_counter()
    chunks = list(c.stream("tts", "SynthesizeStream", tts_pb2.SynthesizeRequest(
        text="Hello there. This is the cluster speaking. Each sentence is its own chunk.")))
    c.report["synthesize_stream_s"] = round(time.perf_counter() - t, 3)
    assert len(chunks) >= 2 and all(ch.audio for ch in chunks)

    t = time.perf_counter()
    tokens = list(c.stream("llm", "Generate", llm_pb2.GenerateRequest(
        messages=[llm_pb2.ChatMessage(role="user", content="Count from one to five.")], max_tokens=24)))
    c.report["generate_s"] = round(time.perf_counter() - t, 3)
    assert len(tokens) >= 3 and "".join(x.delta for x in tokens).strip()

    lat = []
    for _ in range(5):
        t = time.perf_counter()
        c.unary("tts", "Info", common_pb2.InfoRequest())
        lat.append(time.perf_counter() - t)
    c.report["info_via_ray_ms_median"] = round(sorted(lat)[2] * 1e3, 2)
    print(f"timings: {c.report}")


def test_bad_input_is_invalid_argument_and_replica_stays(cluster: Cluster) -> None:
    c = cluster
    pids = {r.pid for r in c.deployment("tts").replica_list}
    for bad, words in ((tts_pb2.SynthesizeRequest(text=""), "text"),
                       (tts_pb2.SynthesizeRequest(text="hi", voice="no_such_voice"), "no_such_voice")):
        with pytest.raises(grpc.RpcError) as e:
            c.unary("tts", "Synthesize", bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert words in (e.value.details() or "")
    with pytest.raises(grpc.RpcError) as e:  # no token: refused like a local service
        c.channel.unary_unary(operation("tts", "Info").grpc_path,
                              request_serializer=common_pb2.InfoRequest.SerializeToString,
                              response_deserializer=common_pb2.InfoResponse.FromString)(
            common_pb2.InfoRequest(), metadata=[("application", "tts")], timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert c.unary("tts", "Synthesize", tts_pb2.SynthesizeRequest(text="Still here.")).audio
    assert {r.pid for r in c.deployment("tts").replica_list} == pids


def test_http_through_serve_proxy(cluster: Cluster) -> None:
    c = cluster
    r = c.http.post("/tts/rpc/ultravox.v1.TextToSpeech/ListVoices", content=b"{}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["voices"]
    r = c.http.post("/tts/rpc/ultravox.v1.TextToSpeech/SynthesizeStream",
                    content=msgpack.packb({"text": "One sentence. And another one."}),
                    headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.text
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(r.content)
    frames = list(unpacker)
    assert len(frames) >= 2, frames[:1]
    r = c.http.post("/tts/rpc/ultravox.v1.TextToSpeech/Synthesize", json={"text": ""})
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_ARGUMENT"


def test_scale_stt_to_two(cluster: Cluster) -> None:
    c = cluster
    t = time.monotonic()
    c.agent.call("Scale", cluster_pb2.ScaleRequest(deployment="stt", replicas=2), timeout=120)
    d = eventually(lambda: (x := c.deployment("stt")).running == 2 and x, 300, "stt 2 RUNNING", c.agent)
    c.report["scale_1_to_2_s"] = round(time.monotonic() - t, 1)
    assert c.status().nodes == 2
    nodes = {r.node_id for r in d.replica_list}
    c.report["stt_replica_nodes"] = len(nodes)
    audio = common_pb2.Audio(data=speech_bytes(SPOKEN), encoding=common_pb2.WAV)
    for _ in range(2):
        assert "fox" in c.unary("stt", "Transcribe", stt_pb2.TranscribeRequest(audio=audio, language="en")).text.lower()
    with pytest.raises(grpc.RpcError) as e:
        c.agent.call("Scale", cluster_pb2.ScaleRequest(deployment="stt", replicas=500), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_killed_replica_is_replaced_and_counted(cluster: Cluster) -> None:
    c = cluster
    before = c.deployment("tts")
    (victim,) = [r.pid for r in before.replica_list]
    c.report["replica_rss_mb"] = {d.role: [round(rss_mb(r.pid)) for r in d.replica_list]
                                  for d in c.status().deployments}
    all_replicas = {r.pid for d in c.status().deployments for r in d.replica_list}
    head_pid = c.agent.proc.pid if c.agent.proc else 0
    c.report["ray_processes_rss_mb"] = ray_process_rss(head_pid, all_replicas | {head_pid})
    stream = c.stream("tts", "SynthesizeStream", tts_pb2.SynthesizeRequest(
        text="A long answer. " * 30))
    next(iter(stream))
    os.kill(victim, signal.SIGKILL)
    t = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        list(stream)
    print(f"mid-stream kill: {e.value.code().name}: {e.value.details()}")

    def replaced() -> Any:
        d = c.deployment("tts")
        pids = [r.pid for r in d.replica_list if r.state == "ALIVE"]
        return d.running == 1 and pids and victim not in pids and d

    d = eventually(replaced, 300, "tts replica replaced", c.agent)
    assert c.unary("tts", "Synthesize", tts_pb2.SynthesizeRequest(text="Back again.")).audio
    c.report["replace_s"] = round(time.monotonic() - t, 1)
    assert d.restarts >= 1
    assert c.agent.sample("uv_cluster_replica_restarts_total", {"deployment": "tts"}) >= 1
    assert "died" in c.agent.log_text()
