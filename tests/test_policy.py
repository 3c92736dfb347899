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
