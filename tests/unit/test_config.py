"""Config loading: profiles, overrides, and errors that name the file, the key and the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from core.config import load_settings
from core.config.loader import DEFAULT_CONFIG_DIR
from core.errors import ConfigError


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    for name in ("services.yaml", "profiles.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(path.read_text())
    fn(doc)
    path.write_text(yaml.safe_dump(doc))


def test_shipped_config_loads_every_profile() -> None:
    for profile in ("local-pc", "local-fast", "gpu-machine", "runpod"):
        s = load_settings(env={}, profile=profile)
        assert s.profile.name == profile
        assert "stt" in s.services
    assert load_settings(env={}).profile.name == "local-pc"


def test_profile_overrides_merge_options_and_device() -> None:
    s = load_settings(env={}, profile="gpu-machine")
    stt = s.services["stt"]
    assert stt.device == "cuda"
    assert stt.options["compute_type"] == "float16"
    assert stt.options["max_audio_s"] == 600  # kept from services.yaml
    runpod = load_settings(env={}, profile="runpod").services["tts"]
    assert runpod.remote is not None and runpod.remote.kind == "runpod"
    assert runpod.remote.api_key_env == "RUNPOD_API_KEY"
    assert load_settings(env={}, profile="runpod").services["stt"].remote is None  # live STT stays local


def test_the_three_runpod_variables_reach_their_fields() -> None:
    env = {"UV_TTS_ENDPOINT_ID": "abc123", "UV_TTS_BASE_URL": "http://127.0.0.1:9/v2",
           "UV_LLM_BASE_URL": "https://api.runpod.ai/v2/xyz/openai/v1"}
    s = load_settings(env=env, profile="runpod")
    tts, llm = s.services["tts"], s.services["llm"]
    assert tts.remote is not None and (tts.remote.endpoint_id, tts.remote.base_url) == ("abc123", "http://127.0.0.1:9/v2")
    assert tts.remote.queue_timeout_s == 90  # the profile's other remote fields are kept
    assert llm.options["base_url"] == env["UV_LLM_BASE_URL"] and llm.options["max_queue"] == 32
    assert llm.remote is None


def test_env_overrides_profile_port_and_service_fields() -> None:
    env = {"PROFILE": "gpu-machine", "PORT": "9090", "UV_STT_GRPC_PORT": "0", "UV_STT_ENABLED": "false"}
    s = load_settings(env=env)
    assert s.profile.name == "gpu-machine"
    assert s.gateway.port == 9090
    assert s.services["stt"].grpc_port == 0
    assert "stt" not in {c.name for c in s.enabled_services()}


def test_bad_env_override_names_the_variable() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(env={"UV_STT_HTTP_PORT": "eighty"})
    assert "UV_STT_HTTP_PORT" in str(e.value)
    assert e.value.key == "services.stt.http_port"


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="local-pc, local-fast, gpu-machine, runpod"):
        load_settings(env={"PROFILE": "laptop"})


def test_unknown_field_is_rejected_with_path_and_key(cfg_dir: Path) -> None:
    _edit(cfg_dir / "services.yaml", lambda d: d["services"]["stt"].update(grcp_port=1))
    with pytest.raises(ConfigError) as e:
        load_settings(cfg_dir, env={})
    assert e.value.path.endswith("services.yaml")
    assert e.value.key == "services.stt.grcp_port"
    assert "Extra inputs are not permitted" in e.value.reason


def test_negative_health_period_is_rejected(cfg_dir: Path) -> None:
    _edit(cfg_dir / "services.yaml", lambda d: d["services"]["stt"].update(health={"period_s": -1}))
    with pytest.raises(ConfigError) as e:
        load_settings(cfg_dir, env={})
    assert e.value.key == "services.stt.health.period_s"


def test_same_grpc_and_http_port_is_rejected(cfg_dir: Path) -> None:
    _edit(cfg_dir / "services.yaml", lambda d: d["services"]["stt"].update(grpc_port=9000, http_port=9000))
    with pytest.raises(ConfigError, match="different ports"):
        load_settings(cfg_dir, env={})


def test_profile_naming_an_undeclared_service(cfg_dir: Path) -> None:
    _edit(cfg_dir / "profiles.yaml", lambda d: d["profiles"]["local-pc"]["services"].update(vad={"enabled": True}))
    with pytest.raises(ConfigError) as e:
        load_settings(cfg_dir, env={})
    assert e.value.key == "profiles.local-pc.services.vad"


def test_invalid_yaml_and_missing_file(cfg_dir: Path) -> None:
    (cfg_dir / "profiles.yaml").write_text("profiles: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(cfg_dir, env={})
    (cfg_dir / "profiles.yaml").unlink()
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(cfg_dir, env={})
