"""Signed Slack requests to the bot.

Each builder starts from a shape in ``sandbox/slack_shapes.py`` (the fields Slack
sends), changes only what the test names, and returns the raw body as Slack sends it:

- interactive payloads (block_actions, view_submission): ``payload=<url-encoded JSON>``,
  content type application/x-www-form-urlencoded;
- slash commands: the form as it is;
- events: raw JSON, content type application/json.

:class:`SlackRequester` signs a body as Slack does and POSTs it over real HTTP.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp

from sandbox import slack_shapes as shapes

__all__ = [
    "FORM",
    "JSON",
    "SlackRequester",
    "block_action_body",
    "event_body",
    "parse_payload",
    "payload_form",
    "sign",
    "slash_command_body",
    "view_submission_body",
]

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def payload_form(payload: dict[str, Any]) -> str:
    """An interactive payload as Slack POSTs it: ``payload=<url-encoded JSON>``."""
    return "payload=" + quote(json.dumps(payload, separators=(",", ":")), safe="")


def _now_ts() -> str:
    return f"{time.time():.6f}"


def parse_payload(body: str) -> dict[str, Any]:
    """The JSON payload of a ``payload=...`` form body (for checking what a builder made)."""
    form = dict(parse_qsl(body, keep_blank_values=True))
    return json.loads(form["payload"])


def sign(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's request-signing headers for ``body``.

    ``X-Slack-Signature`` is ``"v0=" + hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}"))``;
    ``timestamp`` defaults to now (pass an old one to test replay protection).
    The caller adds the Content-Type.
    """
    ts = int(time.time()) if timestamp is None else int(timestamp)
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def block_action_body(
    *,
    user_id: str,
    action_id: str,
    value: str,
    channel: str,
    message_ts: str,
    response_url: str | None = None,
    trigger_id: str = "100.200.signoff",
    block_id: str | None = None,
    message_blocks: list[dict[str, Any]] | None = None,
    message_text: str | None = None,
) -> str:
    """A button click on a message (:func:`slack_shapes.block_actions`).

    ``block_id`` defaults to ``"actions"``. The carried ``message`` gets ``message_blocks``
    when given (e.g. ``fake.messages[key].blocks``); otherwise its one section holds the
    clicked button. Without ``response_url`` a hooks.slack.com one stays, which nothing
    answers: pass ``fake.response_url(...)`` when the bot is to answer through it.
    """
    body = shapes.block_actions(
        user_id=user_id,
        action_id=action_id,
        value=value,
        channel=channel,
        message_ts=message_ts,
        trigger_id=trigger_id,
        action_ts=_now_ts(),
        **({"block_id": block_id} if block_id is not None else {}),
        **({"response_url": response_url} if response_url is not None else {}),
    )
    message = body["message"]
    if message_text is not None:
        message["text"] = message_text
    if message_blocks is not None:
        message["blocks"] = copy.deepcopy(message_blocks)
    return payload_form(body)


def view_submission_body(
    *,
    user_id: str,
    callback_id: str,
    private_metadata: str,
    values: dict[str, dict[str, str | None]],
    view_id: str | None = None,
) -> str:
    """A modal submitted (:func:`slack_shapes.view_submission`).

    ``values`` maps block_id -> {action_id: value}; each becomes a plain_text_input in
    ``view.state.values`` and an input block in ``view.blocks`` (an empty, optional
    input arrives as ``None``, as Slack sends it).
    """
    body = shapes.view_submission(
        user_id=user_id,
        callback_id=callback_id,
        private_metadata=private_metadata,
        values=values,
        **({"view_id": view_id} if view_id is not None else {}),
    )
    return payload_form(body)


def slash_command_body(
    *,
    user_id: str,
    command: str,
    text: str,
    channel: str = "C111",
    response_url: str | None = None,
    trigger_id: str | None = None,
) -> str:
    """A slash command (:func:`slack_shapes.slash_command_fields`, in Slack's order)."""
    changes: dict[str, str] = {}
    if response_url is not None:
        changes["response_url"] = response_url
    if trigger_id is not None:
        changes["trigger_id"] = trigger_id
    fields = shapes.slash_command_fields(user_id=user_id, command=command, text=text, channel=channel, **changes)
    return urlencode(fields)


def event_body(event: dict[str, Any]) -> str:
    """An Events API envelope (:func:`slack_shapes.event_callback`) carrying ``event``,
    with a fresh ``event_id`` and ``event_time``."""
    body = shapes.event_callback(
        copy.deepcopy(event), event_id="Ev" + uuid.uuid4().hex[:12].upper(), event_time=int(time.time())
    )
    return json.dumps(body)


class SlackRequester:
    """POSTs signed requests to the bot over real HTTP, as Slack does."""

    def __init__(self, url: str, secret: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.secret = secret
        self.session = session

    async def post(
        self,
        body: str,
        *,
        content_type: str | None = None,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
        sign_with: str | None = None,
        tamper: bool = False,
    ) -> tuple[int, str, dict[str, str]]:
        """Sign ``body`` and POST it; returns (status, response text, response headers).

        ``content_type`` defaults to application/json for a body starting with ``{``
        (events) and application/x-www-form-urlencoded otherwise. ``timestamp`` signs
        with that time (e.g. 10 minutes ago); ``sign_with`` signs with another secret;
        ``tamper`` changes the body after signing it; ``headers`` are added last
        (e.g. ``X-Slack-Retry-Num``) and may override the signature headers.
        """
        if content_type is None:
            content_type = JSON if body.lstrip().startswith("{") else FORM
        request_headers = sign(body, sign_with if sign_with is not None else self.secret, timestamp)
        request_headers["Content-Type"] = content_type
        if headers:
            request_headers.update(headers)
        sent = body
        if tamper:
            sent = body + (" " if content_type.startswith(JSON) else "&tampered=1")
        async with self.session.post(self.url, data=sent.encode("utf-8"), headers=request_headers) as response:
            text = await response.text()
            return response.status, text, dict(response.headers)
