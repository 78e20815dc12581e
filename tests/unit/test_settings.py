"""gateway/settings.py: NANOROUTE_* environment into Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config.loader import load_file
from gateway.settings import DEFAULT_CONFIG, Settings

VARS = ("CONFIG", "HOST", "PORT", "WORKERS", "API_KEYS", "ADMIN_KEY", "MAX_BODY_BYTES", "LOG_LEVEL", "ACCESS_LOG",
        "CORS_ORIGINS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in VARS:
        monkeypatch.delenv(f"NANOROUTE_{var}", raising=False)


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.workers, s.log_level) == ("127.0.0.1", 8080, 1, "info")
    assert s.api_keys == ()
    assert s.admin_key is None
    assert s.max_body_bytes == 8 * 1024 * 1024
    assert s.config is None


def test_config_path_defaults_to_the_embedded_default() -> None:
    assert Settings().config_path == DEFAULT_CONFIG
    assert Path(__file__).resolve().parents[2] / "gateway" / "default.yaml" == DEFAULT_CONFIG
    assert load_file(Settings().config_path).policies


def test_config_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NANOROUTE_CONFIG", str(tmp_path / "c.yaml"))
    assert Settings().config_path == tmp_path / "c.yaml"


def test_api_keys_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_API_KEYS", " sk-one, sk-two ,,sk-three,")
    keys = [k.get_secret_value() for k in Settings().api_keys]
    assert keys == ["sk-one", "sk-two", "sk-three"]


def test_a_single_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_API_KEYS", "sk-only")
    assert [k.get_secret_value() for k in Settings().api_keys] == ["sk-only"]


def test_empty_api_keys_leave_the_api_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_API_KEYS", "")
    assert Settings().api_keys == ()


def test_keys_passed_directly() -> None:
    assert [k.get_secret_value() for k in Settings(api_keys="a,b").api_keys] == ["a", "b"]
    assert [k.get_secret_value() for k in Settings(api_keys=("a", "b")).api_keys] == ["a", "b"]


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_API_KEYS", "sk-hidden-client")
    monkeypatch.setenv("NANOROUTE_ADMIN_KEY", "sk-hidden-admin")
    s = Settings()
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "sk-hidden-admin"
    assert "sk-hidden" not in repr(s)
    assert "sk-hidden" not in str(s.model_dump())


def test_an_empty_admin_key_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_ADMIN_KEY", "")
    assert Settings().admin_key is None


def test_numbers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_PORT", "9000")
    monkeypatch.setenv("NANOROUTE_WORKERS", "4")
    monkeypatch.setenv("NANOROUTE_MAX_BODY_BYTES", "4096")
    s = Settings()
    assert (s.port, s.workers, s.max_body_bytes) == (9000, 4, 4096)


@pytest.mark.parametrize(("var", "value"), [("PORT", "70000"), ("WORKERS", "0"), ("MAX_BODY_BYTES", "100"),
                                            ("PORT", "http")])
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(f"NANOROUTE_{var}", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert var.lower() in str(info.value)


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().port = 1  # type: ignore[misc]


def test_cors_is_off_unless_origins_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().cors_origins == ()
    monkeypatch.setenv("NANOROUTE_CORS_ORIGINS", "")
    assert Settings().cors_origins == ()


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANOROUTE_CORS_ORIGINS", " https://App.example, http://localhost:3000,,chrome-extension://abc")
    assert Settings().cors_origins == ("https://app.example", "http://localhost:3000", "chrome-extension://abc")
    assert Settings(cors_origins="*").cors_origins == ("*",)


@pytest.mark.parametrize("origin", ["https://app.example/", "app.example", "https://app.example/path", "https://"])
def test_a_cors_origin_with_a_path_or_no_scheme_is_refused(origin: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(cors_origins=origin)
