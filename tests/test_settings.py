"""Settings: the public configuration contract, validated at start with clear messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from settings import Settings, describe_errors

BASE = {
    "SLACK_BOT_TOKEN": "xoxb-1-secret",
    "SLACK_SIGNING_SECRET": "shh-signing",
    "SLACK_CHANNEL": "C0123ABCD",
    "APPROVERS": "U01ALICE, W02BOB,S03LEADS",
    "FLOKIT_API_KEY": "fk-secret-key",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(BASE) + ["SLACK_APP_TOKEN", "DATABASE_URL", "PORT", "POLL_INTERVAL_SECONDS", "SLACK_API_URL",
                              "FIELDKIT_API_URL", "FIELDKIT_API_KEY", "FIELDKIT_INTAKE_TOKEN", "FIELDKIT_TIMEOUT_SECONDS", "API_KEYS"]:
        monkeypatch.delenv(name, raising=False)

    def apply(**values: str | None) -> None:
        for name, value in {**BASE, **values}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return apply


def load() -> Settings:
    return Settings()  # type: ignore[call-arg]


def test_defaults_and_parsing(env: Any) -> None:
    env()
    s = load()
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.database_url == "sqlite:///./signoff.db"
    assert s.flokit_api_url == "https://api.flokit.ai"
    assert s.poll_interval_seconds == 60 and s.port == 3000
    assert s.socket_mode is False
    approvers = s.approver_set
    assert approvers.users == {"U01ALICE", "W02BOB"} and approvers.groups == {"S03LEADS"} and not approvers.everyone


def test_fractional_interval_everyone_and_socket_mode(env: Any) -> None:
    env(APPROVERS="*", POLL_INTERVAL_SECONDS="0.5", SLACK_APP_TOKEN="xapp-1-abc", SLACK_SIGNING_SECRET=None,
        SLACK_API_URL="http://127.0.0.1:9/api")
    s = load()
    assert s.poll_interval_seconds == 0.5 and s.approver_set.everyone and s.socket_mode
    assert s.slack_api_url == "http://127.0.0.1:9/api/"


def test_dotenv_file_is_read(env: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env(SLACK_CHANNEL=None)
    (tmp_path / ".env").write_text("SLACK_CHANNEL=C0FROMFILE\n")
    assert load().slack_channel == "C0FROMFILE"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"APPROVERS": None}, "APPROVERS: is required"),
        ({"APPROVERS": " , "}, "APPROVERS"),
        ({"APPROVERS": "alice,U01OK"}, "not Slack user or user-group IDs: alice"),
        ({"SLACK_CHANNEL": "#general"}, "SLACK_CHANNEL"),
        ({"SLACK_BOT_TOKEN": "xoxp-user"}, "SLACK_BOT_TOKEN"),
        ({"FLOKIT_API_KEY": None}, "no Actions API is configured: set FLOKIT_API_KEY"),
        ({"POLL_INTERVAL_SECONDS": "0"}, "POLL_INTERVAL_SECONDS"),
        ({"POLL_INTERVAL_SECONDS": "soon"}, "POLL_INTERVAL_SECONDS"),
        ({"PORT": "70000"}, "PORT"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"SLACK_SIGNING_SECRET": None}, "SLACK_SIGNING_SECRET: is required in HTTP mode"),
        ({"SLACK_APP_TOKEN": "xoxb-wrong"}, "SLACK_APP_TOKEN"),
    ],
)
def test_bad_settings_are_named_clearly(env: Any, change: dict[str, str | None], named: str) -> None:
    env(**change)
    with pytest.raises(ValidationError) as caught:
        load()
    message = describe_errors(caught.value)
    assert named in message
    for secret in ("xoxb-1-secret", "shh-signing", "fk-secret-key"):
        assert secret not in message


def test_every_missing_setting_is_named_in_the_first_error(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in BASE:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError) as caught:
        load()
    message = describe_errors(caught.value)
    for name in BASE:  # the signing secret too, not only after the others are set
        if name == "FLOKIT_API_KEY":  # optional on its own; some Actions API must be on
            assert "  FLOKIT_API_KEY: no Actions API is configured" in message, message
        else:
            assert f"  {name}: is required" in message, message


def test_secrets_do_not_show_in_repr(env: Any) -> None:
    env()
    text = repr(load())
    for secret in ("xoxb-1-secret", "shh-signing", "fk-secret-key"):
        assert secret not in text


def test_rollback_watch_settings_default_and_validate(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("METRICS_URL", "METRICS_TOKEN", "ROLLBACK_CHECK_INTERVAL_SECONDS", "AUTO_ROLLBACK", "SIGNOFF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    env()
    s = load()
    assert s.metrics_url is None and s.rollback_check_interval_seconds == 300 and s.auto_rollback is False
    env(METRICS_URL="", AUTO_ROLLBACK="true", ROLLBACK_CHECK_INTERVAL_SECONDS="2.5", METRICS_TOKEN="mt-secret")
    s = load()
    assert s.metrics_url is None and s.auto_rollback is True and s.rollback_check_interval_seconds == 2.5
    assert "mt-secret" not in repr(s)
    env(METRICS_URL="metrics.internal/v1", ROLLBACK_CHECK_INTERVAL_SECONDS="0")
    with pytest.raises(ValidationError) as raised:
        load()
    message = describe_errors(raised.value)
    assert "METRICS_URL: must be an http(s) URL" in message and "ROLLBACK_CHECK_INTERVAL_SECONDS" in message


def test_reminder_quiet_hours_and_digest_settings(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone

    for name in ("REMIND_AFTER_SECONDS", "ESCALATION_CHANNEL", "EXPIRE_AFTER_SECONDS", "QUIET_HOURS",
                 "QUIET_HOURS_TIMEZONE", "DIGEST_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    env()
    s = load()
    assert s.remind_after_seconds == 4 * 3600 and s.expire_after_seconds is None and s.quiet is None
    assert s.digest_threshold == 10 and s.escalation_channel is None
    env(QUIET_HOURS="22:00-07:00", QUIET_HOURS_TIMEZONE="Europe/Berlin", REMIND_AFTER_SECONDS="", ESCALATION_CHANNEL="C0LEADS")
    s = load()
    assert s.remind_after_seconds is None and s.escalation_channel == "C0LEADS"
    quiet = s.quiet
    assert quiet is not None
    assert quiet.contains(datetime(2026, 1, 5, 22, 30, tzinfo=timezone.utc))  # 23:30 in Berlin
    assert not quiet.contains(datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc))
    env(QUIET_HOURS="late", QUIET_HOURS_TIMEZONE="Mars/Olympus", DIGEST_THRESHOLD="0", ESCALATION_CHANNEL="#leads")
    with pytest.raises(ValidationError) as raised:
        load()
    message = describe_errors(raised.value)
    for name in ("QUIET_HOURS:", "QUIET_HOURS_TIMEZONE:", "DIGEST_THRESHOLD:", "ESCALATION_CHANNEL:"):
        assert name in message


FIELDKIT = {"FIELDKIT_API_URL": "https://fieldkit.internal.example", "FIELDKIT_API_KEY": "fdk-admin-secret",
            "FIELDKIT_INTAKE_TOKEN": "fdk-intake-secret"}


def test_fieldkit_turns_on_with_its_key_and_needs_its_url_and_intake_token(env: Any) -> None:
    env(FLOKIT_API_KEY=None, **FIELDKIT)
    s = load()
    assert s.sources_on == ("fieldkit",)
    assert s.fieldkit_api_url == "https://fieldkit.internal.example" and s.fieldkit_timeout_seconds == 10
    assert s.fieldkit_intake_token is not None and s.fieldkit_intake_token.get_secret_value() == "fdk-intake-secret"
    env(**FIELDKIT)
    assert load().sources_on == ("flokit", "fieldkit")
    env(FIELDKIT_API_KEY="")  # blank: off
    assert load().sources_on == ("flokit",)
    text = repr(load())
    assert "fdk-" not in text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"FIELDKIT_API_URL": None}, "FIELDKIT_API_URL: is required when Fieldkit is on (FIELDKIT_API_KEY is set)"),
        ({"FIELDKIT_INTAKE_TOKEN": " "}, "FIELDKIT_INTAKE_TOKEN: is required when Fieldkit is on"),
        ({"FIELDKIT_API_URL": "fieldkit.internal"}, "FIELDKIT_API_URL"),
        ({"FIELDKIT_TIMEOUT_SECONDS": "0"}, "FIELDKIT_TIMEOUT_SECONDS"),
    ],
)
def test_bad_fieldkit_settings_are_named_without_secrets(env: Any, change: dict[str, str | None], named: str) -> None:
    env(FLOKIT_API_KEY=None, **{**FIELDKIT, **change})
    with pytest.raises(ValidationError) as caught:
        load()
    message = describe_errors(caught.value)
    assert named in message
    assert "fdk-admin-secret" not in message and "fdk-intake-secret" not in message


def test_api_keys_alone_turn_on_signoffs_own_api(env: Any) -> None:
    env(FLOKIT_API_KEY=None, API_KEYS="deployer:service:svc-0123456789abcdef, ops:admin:adm-0123456789abcdef")
    s = load()
    assert s.sources_on == ("signoff",)
    assert [(k.name, k.role, k.admin) for k in s.api_keys] == [("deployer", "service", False), ("ops", "admin", True)]
    assert s.api_keys[0].key.get_secret_value() == "svc-0123456789abcdef"
    assert "svc-0123456789abcdef" not in repr(s) and s.api_rate_limit == 600


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("deployer:svc-0123456789abcdef", "must look like name:role:key"),
        ("deployer:root:svc-0123456789abcdef", "the role must be service or admin"),
        ("deployer:service:short", "at least 16 characters"),
        ("a:service:svc-0123456789abcdef,a:admin:adm-0123456789abcdef", "used twice"),
        ("bad name:service:svc-0123456789abcdef", "the name must be"),
    ],
)
def test_bad_api_keys_are_named_without_the_keys(env: Any, value: str, named: str) -> None:
    env(FLOKIT_API_KEY=None, API_KEYS=value)
    with pytest.raises(ValidationError) as caught:
        load()
    message = describe_errors(caught.value)
    assert "API_KEYS" in message and named in message, message
    assert "0123456789abcdef" not in message


def test_code_settings_read_neither_the_environment_nor_a_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What ``python app.py demo`` builds its bot from: its arguments, and nothing else."""
    from pydantic import SecretStr

    from settings import CodeSettings

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("FLOKIT_API_KEY=from-dotenv\nPOLL_INTERVAL_SECONDS=7\n")
    monkeypatch.setenv("FLOKIT_API_KEY", "from-env")
    monkeypatch.setenv("METRICS_URL", "http://metrics.prod.internal/")
    monkeypatch.setenv("SLACK_CHANNEL", "C0PROD")
    built = CodeSettings(
        slack_bot_token=SecretStr("xoxb-code"), slack_signing_secret=SecretStr("s"), slack_channel="C0CODE",
        approvers=["U0CODE"], api_keys="agent:service:0123456789abcdef",  # type: ignore[arg-type]
    )
    assert built.flokit_api_key is None and built.metrics_url is None and built.poll_interval_seconds == 60
    assert built.slack_channel == "C0CODE" and built.sources_on == ("signoff",)
