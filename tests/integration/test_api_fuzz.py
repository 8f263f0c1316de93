"""Schema and property fuzzing of the real main process: every REST operation, and ``/ws/voice``.

One real ``main.py`` (with its STT, LLM and TTS services) runs with auth on, called with the
admin key. Rate limits are lifted, and the LLM's reply cap is cut to a few tokens so a fuzzed
chat or conversation turn costs a second, not ten.

1. schemathesis loads main's own ``/openapi.json`` and, for every operation, sends positive
   (schema-valid) and negative (schema-breaking) cases: no response may be a 5xx, and every
   response whose status the schema documents must match the documented schema.
2. hypothesis sends ``/ws/voice`` control messages (valid shapes with random values, wrong types,
   unknown types, random JSON, deep nesting, strings near the frame cap, text that is not JSON)
   and binary frames (random bytes, odd lengths, files instead of PCM, frames over the cap, the
   empty frame). The oracle is the protocol's own parser: a message it refuses must get an
   ``error`` event with a code and a message, and after every case a ``config`` still gets
   ``ready`` on the same socket.
3. Afterwards every service is RUNNING, main is alive and ``/health`` is 200.

Counts go to ``var/test-reports/api_fuzz.json`` and the terminal.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup, ServerError
from schemathesis.specs.openapi.checks import response_schema_conformance
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from core.access.guard import check_json_text
from core.conversation.audio import container_kind
from core.conversation.control import TYPES, TextMessage, parse_control
from core.errors import InvalidArgument
from tests.helpers.access import ADMIN_KEY, auth_env, bearer, write_keys_file
from tests.helpers.stack import ROOT, MainProcess, dump_logs, make_config_dir, running_main, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPORT = ROOT / "var" / "test-reports" / "api_fuzz.json"
LLM_MAX_TOKENS = 12
"""The test main's LLM cap (service and agents): a fuzzed turn then costs about a second."""
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}
"""Cases per operation and mode (up to 40 per operation; fewer where the schema leaves little to vary)."""
MODEL_EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}
"""Fewer for the operations that run a model on every valid case."""
MODEL_OPERATIONS = {
    "POST /v1/chat/completions", "POST /v1/audio/speech", "POST /v1/audio/transcriptions",
    "POST /api/orchestrator/conversation", "POST /api/orchestrator/conversation/audio",
}
CALL_TIMEOUT_S = 120.0
WS_EXAMPLES = 60
"""Hypothesis examples per /ws/voice message family (seven families)."""
WS_TIMEOUT_S = 30.0
MAX_JSON_DEPTH = 32
FRAME_CAP = 256 * 1024
"""conversation.max_ws_frame_bytes (the default; the test main keeps it)."""

HYPOTHESIS = {
    "deadline": None, "derandomize": True, "database": None, "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                              HealthCheck.large_base_example, HealthCheck.function_scoped_fixture],
}


@dataclass
class Tally:
    """What the fuzz sent and found; the report file and the summary line are made from it."""

    operations: int = 0
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    schema_violations: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    no_negative: list[str] = field(default_factory=list)
    ws_cases: int = 0
    ws_errors_seen: int = 0
    ws_kinds: Counter[str] = field(default_factory=Counter)

    def write(self) -> dict[str, Any]:
        doc = {
            "schemathesis": {
                "operations": self.operations, "cases": self.cases, "server_errors": len(self.server_errors),
                "schema_violations": len(self.schema_violations), "transport_errors": len(self.transport_errors),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "held_back": dict(self.skipped), "operations_without_negative_cases": len(self.no_negative),
                "by_operation": {op: {str(k): v for k, v in sorted(c.items())} for op, c in self.by_operation.items()},
            },
            "ws": {"cases": self.ws_cases, "errors_seen": self.ws_errors_seen, "by_family": dict(self.ws_kinds)},
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(doc, indent=2) + "\n")
        return doc


TALLY = Tally()


@pytest.fixture(scope="module")
def main_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MainProcess]:
    base = tmp_path_factory.mktemp("api-fuzz")

    def edit(doc: dict[str, Any]) -> None:
        doc["gateway"]["auth"]["rate_limits"] = {"per_minute": 100000, "per_hour": 0}
        doc["services"]["llm"]["options"]["max_tokens"] = LLM_MAX_TOKENS

    config = make_config_dir(base / "config", edit)
    for agent in (config / "agents").glob("*.yaml"):
        doc = yaml.safe_load(agent.read_text())
        doc["max_tokens"] = LLM_MAX_TOKENS
        agent.write_text(yaml.safe_dump(doc, sort_keys=False))
    write_keys_file(config)
    env = stack_env(base / "var", config, **auth_env())
    with running_main(base / "var", env, "api-fuzz") as m:
        yield m
        if not all_alive(m):   # running_main dumps logs only when the test body raised
            print(f"\n===== api-fuzz main stdout =====\n{m.main_log()}")
            dump_logs(m.var_dir, "api-fuzz")


@pytest.fixture
def dump_on_failure(main_proc: MainProcess, request: pytest.FixtureRequest) -> Iterator[None]:
    """Main's stdout and every service log when this test fails (the module's main goes on)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before or not all_alive(main_proc):
        print(f"\n===== api-fuzz main stdout =====\n{main_proc.main_log()}")
        dump_logs(main_proc.var_dir, "api-fuzz")


def all_alive(m: MainProcess) -> bool:
    return m.proc is not None and m.proc.poll() is None


def admin_get(m: MainProcess, path: str) -> httpx.Response:
    return httpx.get(m.url + path, headers=bearer(ADMIN_KEY), timeout=30)


# ---- 1. schemathesis over every operation ---------------------------------------------------------


def guarded(op: Any, services: set[str], profiles: set[str]) -> Any:
    """Filters for the two operations that would tear down the system under test itself.

    Stopping (or restarting, or starting a second copy of) a real service, or switching the
    profile, would leave the rest of the fuzz testing a main in transition. Only the real names
    are held back: every other name is still fuzzed (and must be a 404).
    """
    label = f"{op.method.upper()} {op.path}"

    def keep(case: schemathesis.Case) -> bool:
        params = case.path_parameters or {}
        if label == "POST /services/{name}/{action}" and params.get("name") in services:
            TALLY.skipped[label] += 1
            return False
        if label == "POST /api/profiles/{name}/activate" and params.get("name") in profiles:
            TALLY.skipped[label] += 1
            return False
        return True
    return keep


def describe(case: schemathesis.Case, failure: Failure) -> str:
    return f"{case.operation.label}: {failure.title}: {failure.message[:600]}\n    {case.as_curl_command()[:800]}"


def run_operation(op: Any, base_url: str, session: requests.Session, keep: Any) -> None:
    label = f"{op.method.upper()} {op.path}"
    budget = MODEL_EXAMPLES if label in MODEL_OPERATIONS else EXAMPLES
    for mode, n in budget.items():
        @settings(max_examples=n, **HYPOTHESIS)  # type: ignore[arg-type]
        @given(case=op.as_strategy(generation_mode=mode).filter(keep))
        def fuzz(case: schemathesis.Case) -> None:
            TALLY.cases += 1
            try:
                response = case.call(base_url=base_url, session=session, headers=bearer(ADMIN_KEY),
                                     timeout=CALL_TIMEOUT_S)
            except requests.RequestException as e:
                TALLY.transport_errors.append(f"{label}: {type(e).__name__}: {e}\n    {case.as_curl_command()}")
                return
            TALLY.statuses[response.status_code] += 1
            TALLY.by_operation.setdefault(label, Counter())[response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance],
                                       headers=bearer(ADMIN_KEY))
            except FailureGroup as group:
                for failure in group.exceptions:
                    body = response.text[:300]
                    line = f"{describe(case, failure)}\n    -> {response.status_code} {body}"
                    target = TALLY.server_errors if isinstance(failure, ServerError) else TALLY.schema_violations
                    target.append(line)

        try:
            fuzz()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            TALLY.no_negative.append(label)   # nothing in it can break the schema (no body, free strings)


@pytest.mark.usefixtures("dump_on_failure")
def test_schemathesis_every_operation(main_proc: MainProcess) -> None:
    m = main_proc
    schema = schemathesis.openapi.from_url(f"{m.url}/openapi.json", headers=bearer(ADMIN_KEY), timeout=30)
    services = {row["name"] for row in admin_get(m, "/services").json()}
    profiles = {p["name"] for p in admin_get(m, "/api/profiles").json()}
    assert {"stt", "llm", "tts"} <= services, services
    broken: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            op = result.ok()   # an operation schemathesis cannot read is itself a finding
            TALLY.operations += 1
            try:
                run_operation(op, m.url, session, guarded(op, services, profiles))
            except Exception as e:   # hypothesis could not generate, or a strategy failed: report, go on
                broken.append(f"{op.method.upper()} {op.path}: {type(e).__name__}: {str(e)[:800]}")
    doc = TALLY.write()
    print(f"\nschemathesis: {TALLY.operations} operations, {TALLY.cases} cases, statuses "
          f"{doc['schemathesis']['statuses']}, {len(TALLY.server_errors)} server errors, "
          f"{len(TALLY.schema_violations)} schema violations, skipped {dict(TALLY.skipped)}")
    assert TALLY.operations >= 40, f"only {TALLY.operations} operations in main's schema"
    assert not broken, "operations the fuzz could not run:\n" + "\n".join(broken)
    assert not TALLY.transport_errors, "requests that got no answer:\n" + "\n".join(TALLY.transport_errors[:20])
    assert not TALLY.server_errors, f"{len(TALLY.server_errors)} server errors:\n" + "\n".join(
        dict.fromkeys(TALLY.server_errors[:40]))
    assert not TALLY.schema_violations, f"{len(TALLY.schema_violations)} schema violations:\n" + "\n".join(
        dict.fromkeys(TALLY.schema_violations[:40]))
    assert all_alive(m), "main died during the schema fuzz"


# ---- 2. /ws/voice --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
CONFIG_FIELDS = {
    "session_id": st.text(max_size=140), "agent": st.sampled_from(["assistant", "portuguese", "nosuch", ""]),
    "voice": st.text(max_size=70), "language": st.sampled_from(["en", "pt", "x", "en-us", "zz" * 9]),
    "sample_rate": st.integers(0, 100_000), "end_silence_ms": st.integers(-10, 10_000), "partials": st.booleans(),
    "turn": st.fixed_dictionaries({}, optional={
        "detection": st.sampled_from(["semantic", "vad", "other"]), "pause_ms": st.integers(-5, 10_000),
        "threshold": st.floats(-1, 2), "speculation": st.booleans(), "nosuch": st.just(1),
    }),
}


def _with_type(kind: Any, fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, **fields}


def fields_of(schema: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the message's own fields, each with its own kind of value or any JSON value."""
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in schema.items()})


def nested(depth: int) -> str:
    return '{"type": "config", "x": ' + "[" * depth + "]" * depth + "}"


def huge(kind: str, n: int) -> str:
    if kind == "text":
        return json.dumps({"type": "text", "text": "x" * n})
    if kind == "config":
        return json.dumps({"type": "config", "voice": "v" * n})
    return '{"type": "config"' + " " * n + "}"


TEXT_FAMILIES: dict[str, st.SearchStrategy[str]] = {
    "valid_shape": st.one_of(
        fields_of(CONFIG_FIELDS).map(lambda f: _with_type("config", f)),
        fields_of({"text": st.sampled_from(["", "   ", "\n\t"]) | st.integers() | st.none()}).map(
            lambda f: _with_type("text", f)),
        st.sampled_from(["interrupt", "reset", "end"]).flatmap(
            lambda k: st.dictionaries(st.text(min_size=1, max_size=8), json_values, min_size=1, max_size=2).map(
                lambda f: _with_type(k, f))),
    ).map(json.dumps),
    "wrong_types": st.one_of(
        json_values.filter(lambda v: not isinstance(v, str)).map(lambda v: {"type": v}),
        st.builds(_with_type, st.just("config"), st.fixed_dictionaries({}, optional={
            "sample_rate": st.text(max_size=5) | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2),
            "partials": st.text(max_size=5) | st.integers(2, 9),
            "turn": st.text(max_size=5) | st.integers() | st.lists(st.none(), max_size=2),
            "session_id": st.integers() | st.booleans() | st.dictionaries(st.text(max_size=3), st.none(), max_size=2),
        })),
    ).map(json.dumps),
    "unknown_type": st.text(max_size=60).filter(lambda t: t not in TYPES).map(
        lambda t: json.dumps({"type": t})),
    "random_json": json_values.filter(lambda v: not (isinstance(v, dict) and "type" in v)).map(json.dumps),
    "deep": st.integers(MAX_JSON_DEPTH + 1, 20_000).map(nested),
    "huge": st.tuples(st.sampled_from(["text", "config", "padding"]),
                      st.integers(FRAME_CAP - 2048, FRAME_CAP + 2048)).map(lambda a: huge(*a)),
    "not_json": st.text(max_size=200).filter(lambda t: not _parses(t)),
}
FILE_HEADS = [b"RIFF\x24\x00\x00\x00WAVEfmt ", b"OggS\x00\x02", b"fLaC\x00\x00\x00\x22", b"ID3\x03\x00"]
BINARY_FAMILY = st.one_of(
    st.binary(max_size=4000),
    st.binary(min_size=1, max_size=3999).filter(lambda b: len(b) % 2 == 1),
    st.sampled_from(FILE_HEADS).flatmap(
        lambda head: st.binary(max_size=64).map(lambda tail: head + tail + b"\x00" * ((len(head) + len(tail)) % 2))),
    st.integers(FRAME_CAP + 1, FRAME_CAP + 4096).map(lambda n: b"\x00" * (n + n % 2)),
    st.just(b""),
)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def expect_text(raw: str) -> str:
    """What the protocol says a text frame must get: 'error', 'ready' (a valid config or reset) or 'none'."""
    try:
        if len(raw) > FRAME_CAP:
            raise InvalidArgument("over the cap")
        check_json_text(raw, MAX_JSON_DEPTH)
        msg = parse_control(raw, max_text_chars=2000)
    except InvalidArgument:
        return "error"
    if msg.type in ("config", "reset"):
        return "ready"
    if isinstance(msg, TextMessage):
        return "text" if msg.text.strip() else "error"
    return "none"


def expect_binary(data: bytes) -> str:
    if len(data) > FRAME_CAP or len(data) % 2 or container_kind(data):
        return "error"
    return "none"


class VoiceFuzz:
    """One socket, reused for every case: send, check the answer, then ``config`` must answer ``ready``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.home = self.ready({"type": "config"})["session_id"]

    def recv_until(self, want: str, *, skip_staged_errors: bool = True) -> dict[str, Any]:
        """The next event of type ``want``; reply audio and other events of the conversation are passed over."""
        while True:
            msg = self.ws.recv(timeout=WS_TIMEOUT_S)
            if isinstance(msg, bytes):
                continue
            event = json.loads(msg)
            if event["type"] == "error":
                assert event.get("code") != "INTERNAL", f"a server bug answered a /ws/voice message: {event}"
                if want != "error" and event.get("code") == "INVALID_ARGUMENT":
                    raise AssertionError(f"an unexpected INVALID_ARGUMENT while waiting for {want}: {event}")
                if skip_staged_errors and "stage" in event:
                    continue   # a turn's own degradation (a cancelled reply), not the answer to a message
            if event["type"] == want or (want == "ready" and event["type"] == "error"):
                return dict(event)

    def ready(self, config: dict[str, Any]) -> dict[str, Any]:
        self.ws.send(json.dumps(config))
        event = self.recv_until("ready")
        assert event["type"] == "ready", f"{config} got {event}, not ready"
        return event

    def case(self, family: str, frame: str | bytes) -> None:
        TALLY.ws_cases += 1
        TALLY.ws_kinds[family] += 1
        want = expect_text(frame) if isinstance(frame, str) else expect_binary(frame)
        shown = repr(frame[:200])
        self.ws.send(frame)
        if want == "error":
            event = self.recv_until("error")
            assert isinstance(event.get("code"), str) and event["code"], event
            assert isinstance(event.get("message"), str) and len(event["message"]) > 10, event
            assert event["code"] == "INVALID_ARGUMENT", f"{shown} got {event}"
            TALLY.ws_errors_seen += 1
        elif want == "ready":   # a valid config (or unknown session/agent: NOT_FOUND) or a reset
            event = self.recv_until("ready")
            if event["type"] == "error":
                assert event["code"] == "NOT_FOUND", f"{shown} got {event}"
                TALLY.ws_errors_seen += 1
            elif json.loads(frame).get("type") == "reset":
                self.home = event["session_id"]   # reset ended the session this socket came back to
        elif want == "text":   # a real typed turn: it starts; the next config ends it
            pass
        try:
            self.ready({"type": "config", "session_id": self.home})
        except ConnectionClosed as e:
            raise AssertionError(f"the socket closed after {shown} (want {want}): {e}") from e

    def close(self) -> None:
        self.ws.send(json.dumps({"type": "end"}))
        assert self.recv_until("ended")["type"] == "ended"
        with pytest.raises(ConnectionClosed):
            self.ws.recv(timeout=WS_TIMEOUT_S)


@pytest.mark.usefixtures("dump_on_failure")
def test_ws_voice_bad_messages_get_errors_and_the_socket_stays(main_proc: MainProcess) -> None:
    url = main_proc.url.replace("http", "ws") + "/ws/voice"
    with connect(url, additional_headers=bearer(ADMIN_KEY), open_timeout=WS_TIMEOUT_S, max_size=None) as ws:
        fuzz = VoiceFuzz(ws)
        for family, strategy in [*TEXT_FAMILIES.items(), ("binary", BINARY_FAMILY)]:
            @settings(max_examples=WS_EXAMPLES, **HYPOTHESIS)  # type: ignore[arg-type]
            @given(frame=strategy)
            def one(frame: str | bytes) -> None:
                fuzz.case(family, frame)   # noqa: B023 (run at once, inside this iteration)

            one()
        fuzz.close()
    doc = TALLY.write()
    print(f"\n/ws/voice: {TALLY.ws_cases} cases, {TALLY.ws_errors_seen} error events, "
          f"by family {doc['ws']['by_family']}")
    assert TALLY.ws_errors_seen >= TALLY.ws_cases // 2, "most fuzzed messages are bad; too few errors came back"
    assert all_alive(main_proc), "main died during the /ws/voice fuzz"


# ---- 3. after both ------------------------------------------------------------------------------


@pytest.mark.usefixtures("dump_on_failure")
def test_main_and_services_survive_the_fuzz(main_proc: MainProcess) -> None:
    m = main_proc
    assert all_alive(m), f"main exited with {m.proc.returncode if m.proc else None}"
    health = httpx.get(f"{m.url}/health", timeout=30)
    assert health.status_code == 200, health.text
    enabled = set(health.json()["services"])   # the profile's services (services.yaml lists disabled ones too)
    states = {r["name"]: r["state"] for r in admin_get(m, "/services").json() if r["name"] in enabled}
    assert {"stt", "llm", "tts"} <= set(states) and set(states.values()) == {"RUNNING"}, states
    doc = TALLY.write()
    s, w = doc["schemathesis"], doc["ws"]
    print(f"\napi fuzz: schemathesis {s['operations']} operations, {s['cases']} cases, {s['server_errors']} server "
          f"errors, {s['schema_violations']} schema violations; /ws/voice {w['cases']} cases, "
          f"{w['errors_seen']} error events; report {Path(REPORT).relative_to(ROOT)}")
