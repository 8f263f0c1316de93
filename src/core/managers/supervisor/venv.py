"""One virtualenv per service, built with uv from the committed lock, keyed by what goes into it.

``<paths.venvs>/<name>-<hash12>`` holds the service's extra exactly as ``uv.lock`` pins it
(``uv pip sync --require-hashes`` of the extra's export, see lock.py) plus an editable install
of this project without dependencies. The hash covers that export (versions and hashes), the
Python version, the project root the editable install points at, the pinned build
dependencies, and build-affecting env such as CMAKE_ARGS. So a changed lock rebuilds exactly the
venvs whose pins changed, and a changed runtime env (OMP_NUM_THREADS) costs nothing. uv's shared
cache (~/.cache/uv) makes every extra venv cheap on disk.

Packages named in the service env's ``SOURCE_BUILD_PACKAGES`` (llama-cpp-python) are compiled
once into a wheelhouse, ``<paths.cache>/wheels/wheelhouse-<key>``, where the key hashes their
locked entries and the build env, with ``pip wheel --no-cache-dir --require-hashes`` (the sdist
is checked against the lock's hash) and the service's build env. uv keys the wheels it builds
by sdist only, never by CMAKE_ARGS, so its shared cache could hand back a wheel built with other
flags (a ``-march=native`` llama.cpp that segfaults); and its cache layout changes between uv
releases. A wheel file in a keyed folder is neither: every later venv with the same flags
installs it with ``--find-links`` in seconds, whatever the uv version.

A ``.ready`` marker is written last; a venv without it is a half-built leftover and is
rebuilt. Builds are meant to run one at a time: the project's build hook regenerates the
proto package in src/.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from core.config import ServiceConfig
from core.context import Paths
from core.errors import SupervisorError, VenvBuildError
from core.managers.supervisor.lock import LockedPins, Pin, build_constraints, canonical, requirements_text

READY_MARKER = ".ready"
#: Service env naming packages (comma or space separated) to build from source in a keyed cache.
SOURCE_BUILD_ENV = "SOURCE_BUILD_PACKAGES"
#: Env names (exact) whose value changes what a build produces.
BUILD_ENV_NAMES = frozenset(
    {"CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS", "FORCE_CMAKE", "MAKEFLAGS", SOURCE_BUILD_ENV}
)
#: Env name prefixes whose value changes what a build produces (llama.cpp, CUDA, uv indexes).
BUILD_ENV_PREFIXES = ("CMAKE_", "GGML_", "LLAMA_", "CUDA", "NVCC", "UV_INDEX", "UV_EXTRA_INDEX", "PIP_INDEX")
_TAIL_LINES = 25
_LINE_LIMIT = 1024 * 1024


def build_env(env: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``env`` that affects what gets built."""
    return {
        k: v for k, v in sorted(env.items()) if k in BUILD_ENV_NAMES or k.startswith(BUILD_ENV_PREFIXES)
    }


def source_builds(pins: Sequence[Pin], env: Mapping[str, str]) -> list[Pin]:
    """The locked pins of the packages ``env[SOURCE_BUILD_ENV]`` names."""
    wanted = [canonical(n) for n in re.split(r"[,\s]+", env.get(SOURCE_BUILD_ENV, "")) if n]
    by_name = {p.name: p for p in pins}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise VenvBuildError(
            f"{SOURCE_BUILD_ENV} names {', '.join(missing)}, which the service's requirements do not "
            f"include ({', '.join(sorted(by_name))}); fix the env in config/services.yaml"
        )
    return [by_name[n] for n in wanted]


def source_build_cache(
    cache_root: Path, pins: Sequence[Pin], env: Mapping[str, str], constraints: Sequence[str] = ()
) -> Path:
    """Wheelhouse for ``pins`` built with this build env and these build constraints."""
    doc = {"requirements": sorted(p.entry for p in pins), "build_env": build_env(env),
           "build_constraints": sorted(constraints)}
    key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root / "wheels" / f"wheelhouse-{key}"


def requirements_hash(
    pins: Sequence[Pin], python_version: str, project_root: str, env: Mapping[str, str],
    constraints: Sequence[str] = (),
) -> str:
    """12 hex digits that change only when what would be installed changes."""
    doc = {
        "requirements": sorted(p.entry for p in pins),
        "python": python_version,
        "root": project_root,
        "build_env": build_env(env),
        "build_constraints": sorted(constraints),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def find_uv() -> str:
    """uv next to the running interpreter (the main venv) first, then on PATH."""
    here = Path(sys.executable).parent / "uv"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("uv")
    if found:
        return found
    raise VenvBuildError(
        f"uv not found next to {sys.executable} nor on PATH; install it into the main venv "
        "(./start.sh does) or with `pip install uv`"
    )


def _extra_of(venv: Path) -> str | None:
    """The extra a ready venv was built with; None for a half-built one (no marker)."""
    try:
        doc = json.loads((venv / READY_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return str(doc.get("extra", "")) if isinstance(doc, dict) else None


class VenvBuilder:
    """Creates, reuses and prunes service venvs. Progress goes to ``console`` and an install log."""

    def __init__(
        self,
        paths: Paths,
        *,
        python: str | None = None,
        uv: str | None = None,
        console: TextIO | None = None,
    ) -> None:
        self._paths = paths
        self._python = python or sys.executable
        self._uv = uv
        self._console = console if console is not None else sys.stderr
        self._python_version: str | None = None
        self._lock: LockedPins | None = None

    # ---- identity -------------------------------------------------------------------------
    def python_version(self) -> str:
        if self._python_version is None:
            if Path(self._python) == Path(sys.executable):
                self._python_version = f"{platform.python_implementation()}-{platform.python_version()}"
            else:
                self._python_version = self._query_python_version()
        return self._python_version

    def _query_python_version(self) -> str:
        code = "import platform;print(f'{platform.python_implementation()}-{platform.python_version()}')"
        try:
            out = subprocess.run(
                [self._python, "-c", code], capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise VenvBuildError(
                f"cannot run the base Python {self._python!r} for service venvs ({e}); "
                "point the supervisor at a working Python 3.11"
            ) from e
        return out.stdout.strip()

    def _locked(self) -> LockedPins:
        if self._lock is None:
            self._lock = LockedPins(self._paths.root, self._uv or find_uv())
        return self._lock

    def locked(self, config: ServiceConfig) -> list[Pin]:
        """The service's pins from uv.lock (base dependencies plus its extra)."""
        try:
            return self._locked().pins(config.extra)
        except VenvBuildError as e:
            raise VenvBuildError(f"service {config.name!r}: {e}") from e

    def requirements(self, config: ServiceConfig) -> list[str]:
        """``name==version`` of every locked pin of the service."""
        return [p.spec for p in self.locked(config)]

    def build_constraints(self) -> list[str]:
        return build_constraints(self._locked().pyproject())

    def venv_hash(self, config: ServiceConfig) -> str:
        return requirements_hash(
            self.locked(config), self.python_version(), str(self._paths.root), config.env,
            self.build_constraints(),
        )

    def wheelhouse(self, config: ServiceConfig) -> Path | None:
        """Where the service's source-built packages are compiled, or None when it has none."""
        try:
            pins = source_builds(self.locked(config), config.env)
        except VenvBuildError as e:
            raise VenvBuildError(f"service {config.name!r}: {e}") from e
        return source_build_cache(self._paths.cache, pins, config.env, self.build_constraints()) if pins else None

    def venv_path(self, config: ServiceConfig) -> Path:
        return self._paths.venvs / f"{config.name}-{self.venv_hash(config)}"

    def is_ready(self, config: ServiceConfig) -> bool:
        return (self.venv_path(config) / READY_MARKER).is_file()

    def python_for(self, config: ServiceConfig) -> Path:
        """The interpreter of the service's ready venv; SupervisorError if it is not built."""
        venv = self.venv_path(config)
        if not (venv / READY_MARKER).is_file():
            raise SupervisorError(
                f"service {config.name!r} has no ready venv at {venv} (its requirements changed, or it was "
                f"never built); run `python main.py --prepare-only` or ./start.sh to build it, and see "
                f"{self.install_log(config)} if that fails"
            )
        return venv / "bin" / "python"

    def install_log(self, config: ServiceConfig) -> Path:
        return self._paths.logs / f"{config.name}.install.log"

    # ---- building -------------------------------------------------------------------------
    async def ensure(self, config: ServiceConfig, *, prune: bool = True) -> Path:
        """Return the ready venv of ``config``, building it first if needed; prune stale ones unless
        ``prune`` is False (a profile switch: the instance being replaced still runs from one)."""
        venv = self.venv_path(config)
        if (venv / READY_MARKER).is_file():
            self._say(config, f"venv up to date: {venv}")
        else:
            await self._build(config, venv)
        if prune:
            await self._prune(config, keep=venv)
        return venv

    async def _build(self, config: ServiceConfig, venv: Path) -> None:
        uv = self._uv or find_uv()
        if await asyncio.to_thread(venv.exists):
            self._say(config, f"removing half-built venv {venv}")
            await asyncio.to_thread(shutil.rmtree, venv)
        venv.parent.mkdir(parents=True, exist_ok=True)
        log_path = self.install_log(config)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env.update(config.env)
        python = str(venv / "bin" / "python")
        pins = self.locked(config)
        wheelhouse = self.wheelhouse(config)  # names the service when SOURCE_BUILD_PACKAGES is wrong
        compiled = source_builds(pins, config.env)
        constraints = self.build_constraints()
        locked_file, constraints_file = venv / "locked-requirements.txt", venv / "build-constraints.txt"
        steps = [[uv, "pip", "sync", "--python", python, "--require-hashes", str(locked_file)]]
        if wheelhouse is not None:
            steps.append([uv, "pip", "install", "--python", python, "--no-deps", "--no-index",
                          "--find-links", str(wheelhouse), *(p.spec for p in compiled)])
        steps.append([uv, "pip", "install", "--python", python, "--no-deps",
                      "--build-constraints", str(constraints_file), "-e", str(self._paths.root)])
        t0 = time.monotonic()
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} building {venv}\n")
            self._say(config, f"building venv {venv.name}, extra [{config.extra}] as locked (log: {log_path})", log)
            if wheelhouse is not None:
                await self._fill_wheelhouse(config, wheelhouse, compiled, constraints, env, log)
            await self._run(config, [uv, "venv", "--python", self._python, str(venv)], env, log)
            locked_file.write_text(requirements_text([p for p in pins if p not in compiled]))
            constraints_file.write_text("".join(c + "\n" for c in constraints))
            for argv in steps:
                await self._run(config, argv, env, log)
            marker = {
                "service": config.name, "extra": config.extra, "python": self.python_version(),
                "requirements": [p.spec for p in pins], "built_at": time.time(),
            }
            (venv / READY_MARKER).write_text(json.dumps(marker, indent=1))
            self._say(config, f"venv ready in {time.monotonic() - t0:.1f}s: {venv}", log)

    async def _fill_wheelhouse(
        self, config: ServiceConfig, wheelhouse: Path, pins: list[Pin], constraints: list[str],
        env: dict[str, str], log: TextIO,
    ) -> None:
        """Compile ``pins`` into ``wheelhouse`` once (atomically); later venvs reuse the wheels."""
        if await asyncio.to_thread(lambda: any(wheelhouse.glob("*.whl"))):
            self._say(config, f"reusing compiled wheels in {wheelhouse}", log)
            return
        wheelhouse.parent.mkdir(parents=True, exist_ok=True)
        tmp = wheelhouse.with_name(f".{wheelhouse.name}.tmp-{os.getpid()}")
        await asyncio.to_thread(shutil.rmtree, tmp, True)
        src = wheelhouse.with_name(f".{wheelhouse.name}.src-{os.getpid()}")
        src.mkdir(parents=True, exist_ok=True)
        try:
            (src / "requirements.txt").write_text(requirements_text(pins))
            (src / "build-constraints.txt").write_text("".join(c + "\n" for c in constraints))
            specs = ", ".join(p.spec for p in pins)
            self._say(config, f"compiling {specs} once into {wheelhouse} (several minutes)", log)
            await self._run(
                config,
                [self._python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--progress-bar", "off",
                 "--require-hashes", "--build-constraint", str(src / "build-constraints.txt"),
                 "--wheel-dir", str(tmp), "-r", str(src / "requirements.txt")],
                env, log,
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, src, True)
        if not any(tmp.glob("*.whl")):
            raise VenvBuildError(f"service {config.name!r}: pip wheel produced no wheel for {specs} in {tmp}")
        await asyncio.to_thread(shutil.rmtree, wheelhouse, True)
        tmp.rename(wheelhouse)

    async def _run(self, config: ServiceConfig, argv: list[str], env: dict[str, str], log: TextIO) -> None:
        cmd = " ".join(argv)
        self._say(config, f"$ {cmd}", log)
        tail: deque[str] = deque(maxlen=_TAIL_LINES)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=self._paths.root, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, limit=_LINE_LIMIT,
            )
        except OSError as e:
            raise VenvBuildError(f"service {config.name!r}: cannot run `{cmd}`: {e}") from e
        assert proc.stdout is not None
        try:
            while raw := await proc.stdout.readline():
                line = raw.decode("utf-8", "replace").rstrip()
                tail.append(line)
                self._say(config, line, log)
            rc = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled (main is stopping): do not leave uv running
                proc.kill()
                await proc.wait()
        if rc != 0:
            last = "\n".join(tail)
            raise VenvBuildError(
                f"service {config.name!r}: venv build failed: `{cmd}` exited with code {rc}. "
                f"Last output:\n{last}\nFull log: {log.name}. Fix the cause (network, a requirement in "
                f"pyproject.toml, build env) and start again; the half-built venv is rebuilt."
            )

    def stale_venvs(self, config: ServiceConfig, keep: Path) -> list[Path]:
        """Other venvs of the same service and extra (older pins), and half-built leftovers.

        A venv of the same service with another extra belongs to another profile (llm-cpu for
        local-pc, llm-api for runpod): it stays, and may be in use right now.
        """
        pattern = re.compile(rf"^{re.escape(config.name)}-[0-9a-f]{{12}}$")
        if not self._paths.venvs.is_dir():
            return []
        return [p for p in self._paths.venvs.iterdir()
                if p != keep and p.is_dir() and pattern.match(p.name) and _extra_of(p) in (config.extra, None)]

    async def _prune(self, config: ServiceConfig, keep: Path) -> None:
        for old in await asyncio.to_thread(self.stale_venvs, config, keep):
            self._say(config, f"removing stale venv {old}")
            # A venv can hold gigabytes (torch): delete off the loop so main keeps answering.
            await asyncio.to_thread(shutil.rmtree, old, True)

    def _say(self, config: ServiceConfig, line: str, log: TextIO | None = None) -> None:
        self._console.write(f"[{config.name} venv] {line}\n")
        self._console.flush()
        if log is not None:
            log.write(line + "\n")
            log.flush()
