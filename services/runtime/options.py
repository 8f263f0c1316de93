"""Validate a service's ``options:`` block (services.yaml + profile) into its typed model.

Every service does the same: pydantic-validate the mapping, and on failure raise a ConfigError
naming the dotted key, the reason and the options the service knows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.config import ServiceConfig
from core.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
WHERE = "config/services.yaml (or the profile in config/profiles.yaml)"


def validate_options(model: type[M], cfg: ServiceConfig, options: Mapping[str, Any] | None = None) -> M:
    """``model`` built from ``options`` (default ``cfg.options``), or a ConfigError saying what is wrong."""
    try:
        return model.model_validate(dict(cfg.options if options is None else options))
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        fields = ", ".join(model.model_fields)
        raise ConfigError(
            WHERE, f"services.{cfg.name}.options.{key}", f"{first['msg']} (known options: {fields})"
        ) from e
