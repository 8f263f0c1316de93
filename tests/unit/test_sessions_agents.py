"""Agent configs: the shipped ones load; a bad file names its path, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.sessions import load_agents

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_agents_load() -> None:
    agents = load_agents(ROOT / "config" / "agents")
    assert {"assistant", "portuguese"} <= set(agents)
    assert agents["assistant"].name == "assistant" and agents["assistant"].tts_engine == "piper"
    assert agents["portuguese"].language == "pt" and agents["portuguese"].not_heard_phrase == "Desculpe, não entendi."


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("system_prompt: hi\ntemperature: 9\n", "temperature", "less than or equal to 2"),
        ("temperature: 0.5\n", "system_prompt", "Field required"),
        ("system_prompt: hi\nvoic: x\n", "voic", "Extra inputs are not permitted"),
        ("- a\n- b\n", "<root>", "must be a mapping"),
        ("system_prompt: [unclosed\n", "<file>", "not valid YAML"),
        ("name: other\nsystem_prompt: hi\n", "name", "differs from the file name 'bot'"),
    ],
)
def test_a_bad_agent_file_names_path_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    (tmp_path / "good.yaml").write_text("system_prompt: fine\n")
    bad = tmp_path / "bot.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_agents(tmp_path)
    assert ei.value.path == str(bad) and ei.value.key == key and reason in ei.value.reason


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agents folder not found"):
        load_agents(tmp_path / "nope")
    with pytest.raises(ConfigError, match="holds no agent files"):
        load_agents(tmp_path)


def test_the_same_agent_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text("system_prompt: a\n")
    (tmp_path / "bot.yml").write_text("system_prompt: b\n")
    with pytest.raises(ConfigError, match="defined twice"):
        load_agents(tmp_path)
