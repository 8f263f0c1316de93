"""Hatch build hook: generate the ``uvpb`` package from ``protos/`` with grpcio-tools.

protos/ is the source of truth. The generated package is git-ignored and rebuilt on every
install (wheel or editable), so generated code is never committed or hand-edited. protoc's
include root is ``protos/`` and the files live under ``protos/uvpb/``, so generated imports
read ``from uvpb import common_pb2`` without any rewriting.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def generate(root: Path) -> Path:
    """Generate ``src/uvpb`` atomically (several venvs may build at once)."""
    import grpc_tools  # noqa: PLC0415  (a build requirement, only present in the build env)
    from grpc_tools import protoc  # noqa: PLC0415

    proto_root = root / "protos"
    sources = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "uvpb").glob("*.proto"))
    if not sources:
        raise RuntimeError(f"no .proto files under {proto_root / 'uvpb'}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out_root = root / "src"
    tmp = Path(tempfile.mkdtemp(prefix=".uvpb-", dir=out_root))
    try:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *sources,
        ]
        cwd = os.getcwd()
        os.chdir(proto_root)
        try:
            rc = protoc.main(args)
        finally:
            os.chdir(cwd)
        if rc != 0:
            raise RuntimeError(f"protoc failed with exit code {rc} for {sources}")
        generated = tmp / "uvpb"
        (generated / "__init__.py").write_text('"""Generated from protos/uvpb by hatch_build.py. Do not edit."""\n')
        target = out_root / "uvpb"
        staging = out_root / f".uvpb-old-{os.getpid()}"
        if target.exists():
            target.rename(staging)
        generated.rename(target)
        shutil.rmtree(staging, ignore_errors=True)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ProtoBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        generate(Path(self.root))


if __name__ == "__main__":
    print(generate(Path(__file__).resolve().parent))
