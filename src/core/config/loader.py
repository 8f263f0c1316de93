"""Read the two YAML files, apply the profile, then env overrides, and validate once.

Env overrides: ``PROFILE`` picks the profile, ``PORT``/``HOST`` set the gateway, and
``UV_<SERVICE>_<FIELD>`` sets one service field (``UV_STT_GRPC_PORT=0``, ``UV_STT_MODEL=/m``,
``UV_STT_ENABLED=false``). A remote service also takes ``UV_<SERVICE>_ENDPOINT_ID`` and
``UV_<SERVICE>_BASE_URL``; a local one, ``UV_<SERVICE>_BASE_URL`` for ``options.base_url`` (the
upstream of engine openai). Errors name the file, the dotted key and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.config.models import (
    ConversationConfig,
    GatewayConfig,
    HubConfig,
    MonitoringConfig,
    ProfileConfig,
    ServiceConfig,
    Settings,
)
from core.errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"
_ENV_FIELDS = ("grpc_port", "http_port", "engine", "model", "device", "enabled", "host")
_REMOTE_ENV_FIELDS = ("endpoint_id", "base_url")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ConfigError(
            str(path), "<file>", "file not found; restore it from git or point UV_CONFIG_DIR at a config folder"
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<file>", f"not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "<root>", f"must be a mapping, got {type(data).__name__}")
    return data


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _validation_error(path: Path, prefix: str, e: ValidationError) -> ConfigError:
    first = e.errors()[0]
    key = ".".join([prefix, *(str(p) for p in first["loc"])]) if prefix else ".".join(str(p) for p in first["loc"])
    more = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
    return ConfigError(str(path), key, f"{first['msg']}{more}")


def _env_override(name: str, env: Mapping[str, str], remote: Mapping[str, Any] | None) -> dict[str, Any]:
    prefix = f"UV_{name.upper().replace('-', '_')}_"
    out: dict[str, Any] = {f: env[prefix + f.upper()] for f in _ENV_FIELDS if prefix + f.upper() in env}
    if remote is not None:  # a remote service's endpoint: UV_TTS_ENDPOINT_ID, UV_TTS_BASE_URL
        over = {f: env[prefix + f.upper()] for f in _REMOTE_ENV_FIELDS if prefix + f.upper() in env}
        if over:
            out["remote"] = {**remote, **over}
    elif prefix + "BASE_URL" in env:  # a local proxy of an OpenAI-compatible API (engine openai)
        out["options"] = {"base_url": env[prefix + "BASE_URL"]}
    return out


def load_settings(
    config_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    profile: str | None = None,
) -> Settings:
    env = os.environ if env is None else env
    cdir = Path(config_dir or env.get("UV_CONFIG_DIR") or DEFAULT_CONFIG_DIR)
    spath, ppath = cdir / "services.yaml", cdir / "profiles.yaml"
    sdoc, pdoc = _read_yaml(spath), _read_yaml(ppath)

    profiles_raw = pdoc.get("profiles")
    if not isinstance(profiles_raw, dict) or not profiles_raw:
        raise ConfigError(str(ppath), "profiles", "must map profile names to profile definitions")
    profiles: dict[str, ProfileConfig] = {}
    for pname, praw in profiles_raw.items():
        try:
            profiles[pname] = ProfileConfig.model_validate({"name": pname, **(praw or {})})
        except ValidationError as e:
            raise _validation_error(ppath, f"profiles.{pname}", e) from e
    active = profile or env.get("PROFILE") or pdoc.get("default") or "local-pc"
    if active not in profiles:
        raise ConfigError(
            str(ppath), "profiles", f"profile {active!r} is not defined; choose one of: {', '.join(profiles)}"
        )
    prof = profiles[active]

    services = _load_services(spath, ppath, sdoc, profiles, prof, env)

    gw = dict(sdoc.get("gateway") or {})
    if "PORT" in env:
        gw["port"] = env["PORT"]
    if "HOST" in env:
        gw["host"] = env["HOST"]
    webrtc = dict(gw.get("webrtc") or {})
    ice_env = str(webrtc.get("ice_servers_env") or "UV_ICE_SERVERS")
    if raw_ice := env.get(ice_env, "").strip():
        try:
            webrtc["ice_servers"] = json.loads(raw_ice)
        except ValueError as e:
            raise ConfigError(
                f"${ice_env}", "gateway.webrtc.ice_servers",
                f"not valid JSON ({e}); set it to a list such as "
                '[{"urls": ["stun:stun.example.org:3478"]}, {"urls": ["turn:t.example.org"], "username": "u", '
                '"credential": "p"}]',
            ) from e
        gw["webrtc"] = webrtc
    return Settings(
        profile=prof, profiles=profiles, services=services,
        gateway=_section(spath, "gateway", gw, GatewayConfig),
        hub=_section(spath, "hub", sdoc.get("hub"), HubConfig),
        conversation=_section(spath, "conversation", sdoc.get("conversation"), ConversationConfig),
        monitoring=_section(spath, "monitoring", sdoc.get("monitoring"), MonitoringConfig),
        config_dir=str(cdir),
    )


def _section(path: Path, key: str, raw: Any, model: type[_M]) -> _M:
    """One top-level section of services.yaml (absent = defaults); a ConfigError naming the key on bad input."""
    try:
        return model.model_validate(raw or {})
    except ValidationError as e:
        raise _validation_error(path, key, e) from e


def _load_services(
    spath: Path,
    ppath: Path,
    sdoc: Mapping[str, Any],
    profiles: Mapping[str, ProfileConfig],
    prof: ProfileConfig,
    env: Mapping[str, str],
) -> dict[str, ServiceConfig]:
    defaults = sdoc.get("defaults") or {}
    services_raw = sdoc.get("services")
    if not isinstance(services_raw, dict) or not services_raw:
        raise ConfigError(str(spath), "services", "must map service names to service definitions")
    for pname, p in profiles.items():
        for sname in p.services:
            if sname not in services_raw:
                raise ConfigError(
                    str(ppath), f"profiles.{pname}.services.{sname}",
                    f"no such service in {spath.name}; declared services: {', '.join(services_raw)}",
                )
    services: dict[str, ServiceConfig] = {}
    for sname, sraw in services_raw.items():
        if not isinstance(sraw, dict):
            raise ConfigError(str(spath), f"services.{sname}", "must be a mapping of service fields")
        merged = _deep_merge(defaults, {"name": sname, "device": prof.device, **sraw})
        over = prof.services.get(sname)
        if over is not None:
            o = over.model_dump(exclude_none=True)
            merged["options"] = {**merged.get("options", {}), **o.pop("options", {})}
            merged["env"] = {**merged.get("env", {}), **o.pop("env", {})}
            merged.update(o)
        env_over = _env_override(sname, env, merged.get("remote"))
        where = str(spath)
        if env_over:
            merged["options"] = {**merged.get("options", {}), **env_over.pop("options", {})}
            merged.update(env_over)
            where = f"{spath} (with env overrides {', '.join(f'UV_{sname.upper()}_{k.upper()}' for k in env_over)})"
        try:
            services[sname] = ServiceConfig.model_validate(merged)
        except ValidationError as e:
            raise _validation_error(Path(where), f"services.{sname}", e) from e
    return services
