"""ConversationStore: round trip, WAL + versioned schema, writes off the event loop, transcript, purge."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from core.conversation.types import AgentConfig, Session, TurnRecord
from core.errors import ConfigError
from core.sessions.store import SCHEMA_VERSION, ConversationStore

AGENT = AgentConfig(name="assistant", system_prompt="Be brief.")


def turn(sid: str, i: int, **kw: object) -> TurnRecord:
    base: dict[str, object] = {
        "session_id": sid, "turn_id": f"{sid}-t{i}", "index": i, "user_text": f"question {i}",
        "assistant_text": f"answer {i}", "outcome": "ok", "latency": {"voice_to_voice_s": 0.5 + i},
    }
    return TurnRecord(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> ConversationStore:
    s = ConversationStore(tmp_path / "data" / "c.sqlite3")
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


async def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    st = ConversationStore(path)
    await st.open()
    sess = Session(id="s1", agent=AGENT, voice="joe", language="en")
    st.put_session(sess)
    await st.add_turn(sess, turn("s1", 0))
    await st.add_turn(sess, turn("s1", 1, interrupted=True, outcome="interrupted", degraded="tts", error="boom",
                                 user_audio_path="/r/u.wav", assistant_audio_path="/r/a.wav"))
    await st.close()

    again = ConversationStore(path)
    await again.open()
    row = again.session_row("s1")
    assert row is not None and row["agent"] == "assistant" and row["voice"] == "joe" and row["ended_at"] is None
    turns = again.recent_turns("s1", 10)
    assert [t["turn_id"] for t in turns] == ["s1-t0", "s1-t1"]
    last = turns[1]
    assert last["interrupted"] is True and last["outcome"] == "interrupted" and last["degraded"] == "tts"
    assert last["error"] == "boom" and last["latency"] == {"voice_to_voice_s": 1.5}
    assert last["user_audio_path"] == "/r/u.wav" and last["assistant_audio_path"] == "/r/a.wav"
    assert again.recent_turns("s1", 1)[0]["turn_id"] == "s1-t1"  # the latest, oldest first
    await again.close()


async def test_wal_mode_and_schema_version(store: ConversationStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sessions", "turns"} <= tables


async def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    st = ConversationStore(path)
    with pytest.raises(ConfigError) as ei:
        await st.open()
    assert "newer release" in str(ei.value) and ei.value.key == "conversation.store_path"
    await st.close()


async def test_a_file_that_is_not_sqlite_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    st = ConversationStore(path)
    with pytest.raises(ConfigError, match="not a usable SQLite file"):
        await st.open()
    await st.close()


async def test_writes_run_on_one_writer_thread_never_the_loop(store: ConversationStore) -> None:
    seen: list[str] = []
    original = store._tx

    def spy(*statements: tuple[str, tuple[object, ...]]) -> None:
        seen.append(threading.current_thread().name)
        original(*statements)

    store._tx = spy  # type: ignore[method-assign]
    sess = Session(id="s2", agent=AGENT, voice="", language="en")
    store.put_session(sess)
    for i in range(5):
        await store.add_turn(sess, turn("s2", i))
    assert len(seen) == 6 and len(set(seen)) == 1
    assert seen[0].startswith("conversation-store") and seen[0] != threading.current_thread().name


async def test_transcript_is_json_and_ordered(store: ConversationStore) -> None:
    sess = Session(id="s3", agent=AGENT, voice="", language="en")
    store.put_session(sess)
    for i in (0, 1, 2):
        await store.add_turn(sess, turn("s3", i))
    out = await store.transcript("s3")
    assert out is not None
    assert json.loads(json.dumps(out)) == out
    assert out["session_id"] == "s3" and out["turn_count"] == 3 and out["schema_version"] == SCHEMA_VERSION
    assert [t["user_text"] for t in out["turns"]] == ["question 0", "question 1", "question 2"]
    assert await store.transcript("nobody") is None


async def test_end_list_and_purge(store: ConversationStore) -> None:
    a, b = (Session(id=i, agent=AGENT, voice="", language="en") for i in ("a", "b"))
    store.put_session(a)
    await store.add_turn(b, turn("b", 0))  # a turn also saves its session's row
    assert {r["id"] for r in await store.list_sessions()} == {"a", "b"}
    store.end_session("a")
    assert {r["id"] for r in await store.list_sessions()} == {"b"}  # reads see queued writes
    assert {r["id"] for r in await store.list_sessions(include_ended=True)} == {"a", "b"}
    await store.purge_session("b")
    assert store.session_row("b") is None and store.recent_turns("b", 10) == []


async def test_queued_writes_are_flushed_by_close(tmp_path: Path) -> None:
    st = ConversationStore(tmp_path / "c.sqlite3")
    await st.open()
    for i in range(20):
        st.put_session(Session(id=f"q{i}", agent=AGENT, voice="", language="en"))
    await st.close()  # no awaits on the writes themselves
    again = ConversationStore(tmp_path / "c.sqlite3")
    await again.open()
    assert len(await again.list_sessions(100)) == 20
    await again.close()
