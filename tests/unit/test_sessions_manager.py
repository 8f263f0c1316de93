"""SessionManager: create / get / resume from the store / end / evict / max_sessions / history rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from core.config.models import ConversationConfig
from core.conversation.types import AgentConfig, TurnRecord
from core.errors import ConfigError, InvalidArgument, NotFound, Overloaded
from core.sessions import ConversationStore, SessionManager

AGENTS = {
    "assistant": AgentConfig(name="assistant", system_prompt="Be brief.", voice="joe", language="en",
                             history_turns=2),
    "portuguese": AgentConfig(name="portuguese", system_prompt="Seja breve.", language="pt"),
}


class Clock:
    """Starts at the real time, since Session.touch() uses time.time()."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def rec(sid: str, i: int, user: str = "hi", reply: str = "hello", **kw: object) -> TurnRecord:
    return TurnRecord(session_id=sid, turn_id=f"{sid}-{i}", index=i, user_text=user, assistant_text=reply,
                      outcome="ok", **kw)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    st = ConversationStore(tmp_path / "c.sqlite3")
    await st.open()
    yield st
    await st.close()


def manager(store: ConversationStore, **conf: object) -> tuple[SessionManager, CollectorRegistry, Clock]:
    reg, clock = CollectorRegistry(), Clock()
    m = SessionManager(store, AGENTS, ConversationConfig(**conf), registry=reg, clock=clock)  # type: ignore[arg-type]
    return m, reg, clock


def metric(reg: CollectorRegistry, name: str) -> float:
    return reg.get_sample_value(name) or 0.0


async def test_create_uses_agent_defaults_and_overrides(store: ConversationStore) -> None:
    m, reg, _ = manager(store)
    s = m.create()
    assert s.agent.name == "assistant" and s.voice == "joe" and s.language == "en" and len(s.id) == 32
    p = m.create(agent="portuguese", session_id="pt-1", voice="", language="pt")
    assert p.agent.name == "portuguese" and p.voice == "" and m.create(session_id="pt-1") is p
    assert m.get("pt-1") is p
    assert metric(reg, "ultravox_sessions_created_total") == 2 and metric(reg, "ultravox_sessions_active") == 2
    with pytest.raises(NotFound, match="unknown agent 'nope'; agents: assistant, portuguese"):
        m.create(agent="nope")


@pytest.mark.parametrize("bad", ["", "a" * 65, "has space", "../etc", "é"])
async def test_bad_session_ids_are_invalid_arguments(store: ConversationStore, bad: str) -> None:
    m, _, _ = manager(store)
    with pytest.raises(InvalidArgument, match="invalid session id"):
        m.create(session_id=bad)
    with pytest.raises(InvalidArgument):
        m.get(bad)


async def test_unknown_and_ended_sessions_are_not_found(store: ConversationStore) -> None:
    m, _, _ = manager(store)
    with pytest.raises(NotFound, match="unknown session 'ghost'; create one with POST /api/sessions"):
        m.get("ghost")
    m.create(session_id="done")
    m.end("done")
    with pytest.raises(NotFound, match="has ended"):
        m.get("done")
    with pytest.raises(InvalidArgument, match="has ended"):
        m.create(session_id="done")
    m.end("done")  # ending twice is harmless
    with pytest.raises(NotFound):
        m.end("ghost")


async def test_record_turn_persists_before_returning_and_resume_rebuilds_history(store: ConversationStore) -> None:
    m, reg, _ = manager(store)
    s = m.create(session_id="ada")
    await m.record_turn(s, rec("ada", 0, "My name is Ada.", "Nice to meet you, Ada."))
    await m.record_turn(s, rec("ada", 1, "Tell me a long story.", "Once upon", interrupted=True))
    await m.record_turn(s, rec("ada", 2, "", "Sorry, I didn't catch that.", degraded="stt"))
    assert [(h.role, h.text, h.interrupted) for h in s.history] == [
        ("user", "My name is Ada.", False), ("assistant", "Nice to meet you, Ada.", False),
        ("user", "Tell me a long story.", False), ("assistant", "Once upon", True),
    ]
    assert s.turn_count == 3
    assert reg.get_sample_value("ultravox_turns_saved_total", {"outcome": "ok"}) == 3

    # a new manager on the same store = main restarted: the session resumes with its history
    m2, reg2, _ = manager(store)
    r = m2.get("ada")
    assert r is not s and r.turn_count == 3 and [h.text for h in r.history] == [h.text for h in s.history]
    assert r.history[-1].interrupted and r.voice == "joe" and r.agent.name == "assistant"
    assert metric(reg2, "ultravox_sessions_resumed_total") == 1
    out = await store.transcript("ada")
    assert out is not None
    assert [t["user_text"] for t in out["turns"]] == ["My name is Ada.", "Tell me a long story.", ""]


async def test_history_in_memory_is_capped(store: ConversationStore) -> None:
    m, _, _ = manager(store)
    s = m.create(session_id="long")
    for i in range(30):
        await m.record_turn(s, rec("long", i, f"q{i}", f"a{i}"))
    assert len(s.history) == 40 and s.history[-1].text == "a29"  # max(4 * history_turns, 40)
    out = await store.transcript("long")
    assert out is not None and out["turn_count"] == 30


async def test_idle_sessions_are_evicted_then_resumed(store: ConversationStore) -> None:
    m, reg, clock = manager(store, idle_timeout_s=60)
    a, b = m.create(session_id="a"), m.create(session_id="b")
    await m.record_turn(a, rec("a", 0))
    clock.now += 30
    b.last_active = clock.now
    clock.now += 40
    assert m.evict_idle() == ["a"] and "a" not in m and "b" in m
    assert metric(reg, "ultravox_sessions_evicted_total") == 1 and metric(reg, "ultravox_sessions_active") == 1
    again = m.get("a")
    assert again.turn_count == 1 and len(again.history) == 2


async def test_a_session_in_a_turn_is_never_evicted(store: ConversationStore) -> None:
    m, _, clock = manager(store, idle_timeout_s=10)
    s = m.create(session_id="busy")
    async with s.turn_lock:
        clock.now += 100
        assert m.evict_idle() == []
    assert m.evict_idle() == ["busy"]


async def test_max_sessions_evicts_idle_first_then_refuses(store: ConversationStore) -> None:
    m, reg, clock = manager(store, max_sessions=2, idle_timeout_s=100)
    m.create(session_id="old")
    clock.now += 150
    m.create(session_id="new1")
    m.create(session_id="new2")  # "old" was idle past the timeout: evicted to make room
    assert "old" not in m and len(m) == 2
    with pytest.raises(Overloaded) as ei:
        m.create()
    assert ei.value.http_status == 503 and ei.value.retry_after_s >= 1
    assert "conversation.max_sessions" in ei.value.message
    assert metric(reg, "ultravox_sessions_rejected_total") == 1
    m.end("new1")
    assert m.create().id  # room again


async def test_configure_changes_voice_and_language_and_saves_them(store: ConversationStore) -> None:
    m, _, _ = manager(store)
    s = m.create(session_id="cfg")
    m.configure(s, voice="af_bella", language="pt")
    m.configure(s, voice=None, language=None)
    assert (s.voice, s.language) == ("af_bella", "pt")
    await store.flush()
    m2, _, _ = manager(store)
    assert (m2.get("cfg").voice, m2.get("cfg").language) == ("af_bella", "pt")


async def test_list_describes_live_sessions(store: ConversationStore) -> None:
    m, _, clock = manager(store)
    m.create(session_id="first")
    clock.now += 5
    m.create(session_id="second").touch()
    out = m.list()
    assert [d["session_id"] for d in out] == ["second", "first"]
    assert set(out[0]) >= {"session_id", "agent", "voice", "language", "turn_count", "idle_s", "turn_running"}


async def test_a_missing_default_agent_is_a_config_error(store: ConversationStore) -> None:
    with pytest.raises(ConfigError, match=r"conversation\.default_agent"):
        SessionManager(store, AGENTS, ConversationConfig(default_agent="ghost"))  # type: ignore[call-arg]


async def test_eviction_loop_runs_and_close_stops_it(store: ConversationStore) -> None:
    m = SessionManager(store, AGENTS, ConversationConfig(idle_timeout_s=1))  # type: ignore[call-arg]
    m.start()
    m.create(session_id="x").last_active -= 10
    for _ in range(50):
        if "x" not in m:
            break
        await asyncio.sleep(0.1)
    assert "x" not in m
    await m.close()
    assert m._eviction is None
