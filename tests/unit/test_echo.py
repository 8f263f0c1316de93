"""The echo canceller on real speech (Piper): the reply's echo, at -20 and -10 dB and 60 to 350 ms late,
is taken out of the microphone; the user talking over the reply is kept.

The reply is "sent" at 24 kHz in bursts faster than real time, as main sends it; the simulated
phone plays it back to back from the first byte and its microphone hears it ``delay`` later at
``gain``, plus faint noise. "Would a VAD fire" is judged by level: a 32 ms frame above -45 dBFS
counts as sound (Silero itself runs in the STT service's venv, not here).
"""

from __future__ import annotations

import numpy as np
import pytest

from core.conversation.aec import EchoCanceller
from tests.helpers.speech import convert, speech_bytes

MIC = 16000
FRAME = 320  # 20 ms
REPLY = "The museum opens at nine in the morning and closes at six in the evening, every day but Monday."
USER = "Wait, what about Sunday?"
T0 = 1000.0


def floats(text: str, rate: int) -> np.ndarray:
    return np.frombuffer(convert(speech_bytes(text), rate, 1).data, "<i2").astype(np.float32) / 32768.0


def pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()


def loud_frames(x: np.ndarray, threshold_dbfs: float = -45.0) -> int:
    n = x.size // 512
    frames = x[: n * 512].reshape(n, 512)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) + 1e-12
    return int(np.sum(20 * np.log10(rms) > threshold_dbfs))


def run(
    gain_db: float, delay_s: float, *, user_at_s: float | None = None, echo: bool = True,
    stop_at_s: float | None = None, burst_s: float = 0.5, ahead_s: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, EchoCanceller]:
    """(microphone in, microphone out, the user's own speech as heard) at 16 kHz, and the canceller."""
    aec = EchoCanceller()
    reply24 = floats(REPLY, 24000)
    reply16 = floats(REPLY, MIC)
    seconds = reply16.size / MIC + delay_s + 1.0
    total = int(seconds * MIC)
    played = np.zeros(total, dtype=np.float32)
    end = reply16.size if stop_at_s is None else int(stop_at_s * MIC)
    played[:end] = reply16[:end]
    mic = np.random.default_rng(1).normal(0, 10 ** (-65 / 20), total).astype(np.float32)
    if echo:
        d = int(delay_s * MIC)
        mic[d:] += 10 ** (gain_db / 20) * played[: total - d]
    user = np.zeros(total, dtype=np.float32)
    if user_at_s is not None:
        u = floats(USER, MIC)
        a = int(user_at_s * MIC)
        user[a : a + u.size] = u[: total - a]
        mic += user
    # main hands the reply over in bursts, ahead of playback; the mic frames arrive at real time
    sent, step = 0, int(burst_s * 24000)
    out = np.zeros_like(mic)
    for i in range(0, total - FRAME + 1, FRAME):
        now = T0 + (i + FRAME) / MIC
        while sent < reply24.size and T0 + sent / 24000 <= now + ahead_s:
            aec.playing(pcm16(reply24[sent : sent + step]), 24000, T0 + sent / 24000 if sent else T0)
            sent += step
        if stop_at_s is not None and abs(now - (T0 + stop_at_s)) < FRAME / MIC / 2:
            aec.stop(T0 + stop_at_s)
        out[i : i + FRAME] = np.frombuffer(aec.process(pcm16(mic[i : i + FRAME]), now), "<i2") / 32768.0
    return mic, out, user, aec


@pytest.mark.parametrize("gain_db", [-20.0, -10.0])
@pytest.mark.parametrize("delay_s", [0.06, 0.15, 0.35])
def test_the_echo_is_taken_out_so_nothing_would_sound_like_speech(gain_db: float, delay_s: float) -> None:
    mic, out, _, aec = run(gain_db, delay_s)
    assert loud_frames(mic) > 50  # the echo alone is loud enough to wake a VAD
    assert loud_frames(out) <= 2, aec.stats
    assert aec.stats.delay_ms == pytest.approx(delay_s * 1000, abs=25), aec.stats
    assert aec.stats.gain_db == pytest.approx(gain_db, abs=3), aec.stats


def test_a_reply_sent_all_at_once_is_still_cancelled_as_it_plays() -> None:
    """Main sends a reply far faster than real time: the whole of it may be handed over at the start."""
    mic, out, _, aec = run(-20.0, 0.15, ahead_s=60.0, burst_s=2.0)
    assert loud_frames(mic) > 50 and loud_frames(out) <= 2, aec.stats


def test_the_user_talking_over_the_reply_is_kept() -> None:
    _, out, user, aec = run(-20.0, 0.15, user_at_s=2.0)
    a, b = int(2.0 * MIC), int(2.0 * MIC) + floats(USER, MIC).size
    kept, said = out[a:b], user[a:b]
    level = 10 * np.log10(np.mean(kept**2) / np.mean(said**2))
    corr = float(np.dot(kept, said) / np.sqrt(np.dot(kept, kept) * np.dot(said, said)))
    assert abs(level) < 3 and corr > 0.8, (level, corr, aec.stats)
    assert loud_frames(out[:a]) <= 2  # and the echo before it is still gone


def test_a_client_that_cancels_echo_itself_loses_nothing() -> None:
    _, out, user, _ = run(-20.0, 0.15, user_at_s=1.0, echo=False)
    a = int(1.0 * MIC)
    b = a + floats(USER, MIC).size
    corr = float(np.dot(out[a:b], user[a:b]) / np.sqrt(np.dot(out[a:b], out[a:b]) * np.dot(user[a:b], user[a:b])))
    assert corr > 0.95


def test_a_soft_user_over_a_client_that_cancels_echo_itself_is_not_silenced() -> None:
    """No echo comes back, so nothing is taken out, even of a user quieter than the reply."""
    aec = EchoCanceller()
    reply = floats(REPLY, MIC)
    user = 10 ** (-15 / 20) * floats(USER, MIC)  # quieter than the reply: the fallback gate alone would drop it
    aec.playing(pcm16(reply), MIC, T0)
    mic = np.random.default_rng(2).normal(0, 10 ** (-70 / 20), 3 * MIC).astype(np.float32)
    mic[MIC : MIC + user.size] += user[: 2 * MIC]
    out = np.zeros_like(mic)
    for i in range(0, mic.size, FRAME):
        cleaned = aec.process(pcm16(mic[i : i + FRAME]), T0 + (i + FRAME) / MIC)
        out[i : i + FRAME] = np.frombuffer(cleaned, "<i2") / 32768
    assert aec.stats.delay_ms is None
    said = slice(MIC, MIC + min(user.size, 2 * MIC))
    assert loud_frames(out[said]) >= 0.8 * loud_frames(mic[said]) > 10


def test_a_user_talking_from_the_first_instant_of_a_reply_is_heard_whole() -> None:
    """No echo path is found in the user's voice: not one of their frames is dropped."""
    aec = EchoCanceller()
    reply = floats(REPLY, MIC)
    user = 10 ** (-10 / 20) * floats(USER, MIC)
    aec.playing(pcm16(reply), MIC, T0)
    mic = np.zeros(3 * MIC, dtype=np.float32)
    mic[: min(user.size, mic.size)] += user[: mic.size]
    out = np.zeros_like(mic)
    for i in range(0, mic.size, FRAME):
        cleaned = aec.process(pcm16(mic[i : i + FRAME]), T0 + (i + FRAME) / MIC)
        out[i : i + FRAME] = np.frombuffer(cleaned, "<i2") / 32768
    said = slice(0, min(user.size, mic.size))
    assert loud_frames(out[said]) == loud_frames(mic[said]) > 10


def test_after_a_stop_nothing_unplayed_is_expected_and_the_user_is_heard() -> None:
    _, out, _, _ = run(-20.0, 0.15, stop_at_s=1.5, user_at_s=2.5)
    a = int(2.5 * MIC)
    assert loud_frames(out[int(1.0 * MIC) : int(1.6 * MIC)]) <= 2
    assert loud_frames(out[a : a + MIC]) >= 10  # the user, after the reply was cut


def test_nothing_played_means_the_frame_passes_untouched() -> None:
    aec = EchoCanceller()
    frame = pcm16(floats(USER, MIC)[:FRAME])
    assert aec.process(frame, T0) == frame and not aec.active


def test_odd_input_never_raises() -> None:
    aec = EchoCanceller()
    aec.playing(b"\x01", 24000, T0)
    aec.playing(b"\x01\x00" * 100, 4000, T0)  # a rate out of range is ignored
    aec.playing(b"\x01\x00" * 4800, 48000, T0)
    assert aec.process(b"", T0) == b""
    assert len(aec.process(b"\x01\x00\x02", T0 + 0.01)) == 2
    assert len(aec.process(bytes(64000), T0 + 2.0)) == 64000  # a frame much bigger than usual
    aec.stop(T0 - 5)  # a stop before anything played
    with pytest.raises(ValueError, match="16000 Hz"):
        EchoCanceller(mic_rate=8000)
