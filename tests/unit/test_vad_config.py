"""VAD settings: zero means the service default; out-of-range values are refused with the field and range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError, InvalidArgument
from services.stt.vad import locate_model
from services.stt.vad_config import VadOptions, VadSettings, resolve_vad
from tests.helpers.fake_stt import make_service

DEFAULTS = VadOptions.model_validate(
    {"threshold": 0.6, "min_speech_ms": 200, "end_silence_ms": 700, "pre_roll_ms": 250}
)


def test_zero_takes_the_defaults_and_values_override_them() -> None:
    assert resolve_vad(DEFAULTS) == VadSettings(0.6, 200, 700, 250)
    got = resolve_vad(DEFAULTS, threshold=0.3, min_speech_ms=100, end_silence_ms=1200, pre_roll_ms=50)
    assert got == VadSettings(0.3, 100, 1200, 50)
    assert got.neg_threshold == pytest.approx(0.15)
    assert VadSettings(0.1, 1, 50, 1).neg_threshold == 0.01
    assert VadSettings.samples(250) == 4000


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("threshold", 1.5, r"config\.vad\.threshold must be a speech probability between 0\.01 and 0\.99"),
        ("threshold", -0.2, r"config\.vad\.threshold .* got -0\.2"),
        ("threshold", float("nan"), r"config\.vad\.threshold .* got nan"),
        ("min_speech_ms", -5, r"config\.vad\.min_speech_ms must be 1\.\.10000 milliseconds .* default 200\), got -5"),
        ("end_silence_ms", 20, r"config\.vad\.end_silence_ms must be 50\.\.10000"),
        ("end_silence_ms", 60_000, r"got 60000"),
        ("pre_roll_ms", 9_000, r"config\.vad\.pre_roll_ms must be 1\.\.5000"),
    ],
)
def test_out_of_range_is_invalid_argument_naming_field_and_range(field: str, value: Any, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        resolve_vad(DEFAULTS, where="config.vad", **{field: value})


@pytest.mark.parametrize(
    ("vad", "key"),
    [
        ({"threshold": 1.2}, "services.stt.options.vad.threshold"),
        ({"end_silence_ms": 10}, "services.stt.options.vad.end_silence_ms"),
        ({"bogus": 1}, "services.stt.options.vad.bogus"),
    ],
)
def test_bad_service_defaults_are_config_errors(tmp_path: Path, vad: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        make_service(tmp_path, vad=vad)
    assert e.value.key == key


def test_service_options_carry_the_vad_defaults(tmp_path: Path) -> None:
    svc, _ = make_service(tmp_path, vad={"end_silence_ms": 900})
    try:
        assert svc.options.vad.end_silence_ms == 900 and svc.options.vad.threshold == 0.5
        assert svc.describe().details["vad_end_silence_ms"] == "900"
    finally:
        svc.close()


def test_a_configured_vad_model_that_is_missing_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Silero VAD ONNX file at") as e:
        locate_model(str(tmp_path / "nope.onnx"), "config/services.yaml")
    assert e.value.key == "options.vad.model_path"
