"""What Slack sends and answers, written here from Slack's public documentation.

The field names and their types are Slack's (see api.slack.com: *Interactivity payloads*,
*Slash commands*, *Events API*, *Socket Mode*, *auth.test*); the values are this project's own
test workspace. Each function returns a fresh object, so a caller may change it.

``tests/test_slack_published.py`` holds these shapes against the request fixtures Slack's own
SDK tests use, when that shared folder is beside the clone; nothing else here needs it.
"""

from __future__ import annotations

from typing import Any

TEAM_ID = "T0SIGNOFF"
TEAM_DOMAIN = "signoff-test"
APP_ID = "A0SIGNOFF"
BOT_ID = "B0SIGNOFF"
BOT_USER_ID = "U0SIGNOFFBOT"
WORKSPACE_URL = f"https://{TEAM_DOMAIN}.slack.com/"
VERIFICATION_TOKEN = "deprecated-verification-token"  # Slack still sends one; nothing checks it

# The keys of a Socket Mode envelope, by kind: what the fake sends.
SOCKET_ENVELOPE_KEYS = frozenset({"envelope_id", "payload", "type", "accepts_response_payload"})
SOCKET_RETRY_KEYS = frozenset({"retry_attempt", "retry_reason"})  # events always carry them


def auth_test_answer() -> dict[str, Any]:
    """``auth.test`` for a bot token."""
    return {
        "ok": True,
        "url": WORKSPACE_URL,
        "team": "Signoff Test",
        "user": "signoff",
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
    }


def error_answer(error: str) -> dict[str, Any]:
    """Any Web API method refusing: ``invalid_auth``, ``token_revoked``, ``account_inactive``…"""
    return {"ok": False, "error": error}


def _user(user_id: str) -> dict[str, Any]:
    name = user_id.lower()
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM_ID}


def _team() -> dict[str, Any]:
    return {"id": TEAM_ID, "domain": TEAM_DOMAIN}


def _button(action_id: str, value: str, label: str = "Button") -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": label}, "value": value}


def block_actions(
    *,
    user_id: str,
    action_id: str = "button",
    value: str = "clicked",
    block_id: str = "actions",
    channel: str = "C0CHANNEL",
    message_ts: str = "1700000000.000100",
    trigger_id: str = "100.200.signoff",
    response_url: str = f"https://hooks.slack.com/actions/{TEAM_ID}/1/signoff",
    action_ts: str = "1700000001.000200",
) -> dict[str, Any]:
    """A button clicked on a message the app posted: the click, and the message it was on."""
    button = _button(action_id, value)
    return {
        "type": "block_actions",
        "user": _user(user_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id,
        "team": _team(),
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "approvals"},
        "message": {
            "type": "message",
            "subtype": "bot_message",
            "text": "A message with a button",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "ts": message_ts,
            "team": TEAM_ID,
            "blocks": [
                {
                    "type": "section",
                    "block_id": block_id,
                    "text": {"type": "mrkdwn", "text": "A message with a button", "verbatim": False},
                    "accessory": button,
                }
            ],
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{**button, "block_id": block_id, "action_ts": action_ts}],
    }


def view(
    *,
    view_id: str = "V0SIGNOFF",
    view_type: str = "modal",
    callback_id: str = "",
    private_metadata: str = "",
    blocks: list[dict[str, Any]] | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A view as Slack holds it and hands it back in payloads."""
    out: dict[str, Any] = {
        "id": view_id,
        "team_id": TEAM_ID,
        "type": view_type,
        "blocks": blocks or [],
        "private_metadata": private_metadata,
        "callback_id": callback_id,
        "state": {"values": values or {}},
        "hash": "1700000000.signoff",
        "title": {"type": "plain_text", "text": "Signoff"},
        "clear_on_close": False,
        "notify_on_close": False,
        "close": None,
        "submit": None,
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": APP_ID,
        "external_id": "",
        "app_installed_team_id": TEAM_ID,
        "bot_id": BOT_ID,
    }
    if view_type == "modal":
        out["close"] = {"type": "plain_text", "text": "Cancel"}
        out["submit"] = {"type": "plain_text", "text": "Submit"}
    return out


def input_block(block_id: str, action_id: str, *, optional: bool = False) -> dict[str, Any]:
    """An input block holding one plain_text_input."""
    return {
        "type": "input",
        "block_id": block_id,
        "label": {"type": "plain_text", "text": block_id},
        "optional": optional,
        "element": {"type": "plain_text_input", "action_id": action_id},
    }


def view_submission(
    *,
    user_id: str,
    callback_id: str = "modal",
    private_metadata: str = "",
    values: dict[str, dict[str, str | None]] | None = None,
    view_id: str = "V0SIGNOFF",
    trigger_id: str = "100.300.signoff",
) -> dict[str, Any]:
    """A modal submitted. ``values`` maps block_id -> {action_id: typed text}; each is a
    plain_text_input (an optional one left empty arrives as ``None``)."""
    values = {"input": {"text": "typed"}} if values is None else values
    blocks = [
        input_block(block_id, action_id, optional=value is None)
        for block_id, actions in values.items()
        for action_id, value in actions.items()
    ]
    state = {
        block_id: {action_id: {"type": "plain_text_input", "value": value} for action_id, value in actions.items()}
        for block_id, actions in values.items()
    }
    return {
        "type": "view_submission",
        "team": _team(),
        "user": _user(user_id),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": view(
            view_id=view_id, callback_id=callback_id, private_metadata=private_metadata, blocks=blocks, values=state
        ),
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def slash_command_fields(
    *,
    user_id: str,
    command: str = "/signoff",
    text: str = "",
    channel: str = "C0CHANNEL",
    response_url: str = f"https://hooks.slack.com/commands/{TEAM_ID}/1/signoff",
    trigger_id: str = "100.400.signoff",
) -> list[tuple[str, str]]:
    """A slash command's form fields, in the order Slack sends them."""
    return [
        ("token", VERIFICATION_TOKEN),
        ("team_id", TEAM_ID),
        ("team_domain", TEAM_DOMAIN),
        ("channel_id", channel),
        ("channel_name", "approvals"),
        ("user_id", user_id),
        ("user_name", user_id.lower()),
        ("command", command),
        ("text", text),
        ("api_app_id", APP_ID),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger_id),
    ]


def event_callback(
    event: dict[str, Any], *, event_id: str = "Ev0SIGNOFF", event_time: int = 1700000000
) -> dict[str, Any]:
    """An Events API envelope carrying ``event``."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"1-{event.get('type', 'event')}-{TEAM_ID}",
    }
