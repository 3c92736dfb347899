"""manifest.yml is a valid Slack app manifest and declares what the bot needs."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.fakes.paths import REPO_ROOT, SLACK_SHARED

SCHEMA = SLACK_SHARED / "manifest-schema" / "manifest.schema.1.0.0.json"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def test_manifest_matches_slacks_schema(manifest: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    errors = sorted(validator.iter_errors(manifest), key=str)
    assert not errors, [e.message for e in errors]


def test_schema_catches_what_it_should(manifest: dict[str, Any], validator: jsonschema.Draft7Validator) -> None:
    broken = dict(manifest)
    broken.pop("display_information")
    assert not validator.is_valid(broken)
    misspelt = {**manifest, "setings": manifest["settings"]}
    assert not validator.is_valid(misspelt)


def test_scopes_and_request_urls(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "users:read", "users:read.email", "usergroups:read", "commands"} <= scopes
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].endswith("/slack/events")
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings["socket_mode_enabled"] is False
