"""Optional per-turn recordings: both sides of a turn as WAV files under ``recordings_dir``.

Layout: ``<dir>/<session_id>/<turn_id>.user.wav`` (PCM16 mono 16 kHz, what STT heard) and
``<turn_id>.assistant.wav`` (PCM16 mono at the rate the reply was sent). With
``conversation.recordings: false`` the recorder is a no-op and returns empty paths.
Writes are small (a few hundred KB into the page cache, no fsync); callers on the event loop
that want zero blocking can run :meth:`save_turn` through ``asyncio.to_thread``.
"""

from __future__ import annotations

import logging
import re
import wave
from pathlib import Path

log = logging.getLogger("ultravox.sessions.recorder")
USER_RATE = 16000
_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    """PCM16 mono little-endian bytes as a WAV file (written to a temp name, then renamed)."""
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) - len(pcm) % 2])
    tmp.replace(path)


class Recorder:
    def __init__(self, directory: Path, *, enabled: bool) -> None:
        self.directory, self.enabled = directory, enabled

    def save_turn(
        self, session_id: str, turn_id: str, user_pcm16k: bytes, assistant_pcm: bytes, assistant_rate: int
    ) -> tuple[str, str]:
        """Write the turn's two sides; returns their paths ("" for a side with no audio, or when off).

        A failure to write is logged and yields empty paths: a recording never fails a turn.
        """
        if not self.enabled:
            return "", ""
        if not (_SAFE.match(session_id) and _SAFE.match(turn_id)):
            log.error("recording skipped: unsafe ids session=%r turn=%r", session_id, turn_id)
            return "", ""
        folder = self.directory / session_id
        user_path = folder / f"{turn_id}.user.wav"
        reply_path = folder / f"{turn_id}.assistant.wav"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if user_pcm16k:
                write_wav(user_path, user_pcm16k, USER_RATE)
            if assistant_pcm:
                write_wav(reply_path, assistant_pcm, assistant_rate)
        except OSError as e:
            log.error("recording of turn %s failed: %s", turn_id, e)
            return "", ""
        return (str(user_path) if user_pcm16k else "", str(reply_path) if assistant_pcm else "")
