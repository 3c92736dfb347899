"""signoff.toml: routes by action type over the environment's defaults, validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from policy import PolicyError, load_policy


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "signoff.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_without_a_file_the_settings_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_policy(None, auto_rollback=True).auto_rollback_for("anything") is True
    assert load_policy(None, auto_rollback=False).auto_rollback_for("anything") is False


def test_the_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[[routes]]\ntypes = ["budget_shift"]\nauto_rollback = true\n')
    assert load_policy(None, auto_rollback=False).auto_rollback_for("budget_shift") is True


def test_first_matching_route_wins_and_unset_fields_fall_back(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[routes]]
types = ["budget_shift"]
auto_rollback = true

[[routes]]
types = ["creative_pause"]

[[routes]]
auto_rollback = false
""",
    )
    policy = load_policy(path, auto_rollback=True)
    assert policy.auto_rollback_for("budget_shift") is True
    assert policy.auto_rollback_for("creative_pause") is True  # its route leaves it unset
    assert policy.auto_rollback_for("order_update") is False  # the catch-all route


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[routes]\n", "not valid TOML"),
        ('[[routes]]\ntypes = ["a"]\nauto_rolback = true\n', "routes[1].auto_rolback: unknown setting"),
        ('[[routes]]\nauto_rollback = "sometimes"\n', "routes[1].auto_rollback"),
        ('[[routes]]\ntypes = "budget_shift"\n', "routes[1].types"),
        ("[routing]\nx = 1\n", "routing: unknown setting"),
    ],
)
def test_invalid_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(write(tmp_path, text), auto_rollback=False)
    assert message in str(raised.value)


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(str(tmp_path / "missing.toml"), auto_rollback=False)


def test_a_bad_policy_file_stops_the_bot_with_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import app

    monkeypatch.chdir(tmp_path)
    for name, value in {
        "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_CHANNEL": "C0123ABCD",
        "APPROVERS": "U0123ABCD", "FLOKIT_API_KEY": "k", "DATABASE_URL": f"sqlite:///{tmp_path}/s.db",
        "SIGNOFF_CONFIG": write(tmp_path, "[[routes]]\nbogus = 1\n"),
    }.items():
        monkeypatch.setenv(name, value)
    assert app.main([]) == 2
    assert "routes[1].bogus: unknown setting" in capsys.readouterr().err


def test_routes_pick_channel_approvers_timings_and_the_two_person_rule(tmp_path: Path) -> None:
    from datetime import timedelta

    from policy import Timings

    path = write(
        tmp_path,
        """
[[routes]]
types = ["budget_shift"]
risk = ["high"]
channel = "C0HIGHRISK"
approvers = ["S0LEADS", "U0CFO"]
required_approvals = 2
confirm_failed_guardrails = true
remind_after = "90m"
expire_after = 259200
escalation_channel = "C0LEADS"

[[routes]]
types = ["budget_shift"]
remind_after = "1d"
""",
    )
    defaults = Timings(timedelta(hours=4), timedelta(days=1), None, None)
    policy = load_policy(path, auto_rollback=False, defaults=defaults)
    high = policy.route_for("budget_shift", "HIGH")
    assert high is not None and high.channel == "C0HIGHRISK" and high.approvers == ("S0LEADS", "U0CFO")
    assert policy.required_approvals("budget_shift", "high") == 2
    assert policy.required_approvals("budget_shift", None) == 1
    assert policy.confirm_failed_guardrails("budget_shift", "high") is True
    assert policy.channel_for("budget_shift", "high", "C0DEFAULT") == "C0HIGHRISK"
    assert policy.channel_for("creative_pause", None, "C0DEFAULT") == "C0DEFAULT"
    t = policy.timings("budget_shift", "high")
    assert (t.remind_after, t.escalate_after, t.expire_after, t.escalation_channel) == (
        timedelta(minutes=90), timedelta(days=1), timedelta(days=3), "C0LEADS"
    )
    assert policy.timings("budget_shift", "low").remind_after == timedelta(days=1)
    assert policy.timings("order_update") == defaults


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ('channel = "#budgets"', "routes[1].channel: Value error, must be a channel ID"),
        ('approvers = ["alice"]', "routes[1].approvers"),
        ("approvers = []", "routes[1].approvers"),
        ("required_approvals = 0", "routes[1].required_approvals"),
        ('remind_after = "soon"', "routes[1].remind_after"),
        ("remind_after = -5", "routes[1].remind_after"),
        ('escalation_channel = "U0123ABCD"', "routes[1].escalation_channel"),
    ],
)
def test_bad_route_values_are_named(tmp_path: Path, route: str, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(write(tmp_path, f"[[routes]]\n{route}\n"), auto_rollback=False)
    assert message in str(raised.value)
