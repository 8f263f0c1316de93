"""VenvBuilder: the requirements hash, the .ready marker, pruning, and build failures (fake uv)."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from core.context import Paths
from core.errors import SupervisorError, VenvBuildError
from core.managers.supervisor import venv as venv_mod
from core.managers.supervisor.venv import READY_MARKER, VenvBuilder, requirements_hash
from tests.helpers.supervisor_fakes import service_config

PYPROJECT = """
[project]
name = "demo"
version = "0"
dependencies = ["grpcio==1.85.1", "psutil>=6"]

[project.optional-dependencies]
stt = ["faster-whisper==1.2.1", "soxr>=0.5"]
tts = ["kokoro-onnx==0.6.1"]
"""


def project(tmp: Path, text: str = PYPROJECT) -> Paths:
    root = tmp / "root"
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(text)
    return Paths(root=root, var=tmp / "var", cache=tmp / "cache", venvs=tmp / "venvs")


def builder(paths: Paths, **kw: object) -> VenvBuilder:
    return VenvBuilder(paths, python="/usr/bin/python3.11-fake", **kw)  # type: ignore[arg-type]


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return project(tmp_path)


def hash_of(paths: Paths, **cfg: object) -> str:
    b = builder(paths)
    b._python_version = "CPython-3.11.7"  # no interpreter to query in a unit test
    return b.venv_hash(service_config("stt", **cfg))


def test_hash_is_stable_and_named_after_the_service(paths: Paths) -> None:
    b = builder(paths)
    b._python_version = "CPython-3.11.7"
    cfg = service_config("stt")
    assert b.venv_hash(cfg) == b.venv_hash(cfg) == hash_of(paths)
    assert b.venv_path(cfg).name == f"stt-{b.venv_hash(cfg)}" and len(b.venv_hash(cfg)) == 12


def test_hash_changes_when_this_extra_changes(paths: Paths) -> None:
    before = hash_of(paths)
    (paths.root / "pyproject.toml").write_text(PYPROJECT.replace("soxr>=0.5", "soxr>=0.6"))
    assert hash_of(paths) != before


def test_hash_changes_when_base_dependencies_change(paths: Paths) -> None:
    before = hash_of(paths)
    (paths.root / "pyproject.toml").write_text(PYPROJECT.replace('"psutil>=6"', '"psutil>=7"'))
    assert hash_of(paths) != before


def test_hash_ignores_other_extras_order_and_unrelated_fields(paths: Paths) -> None:
    before = hash_of(paths)
    text = PYPROJECT.replace('"kokoro-onnx==0.6.1"', '"kokoro-onnx==0.7.0"')
    text = text.replace('version = "0"', 'version = "9"')
    text = text.replace('["faster-whisper==1.2.1", "soxr>=0.5"]', '["soxr>=0.5", "faster-whisper==1.2.1"]')
    (paths.root / "pyproject.toml").write_text(text)
    assert hash_of(paths) == before


def test_hash_ignores_runtime_env_but_not_build_env(paths: Paths) -> None:
    before = hash_of(paths)
    assert hash_of(paths, env={"OMP_NUM_THREADS": "8"}) == before
    assert hash_of(paths, env={"CMAKE_ARGS": "-DGGML_NATIVE=OFF"}) != before


def test_hash_covers_python_version_and_project_root() -> None:
    reqs = ["a==1"]
    base = requirements_hash(reqs, "CPython-3.11.7", "/r", {})
    assert base != requirements_hash(reqs, "CPython-3.11.9", "/r", {})
    assert base != requirements_hash(reqs, "CPython-3.11.7", "/s", {})


def test_unknown_extra_names_service_and_declared_extras(paths: Paths) -> None:
    with pytest.raises(VenvBuildError, match=r"'stt'.*extra 'nope'.*declared: stt, tts"):
        hash_of(paths, extra="nope")


def test_python_for_requires_the_ready_marker(paths: Paths) -> None:
    b = builder(paths)
    b._python_version = "CPython-3.11.7"
    cfg = service_config("stt")
    with pytest.raises(SupervisorError, match=r"'stt' has no ready venv.*prepare-only"):
        b.python_for(cfg)
    venv = b.venv_path(cfg)
    (venv / "bin").mkdir(parents=True)
    assert not b.is_ready(cfg)  # a half-built venv does not count
    (venv / READY_MARKER).write_text("{}")
    assert b.is_ready(cfg) and b.python_for(cfg) == venv / "bin" / "python"


FAKE_UV = """\
#!/bin/sh
# fake uv: "venv --python PY DIR" makes DIR; "pip install ..." prints progress, fails if FAIL_PIP is set
echo "uv $*"
if [ "$1" = venv ]; then mkdir -p "$4/bin"; echo "Creating virtual environment at: $4"; exit 0; fi
echo "Resolved 3 packages in 5ms"
echo "CMAKE_ARGS=$CMAKE_ARGS"
if [ -n "$FAIL_PIP" ]; then echo "error: No solution found when resolving dependencies" >&2; exit 1; fi
echo "Installed 3 packages in 2ms"
"""


def fake_uv(tmp: Path) -> str:
    p = tmp / "uv"
    p.write_text(FAKE_UV)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


async def test_ensure_builds_once_streams_progress_and_prunes_stale(paths: Paths, tmp_path: Path) -> None:
    console = io.StringIO()
    b = builder(paths, uv=fake_uv(tmp_path), console=console)
    b._python_version = "CPython-3.11.7"
    cfg = service_config("stt", env={"CMAKE_ARGS": "-DX=1"})
    stale = paths.venvs / "stt-0123456789ab"
    other = paths.venvs / "stt2-0123456789ab"  # another service's venv: never touched
    stale.mkdir(parents=True)
    other.mkdir()
    venv = await b.ensure(cfg)
    assert (venv / READY_MARKER).is_file() and venv == b.venv_path(cfg)
    out = console.getvalue()
    assert "[stt venv] Resolved 3 packages" in out and "[stt venv] $ " in out
    assert f"pip install --python {venv}/bin/python -e {paths.root}[stt]" in out
    assert "[stt venv] CMAKE_ARGS=-DX=1" in out  # the service env reaches the build
    log = (paths.logs / "stt.install.log").read_text()
    assert "Installed 3 packages" in log and f"uv venv --python /usr/bin/python3.11-fake {venv}" in log
    assert not stale.exists() and other.exists()
    console.truncate(0)
    assert await b.ensure(cfg) == venv  # reused: uv not run again
    assert "up to date" in console.getvalue() and "Resolved" not in console.getvalue()


async def test_failed_build_names_service_command_and_output(
    paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_PIP", "1")
    b = builder(paths, uv=fake_uv(tmp_path), console=io.StringIO())
    b._python_version = "CPython-3.11.7"
    cfg = service_config("stt")
    with pytest.raises(VenvBuildError) as ei:
        await b.ensure(cfg)
    msg = str(ei.value)
    assert "'stt'" in msg and "pip install" in msg and "exited with code 1" in msg
    assert "No solution found" in msg and "stt.install.log" in msg
    assert not b.is_ready(cfg)
    monkeypatch.delenv("FAIL_PIP")
    assert (await b.ensure(cfg)).name.startswith("stt-")  # the half-built venv is rebuilt


def test_find_uv_prefers_the_main_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    exe_dir = tmp_path / "bin"
    exe_dir.mkdir()
    uv = exe_dir / "uv"
    uv.write_text("#!/bin/sh\n")
    uv.chmod(0o755)
    monkeypatch.setattr(venv_mod.sys, "executable", str(exe_dir / "python"))
    assert venv_mod.find_uv() == str(uv)
    uv.unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(VenvBuildError, match="uv not found"):
        venv_mod.find_uv()
    assert os.environ["PATH"].endswith("nowhere")


def test_pyproject_of_the_repo_parses_for_every_service_extra() -> None:
    root = Path(__file__).resolve().parents[2]
    paths = Paths(root=root, var=root / "var", cache=root / "var", venvs=root / ".venvs")
    b = VenvBuilder(paths)
    for extra in ("stt", "tts", "llm-cpu"):
        reqs = b.requirements(service_config("x", extra=extra))
        assert "grpcio==1.85.1" in reqs and len(reqs) > 10

