"""Settings precedence (flags > MINIMILL_* env > defaults) and refusal of unsafe values."""

from __future__ import annotations

import pytest

from minimill.config import build_config


def test_flags_override_env_which_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMILL_KV_SIZE", "2048")
    monkeypatch.setenv("MINIMILL_API_KEYS", "a, b")
    monkeypatch.setenv("MINIMILL_MODELS", "smollm2-135m,gemma3-270m")
    config = build_config(kv_size=1024, port=None)
    assert config.engine.kv_size == 1024
    assert config.server.api_keys == ("a", "b") and config.server.port == 8000
    assert config.models == ("smollm2-135m", "gemma3-270m")


@pytest.mark.parametrize("overrides", [{"kv_size": 10}, {"max_seqs": 0}, {"max_seqs": 1000}, {"step_tokens": 1}])
def test_unsafe_values_are_refused(overrides: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        build_config(**overrides)
