"""uv.lock decides what is installed: it is current, main's venv matches it, and each service
venv's key moves only with its own extra's pins (the real lock, exported by the real uv)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.context import Paths
from core.managers.supervisor.lock import LockedPins, parse_export
from core.managers.supervisor.venv import VenvBuilder, find_uv
from tests.helpers.locked import differences, installed
from tests.helpers.supervisor_fakes import service_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_lock_is_current_with_pyproject() -> None:
    out = subprocess.run([find_uv(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, (
        "uv.lock does not match pyproject.toml: run scripts/lock.sh (uv lock) and commit uv.lock\n" + out.stderr
    )


def test_main_venv_has_exactly_the_locked_versions() -> None:
    pins = LockedPins(ROOT, find_uv())
    diff = differences([*pins.pins("main"), *pins.pins("dev")], installed(sys.executable))
    assert not diff, f"main's venv differs from uv.lock: {diff}; run scripts/bootstrap.sh main,dev"


def test_a_lock_change_moves_only_the_keys_of_the_extras_it_touches(tmp_path: Path) -> None:
    """The real lock with faster-whisper (STT only) bumped: the STT venv rebuilds, TTS and LLM do not."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root)
    lock = (ROOT / "uv.lock").read_text()
    bumped, n = re.subn(r'(name = "faster-whisper"\nversion = )"1.2.1"', r'\1"99.0.0"', lock)
    bumped = bumped.replace("faster_whisper-1.2.1", "faster_whisper-99.0.0")  # its wheel's file name
    assert n == 1
    paths = Paths(root=root, var=tmp_path / "var", cache=tmp_path / "cache", venvs=tmp_path / "venvs")
    names = {"stt": "stt", "tts": "tts", "llm": "llm-cpu"}

    def keys() -> dict[str, str]:
        b = VenvBuilder(paths)
        b._python_version = "CPython-3.11.7"
        return {svc: b.venv_hash(service_config(svc, extra=extra)) for svc, extra in names.items()}

    (root / "uv.lock").write_text(lock)
    before = keys()
    (root / "uv.lock").write_text(bumped)
    after = keys()
    assert after["stt"] != before["stt"]
    assert "faster-whisper==99.0.0" in VenvBuilder(paths).requirements(service_config("stt", extra="stt"))
    assert after["tts"] == before["tts"] and after["llm"] == before["llm"]


def test_parse_export_reads_names_versions_markers_and_hashes() -> None:
    text = (
        "# comment\n\nLlama_CPP.python==0.3.36 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "triton==3.9.0 ; sys_platform == 'darwin'\nuvicorn[standard]==0.40.0 \\\n    --hash=sha256:cc\n"
    )
    a, b, c = parse_export(text)
    assert (a.name, a.version, a.spec) == ("llama-cpp-python", "0.3.36", "llama-cpp-python==0.3.36")
    assert a.entry.count("--hash=") == 2 and a.entry.startswith("Llama_CPP.python==0.3.36")
    assert (b.name, b.version) == ("triton", "3.9.0") and "darwin" in b.entry
    assert (c.name, c.version) == ("uvicorn", "0.40.0")


@pytest.mark.parametrize("extra", ["stt", "tts", "llm-cpu"])
def test_service_exports_carry_no_project_and_no_other_extra(extra: str) -> None:
    pins = {p.name for p in LockedPins(ROOT, find_uv()).pins(extra)}
    assert "ultravox-pipeline" not in pins and "pytest" not in pins and "vllm" not in pins
