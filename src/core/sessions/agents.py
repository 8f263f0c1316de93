"""Named agent configs: ``config/agents/<name>.yaml``, one file per agent, the file stem its name.

Loaded once at start into :class:`~core.conversation.types.AgentConfig` models. A bad file
stops main with its path, the offending key and the reason, like the other config files.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from core.conversation.types import AgentConfig
from core.errors import ConfigError


def load_agents(directory: Path) -> dict[str, AgentConfig]:
    """Every ``*.yaml``/``*.yml`` under ``directory`` as an AgentConfig, keyed by file stem."""
    if not directory.is_dir():
        raise ConfigError(
            str(directory), "<folder>",
            "agents folder not found; create it with one <name>.yaml per agent "
            "(copy config/agents/assistant.yaml) or set conversation.agents_dir",
        )
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise ConfigError(str(directory), "<folder>", "holds no agent files (<name>.yaml); add at least one")
    agents: dict[str, AgentConfig] = {}
    for path in files:
        agent = _load_one(path)
        if agent.name in agents:
            raise ConfigError(str(path), "<file>", f"agent {agent.name!r} is defined twice (.yaml and .yml)")
        agents[agent.name] = agent
    return agents


def _load_one(path: Path) -> AgentConfig:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<file>", f"not valid YAML: {e}") from e
    except OSError as e:
        raise ConfigError(str(path), "<file>", f"cannot be read: {e.strerror or e}") from e
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(str(path), "<root>", f"must be a mapping of agent fields, got {type(doc).__name__}")
    name = doc.get("name", path.stem)
    if name != path.stem:
        raise ConfigError(str(path), "name", f"{name!r} differs from the file name {path.stem!r}; drop it or rename")
    try:
        return AgentConfig.model_validate({**doc, "name": path.stem})
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        more = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
        raise ConfigError(str(path), key, f"{first['msg']}{more}") from e
