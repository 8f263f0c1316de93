"""llama-cpp-python's keyed build cache in VenvBuilder (SOURCE_BUILD_PACKAGES), with a fake uv.

uv keys the wheels it builds by sdist alone, so a wheel built once with -march=native (which
segfaults on these CPUs) would be reused whatever CMAKE_ARGS says. The VenvBuilder therefore
builds the named packages first, alone, into a uv cache keyed by their pins and the build env.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from core.context import Paths
from core.errors import VenvBuildError
from core.managers.supervisor.venv import VenvBuilder, build_env, source_build_cache, source_builds
from tests.helpers.supervisor_fakes import service_config

PYPROJECT = """
[project]
name = "demo"
version = "0"
dependencies = ["grpcio==1.85.1"]

[project.optional-dependencies]
llm-cpu = ["llama-cpp-python==0.3.36", "openai>=1.60"]
"""
FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON"
ENV = {"CMAKE_ARGS": FLAGS, "SOURCE_BUILD_PACKAGES": "llama_cpp_python", "OMP_WAIT_POLICY": "PASSIVE"}

FAKE_UV = """\
#!/bin/sh
echo "uv $*"
if [ "$1" = venv ]; then mkdir -p "$4/bin"; exit 0; fi
echo "CMAKE_ARGS=$CMAKE_ARGS"
"""


def paths_for(tmp: Path) -> Paths:
    root = tmp / "root"
    root.mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    return Paths(root=root, var=tmp / "var", cache=tmp / "cache", venvs=tmp / "venvs")


def test_named_packages_are_picked_by_canonical_name_as_declared() -> None:
    reqs = ["grpcio==1.85.1", "llama-cpp-python==0.3.36", "openai>=1.60"]
    assert source_builds(reqs, ENV) == ["llama-cpp-python==0.3.36"]
    assert source_builds(reqs, {"SOURCE_BUILD_PACKAGES": "Llama.CPP-python, openai"}) == [
        "llama-cpp-python==0.3.36", "openai>=1.60"]
    assert source_builds(reqs, {}) == [] and source_builds(reqs, {"SOURCE_BUILD_PACKAGES": ""}) == []
    with pytest.raises(VenvBuildError, match=r"names vllm, which the service's requirements do not include"):
        source_builds(reqs, {"SOURCE_BUILD_PACKAGES": "vllm"})


def test_cache_is_keyed_by_pins_and_build_flags_only(tmp_path: Path) -> None:
    spec = ["llama-cpp-python==0.3.36"]
    base = source_build_cache(tmp_path, spec, ENV)
    assert base.parent == tmp_path / "wheels" and base.name.startswith("wheelhouse-") and len(base.name) == 23
    assert source_build_cache(tmp_path, spec, {**ENV, "OMP_WAIT_POLICY": "ACTIVE"}) == base  # runtime env
    assert source_build_cache(tmp_path, spec, {**ENV, "CMAKE_ARGS": "-DGGML_NATIVE=ON"}) != base
    assert source_build_cache(tmp_path, ["llama-cpp-python==0.3.37"], ENV) != base
    assert "SOURCE_BUILD_PACKAGES" in build_env(ENV)  # part of the venv hash too


FAKE_PIP_PYTHON = """#!/bin/sh
# stands in for `python -m pip wheel ... --wheel-dir DIR spec`: drops a wheel into DIR
echo "pip-wheel CMAKE_ARGS=$CMAKE_ARGS"
while [ $# -gt 0 ]; do
  if [ "$1" = "--wheel-dir" ]; then mkdir -p "$2"; touch "$2/llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"; fi
  shift
done
"""


async def test_build_compiles_into_the_keyed_wheelhouse_once_then_installs_from_it(tmp_path: Path) -> None:
    paths = paths_for(tmp_path)
    uv, python = tmp_path / "uv", tmp_path / "python3.11-fake"
    uv.write_text(FAKE_UV)
    python.write_text(FAKE_PIP_PYTHON)
    for exe in (uv, python):
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    console = io.StringIO()
    b = VenvBuilder(paths, python=str(python), uv=str(uv), console=console)
    b._python_version = "CPython-3.11.7"
    cfg = service_config("llm", extra="llm-cpu", env=ENV)
    venv = await b.ensure(cfg)
    house = source_build_cache(paths.cache, ["llama-cpp-python==0.3.36"], ENV)
    assert [p.name for p in house.glob("*.whl")] == ["llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"]
    out = console.getvalue()
    assert "-m pip wheel --no-deps --no-cache-dir" in out and f"pip-wheel CMAKE_ARGS={FLAGS}" in out
    lines = [line for line in out.splitlines() if "] uv " in line]
    assert lines[1].endswith(
        f"uv pip install --python {venv}/bin/python --no-deps --find-links {house} llama-cpp-python==0.3.36"
    )
    assert lines[2].endswith(f"uv pip install --python {venv}/bin/python --find-links {house} -e {paths.root}[llm-cpu]")
    # a second venv with the same flags reuses the compiled wheel
    (venv / ".ready").unlink()
    console.truncate(0)
    await b.ensure(cfg)
    assert "reusing compiled wheels" in console.getvalue() and "pip wheel" not in console.getvalue()
    plain = service_config("llm", extra="llm-cpu", env={"CMAKE_ARGS": FLAGS})
    assert b.venv_hash(plain) != b.venv_hash(cfg)


async def test_a_misnamed_package_fails_the_build_with_the_service_name(tmp_path: Path) -> None:
    b = VenvBuilder(paths_for(tmp_path), python="/usr/bin/python3.11-fake", uv="/bin/true", console=io.StringIO())
    b._python_version = "CPython-3.11.7"
    with pytest.raises(VenvBuildError, match=r"service 'llm': SOURCE_BUILD_PACKAGES names llama-cpp"):
        await b.ensure(service_config("llm", extra="llm-cpu", env={"SOURCE_BUILD_PACKAGES": "llama-cpp"}))
