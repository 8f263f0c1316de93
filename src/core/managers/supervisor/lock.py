"""What a service venv installs: the pins of its extra, read from the committed ``uv.lock``.

pyproject.toml says which versions the code supports; ``uv.lock`` decides which are installed.
``uv export --frozen`` turns the lock into the requirements of one extra (the base dependencies
plus that extra, every package at its locked version with its sha256 hashes, with markers for
other platforms), so a service venv gets exactly what CI tested, never whatever is newest today.
Exports are per extra: a lock change that moves only the TTS stack changes only the TTS export,
and so only the TTS venv's key.

Build dependencies are not packages of the lock. They are pinned in pyproject's
``[tool.uv] build-constraint-dependencies`` (uv records them in the lock's manifest) and passed
to every build this module's callers run.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import VenvBuildError

LOCK_FILE = "uv.lock"
#: How to refresh a stale or missing lock; every error about the lock says it.
LOCK_HINT = "run scripts/lock.sh (uv lock) and commit uv.lock"
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==\s*([^\s;\\]+))?")


def canonical(name: str) -> str:
    """PEP 503 name: ``Llama_CPP.python`` and ``llama-cpp-python`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, slots=True)
class Pin:
    """One locked requirement as exported: name, version, and its whole entry (markers, hashes)."""

    name: str
    version: str
    entry: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}" if self.version else self.name


def parse_export(text: str) -> list[Pin]:
    """Split ``uv export --format requirements-txt`` output into one Pin per requirement.

    An entry starts on a line that does not start with whitespace; its ``--hash`` continuation
    lines follow, indented. Comments and blank lines are dropped.
    """
    entries: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1].append(line)
        else:
            entries.append([line])
    pins = []
    for lines in entries:
        m = _ENTRY.match(lines[0])
        if m is None:
            raise VenvBuildError(f"cannot read the exported requirement {lines[0]!r}; {LOCK_HINT}")
        pins.append(Pin(canonical(m.group(1)), m.group(2) or "", "\n".join(lines)))
    return pins


def requirements_text(pins: Sequence[Pin]) -> str:
    return "".join(p.entry + "\n" for p in pins)


def declared_extras(pyproject: Mapping[str, Any]) -> list[str]:
    return sorted(pyproject.get("project", {}).get("optional-dependencies", {}))


def build_constraints(pyproject: Mapping[str, Any]) -> list[str]:
    """The pinned build dependencies (``[tool.uv] build-constraint-dependencies``)."""
    return list(pyproject.get("tool", {}).get("uv", {}).get("build-constraint-dependencies", []))


class LockedPins:
    """Reads each extra's pins from ``<root>/uv.lock`` with ``uv export --frozen`` (offline, ms).

    Exports are memoised by the lock's and pyproject's content, so asking again is a file hash.
    """

    def __init__(self, root: Path, uv: str) -> None:
        self._root = root
        self._uv = uv
        self._memo: dict[tuple[str, str], list[Pin]] = {}

    @property
    def lock_path(self) -> Path:
        return self._root / LOCK_FILE

    def pyproject(self) -> dict[str, Any]:
        path = self._root / "pyproject.toml"
        try:
            return tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise VenvBuildError(f"cannot read {path}: {e}") from e

    def pins(self, extra: str) -> list[Pin]:
        """Base dependencies plus ``extra``, as locked; VenvBuildError if the extra or lock is missing."""
        doc = self.pyproject()
        extras = declared_extras(doc)
        if extra not in extras:
            raise VenvBuildError(
                f"extra {extra!r} is not declared in {self._root / 'pyproject.toml'} "
                f"[project.optional-dependencies] (declared: {', '.join(extras) or 'none'}); "
                "fix the service's 'extra' in config/services.yaml"
            )
        try:
            lock = self.lock_path.read_bytes()
        except OSError as e:
            raise VenvBuildError(
                f"no readable {LOCK_FILE} in {self._root} ({e.strerror}): service venvs install the "
                f"locked pins; {LOCK_HINT}"
            ) from e
        digest = hashlib.sha256(lock + (self._root / "pyproject.toml").read_bytes()).hexdigest()
        key = (extra, digest)
        if key not in self._memo:
            self._memo = {k: v for k, v in self._memo.items() if k[1] == digest}
            self._memo[key] = parse_export(self._export(extra))
        return list(self._memo[key])

    def _export(self, extra: str) -> str:
        argv = [self._uv, "export", "--frozen", "--format", "requirements-txt", "--no-emit-project",
                "--no-header", "--no-annotate", "--extra", extra]
        try:
            out = subprocess.run(argv, cwd=self._root, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise VenvBuildError(f"cannot run `{' '.join(argv)}`: {e}") from e
        if out.returncode != 0:
            raise VenvBuildError(
                f"`{' '.join(argv)}` exited with code {out.returncode}: {out.stderr.strip()[-2000:]}; {LOCK_HINT}"
            )
        return out.stdout
