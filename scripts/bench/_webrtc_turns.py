"""One spoken turn over WebRTC, as the benchmark's aiortc client saw it (the /ws/voice twin is _voice_ws).

The client (tests.helpers.webrtc_client) plays the utterance on its microphone track at real
time (48 kHz, upsampled from the 16 kHz test speech, silence before and after), and the turn
settles like a WebSocket turn: every utterance the VAD heard has its final transcript and its
``turn_complete`` (or a rejection naming its ``turn_id``). Client-side voice-to-voice runs from
the moment the last speech frame left the microphone track to the first non-silent reply frame
received on the reply track: it includes both sides' RTP jitter buffers, Opus, and the paced
track, which the server's own report cannot see.
"""

from __future__ import annotations

import numpy as np

from scripts.bench._voice_speech import RATE, Utterance, resample
from scripts.bench._voice_ws import TurnResult
from tests.helpers.webrtc_client import RATE as TRACK_RATE
from tests.helpers.webrtc_client import WebRtcClient


def to_track_rate(pcm16k: bytes) -> bytes:
    x = np.frombuffer(pcm16k, "<i2").astype(np.float32) / 32768.0
    y = resample(x, RATE, TRACK_RATE)
    return bytes((np.clip(y, -1, 1) * 32767).astype("<i2").tobytes())


async def reset(client: WebRtcClient, within_s: float = 30) -> None:
    """A fresh session (no history), as the WebSocket side does before each turn."""
    n = len(client.of("ready"))
    client.send({"type": "reset"})
    await client.wait("ready", n + 1, timeout=within_s)


async def webrtc_turn(client: WebRtcClient, utt: Utterance, *, lead_s: float = 0.3,
                      within_s: float = 120) -> TurnResult:
    """Speak ``utt`` after ``lead_s`` of silence and wait until its turn(s) settle."""
    res = TurnResult(utt.id, utt.source, utt.text)
    mark, loud_mark = len(client.events), len(client.loud_at)
    client.speak(b"\x00\x00" * int(TRACK_RATE * lead_s) + to_track_rate(utt.pcm))
    try:
        await client.mic.speech_done.wait()
        await _settle(client, mark, within_s)
    except (AssertionError, TimeoutError) as e:
        res.lost, res.why = True, str(e)[:500]
    finals = [e for e in client.of("transcript", mark) if e.get("final")]
    res.finals, res.transcript = len(finals), " ".join(e["text"] for e in finals).strip()
    res.reply = client.text(mark)
    res.errors = client.of("error", mark)
    done = client.of("turn_complete", mark)
    res.turns = len(done)
    if done:
        res.outcome, res.degraded = done[-1]["outcome"], done[-1].get("degraded", "")
        reports = {e["turn_id"]: e["report"] for e in client.of("latency", mark)}
        res.report = reports.get(done[-1]["turn_id"], {})
    rejected = [e for e in res.errors if e.get("code") == "UNAVAILABLE" and e.get("turn_id")]
    if rejected and not done:
        res.rejected, res.outcome = True, "rejected"
    ended = client.mic.speech_ended_at
    loud = [t for t in client.loud_at[loud_mark:] if ended is not None and t > ended]
    res.audio_s = len(loud) * 0.02
    if loud and ended is not None:
        res.client_v2v_s = round(loud[0] - ended, 4)
    if not res.lost and not res.rejected and not res.answered:
        res.lost, res.why = True, "no final transcript, reply text and reply audio, and no rejection"
    return res


async def _settle(client: WebRtcClient, mark: int, within_s: float) -> None:
    def settled(_: dict[str, object]) -> bool:
        started = len(client.of("speech_started", mark))
        finals = [e for e in client.of("transcript", mark) if e.get("final")]
        ends = client.of("turn_complete", mark) + [e for e in client.of("error", mark) if e.get("turn_id")]
        return bool(finals) and len(finals) >= started and len(ends) >= len(finals)

    await client.wait_until(settled, timeout=within_s)
