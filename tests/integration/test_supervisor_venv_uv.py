"""VenvBuilder with the real uv on a tiny throwaway project: lock, build, editable import, reuse, rebuild.

The project depends on one small package (``packaging``) and is locked with the real ``uv lock``,
so this runs in seconds and proves the exact uv commands the supervisor uses for the real
services: the export of the extra from the lock, ``uv pip sync --require-hashes``, the editable
install without dependencies, and the exact locked version in the venv.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from pathlib import Path

import pytest

from core.context import Paths
from core.managers.supervisor.venv import READY_MARKER, VenvBuilder, find_uv
from tests.helpers.supervisor_fakes import service_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "tiny-svc"
version = "0.0.1"
requires-python = ">=3.11"
dependencies = []

[project.optional-dependencies]
tiny = ["packaging>=20,<=24.1"]

[tool.uv]
build-constraint-dependencies = ["hatchling==1.33.0"]

[tool.hatch.build.targets.wheel]
packages = ["src/tiny_svc"]
"""


async def run_python(py: Path, code: str) -> str:
    out = await asyncio.to_thread(
        subprocess.run, [str(py), "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout


async def test_real_uv_builds_reuses_and_rebuilds(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "src" / "tiny_svc").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "src" / "tiny_svc" / "__init__.py").write_text("ANSWER = 42\n")
    await asyncio.to_thread(subprocess.run, [find_uv(), "lock"], cwd=root, check=True, capture_output=True, timeout=120)
    # widen the range after locking: the lock, not the newest release the range allows, decides
    (root / "pyproject.toml").write_text(PYPROJECT.replace("<=24.1", ""))
    paths = Paths(root=root, var=tmp_path / "var", cache=tmp_path / "cache", venvs=tmp_path / "venvs")
    console = io.StringIO()
    b = VenvBuilder(paths, uv=find_uv(), console=console)
    cfg = service_config("tiny", extra="tiny")

    venv = await b.ensure(cfg)
    assert (venv / READY_MARKER).is_file() and venv.name == f"tiny-{b.venv_hash(cfg)}"
    assert "[tiny venv]" in console.getvalue() and "tiny-svc" in console.getvalue()
    assert "tiny-svc" in (paths.logs / "tiny.install.log").read_text()
    py = b.python_for(cfg)
    out = await run_python(py, "import sys, tiny_svc; print(tiny_svc.ANSWER, sys.version_info[:2])")
    assert out.split()[0] == "42" and f"({sys.version_info[0]}, {sys.version_info[1]})" in out
    assert b.requirements(cfg) == ["packaging==24.1"]
    assert (await run_python(py, "import packaging; print(packaging.__version__)")).strip() == "24.1"
    # editable: a change in the source tree is seen without reinstalling
    (root / "src" / "tiny_svc" / "__init__.py").write_text("ANSWER = 43\n")
    assert (await run_python(py, "import tiny_svc; print(tiny_svc.ANSWER)")).strip() == "43"

    console.truncate(0)
    console.seek(0)
    assert await b.ensure(cfg) == venv and "up to date" in console.getvalue()

    rebuilt_cfg = service_config("tiny", extra="tiny", env={"CMAKE_ARGS": "-DGGML_NATIVE=OFF"})
    rebuilt = await b.ensure(rebuilt_cfg)
    assert rebuilt != venv and (rebuilt / READY_MARKER).is_file()
    assert not venv.exists()  # the stale venv of the same service was removed
