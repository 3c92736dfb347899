"""Signed Slack requests live with the sandbox, which sends them too (``sandbox/slack_requests.py``)."""

from sandbox.slack_requests import (  # noqa: F401 - re-exported for the tests
    FORM,
    JSON,
    SlackRequester,
    block_action_body,
    event_body,
    parse_payload,
    sign,
    slash_command_body,
    view_submission_body,
)
