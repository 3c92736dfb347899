"""Where the tests find the repository, and Slack's own published files when they are there.

The tests need nothing outside the repository. Only the checks against Slack's published
files (real request fixtures, the Web API OpenAPI spec, the app manifest JSON Schema), marked
``slack_published``, read the shared folder beside the clone, ``../shared``; without it they
are skipped with one line saying why. CI has that folder beside its clone and runs them.
"""

from __future__ import annotations

from pathlib import Path

# tests/fakes/paths.py -> parents[0] = tests/fakes, [1] = tests, [2] = repo root
REPO_ROOT: Path = Path(__file__).resolve().parents[2]
SHARED: Path = REPO_ROOT.parent / "shared"

SLACK_SHARED: Path = SHARED / "slack"
SLACK_FIXTURES: Path = SLACK_SHARED / "fixtures"
SLACK_OPENAPI: Path = SLACK_SHARED / "web-api-openapi-v2.json"
SLACK_MANIFEST_SCHEMA: Path = SLACK_SHARED / "manifest-schema" / "manifest.schema.1.0.0.json"


def slack_published_missing() -> str | None:
    """None when Slack's published files are beside the clone, else why not."""
    for path in (SLACK_FIXTURES, SLACK_OPENAPI, SLACK_MANIFEST_SCHEMA):
        if not path.exists():
            return f"Slack's published spec files are not beside the clone ({path} not found)"
    return None


def slack_fixture(name: str) -> Path:
    """Path of one file in ``shared/slack/fixtures``, failing clearly when absent."""
    path = SLACK_FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(
            f"Slack fixture {name!r} not found at {path}; the shared test data is "
            f"expected beside the clone, at {SHARED}"
        )
    return path
