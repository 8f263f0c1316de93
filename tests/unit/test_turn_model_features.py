"""Smart Turn's input features (services/stt/smart_turn.py ``log_mel``) against transformers' numbers.

The model was trained on ``transformers.WhisperFeatureExtractor(chunk_length=8)`` output, called the
way pipecat calls it: the last 8 s of 16 kHz audio, zero-padded in *front* to 128,000 samples, then
``padding="max_length", max_length=128000, truncation=True, do_normalize=True``. The constants below
are that extractor's output (transformers 5.25.0, numpy path, numpy 2.4.6) for ``chirp(seconds)``,
rounded to 6 decimals; our features matched it to 2.4e-7 everywhere. They are here so this test
needs neither transformers nor onnxruntime. tests/integration/test_turn_model.py runs the model.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from services.stt.smart_turn import SAMPLE_RATE, log_mel

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4  # the reference is rounded to 1e-6; a wrong choice anywhere moves values by > 1e-2


def chirp(seconds: float) -> np.ndarray:
    """150 Hz to 3.5 kHz linear chirp (0.3) plus a 440 Hz tone (0.1), 50 ms fade-in, float32."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * (150.0 * t + (3500.0 - 150.0) * t**2 / (2 * seconds))
    x = (0.3 * np.sin(phase) + 0.1 * np.sin(2 * np.pi * 440.0 * t)) * np.minimum(1.0, t / 0.05)
    out: np.ndarray = x.astype(np.float32)
    return out


@dataclass(frozen=True)
class Reference:
    mean: float
    std: float
    low: float
    high: float
    band_means: tuple[float, ...]  # per mel band, over all 800 frames
    block_means: tuple[float, ...]  # per block of 40 frames, over all 80 bands
    entries: tuple[tuple[int, int, float], ...]  # (mel, frame, value)


REFERENCES = {
    # 3 s: the first 5 s of the window is padding, so this also pins where (and how) it is padded.
    3.0: Reference(
        mean=-0.130304, std=0.328252, low=-0.212016, high=1.787984,
        band_means=(
            -0.194626, -0.189818, -0.182654, -0.174249, -0.166073, -0.158360, -0.152076, -0.147872, -0.144247,
            0.338715, 0.406614, 0.438552, 0.386090, -0.135449, -0.136679, -0.135997, -0.135397, -0.135248,
            -0.135194, -0.135062, -0.135005, -0.135106, -0.135307, -0.135763, -0.136168, -0.136733, -0.136633,
            -0.136553, -0.136265, -0.136087, -0.135965, -0.135968, -0.136274, -0.132987, -0.133871, -0.136929,
            -0.132229, -0.134697, -0.132165, -0.133103, -0.131878, -0.132590, -0.129654, -0.129542, -0.129375,
            -0.128990, -0.128409, -0.127739, -0.127542, -0.124769, -0.124300, -0.124009, -0.123314, -0.122388,
            -0.120475, -0.119830, -0.122388, -0.130476, -0.151950, -0.179905, -0.201920, -0.209362, -0.211267,
            -0.211473, -0.211530, -0.211576, -0.211619, -0.211654, -0.211686, -0.211713, -0.211740, -0.211763,
            -0.211782, -0.211801, -0.211817, -0.211830, -0.211842, -0.211851, -0.211858, -0.211863,
        ),
        block_means=(
            -0.212016, -0.212016, -0.212016, -0.212016, -0.212016, -0.212016, -0.212016, -0.212016, -0.212016,
            -0.212016, -0.212016, -0.212016, -0.091895, 0.046550, 0.071827, 0.024085, -0.007578, -0.026323,
            -0.039106, -0.039444,
        ),
        entries=(
            (0, 0, -0.212016), (40, 400, -0.212016), (3, 500, 1.049709), (21, 560, 1.734971),
            (36, 620, 1.735182), (46, 680, 1.708124), (53, 740, 1.688208), (58, 799, 1.632998),
            (79, 799, -0.089339), (9, 790, 1.243514),
        ),
    ),
    # 10 s: only the last 8 s count.
    10.0: Reference(
        mean=-0.133886, std=0.508079, low=-0.345879, high=1.654121,
        band_means=(
            -0.341728, -0.341715, -0.341696, -0.341674, -0.341647, -0.341620, -0.341528, -0.341285, -0.340729,
            1.135473, 1.324590, 1.413649, 1.269185, -0.329614, -0.324132, -0.317999, -0.310008, -0.299997,
            -0.287195, -0.269933, -0.244759, -0.217246, -0.189692, -0.164533, -0.147846, -0.136064, -0.125670,
            -0.116706, -0.108665, -0.101959, -0.096917, -0.093765, -0.092481, -0.079472, -0.081191, -0.091463,
            -0.075247, -0.083918, -0.075440, -0.077486, -0.074309, -0.077215, -0.066893, -0.066154, -0.066204,
            -0.064960, -0.063027, -0.061455, -0.060933, -0.050769, -0.049917, -0.048705, -0.046816, -0.043797,
            -0.037161, -0.035276, -0.043792, -0.069056, -0.138994, -0.233348, -0.308982, -0.334639, -0.343009,
            -0.343968, -0.344049, -0.344132, -0.344203, -0.344270, -0.344330, -0.344383, -0.344437, -0.344485,
            -0.344525, -0.344566, -0.344601, -0.344630, -0.344658, -0.344678, -0.344693, -0.344704,
        ),
        block_means=(
            -0.015885, -0.059673, -0.067343, -0.085381, -0.104507, -0.112704, -0.124870, -0.135293, -0.139530,
            -0.147361, -0.153160, -0.155283, -0.163267, -0.166255, -0.167519, -0.173341, -0.174852, -0.176566,
            -0.181011, -0.173912,
        ),
        entries=(
            (23, 20, 1.635949), (28, 80, 1.646738), (32, 140, 1.607527), (36, 200, 1.627273),
            (40, 260, 1.585722), (42, 320, 1.573279), (45, 380, 1.603412), (47, 440, 1.552423),
            (50, 500, 1.564354), (52, 560, 1.558860), (54, 620, 1.528039), (55, 680, 1.550872),
            (57, 740, 1.561112), (58, 799, 1.513891), (0, 0, 1.164724), (79, 799, -0.197693),
            (40, 400, -0.345879), (9, 790, 1.135164),
        ),
    ),
}

SILENCE = -1.5  # transformers' value for all-zero audio: log10 floor of 1e-10 -> (-10 + 4) / 4


@pytest.mark.parametrize("seconds", sorted(REFERENCES))
def test_features_match_transformers_whisper_extractor(seconds: float) -> None:
    ref = REFERENCES[seconds]
    f = log_mel(chirp(seconds))
    assert f.shape == (80, 800) and f.dtype == np.float32
    stats = (f.mean(dtype=np.float64), f.std(dtype=np.float64), f.min(), f.max())
    np.testing.assert_allclose(stats, (ref.mean, ref.std, ref.low, ref.high), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(f.mean(axis=1, dtype=np.float64), ref.band_means, atol=TOLERANCE, rtol=0)
    blocks = f.reshape(80, 20, 40).mean(axis=(0, 2), dtype=np.float64)
    np.testing.assert_allclose(blocks, ref.block_means, atol=TOLERANCE, rtol=0)
    for mel, frame, value in ref.entries:
        assert f[mel, frame] == pytest.approx(value, abs=TOLERANCE), (mel, frame)


def test_short_audio_is_padded_in_front_so_it_ends_the_window() -> None:
    x = chirp(1.0)
    padded = np.concatenate([np.zeros(8 * SAMPLE_RATE - x.size, dtype=np.float32), x])
    np.testing.assert_array_equal(log_mel(x), log_mel(padded))
    f = log_mel(x)
    assert np.all(f[:, :690] == f.min())  # 7 s of padding: one flat value
    assert np.ptp(f[:, -90:]) > 1.0  # the sound is in the last 100 frames (1 s)


def test_only_the_last_8_seconds_count() -> None:
    x = chirp(10.0)
    np.testing.assert_array_equal(log_mel(x), log_mel(x[-8 * SAMPLE_RATE :]))
    noisy_start = x.copy()
    noisy_start[: 2 * SAMPLE_RATE] = 1.0
    np.testing.assert_array_equal(log_mel(x), log_mel(noisy_start))


@pytest.mark.parametrize("samples", [0, 1, 160, 400])
def test_empty_or_tiny_audio_gives_features_not_an_error(samples: int) -> None:
    f = log_mel(np.zeros(samples, dtype=np.float32))
    assert f.shape == (80, 800) and f.dtype == np.float32
    assert np.all(f == SILENCE)
    click = log_mel(np.full(samples, 0.5, dtype=np.float32)) if samples else f
    assert click.shape == (80, 800) and np.all(np.isfinite(click))


def test_the_waveform_is_normalised_so_gain_does_not_matter() -> None:
    x = chirp(3.0)
    np.testing.assert_allclose(log_mel(x), log_mel(x * 0.05), atol=1e-3, rtol=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_a_clear_error(bad: float) -> None:
    x = chirp(1.0)
    x[123] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        log_mel(x)


def test_features_need_no_onnxruntime() -> None:
    """Main's venv computes features (and tests them) without loading onnxruntime."""
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import numpy as np\n"
        "from services.stt.smart_turn import log_mel\n"
        "print(log_mel(np.zeros(16000, dtype=np.float32)).shape)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(80, 800)"
