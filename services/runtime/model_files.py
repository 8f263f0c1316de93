"""Embedded models shipped as PyPI packages: find their data files, join them once into the cache.

A model too big for one package is split over several (MODELS.md). On first use a service joins
the parts into ``<paths.models>/``: ``assemble_file`` concatenates them into one file (the LLM's
GGUF), ``assemble_folder`` into one file of a folder with extra files copied beside it (the STT's
CTranslate2 model). Either is built in a temporary sibling, fsynced, size-checked and renamed
into place under a file lock (``locked``), so a crash mid-copy never leaves a half model and two
processes never build it at once; a target whose file sizes already match is reused.

``package_file`` finds a data file inside an installed package, or raises a ConfigError with the
model store's own words on what to install; ``module_file`` and ``distribution_file`` are the
lookups beneath it, raising ``PackageNotInstalled`` / ``PackageFileMissing``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, TypeVar

from core.errors import ConfigError

_CHUNK = 8 * 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What to hand the engine: a local path or a hub id, and which kind it is."""

    ref: str
    kind: str  # "embedded", "path" or "hub"


class PackageNotInstalled(LookupError):
    """The package (an import name or a distribution name) is not installed in this venv."""

    def __init__(self, package: str) -> None:
        super().__init__(f"package {package} is not installed")
        self.package = package


class PackageFileMissing(LookupError):
    """The package is installed but has no ``relative``; ``path`` is where it was looked for, if known."""

    def __init__(self, package: str, relative: str, path: Path | None = None) -> None:
        super().__init__(f"package {package} has no {relative}")
        self.package = package
        self.relative = relative
        self.path = path


def module_file(package: str, relative: str) -> Path:
    """``relative`` inside the folder of the importable package ``package`` (not imported)."""
    try:
        found = importlib.util.find_spec(package)
    except ModuleNotFoundError as e:  # a dotted name whose parent is missing
        raise PackageNotInstalled(package) from e
    if found is None or not found.submodule_search_locations:
        raise PackageNotInstalled(package)
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.is_file():
        raise PackageFileMissing(package, relative, path)
    return path


def distribution_file(dist: str, relative: str) -> Path:
    """The file of the installed distribution ``dist`` whose recorded name ends with ``relative``."""
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError as e:
        raise PackageNotInstalled(dist) from e
    for f in files:
        if str(f).replace("\\", "/").endswith(relative):
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise PackageFileMissing(dist, relative)


def package_file(
    package: str, relative: str, where: str, key: str, *, not_installed: str, no_file: str,
    distribution: bool = False,
) -> Path:
    """A data file inside an installed package (a distribution name if ``distribution``), or a
    ConfigError at ``where``/``key`` saying ``not_installed`` or ``no_file``."""
    find = distribution_file if distribution else module_file
    try:
        return find(package, relative)
    except PackageNotInstalled as e:
        raise ConfigError(where, key, not_installed) from e
    except PackageFileMissing as e:
        raise ConfigError(where, key, no_file) from e


def embedded_spec(model: str, table: Mapping[str, T], where: str, key: str) -> T:
    """The ``table`` entry for ``embedded:<name>``, or a ConfigError listing the known names."""
    spec = table.get(model.removeprefix("embedded:"))
    if spec is None:
        raise ConfigError(where, key, f"unknown embedded model {model!r}; known: {known_embedded(table)}")
    return spec


def known_embedded(table: Mapping[str, object]) -> str:
    return ", ".join(f"embedded:{n}" for n in table)


def assemble_file(parts: Sequence[Path], target: Path) -> Path:
    """Concatenate ``parts`` into ``target`` unless a file of the right size is already there."""
    size = sum(p.stat().st_size for p in parts)
    return _build_once(target, lambda path: _size_is(path, size), lambda: _write_file(parts, target, size))


def assemble_folder(parts: Sequence[Path], extras: Sequence[Path], target: Path, joined: str) -> Path:
    """Build folder ``target`` (``joined`` from ``parts`` plus ``extras``) unless it is already complete."""
    expected = {joined: sum(p.stat().st_size for p in parts)}
    expected |= {e.name: e.stat().st_size for e in extras}
    return _build_once(
        target, lambda folder: _sizes_are(folder, expected),
        lambda: _write_folder(parts, extras, target, joined, expected),
    )


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for the block."""
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_once(target: Path, complete: Callable[[Path], bool], build: Callable[[], None]) -> Path:
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.parent / f".{target.name}.lock"):
        if not complete(target):  # else another process finished it while we waited
            build()
    return target


def _write_file(parts: Sequence[Path], target: Path, size: int) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _join(parts, out)
        tmp.chmod(0o644)  # mkstemp makes it private; the models folder is a shared cache
        if not _size_is(tmp, size):
            raise OSError(f"assembled model {tmp} has the wrong size; is the disk full?")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_folder(
    parts: Sequence[Path], extras: Sequence[Path], target: Path, joined: str, expected: dict[str, int]
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is a shared cache
        with (tmp / joined).open("wb") as out:
            _join(parts, out)
        for extra in extras:
            shutil.copyfile(extra, tmp / extra.name)
        if not _sizes_are(tmp, expected):
            raise OSError(f"assembled model in {tmp} has the wrong file sizes; is the disk full?")
        if target.exists():
            stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _join(parts: Sequence[Path], out: BinaryIO) -> None:
    for part in parts:
        with part.open("rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
    out.flush()
    os.fsync(out.fileno())


def _size_is(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _sizes_are(folder: Path, expected: dict[str, int]) -> bool:
    return all(_size_is(folder / name, size) for name, size in expected.items())
