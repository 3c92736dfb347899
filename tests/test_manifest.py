"""manifest.yml declares what the bot needs (its validity against Slack's published schema is
checked in tests/test_slack_published.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.fakes.paths import REPO_ROOT


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())


def test_scopes_and_request_urls(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "users:read", "users:read.email", "usergroups:read", "commands"} <= scopes
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].endswith("/slack/events")
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings["socket_mode_enabled"] is False
