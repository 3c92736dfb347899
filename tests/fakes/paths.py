"""Where the tests find the repository and the shared Slack test data.

The shared folder (real Slack request shapes, Slack's Web API OpenAPI spec,
manifest schemas) is not part of this repository: it lives beside the clone,
as ``../shared`` (CI checks it out there too).
"""

from __future__ import annotations

from pathlib import Path

# tests/fakes/paths.py -> parents[0] = tests/fakes, [1] = tests, [2] = repo root
REPO_ROOT: Path = Path(__file__).resolve().parents[2]
SHARED: Path = REPO_ROOT.parent / "shared"

SLACK_SHARED: Path = SHARED / "slack"
SLACK_FIXTURES: Path = SLACK_SHARED / "fixtures"
SLACK_OPENAPI: Path = SLACK_SHARED / "web-api-openapi-v2.json"


def slack_fixture(name: str) -> Path:
    """Path of one file in ``shared/slack/fixtures``, failing clearly when absent."""
    path = SLACK_FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(
            f"Slack fixture {name!r} not found at {path}; the shared test data is "
            f"expected beside the clone, at {SHARED}"
        )
    return path
