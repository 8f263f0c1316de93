"""Malformed input to every port of the real STT, TTS and LLM services: always a client error, never a crash.

For every operation in the runtime's operation table (``core.wire.operations``, checked here
against the gRPC service descriptors, so a new rpc cannot escape), hypothesis sends malformed
bodies (``tests/helpers/fuzz_bodies.py``) over gRPC (raw bytes through a generic channel call,
unary or streaming as the method is), HTTP msgpack, HTTP JSON and HTTP with a wrong
Content-Type, and to the OpenAI-compatible routes. The oracle decodes each body as the service
does: a body that cannot be a request must get INVALID_ARGUMENT naming the message type (gRPC) or
a 4xx with an error body (HTTP); one that happens to decode may be served or refused, but only
ever with a client-error code. After a service's fuzz it must still be alive, SERVING, ready and
answer a normal call. Counts go to ``var/test-reports/service_fuzz.json`` and the terminal.
"""

from __future__ import annotations

import io
import json
import wave
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import msgpack
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import CallError
from core.wire import Kind, Operation, operations
from core.wire.frames import FrameReader, frame_message
from services.runtime.decode import decode_http
from tests.helpers import fuzz_bodies as fb
from tests.helpers.service_process import SERVING, ServiceProcess
from uvpb import common_pb2, llm_pb2, stt_pb2, tts_pb2

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "var" / "test-reports" / "service_fuzz.json"
ROLES = ("stt", "tts", "llm")
EXAMPLES = 60
"""Hypothesis examples per operation and protocol (about 4,500 cases in all)."""
MEDIA_EXAMPLES = 15
CALL_TIMEOUT_S = 60.0
MAX_REQUEST_BYTES = 4 * 1024 * 1024
CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND,
}
CLIENT_CODE_NAMES = {c.name for c in CLIENT_CODES}
BAD_BODY_STATUSES = {400, 413, 415, 422}
MSGPACK = "application/msgpack"
MSGPACK_TYPES = {MSGPACK, "application/x-msgpack"}
JSON = "application/json"
NDJSON = "application/x-ndjson"
OPENAI_ROUTES = {  # the services' own extra routes (services/*/openai_routes.py): not in the table
    "stt": "/v1/audio/transcriptions", "tts": "/v1/audio/speech", "llm": "/v1/chat/completions",
}
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)


@dataclass
class Tally:
    """Cases sent per service and protocol, and how they ended."""

    counts: dict[tuple[str, str], Counter[str]]

    def add(self, role: str, protocol: str, outcome: str) -> None:
        self.counts[(role, protocol)][outcome] += 1

    def lines(self) -> list[str]:
        return [
            f"fuzz: {role} {proto} {sum(c.values())} cases, {c['server_error']} server errors "
            f"({c['refused']} refused, {c['served']} served)"
            for (role, proto), c in sorted(self.counts.items())
        ]

    def write(self) -> None:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"service": role, "protocol": proto, "cases": sum(c.values()), "server_errors": c["server_error"],
                 "refused": c["refused"], "served": c["served"]} for (role, proto), c in sorted(self.counts.items())]
        REPORT.write_text(json.dumps({"summary": self.lines(), "results": rows}, indent=2) + "\n")


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    t = Tally(defaultdict(Counter))
    yield t
    t.write()
    print("\n" + "\n".join(t.lines()))


@pytest.fixture(scope="module")
def services(
    stt_python: str, tts_python: str, llm_python: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    """The three real services, started together (so their models load in parallel), stopped at the end."""
    pythons = {"stt": stt_python, "tts": tts_python, "llm": llm_python}
    procs = {
        role: ServiceProcess(pythons[role], tmp_path_factory.mktemp(role), role, token_header=True,
                             timeout=CALL_TIMEOUT_S, overrides={"max_request_bytes": MAX_REQUEST_BYTES},
                             options={"max_queue": 4} if role == "llm" else {})
        for role in ROLES
    }
    try:
        for proc in procs.values():
            proc.start()
        for proc in procs.values():
            proc.wait_serving(600)
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


def cases() -> list[Any]:
    return [pytest.param(role, name, id=f"{role}-{name}") for role in ROLES for name in operations(role)]


# ---- the oracle: could this body be a request at all? -------------------------------------------

def grpc_parses(op: Operation, bodies: list[bytes]) -> bool:
    try:
        for body in bodies:
            op.request.FromString(body)
    except DecodeError:
        return False
    return True


def http_parses(op: Operation, body: bytes, protocol: str) -> bool:
    """Whether the service's own decoding accepts ``body`` (frames for a bidirectional operation)."""
    fmt = "msgpack" if protocol == "msgpack" else "json"
    try:
        if op.kind is Kind.BIDI_STREAM:
            reader = FrameReader(fmt)
            frames = reader.feed(body) + reader.finish()
            for frame in frames:
                if frame.error is not None:
                    return False
                frame_message(op.request, frame, fmt)
        else:
            decode_http(op, fmt, body)
    except (CallError, RecursionError):  # the service turns a RecursionError into InvalidArgument too
        return False
    return True


# ---- checks ---------------------------------------------------------------------------------

def grpc_call(proc: ServiceProcess, op: Operation, bodies: list[bytes]) -> tuple[grpc.StatusCode, str]:
    md = proc.metadata
    try:
        if op.kind is Kind.UNARY:
            proc.channel.unary_unary(op.grpc_path)(bodies[0], metadata=md, timeout=CALL_TIMEOUT_S)
        elif op.kind is Kind.SERVER_STREAM:
            for _ in proc.channel.unary_stream(op.grpc_path)(bodies[0], metadata=md, timeout=CALL_TIMEOUT_S):
                pass
        else:
            for _ in proc.channel.stream_stream(op.grpc_path)(iter(bodies), metadata=md, timeout=CALL_TIMEOUT_S):
                pass
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def check_grpc(tally: Tally, proc: ServiceProcess, op: Operation, bodies: list[bytes]) -> None:
    code, details = grpc_call(proc, op, bodies)
    parses = grpc_parses(op, bodies)
    served = code is grpc.StatusCode.OK
    bad = not (served and parses) and code not in CLIENT_CODES
    tally.add(proc.role, "grpc", "server_error" if bad else "served" if served else "refused")
    assert not bad, f"{op.grpc_path} answered {code.name}: {details!r}"
    assert served or details, f"{op.grpc_path} refused with {code.name} and no details"
    if not parses and op.kind is not Kind.BIDI_STREAM:
        assert code is grpc.StatusCode.INVALID_ARGUMENT, f"{op.grpc_path}: {code.name} {details!r}"
        assert op.request.DESCRIPTOR.full_name in details, details


def error_of(resp: httpx.Response, media: str) -> dict[str, Any]:
    """The ``{"code", "message"}`` of an error reply, in the request's format (JSON otherwise)."""
    data = msgpack.unpackb(resp.content) if media in MSGPACK_TYPES else resp.json()
    assert isinstance(data, dict) and isinstance(data.get("error"), dict), resp.content[:300]
    return dict(data["error"])


def stream_error(resp: httpx.Response, fmt: str) -> dict[str, Any] | None:
    """The final error frame of a 200 streaming reply, if it ended with one."""
    reader = FrameReader("msgpack" if fmt in MSGPACK_TYPES else "json")
    frames = reader.feed(resp.content) + reader.finish()
    if frames and frames[-1].error is not None:
        code, message = frames[-1].error
        return {"code": code, "message": message}
    return None


def check_http(
    tally: Tally, proc: ServiceProcess, op: Operation, protocol: str, body: bytes, media: str | None
) -> None:
    """POST one body; a 5xx, an error without a client code and message, or a bad body served all fail."""
    headers = {} if media is None else {"content-type": media}
    resp = proc.http.post(op.http_path, content=body, headers=headers)
    media_type = (media or "").split(";")[0].strip().lower()
    json_types = {JSON} if op.kind is Kind.UNARY else {JSON, NDJSON}
    parses = media_type in (MSGPACK_TYPES | json_types) and http_parses(
        op, body, "msgpack" if media_type in MSGPACK_TYPES else "json")
    status = resp.status_code
    problem = ""
    if status >= 500:
        problem = f"HTTP {status}"
    elif status >= 400:
        err = error_of(resp, media_type)
        if not err.get("message") or err.get("code") not in CLIENT_CODE_NAMES:
            problem = f"HTTP {status} with error {err}"
        elif not parses and status not in BAD_BODY_STATUSES:
            problem = f"HTTP {status} for a body that cannot decode"
    elif op.kind is not Kind.UNARY and (err_frame := stream_error(resp, media_type)) is not None:
        if err_frame["code"] not in CLIENT_CODE_NAMES:
            problem = f"stream ended with {err_frame}"
        status = 400  # refused mid-stream
    elif not parses:
        problem = f"HTTP {status}: served a body that cannot decode"
    outcome = "server_error" if problem else "served" if status < 300 else "refused"
    tally.add(proc.role, protocol, outcome)
    assert not problem, f"POST {op.http_path} ({media}): {problem}: {resp.content[:500]!r}"


# ---- the fuzz -------------------------------------------------------------------------------

def test_the_operation_table_covers_every_rpc_in_the_protos() -> None:
    services = {s.full_name: s for m in (common_pb2, stt_pb2, tts_pb2, llm_pb2)
                for s in m.DESCRIPTOR.services_by_name.values()}
    in_protos = {f"/{name}/{m.name}" for name, s in services.items() for m in s.methods}
    in_table = {op.grpc_path for role in ROLES for op in operations(role).values()}
    assert in_table == in_protos


def run(strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int = EXAMPLES) -> None:
    @settings(SETTINGS, max_examples=examples)
    @given(strategy)
    def fuzz(case: Any) -> None:
        check(case)

    fuzz()


@pytest.mark.parametrize(("role", "method"), cases())
def test_grpc_malformed(services: dict[str, ServiceProcess], tally: Tally, role: str, method: str) -> None:
    proc, op = services[role], operations(role)[method]
    one = fb.grpc_bodies(op.request)
    bodies = st.lists(one | fb.proto_messages(op.request), min_size=1, max_size=3).filter(
        lambda bs: not grpc_parses(op, bs)) if op.kind is Kind.BIDI_STREAM else one.map(lambda b: [b])
    run(bodies, lambda bs: check_grpc(tally, proc, op, bs))


@pytest.mark.parametrize(("role", "method"), cases())
def test_http_msgpack_malformed(services: dict[str, ServiceProcess], tally: Tally, role: str, method: str) -> None:
    proc, op = services[role], operations(role)[method]
    bodies = fb.frame_bodies(op.request, "msgpack") if op.kind is Kind.BIDI_STREAM else fb.msgpack_bodies(op.request)
    media = st.sampled_from([MSGPACK, "application/x-msgpack"])
    run(st.tuples(bodies, media), lambda c: check_http(tally, proc, op, "msgpack", c[0], c[1]))


@pytest.mark.parametrize(("role", "method"), cases())
def test_http_json_malformed(services: dict[str, ServiceProcess], tally: Tally, role: str, method: str) -> None:
    proc, op = services[role], operations(role)[method]
    bidi = op.kind is Kind.BIDI_STREAM
    bodies = fb.frame_bodies(op.request, "json") if bidi else fb.json_bodies(op.request)
    media = st.sampled_from([NDJSON, JSON] if bidi else [JSON, "application/json; charset=utf-8"])
    run(st.tuples(bodies, media), lambda c: check_http(tally, proc, op, "json", c[0], c[1]))


@pytest.mark.parametrize(("role", "method"), cases())
def test_http_wrong_content_type(services: dict[str, ServiceProcess], tally: Tally, role: str, method: str) -> None:
    proc, op = services[role], operations(role)[method]
    media = st.sampled_from(fb.WRONG_MEDIA) | st.none()
    body = st.binary(max_size=64) | fb.proto_messages(op.request)
    run(st.tuples(body, media), lambda c: check_http(tally, proc, op, "media", c[0], c[1]), MEDIA_EXAMPLES)


def openai_bodies(role: str) -> st.SearchStrategy[tuple[bytes, str]]:
    """Bodies for a role's OpenAI route: broken JSON, wrong shapes and types, bad Unicode, bad multipart."""
    if role == "stt":
        boundary = "fuzzboundary"
        part = st.binary(max_size=256).map(
            lambda audio: (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                           "Content-Type: audio/wav\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode())
        return st.one_of(
            st.tuples(st.binary(max_size=512), st.just(f"multipart/form-data; boundary={boundary}")),
            st.tuples(part, st.just(f"multipart/form-data; boundary={boundary}")),
            st.tuples(st.binary(max_size=256), st.sampled_from([*fb.WRONG_MEDIA, JSON])),
        )
    keys = {"tts": ["input", "voice", "response_format", "speed", "sample_rate", "model", "engine"],
            "llm": ["messages", "max_tokens", "temperature", "stop", "seed", "stream", "n", "top_p"]}[role]
    wrong = st.fixed_dictionaries({k: fb.json_values.filter(lambda v: isinstance(v, dict | list) and bool(v))
                                   for k in keys[:1]},
                                  optional={k: fb.json_values for k in keys[1:]})
    surrogate = (b'{"input": "\\ud800", "response_format": "wav"}' if role == "tts"
                 else b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 1}')
    json_ish = st.one_of(
        st.binary(max_size=512), fb.json_values.map(lambda v: json.dumps(v).encode()),
        wrong.map(lambda d: json.dumps(d).encode()), fb.deep_json(keys[0]), fb.deep_json(None), st.just(surrogate),
        st.integers(2**40, 2**80).map(lambda n: json.dumps({"input": "hi", "sample_rate": n, "speed": n}).encode()),
    )
    return st.tuples(json_ish, st.just(JSON))


@pytest.mark.parametrize("role", ROLES)
def test_openai_route_malformed(services: dict[str, ServiceProcess], tally: Tally, role: str) -> None:
    proc, path = services[role], OPENAI_ROUTES[role]

    def check(case: tuple[bytes, str]) -> None:
        body, media = case
        resp = proc.http.post(path, content=body, headers={"content-type": media} if media else {})
        bad = resp.status_code >= 500
        tally.add(role, "openai", "server_error" if bad else "served" if resp.status_code < 300 else "refused")
        assert not bad, f"POST {path}: HTTP {resp.status_code}: {resp.content[:500]!r}"
        if resp.status_code >= 400:
            assert resp.json()["error"]["message"], resp.content[:300]

    run(openai_bodies(role), check)


@pytest.mark.parametrize("role", ROLES)
def test_bodies_over_the_cap(services: dict[str, ServiceProcess], tally: Tally, role: str) -> None:
    """One byte over max_request_bytes: 413 over HTTP, RESOURCE_EXHAUSTED over gRPC, for every operation."""
    proc, big = services[role], b"\0" * (MAX_REQUEST_BYTES + 1)
    for op in operations(role).values():
        resp = proc.http.post(op.http_path, content=big, headers={"content-type": JSON})
        tally.add(role, "json", "refused" if resp.status_code == 413 else "server_error")
        assert resp.status_code == 413 and "limit" in resp.json()["error"]["message"], resp.content[:300]
        code, details = grpc_call(proc, op, [big])
        tally.add(role, "grpc", "refused" if code in CLIENT_CODES else "server_error")
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and details, (code, details)


# ---- afterwards: still alive, serving, ready and useful ----------------------------------------

def silence_wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return out.getvalue()


def valid_call(proc: ServiceProcess) -> Message:
    ops = operations(proc.role)
    if proc.role == "stt":
        return proc.call("Transcribe", ops["Transcribe"].request(audio={"data": silence_wav(), "encoding": "WAV"}))
    if proc.role == "tts":
        reply = proc.call("Synthesize", ops["Synthesize"].request(text="Hello there.", format="wav"))
        assert reply.audio
        return reply
    chunks = list(proc.server_stream("Generate", ops["Generate"].request(
        messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0.0)))
    assert chunks and chunks[-1].finish_reason
    return chunks[-1]


@pytest.mark.parametrize("role", ROLES)
def test_still_alive_ready_and_serving(services: dict[str, ServiceProcess], tally: Tally, role: str) -> None:
    proc = services[role]
    assert proc.proc is not None and proc.proc.poll() is None, f"{role} exited ({proc.proc and proc.proc.returncode})"
    assert proc.health() == SERVING
    ready = proc.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    valid_call(proc)
    echo = proc.http.post(operations(role)["Echo"].http_path, content=msgpack.packb({"payload": b"ok"}),
                          headers={"content-type": MSGPACK})
    assert echo.status_code == 200 and msgpack.unpackb(echo.content) == {"payload": b"ok"}
    errors = {proto: c["server_error"] for (r, proto), c in tally.counts.items() if r == role}
    assert not any(errors.values()), f"{role} answered malformed input with server errors: {errors}"
