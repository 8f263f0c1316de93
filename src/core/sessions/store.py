"""ConversationStore: sessions and their finished turns in SQLite (WAL), so a restart loses none.

All writes run on one writer thread, in the order they were submitted: the event loop never
blocks on a commit, and a turn saved after its session's row always finds that row. Reads that
must answer synchronously (resuming one session) use a second connection, which WAL lets read
while the writer commits. Commits use ``synchronous=FULL``: a finished turn survives a crash of
main, and a power cut too.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` upgrades older files
and a file from a newer release is refused rather than misread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from core.conversation.types import Session, TurnRecord
from core.errors import ConfigError, InvalidArgument

log = logging.getLogger("ultravox.sessions.store")
T = TypeVar("T")

SCHEMA_VERSION = 2
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY, agent TEXT NOT NULL, voice TEXT NOT NULL, language TEXT NOT NULL,
            created_at REAL NOT NULL, last_active REAL NOT NULL, ended_at REAL,
            turn_count INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE turns (
            turn_id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL, user_text TEXT NOT NULL, assistant_text TEXT NOT NULL,
            interrupted INTEGER NOT NULL, outcome TEXT NOT NULL, degraded TEXT NOT NULL, error TEXT NOT NULL,
            latency TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL NOT NULL,
            user_audio_path TEXT NOT NULL, assistant_audio_path TEXT NOT NULL)""",
        "CREATE INDEX turns_by_session ON turns(session_id, idx, started_at)",
    ),
    2: (  # access: who owns a session, API keys made through the API, minted client tokens
        "ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE api_keys (
            name TEXT PRIMARY KEY, role TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL, created_by TEXT NOT NULL, expires_at REAL,
            per_minute INTEGER, per_hour INTEGER)""",
        """CREATE TABLE tokens (
            jti TEXT PRIMARY KEY, subject TEXT NOT NULL, session_id TEXT, agent TEXT,
            issued_at REAL NOT NULL, expires_at REAL NOT NULL, revoked_at REAL, revoked_by TEXT)""",
        "CREATE INDEX tokens_by_expiry ON tokens(expires_at)",
    ),
}
"""Version -> statements that bring a file from version-1 to it. Append; never edit a released one."""

_TURN_COLUMNS = (
    "turn_id, session_id, idx, user_text, assistant_text, interrupted, outcome, degraded, error, latency, "
    "started_at, ended_at, user_audio_path, assistant_audio_path"
)
_SESSION_UPSERT = """INSERT INTO sessions (id, agent, voice, language, created_at, last_active, turn_count, owner)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT(id) DO UPDATE SET agent=excluded.agent, voice=excluded.voice, language=excluded.language,
        last_active=excluded.last_active, turn_count=MAX(sessions.turn_count, excluded.turn_count)"""


def _connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=check_same_thread)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _session_row(s: Session) -> tuple[Any, ...]:
    return (s.id, s.agent.name, s.voice, s.language, s.created_at, s.last_active, s.turn_count, s.owner)


def turn_to_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "turn_id": row["turn_id"], "index": row["idx"], "user_text": row["user_text"],
        "assistant_text": row["assistant_text"], "interrupted": bool(row["interrupted"]),
        "outcome": row["outcome"], "degraded": row["degraded"], "error": row["error"],
        "latency": json.loads(row["latency"] or "{}"), "started_at": row["started_at"],
        "ended_at": row["ended_at"], "user_audio_path": row["user_audio_path"],
        "assistant_audio_path": row["assistant_audio_path"],
    }


class ConversationStore:
    """One SQLite file. Call :meth:`open` before use and :meth:`close` at shutdown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="conversation-store")
        self._wconn: sqlite3.Connection | None = None   # touched only on the writer thread
        self._rconn: sqlite3.Connection | None = None
        self._rlock = threading.Lock()
        self._closed = False

    # ---- lifecycle -------------------------------------------------------------------------
    async def open(self) -> None:
        await self._write(self._open_writer)
        self._rconn = _connect(self.path, check_same_thread=False)

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = _connect(self.path)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise ConfigError(str(self.path), "conversation.store_path", f"not a usable SQLite file: {e}") from e
        if str(mode).lower() != "wal":
            raise ConfigError(str(self.path), "conversation.store_path", f"SQLite refused WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(
                str(self.path), "conversation.store_path",
                f"schema version {version} was written by a newer release (this one reads up to "
                f"{SCHEMA_VERSION}); upgrade, or point store_path at another file",
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            for stmt in MIGRATIONS[v]:
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={v}")
            conn.execute("COMMIT")
            log.info("conversation store %s migrated to schema %d", self.path, v)
        self._wconn = conn

    async def close(self) -> None:
        """Finish every queued write, then close both connections."""
        if self._closed:
            return
        self._closed = True
        fut = self._writer.submit(self._close_writer)
        await asyncio.wrap_future(fut)
        await asyncio.to_thread(self._writer.shutdown, wait=True)
        with self._rlock:
            if self._rconn is not None:
                self._rconn.close()
                self._rconn = None

    def _close_writer(self) -> None:
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    # ---- writes (writer thread) ------------------------------------------------------------
    def _write(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError("the conversation store is closed")
        return asyncio.wrap_future(self._writer.submit(fn, *args))

    def submit(self, what: str, fn: Callable[..., None], *args: Any) -> concurrent.futures.Future[None]:
        """Queue a write without waiting; a failure is logged with ``what``."""
        fut = self._writer.submit(fn, *args)

        def report(f: concurrent.futures.Future[None]) -> None:
            if (err := f.exception()) is not None:
                log.error("conversation store: %s failed: %s", what, err, exc_info=err)
        fut.add_done_callback(report)
        return fut

    def _tx(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        conn = self._wconn
        if conn is None:
            raise RuntimeError("the conversation store is not open")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.execute(sql, params)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def put_session(self, s: Session) -> concurrent.futures.Future[None]:
        """Insert or update a session's row (queued; ordered before any later write)."""
        return self.submit(f"saving session {s.id}", self._tx, (_SESSION_UPSERT, _session_row(s)))

    def end_session(self, session_id: str, at: float | None = None) -> concurrent.futures.Future[None]:
        return self.submit(
            f"ending session {session_id}", self._tx,
            ("UPDATE sessions SET ended_at=? WHERE id=?", (at or time.time(), session_id)),
        )

    async def add_turn(self, s: Session, r: TurnRecord) -> None:
        """Save a finished turn (and the session's row) in one transaction; returns once committed."""
        turn = (
            r.turn_id, s.id, r.index, r.user_text, r.assistant_text, int(r.interrupted), r.outcome, r.degraded,
            r.error, json.dumps(r.latency, default=str), r.started_at, r.ended_at or time.time(),
            r.user_audio_path, r.assistant_audio_path,
        )
        placeholders = ", ".join("?" * len(turn))
        await self._write(
            self._tx, (_SESSION_UPSERT, _session_row(s)),
            (f"INSERT OR REPLACE INTO turns ({_TURN_COLUMNS}) VALUES ({placeholders})", turn),
        )

    async def flush(self) -> None:
        """Wait until every write queued so far is committed."""
        await self._write(lambda: None)

    async def purge_session(self, session_id: str) -> None:
        """Delete a session and its turns for good."""
        await self._write(self._tx, ("DELETE FROM sessions WHERE id=?", (session_id,)))

    # ---- reads -----------------------------------------------------------------------------
    def _read(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        with self._rlock:
            if self._rconn is None:
                raise RuntimeError("the conversation store is not open")
            return list(self._rconn.execute(sql, params).fetchall())

    def session_row(self, session_id: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM sessions WHERE id=?", (session_id,))
        return dict(rows[0]) if rows else None

    def recent_turns(self, session_id: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` turns of a session, oldest first."""
        rows = self._read(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id=? ORDER BY idx DESC, started_at DESC LIMIT ?",
            (session_id, limit),
        )
        return [turn_to_dict(r) for r in reversed(rows)]

    async def list_sessions(
        self, limit: int = 100, *, include_ended: bool = False, owner: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored sessions (only ``owner``'s when given), most recently active first, after every
        queued write has landed."""
        await self.flush()
        return await asyncio.to_thread(self._list_sessions, limit, include_ended, owner)

    def _list_sessions(self, limit: int, include_ended: bool, owner: str | None = None) -> list[dict[str, Any]]:
        where = [] if include_ended else ["ended_at IS NULL"]
        params: tuple[Any, ...] = ()
        if owner is not None:
            where.append("owner = ?")
            params = (owner,)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT * FROM sessions {clause} ORDER BY last_active DESC LIMIT ?", (*params, limit))
        return [dict(r) for r in rows]

    async def transcript(self, session_id: str) -> dict[str, Any] | None:
        """The whole session as a JSON-able dict (every turn, in order), or None if unknown.

        Queued writes land first, so a transcript read right after a change reflects it.
        """
        await self.flush()
        return await asyncio.to_thread(self._transcript, session_id)

    def _transcript(self, session_id: str) -> dict[str, Any] | None:
        head = self.session_row(session_id)
        if head is None:
            return None
        rows = self._read(
            f"SELECT {_TURN_COLUMNS} FROM turns WHERE session_id=? ORDER BY idx, started_at", (session_id,)
        )
        return {
            "session_id": head["id"], "agent": head["agent"], "voice": head["voice"],
            "language": head["language"], "created_at": head["created_at"], "last_active": head["last_active"],
            "ended_at": head["ended_at"], "owner": head["owner"], "turn_count": len(rows),
            "turns": [turn_to_dict(r) for r in rows],
            "exported_at": time.time(), "schema_version": SCHEMA_VERSION,
        }

    # ---- access: API keys and client tokens ------------------------------------------------
    async def put_key(self, row: dict[str, Any]) -> None:
        """Add an API key (by hash); a name already taken is an InvalidArgument."""
        cols = ("name", "role", "sha256", "created_at", "created_by", "expires_at", "per_minute", "per_hour")
        try:
            await self._write(self._tx, (
                f"INSERT INTO api_keys ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                tuple(row[c] for c in cols),
            ))
        except sqlite3.IntegrityError as e:
            raise InvalidArgument(f"an API key named {row['name']!r} exists; pick another name") from e

    async def delete_key(self, name: str) -> bool:
        def run() -> bool:
            assert self._wconn is not None
            return self._wconn.execute("DELETE FROM api_keys WHERE name=?", (name,)).rowcount > 0
        return await self._write(run)

    def api_keys(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._read("SELECT * FROM api_keys ORDER BY name", ())]

    async def put_token(self, row: dict[str, Any]) -> None:
        """Remember a minted token (never the token itself), so it can be listed and revoked; rows
        of tokens expired a day ago are dropped on the way."""
        await self._write(
            self._tx,
            ("DELETE FROM tokens WHERE expires_at < ?", (time.time() - 86400,)),
            ("INSERT INTO tokens (jti, subject, session_id, agent, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
             (row["jti"], row["subject"], row["session_id"], row["agent"], row["issued_at"], row["expires_at"])),
        )

    def token_row(self, jti: str) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM tokens WHERE jti=?", (jti,))
        return dict(rows[0]) if rows else None

    async def revoke_token(self, jti: str, by: str, at: float) -> None:
        await self._write(self._tx, ("UPDATE tokens SET revoked_at=?, revoked_by=? WHERE jti=?", (at, by, jti)))

    def revoked_tokens(self, now: float) -> dict[str, float]:
        """jti -> expiry of every revoked token that has not expired yet."""
        rows = self._read("SELECT jti, expires_at FROM tokens WHERE revoked_at IS NOT NULL AND expires_at > ?", (now,))
        return {r["jti"]: float(r["expires_at"]) for r in rows}
