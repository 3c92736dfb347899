"""``python app.py`` for a newcomer: its help, an unknown command, ``migrate`` with only a
database, ``manifest --url``, and the ``.env.example`` a first run starts from."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest
import yaml

import app
from settings import Settings
from tests.fakes.paths import REPO_ROOT


def request_urls(manifest: dict[str, Any]) -> list[str]:
    settings = manifest["settings"]
    return [
        *(c["url"] for c in manifest["features"]["slash_commands"]),
        settings["interactivity"]["request_url"],
        settings["event_subscriptions"]["request_url"],
    ]


def test_help_lists_the_commands_and_points_at_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--help", "-h", "help"):
        assert app.main([flag]) == 0
        out = capsys.readouterr().out
        for command in ("migrate", "manifest --url URL", "run the bot"):
            assert command in out
        assert ".env.example" in out and "README.md" in out


def test_an_unknown_command_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["strat"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "signoff: unknown command 'strat'"
    assert app.main(["migrate", "now"]) == 2
    assert "migrate takes no arguments" in capsys.readouterr().err


def test_manifest_prints_all_three_request_urls_filled_in(capsys: pytest.CaptureFixture[str]) -> None:
    original = yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())
    assert len(request_urls(original)) == 3
    for given in ("https://approvals.acme.test", "https://approvals.acme.test/", "https://approvals.acme.test/slack/events"):
        assert app.main(["manifest", "--url", given]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert request_urls(printed) == ["https://approvals.acme.test/slack/events"] * 3
        for key in ("settings", "features"):  # everything else as in manifest.yml
            printed[key], original[key] = None, None
        assert printed == original
        original = yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())
    assert app.main(["manifest", "--url=https://a.test/signoff"]) == 0
    assert set(request_urls(yaml.safe_load(capsys.readouterr().out))) == {"https://a.test/signoff/slack/events"}


@pytest.mark.parametrize("args", [["--url", "http://plain.test"], ["--url", "signoff.test"], ["--url", ""], [], ["--host", "x"]])
def test_manifest_with_a_bad_or_missing_url_says_what_it_needs(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["manifest", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "https://" in captured.err.splitlines()[0]


async def test_migrate_needs_only_the_database_url(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "FLOKIT_", "APPROVERS", "DATABASE_URL"))}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'fresh.db'}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO_ROOT / "app.py"), "migrate", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().startswith("database schema at revision ")
    env["DATABASE_URL"] = "mysql://nope"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO_ROOT / "app.py"), "migrate", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 2
    assert err.decode().strip().splitlines() == ["signoff: invalid configuration:", "  DATABASE_URL: must be a sqlite:///… or postgresql://… URL"]


def test_env_example_names_what_a_first_run_needs() -> None:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    assigned = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    commented = {line[2:].split("=", 1)[0] for line in lines if line.startswith("# ") and "=" in line and line[2:3].isupper()}
    fields = {name.upper() for name in Settings.model_fields}
    required = {name.upper() for name, f in Settings.model_fields.items() if f.is_required()}
    assert required <= assigned
    assert "SLACK_SIGNING_SECRET" in assigned  # required in HTTP mode, the default
    assert (assigned | commented) <= fields  # no variable Signoff would ignore
    # each variable comes with a comment saying what it is
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), line


def test_env_example_filled_in_is_a_valid_configuration(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fill = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_CHANNEL": "C0CARDS",
            "APPROVERS": "U0ALICE", "FLOKIT_API_KEY": "k"}
    text = "\n".join(
        f"{line}{fill[line[:-1]]}" if line.endswith("=") and line[:-1] in fill else line
        for line in (REPO_ROOT / ".env.example").read_text().splitlines()
    )
    (tmp_path / ".env").write_text(text)
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    settings = Settings()  # type: ignore[call-arg]
    assert settings.slack_channel == "C0CARDS" and not settings.socket_mode


def test_migrate_logs_json_lines_with_log_format_json(tmp_path: Any) -> None:
    import json
    import subprocess

    env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "info", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "app.py"), "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines and all(line["logger"] == "signoff.store" and line["level"] == "INFO" for line in lines)
    assert "revision" in lines[-1]["message"]
    env["LOG_LEVEL"] = "warning"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "app.py"), "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == ""  # nothing to migrate, and INFO lines are below WARNING
