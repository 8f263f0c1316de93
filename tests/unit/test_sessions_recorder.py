"""Recorder: per-turn WAVs of both sides when on, nothing when off, never a failed turn."""

from __future__ import annotations

import wave
from pathlib import Path

from core.sessions import Recorder


def frames(path: str) -> tuple[int, int]:
    with wave.open(path, "rb") as w:
        return w.getframerate(), w.getnframes()


def test_both_sides_are_written_at_their_rates(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "rec", enabled=True)
    user, reply = rec.save_turn("s1", "t1", b"\x01\x00" * 16000, b"\x02\x00" * 12000, 24000)
    assert Path(user) == tmp_path / "rec" / "s1" / "t1.user.wav" and frames(user) == (16000, 16000)
    assert Path(reply) == tmp_path / "rec" / "s1" / "t1.assistant.wav" and frames(reply) == (24000, 12000)
    assert not list((tmp_path / "rec" / "s1").glob("*.tmp"))


def test_a_side_without_audio_has_no_file(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, enabled=True)
    user, reply = rec.save_turn("s1", "typed", b"", b"\x00\x00" * 10, 16000)
    assert user == "" and frames(reply) == (16000, 10)


def test_off_unsafe_ids_and_write_failures_yield_empty_paths(tmp_path: Path) -> None:
    assert Recorder(tmp_path, enabled=False).save_turn("s", "t", b"\x00\x00", b"\x00\x00", 16000) == ("", "")
    assert not any(tmp_path.iterdir())
    rec = Recorder(tmp_path, enabled=True)
    assert rec.save_turn("../escape", "t", b"\x00\x00", b"", 16000) == ("", "")
    (tmp_path / "blocked").write_text("a file where the session folder should go")
    assert rec.save_turn("blocked", "t", b"\x00\x00", b"\x00\x00", 16000) == ("", "")
