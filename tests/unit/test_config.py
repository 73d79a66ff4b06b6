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


def test_admin_keys_are_api_keys_and_never_drop_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIMILL_ADMIN_KEYS", "boss")
    alone = build_config()
    assert alone.server.api_keys == ("boss",) and alone.server.admin_keys == ("boss",)  # not an open server
    monkeypatch.setenv("MINIMILL_API_KEYS", "user1,user2")
    both = build_config()
    assert set(both.server.api_keys) == {"user1", "user2", "boss"}
    flag = build_config(admin_keys=["root"])  # an --admin-key flag keeps the env's API keys
    assert set(flag.server.api_keys) == {"user1", "user2", "root"}


def test_listening_beyond_loopback_needs_keys_or_an_explicit_insecure_flag() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        build_config(host=host)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.org"):
        with pytest.raises(ValueError, match="without API keys"):
            build_config(host=host)
        assert build_config(host=host, api_keys=["k"]).server.host == host
        assert build_config(host=host, insecure_no_auth=True).server.insecure_no_auth
