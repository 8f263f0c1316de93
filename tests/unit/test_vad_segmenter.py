"""The VAD segmenter on synthetic frame probabilities: starts, ends, hysteresis, forced cuts, flush."""

from __future__ import annotations

import numpy as np

from services.stt.segmenter import Boundary, Phase, Segmenter, segments
from services.stt.vad import FRAME
from services.stt.vad_config import VadSettings

# 512-sample frames are 32 ms: min_speech 96 ms = 3 frames, end_silence 320 ms = 10 frames.
SETTINGS = VadSettings(threshold=0.5, min_speech_ms=96, end_silence_ms=320, pre_roll_ms=100)


def probs(*runs: tuple[float, int]) -> np.ndarray:
    """(probability, frames) runs, concatenated."""
    return np.concatenate([np.full(n, p, dtype=np.float32) for p, n in runs])


def test_silence_gives_nothing() -> None:
    seg = Segmenter(SETTINGS)
    assert seg.feed(probs((0.02, 200))) == []
    assert seg.finish(200 * FRAME) == []
    assert seg.phase is Phase.IDLE


def test_a_burst_shorter_than_min_speech_is_ignored() -> None:
    seg = Segmenter(SETTINGS)
    assert seg.feed(probs((0.0, 5), (0.9, 2), (0.0, 30))) == []


def test_speech_starts_at_its_first_frame_and_ends_where_the_silence_began() -> None:
    seg = Segmenter(SETTINGS)
    out = seg.feed(probs((0.0, 5), (0.9, 20), (0.0, 12)))
    assert out == [
        Boundary("start", 5 * FRAME, 8 * FRAME),  # confirmed after 3 frames
        Boundary("end", 25 * FRAME, 35 * FRAME),  # decided after 10 frames of silence
    ]
    assert seg.phase is Phase.IDLE


def test_a_pause_shorter_than_end_silence_does_not_split() -> None:
    seg = Segmenter(SETTINGS)
    out = seg.feed(probs((0.9, 10), (0.0, 9), (0.9, 10), (0.0, 10)))
    assert [b.kind for b in out] == ["start", "end"]
    assert out[1].sample == 29 * FRAME


def test_hysteresis_band_neither_opens_nor_closes_a_silence_run() -> None:
    seg = Segmenter(SETTINGS)  # neg_threshold = 0.35
    # in the band (0.35..0.5) right after speech: still speech, however long
    assert [b.kind for b in seg.feed(probs((0.9, 5), (0.4, 40)))] == ["start"]
    # below 0.35 opens a run; the band after it does not close it
    out = seg.feed(probs((0.1, 2), (0.4, 8)))
    assert [b.kind for b in out] == ["end"] and out[0].sample == 45 * FRAME


def test_a_dip_below_neg_threshold_drops_a_candidate() -> None:
    seg = Segmenter(SETTINGS)
    assert seg.feed(probs((0.9, 2), (0.2, 1), (0.9, 2), (0.2, 1))) == []
    out = seg.feed(probs((0.9, 3)))
    assert out == [Boundary("start", 6 * FRAME, 9 * FRAME)]


def test_end_of_input_ends_an_utterance_and_drops_a_candidate() -> None:
    seg = Segmenter(SETTINGS)
    seg.feed(probs((0.9, 10)))
    assert seg.finish(10 * FRAME + 100) == [Boundary("end", 10 * FRAME + 100, 10 * FRAME + 100)]
    seg = Segmenter(SETTINGS)
    seg.feed(probs((0.9, 10), (0.0, 4)))
    assert seg.finish(14 * FRAME) == [Boundary("end", 10 * FRAME, 14 * FRAME)]
    seg = Segmenter(SETTINGS)
    seg.feed(probs((0.9, 2)))
    assert seg.finish(2 * FRAME) == []


def test_an_utterance_over_max_samples_is_cut_and_the_next_starts_at_the_cut() -> None:
    seg = Segmenter(SETTINGS, max_samples=20 * FRAME)
    out = seg.feed(probs((0.9, 45)))
    assert out == [
        Boundary("start", 0, 3 * FRAME),
        Boundary("end", 20 * FRAME, 20 * FRAME, forced=True),
        Boundary("start", 20 * FRAME, 23 * FRAME),
        Boundary("end", 40 * FRAME, 40 * FRAME, forced=True),
        Boundary("start", 40 * FRAME, 43 * FRAME),
    ]


def test_segments_of_a_clip_clamp_to_its_length() -> None:
    p = probs((0.0, 10), (0.9, 20), (0.0, 20), (0.9, 15))
    total = len(p) * FRAME - 200  # the last frame was zero-padded
    assert segments(p, SETTINGS, total) == [(10 * FRAME, 30 * FRAME), (50 * FRAME, total)]
    assert segments(probs((0.0, 50)), SETTINGS, 50 * FRAME) == []


# pause_samples 160 ms = 5 frames: a pause is reported once per silence run, before the end.
def test_a_pause_is_reported_once_then_the_end() -> None:
    seg = Segmenter(SETTINGS, pause_samples=5 * FRAME)
    out = seg.feed(probs((0.9, 20), (0.0, 12)))
    assert [b.kind for b in out] == ["start", "pause", "end"]
    assert out[1] == Boundary("pause", 20 * FRAME, 25 * FRAME)
    assert out[2] == Boundary("end", 20 * FRAME, 30 * FRAME)


def test_speech_after_a_pause_is_a_resume_and_the_utterance_goes_on() -> None:
    seg = Segmenter(SETTINGS, pause_samples=5 * FRAME)
    out = seg.feed(probs((0.9, 20), (0.0, 7), (0.9, 10), (0.0, 12)))
    assert [b.kind for b in out] == ["start", "pause", "resume", "pause", "end"]
    assert out[2] == Boundary("resume", 27 * FRAME, 28 * FRAME)
    assert out[-1] == Boundary("end", 37 * FRAME, 47 * FRAME)


def test_a_silence_shorter_than_the_pause_reports_nothing() -> None:
    seg = Segmenter(SETTINGS, pause_samples=5 * FRAME)
    out = seg.feed(probs((0.9, 20), (0.0, 4), (0.9, 5)))
    assert [b.kind for b in out] == ["start"]


def test_end_now_ends_at_the_pause_and_only_in_one() -> None:
    seg = Segmenter(SETTINGS, pause_samples=5 * FRAME)
    assert seg.end_now() is None  # idle
    seg.feed(probs((0.9, 20)))
    assert seg.end_now() is None  # speaking, no silence yet
    seg.feed(probs((0.0, 6)))
    assert seg.end_now() == Boundary("end", 20 * FRAME, 26 * FRAME)
    assert seg.phase is Phase.IDLE and not seg.paused
    assert [b.kind for b in seg.feed(probs((0.0, 20), (0.9, 4)))] == ["start"]  # the next utterance
