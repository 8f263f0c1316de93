"""llama-cpp-python's keyed build cache in VenvBuilder (SOURCE_BUILD_PACKAGES), with a fake uv.

uv keys the wheels it builds by sdist alone, so a wheel built once with -march=native (which
segfaults on these CPUs) would be reused whatever CMAKE_ARGS says. The VenvBuilder therefore
compiles the named packages first, alone, at their locked version and hash, into a wheelhouse
keyed by those pins, the build env and the build constraints.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from core.context import Paths
from core.errors import VenvBuildError
from core.managers.supervisor.lock import parse_export
from core.managers.supervisor.venv import VenvBuilder, build_env, source_build_cache, source_builds
from tests.helpers.fake_uv import fake_uv, locked_project, pins_text
from tests.helpers.supervisor_fakes import service_config

PYPROJECT = """
[project]
name = "demo"
version = "0"
dependencies = ["grpcio==1.85.1"]

[project.optional-dependencies]
llm-cpu = ["llama-cpp-python==0.3.36", "openai>=1.60"]

[tool.uv]
build-constraint-dependencies = ["scikit-build-core==1.1.2"]
"""
PINS = pins_text("grpcio==1.85.1", "llama-cpp-python==0.3.36", "numpy==2.3.5", "openai==2.1.0")
FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON"
ENV = {"CMAKE_ARGS": FLAGS, "SOURCE_BUILD_PACKAGES": "llama_cpp_python", "OMP_WAIT_POLICY": "PASSIVE"}


def paths_for(tmp: Path) -> Paths:
    locked_project(tmp / "root", PYPROJECT, {"llm-cpu": PINS})
    return Paths(root=tmp / "root", var=tmp / "var", cache=tmp / "cache", venvs=tmp / "venvs")


def test_named_packages_are_picked_by_canonical_name_with_their_locked_entry() -> None:
    pins = parse_export(PINS)
    (llama,) = source_builds(pins, ENV)
    assert llama.spec == "llama-cpp-python==0.3.36" and "--hash=sha256:" in llama.entry
    picked = source_builds(pins, {"SOURCE_BUILD_PACKAGES": "Llama.CPP-python, openai"})
    assert [p.spec for p in picked] == ["llama-cpp-python==0.3.36", "openai==2.1.0"]
    assert source_builds(pins, {}) == [] and source_builds(pins, {"SOURCE_BUILD_PACKAGES": ""}) == []
    with pytest.raises(VenvBuildError, match=r"names vllm, which the service's requirements do not include"):
        source_builds(pins, {"SOURCE_BUILD_PACKAGES": "vllm"})


def test_cache_is_keyed_by_locked_pins_build_flags_and_constraints_only(tmp_path: Path) -> None:
    pins = source_builds(parse_export(PINS), ENV)
    base = source_build_cache(tmp_path, pins, ENV)
    assert base.parent == tmp_path / "wheels" and base.name.startswith("wheelhouse-") and len(base.name) == 23
    assert source_build_cache(tmp_path, pins, {**ENV, "OMP_WAIT_POLICY": "ACTIVE"}) == base  # runtime env
    assert source_build_cache(tmp_path, pins, {**ENV, "CMAKE_ARGS": "-DGGML_NATIVE=ON"}) != base
    newer = source_builds(parse_export(PINS.replace("0.3.36", "0.3.37")), ENV)
    assert source_build_cache(tmp_path, newer, ENV) != base
    assert source_build_cache(tmp_path, pins, ENV, ["scikit-build-core==1.1.3"]) != base
    assert "SOURCE_BUILD_PACKAGES" in build_env(ENV)  # part of the venv hash too


FAKE_PIP_PYTHON = """#!/bin/sh
# stands in for `python -m pip wheel ... --wheel-dir DIR -r REQS`: drops a wheel into DIR
echo "pip-wheel CMAKE_ARGS=$CMAKE_ARGS"
while [ $# -gt 0 ]; do
  if [ "$1" = "--wheel-dir" ]; then mkdir -p "$2"; touch "$2/llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"; fi
  if [ "$1" = "-r" ]; then echo "pip-wheel $(tr '\\n' ' ' < "$2")"; fi
  shift
done
"""


async def test_build_compiles_into_the_keyed_wheelhouse_once_then_installs_from_it(tmp_path: Path) -> None:
    paths = paths_for(tmp_path)
    python = tmp_path / "python3.11-fake"
    python.write_text(FAKE_PIP_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    console = io.StringIO()
    b = VenvBuilder(paths, python=str(python), uv=fake_uv(tmp_path), console=console)
    b._python_version = "CPython-3.11.7"
    cfg = service_config("llm", extra="llm-cpu", env=ENV)
    venv = await b.ensure(cfg)
    house = b.wheelhouse(cfg)
    assert house == source_build_cache(paths.cache, source_builds(parse_export(PINS), ENV), ENV,
                                       ["scikit-build-core==1.1.2"])
    assert [p.name for p in house.glob("*.whl")] == ["llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"]
    out = console.getvalue()
    assert "-m pip wheel --no-deps --no-cache-dir" in out and f"pip-wheel CMAKE_ARGS={FLAGS}" in out
    assert "--require-hashes --build-constraint" in out  # the sdist is checked against the lock's hash
    (reqs,) = [line for line in out.splitlines() if "pip-wheel llama-cpp-python==0.3.36" in line]
    assert "--hash=sha256:" in reqs and "numpy" not in reqs  # only the compiled package, hash-pinned
    lines = [line for line in out.splitlines() if "] uv " in line]
    assert lines[1].endswith(f"uv pip sync --python {venv}/bin/python --require-hashes {venv}/locked-requirements.txt")
    assert "llama-cpp-python" not in (venv / "locked-requirements.txt").read_text()
    assert lines[2].endswith(
        f"uv pip install --python {venv}/bin/python --no-deps --no-index --find-links {house} "
        "llama-cpp-python==0.3.36"
    )
    assert lines[3].endswith(f"--no-deps --build-constraints {venv}/build-constraints.txt -e {paths.root}")
    # a second venv with the same flags reuses the compiled wheel
    (venv / ".ready").unlink()
    console.truncate(0)
    await b.ensure(cfg)
    assert "reusing compiled wheels" in console.getvalue() and "pip wheel" not in console.getvalue()
    plain = service_config("llm", extra="llm-cpu", env={"CMAKE_ARGS": FLAGS})
    assert b.venv_hash(plain) != b.venv_hash(cfg)


async def test_a_misnamed_package_fails_the_build_with_the_service_name(tmp_path: Path) -> None:
    b = VenvBuilder(paths_for(tmp_path), python="/usr/bin/python3.11-fake", uv=fake_uv(tmp_path),
                    console=io.StringIO())
    b._python_version = "CPython-3.11.7"
    with pytest.raises(VenvBuildError, match=r"service 'llm': SOURCE_BUILD_PACKAGES names llama-cpp"):
        await b.ensure(service_config("llm", extra="llm-cpu", env={"SOURCE_BUILD_PACKAGES": "llama-cpp"}))
