"""VenvBuilder: the lock-keyed hash, the .ready marker, pruning, and build failures (fake uv)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from core.context import Paths
from core.errors import SupervisorError, VenvBuildError
from core.managers.supervisor import venv as venv_mod
from core.managers.supervisor.lock import parse_export
from core.managers.supervisor.venv import READY_MARKER, VenvBuilder, requirements_hash
from tests.helpers.fake_uv import fake_uv, locked_project, pins_text
from tests.helpers.locked import applies_here
from tests.helpers.supervisor_fakes import service_config

PYPROJECT = """
[project]
name = "demo"
version = "0"
dependencies = ["grpcio==1.85.1", "psutil>=6"]

[project.optional-dependencies]
stt = ["faster-whisper==1.2.1", "soxr>=0.5"]
tts = ["kokoro-onnx==0.6.1"]

[tool.uv]
build-constraint-dependencies = ["hatchling==1.33.0"]
"""
BASE = ("grpcio==1.85.1", "psutil==7.1.0")
EXPORTS = {
    "stt": pins_text(*BASE, "faster-whisper==1.2.1", "soxr==0.5.0"),
    "tts": pins_text(*BASE, "kokoro-onnx==0.6.1"),
}


def project(tmp: Path, exports: dict[str, str] | None = None, text: str = PYPROJECT) -> Paths:
    locked_project(tmp / "root", text, EXPORTS if exports is None else exports)
    return Paths(root=tmp / "root", var=tmp / "var", cache=tmp / "cache", venvs=tmp / "venvs")


def builder(paths: Paths, **kw: object) -> VenvBuilder:
    kw.setdefault("uv", fake_uv(paths.root.parent))
    b = VenvBuilder(paths, python="/usr/bin/python3.11-fake", **kw)  # type: ignore[arg-type]
    b._python_version = "CPython-3.11.7"  # no interpreter to query in a unit test
    return b


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return project(tmp_path)


def hash_of(paths: Paths, service: str = "stt", **cfg: object) -> str:
    cfg.setdefault("extra", service)
    return builder(paths).venv_hash(service_config(service, **cfg))


def test_hash_is_stable_and_named_after_the_service(paths: Paths) -> None:
    b = builder(paths)
    cfg = service_config("stt", extra="stt")
    assert b.venv_hash(cfg) == b.venv_hash(cfg) == hash_of(paths)
    assert b.venv_path(cfg).name == f"stt-{b.venv_hash(cfg)}" and len(b.venv_hash(cfg)) == 12
    assert b.requirements(cfg) == [*BASE, "faster-whisper==1.2.1", "soxr==0.5.0"]


def test_a_lock_change_rebuilds_exactly_the_venvs_whose_pins_changed(tmp_path: Path) -> None:
    before = {svc: hash_of(project(tmp_path), svc) for svc in ("stt", "tts")}
    moved = {**EXPORTS, "tts": EXPORTS["tts"].replace("kokoro-onnx==0.6.1", "kokoro-onnx==0.6.2")}
    after = {svc: hash_of(project(tmp_path, moved), svc) for svc in ("stt", "tts")}
    assert after["stt"] == before["stt"] and after["tts"] != before["tts"]


def test_a_changed_hash_for_the_same_version_rebuilds(tmp_path: Path) -> None:
    before = hash_of(project(tmp_path))
    other = {**EXPORTS, "stt": EXPORTS["stt"].replace("--hash=sha256:", "--hash=sha256:0", 1)}
    assert hash_of(project(tmp_path, other)) != before


def test_hash_ignores_pyproject_ranges_the_lock_did_not_move(tmp_path: Path) -> None:
    before = hash_of(project(tmp_path))
    assert hash_of(project(tmp_path, text=PYPROJECT.replace("soxr>=0.5", "soxr>=0.4"))) == before


def test_hash_covers_build_constraints(tmp_path: Path) -> None:
    before = hash_of(project(tmp_path))
    assert hash_of(project(tmp_path, text=PYPROJECT.replace("1.33.0", "1.34.0"))) != before


def test_hash_ignores_runtime_env_but_not_build_env(paths: Paths) -> None:
    before = hash_of(paths)
    assert hash_of(paths, env={"OMP_NUM_THREADS": "8"}) == before
    assert hash_of(paths, env={"CMAKE_ARGS": "-DGGML_NATIVE=OFF"}) != before


def test_hash_covers_python_version_and_project_root() -> None:
    pins = parse_export(pins_text("a==1"))
    base = requirements_hash(pins, "CPython-3.11.7", "/r", {})
    assert base != requirements_hash(pins, "CPython-3.11.9", "/r", {})
    assert base != requirements_hash(pins, "CPython-3.11.7", "/s", {})


def test_unknown_extra_names_service_and_declared_extras(paths: Paths) -> None:
    with pytest.raises(VenvBuildError, match=r"'stt'.*extra 'nope'.*declared: stt, tts"):
        hash_of(paths, extra="nope")


def test_a_missing_lock_says_how_to_make_one(paths: Paths) -> None:
    (paths.root / "uv.lock").unlink()
    with pytest.raises(VenvBuildError, match=r"'stt'.*no readable uv.lock.*scripts/lock.sh"):
        hash_of(paths)


def test_a_failing_export_says_how_to_fix_the_lock(paths: Paths) -> None:
    (paths.root / "export-stt.txt").unlink()
    with pytest.raises(VenvBuildError, match=r"'stt'.*uv export.*exited with code 2.*not defined.*scripts/lock.sh"):
        hash_of(paths)


def test_python_for_requires_the_ready_marker(paths: Paths) -> None:
    b = builder(paths)
    cfg = service_config("stt", extra="stt")
    with pytest.raises(SupervisorError, match=r"'stt' has no ready venv.*prepare-only"):
        b.python_for(cfg)
    venv = b.venv_path(cfg)
    (venv / "bin").mkdir(parents=True)
    assert not b.is_ready(cfg)  # a half-built venv does not count
    (venv / READY_MARKER).write_text("{}")
    assert b.is_ready(cfg) and b.python_for(cfg) == venv / "bin" / "python"


async def test_ensure_builds_once_streams_progress_and_prunes_stale(paths: Paths, tmp_path: Path) -> None:
    console = io.StringIO()
    b = builder(paths, console=console)
    cfg = service_config("stt", extra="stt", env={"CMAKE_ARGS": "-DX=1"})
    stale = paths.venvs / "stt-0123456789ab"
    other = paths.venvs / "stt2-0123456789ab"  # another service's venv: never touched
    stale.mkdir(parents=True)
    (stale / READY_MARKER).write_text('{"extra": "stt"}')
    other_extra = paths.venvs / "stt-ba9876543210"  # the same service for another profile: kept
    other_extra.mkdir()
    (other_extra / READY_MARKER).write_text('{"extra": "stt-gpu"}')
    leftover = paths.venvs / "stt-aaaaaaaaaaaa"  # half-built (no marker): removed
    leftover.mkdir()
    other.mkdir()
    venv = await b.ensure(cfg)
    assert (venv / READY_MARKER).is_file() and venv == b.venv_path(cfg)
    out = console.getvalue()
    assert "[stt venv] Resolved 3 packages" in out and "[stt venv] $ " in out
    assert f"pip sync --python {venv}/bin/python --require-hashes {venv}/locked-requirements.txt" in out
    assert (f"pip install --python {venv}/bin/python --no-deps --build-constraints {venv}/build-constraints.txt "
            f"-e {paths.root}") in out
    assert parse_export((venv / "locked-requirements.txt").read_text()) == parse_export(EXPORTS["stt"])
    assert (venv / "build-constraints.txt").read_text() == "hatchling==1.33.0\n"
    assert "[stt venv] CMAKE_ARGS=-DX=1" in out  # the service env reaches the build
    log = (paths.logs / "stt.install.log").read_text()
    assert "Installed 3 packages" in log and f"uv venv --python /usr/bin/python3.11-fake {venv}" in log
    assert not stale.exists() and not leftover.exists() and other.exists() and other_extra.exists()
    console.truncate(0)
    assert await b.ensure(cfg) == venv  # reused: uv not run again
    assert "up to date" in console.getvalue() and "Resolved" not in console.getvalue()


async def test_failed_build_names_service_command_and_output(
    paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_PIP", "1")
    b = builder(paths, console=io.StringIO())
    cfg = service_config("stt", extra="stt")
    with pytest.raises(VenvBuildError) as ei:
        await b.ensure(cfg)
    msg = str(ei.value)
    assert "'stt'" in msg and "pip sync" in msg and "exited with code 1" in msg
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


def test_the_repo_lock_exports_every_service_extra_with_hashes() -> None:
    root = Path(__file__).resolve().parents[2]
    paths = Paths(root=root, var=root / "var", cache=root / "var", venvs=root / ".venvs")
    b = VenvBuilder(paths)
    for extra in ("stt", "tts", "llm-cpu", "llm-api", "llm-gpu"):
        pins = b.locked(service_config("x", extra=extra))
        assert "grpcio==1.85.1" in [p.spec for p in pins] and len(pins) > 10
        here = [p for p in pins if applies_here(p)]  # a pin for another platform may lack a wheel
        assert all(p.version and "--hash=sha256:" in p.entry for p in here), extra
