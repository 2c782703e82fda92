from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from billing.core.settings import SECRET_KEY_FILE, STRIPE_API_BASE, Settings, SettingsError

KEY_A = "key-a-0123456789abcdefghijklmnopqrstuv"
KEY_B = "key-b-0123456789abcdefghijklmnopqrstuv"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A minimal environment: only the data dir, in the test's own directory."""
    return {"BILLING_DATA_DIR": str(tmp_path)}


def settings_error(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env(environ)
    return str(excinfo.value)


# --- defaults -------------------------------------------------------------------------------


def test_defaults_describe_a_development_service_under_dot_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    data_dir = (tmp_path / "var").resolve()
    assert settings.env == "development"
    assert not settings.production
    assert settings.data_dir == data_dir
    assert settings.data_dir.is_absolute()
    assert settings.database_url == f"sqlite+aiosqlite:///{data_dir / 'billing.db'}"
    assert settings.dialect == "sqlite"
    assert settings.scheduler is True
    assert settings.allow_time_travel is False
    assert settings.max_body_bytes == 1024 * 1024
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds) == (10.0, 60.0)
    assert settings.smtp_url is None
    assert settings.stripe_api_base == STRIPE_API_BASE
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert len(settings.secret_keys) == 1


def test_data_dir_is_resolved_to_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"BILLING_DATA_DIR": "data/here"})
    assert settings.data_dir == (tmp_path / "data" / "here").resolve()
    assert settings.database_url == f"sqlite+aiosqlite:///{settings.data_dir / 'billing.db'}"


def test_from_env_without_a_mapping_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BILLING_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("BILLING_SECRET_KEY", KEY_A)
    settings = Settings.from_env()
    assert settings.data_dir == tmp_path.resolve()
    assert settings.max_body_bytes == 2048


def test_explicit_values_are_read(env: dict[str, str]) -> None:
    settings = Settings.from_env(
        {
            **env,
            "BILLING_ENV": "Test",
            "BILLING_DATABASE_URL": "postgresql+asyncpg://billing@127.0.0.1:5432/billing",
            "BILLING_SECRET_KEY": KEY_A,
            "BILLING_SMTP_URL": "smtps://user:pw@mail.example.com:465",
            "BILLING_STRIPE_API_BASE": "http://127.0.0.1:12111/",
            "BILLING_SCHEDULER": "off",
            "BILLING_ALLOW_TIME_TRAVEL": "1",
            "BILLING_MAX_BODY_BYTES": "4096",
            "BILLING_STRIPE_TIMEOUT_SECONDS": "2.5",
            "BILLING_STRIPE_MAX_NETWORK_RETRIES": "0",
            "BILLING_HEADER_TIMEOUT_SECONDS": "2.5",
            "BILLING_BODY_TIMEOUT_SECONDS": "30",
            "BILLING_LOG_LEVEL": "debug",
            "BILLING_LOG_FORMAT": "console",
        }
    )
    assert settings.env == "test"
    assert settings.database_url == "postgresql+asyncpg://billing@127.0.0.1:5432/billing"
    assert settings.dialect == "postgresql"
    assert settings.secret_keys == (KEY_A,)
    assert settings.smtp_url == "smtps://user:pw@mail.example.com:465"
    assert settings.stripe_api_base == "http://127.0.0.1:12111"  # trailing slash dropped
    assert settings.scheduler is False
    assert settings.allow_time_travel is True
    assert settings.max_body_bytes == 4096
    assert (settings.stripe_timeout_seconds, settings.stripe_max_network_retries) == (2.5, 0)
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds) == (2.5, 30.0)
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "console"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("on", True), ("TRUE", True), ("yes", True), ("0", False), ("off", False), ("No", False)],
)
def test_flags_accept_the_usual_spellings(env: dict[str, str], value: str, expected: bool) -> None:
    settings = Settings.from_env({**env, "BILLING_SCHEDULER": value, "BILLING_ALLOW_TIME_TRAVEL": value})
    assert settings.scheduler is expected
    assert settings.allow_time_travel is expected


def test_settings_are_frozen(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.env = "production"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "dialect"),
    [
        ("sqlite+aiosqlite:////var/lib/billing/billing.db", "sqlite"),
        ("postgresql+asyncpg://billing:pw@127.0.0.1:5432/billing", "postgresql"),
    ],
)
def test_dialect_follows_the_database_url(url: str, dialect: str) -> None:
    assert Settings(database_url=url).dialect == dialect


# --- invalid values -------------------------------------------------------------------------

INVALID = [
    ("BILLING_ENV", "staging"),
    ("BILLING_SCHEDULER", "maybe"),
    ("BILLING_ALLOW_TIME_TRAVEL", "sometimes"),
    ("BILLING_MAX_BODY_BYTES", "0"),
    ("BILLING_MAX_BODY_BYTES", "-5"),
    ("BILLING_MAX_BODY_BYTES", "1.5"),
    ("BILLING_MAX_BODY_BYTES", "1MB"),
    ("BILLING_DATABASE_URL", "mysql://127.0.0.1/billing"),
    ("BILLING_DATABASE_URL", "sqlite:///billing.db"),
    ("BILLING_SMTP_URL", "http://mail.example.com"),
    ("BILLING_SMTP_URL", "smtp://"),
    ("BILLING_STRIPE_API_BASE", "ftp://127.0.0.1"),
    ("BILLING_STRIPE_API_BASE", "127.0.0.1:12111"),
    ("BILLING_STRIPE_TIMEOUT_SECONDS", "0"),
    ("BILLING_STRIPE_TIMEOUT_SECONDS", "-1"),
    ("BILLING_STRIPE_TIMEOUT_SECONDS", "1e3"),
    ("BILLING_HEADER_TIMEOUT_SECONDS", "0"),
    ("BILLING_HEADER_TIMEOUT_SECONDS", "ten"),
    ("BILLING_BODY_TIMEOUT_SECONDS", "-1"),
    ("BILLING_STRIPE_MAX_NETWORK_RETRIES", "-1"),
    ("BILLING_STRIPE_MAX_NETWORK_RETRIES", "two"),
    ("BILLING_LOG_LEVEL", "verbose"),
    ("BILLING_LOG_FORMAT", "xml"),
    ("BILLING_SECRET_KEY", "too-short"),
    pytest.param("BILLING_MAX_BODY_BYTES", "²", id="BILLING_MAX_BODY_BYTES-superscript-two"),
    pytest.param("BILLING_SMTP_URL", "smtp://[::1", id="BILLING_SMTP_URL-unclosed-ipv6"),
    pytest.param("BILLING_STRIPE_API_BASE", "http://[::1", id="BILLING_STRIPE_API_BASE-unclosed-ipv6"),
    pytest.param("BILLING_SMTP_URL", "smtp://mail.example.com:notaport", id="BILLING_SMTP_URL-bad-port"),
]


@pytest.mark.parametrize(("variable", "value"), INVALID)
def test_an_invalid_value_fails_naming_its_variable(env: dict[str, str], variable: str, value: str) -> None:
    assert variable in settings_error({**env, variable: value})


def test_every_invalid_value_is_reported_in_one_message(env: dict[str, str]) -> None:
    message = settings_error(
        {
            **env,
            "BILLING_ENV": "staging",
            "BILLING_SCHEDULER": "maybe",
            "BILLING_MAX_BODY_BYTES": "0",
            "BILLING_DATABASE_URL": "mysql://127.0.0.1/billing",
            "BILLING_LOG_FORMAT": "xml",
        }
    )
    for variable in (
        "BILLING_ENV",
        "BILLING_SCHEDULER",
        "BILLING_MAX_BODY_BYTES",
        "BILLING_DATABASE_URL",
        "BILLING_LOG_FORMAT",
    ):
        assert variable in message


def test_errors_do_not_echo_secret_values(env: dict[str, str]) -> None:
    message = settings_error(
        {
            **env,
            "BILLING_SECRET_KEY": f"{KEY_A},hunter2-short",
            "BILLING_SMTP_URL": "http://mailer:smtp-password-1@mail.example.com",
            "BILLING_DATABASE_URL": "mysql://billing:db-password-1@127.0.0.1/billing",
        }
    )
    assert "BILLING_SECRET_KEY" in message
    assert "BILLING_SMTP_URL" in message
    assert "BILLING_DATABASE_URL" in message
    for secret in ("hunter2-short", KEY_A, "smtp-password-1", "db-password-1"):
        assert secret not in message


# --- production -----------------------------------------------------------------------------


def test_production_requires_a_secret_key_and_generates_none(env: dict[str, str], tmp_path: Path) -> None:
    message = settings_error({**env, "BILLING_ENV": "production"})
    assert "BILLING_SECRET_KEY" in message
    assert not (tmp_path / SECRET_KEY_FILE).exists()


def test_production_with_a_secret_key_starts(env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.from_env({**env, "BILLING_ENV": "production", "BILLING_SECRET_KEY": KEY_A})
    assert settings.production
    assert settings.secret_keys == (KEY_A,)
    assert not (tmp_path / SECRET_KEY_FILE).exists()


def test_production_refuses_time_travel(env: dict[str, str]) -> None:
    message = settings_error(
        {**env, "BILLING_ENV": "production", "BILLING_SECRET_KEY": KEY_A, "BILLING_ALLOW_TIME_TRAVEL": "1"}
    )
    assert "BILLING_ALLOW_TIME_TRAVEL" in message


def test_development_allows_time_travel(env: dict[str, str]) -> None:
    assert Settings.from_env({**env, "BILLING_ALLOW_TIME_TRAVEL": "1"}).allow_time_travel is True


# --- secret keys ----------------------------------------------------------------------------


def test_a_secret_key_needs_at_least_32_characters(env: dict[str, str]) -> None:
    assert "BILLING_SECRET_KEY" in settings_error({**env, "BILLING_SECRET_KEY": "k" * 31})
    assert Settings.from_env({**env, "BILLING_SECRET_KEY": "k" * 32}).secret_keys == ("k" * 32,)


def test_one_short_key_among_several_fails(env: dict[str, str]) -> None:
    assert "BILLING_SECRET_KEY" in settings_error({**env, "BILLING_SECRET_KEY": f"{KEY_A},short"})


def test_comma_separated_secret_keys_give_a_tuple_in_order(env: dict[str, str]) -> None:
    settings = Settings.from_env({**env, "BILLING_SECRET_KEY": f" {KEY_B} , {KEY_A}, "})
    assert settings.secret_keys == (KEY_B, KEY_A)


def test_development_secret_key_is_generated_once_with_mode_0600(env: dict[str, str], tmp_path: Path) -> None:
    first = Settings.from_env(env)
    path = tmp_path / SECRET_KEY_FILE
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.secret_keys == (path.read_text().strip(),)
    assert len(first.secret_keys[0]) >= 32
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no draft left behind

    second = Settings.from_env(env)
    assert second.secret_keys == first.secret_keys


def test_development_secret_key_is_created_with_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet"
    settings = Settings.from_env({"BILLING_DATA_DIR": str(data_dir)})
    assert (data_dir / SECRET_KEY_FILE).read_text().strip() == settings.secret_keys[0]


def test_separate_data_dirs_get_separate_development_keys(tmp_path: Path) -> None:
    one = Settings.from_env({"BILLING_DATA_DIR": str(tmp_path / "one")})
    two = Settings.from_env({"BILLING_DATA_DIR": str(tmp_path / "two")})
    assert one.secret_keys != two.secret_keys


def test_a_configured_secret_key_writes_no_key_file(env: dict[str, str], tmp_path: Path) -> None:
    assert Settings.from_env({**env, "BILLING_SECRET_KEY": KEY_A}).secret_keys == (KEY_A,)
    assert not (tmp_path / SECRET_KEY_FILE).exists()


# --- repr -----------------------------------------------------------------------------------


def test_repr_never_shows_secret_keys_or_the_smtp_url(env: dict[str, str]) -> None:
    settings = Settings.from_env(
        {
            **env,
            "BILLING_SECRET_KEY": f"{KEY_A},{KEY_B}",
            "BILLING_SMTP_URL": "smtp://mailer:smtp-password-1@mail.example.com:587",
        }
    )
    for text in (repr(settings), str(settings)):
        assert KEY_A not in text
        assert KEY_B not in text
        assert "smtp-password-1" not in text
        assert "mail.example.com" not in text


def test_repr_never_shows_a_generated_development_key(env: dict[str, str]) -> None:
    settings = Settings.from_env(env)
    assert settings.secret_keys[0] not in repr(settings)


def test_repr_never_shows_the_database_password(env: dict[str, str]) -> None:
    settings = Settings.from_env(
        {**env, "BILLING_DATABASE_URL": "postgresql+asyncpg://billing:db-password-1@127.0.0.1:5432/billing"}
    )
    assert "db-password-1" not in repr(settings)
