"""What the listeners share: parsing Slack payloads into plain values, and telling a person
something only they see."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import ids, render
from bot.cards import decision_view
from core.decide import Outcome, Result
from sources.base import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Click:
    user_id: str
    action_id: int | None  # None: the button's value is not one of ours
    channel: str | None
    ts: str | None
    trigger_id: str | None
    control: str = ""  # the Block Kit action_id of what was clicked


def parse_click(body: dict[str, Any]) -> Click:
    container = body.get("container") or {}
    actions = body.get("actions") or [{}]
    value = str(actions[0].get("value") or "")
    control = str(actions[0].get("action_id") or "")
    selected = actions[0].get("selected_option")
    if control == ids.OVERFLOW and isinstance(selected, dict):
        # An entry of a card's overflow menu: the same as the option's own button.
        parsed = ids.parse_overflow_value(str(selected.get("value") or ""))
        value, control = ("", control) if parsed is None else (parsed[0], ids.option_action_id(parsed[2], parsed[1]))
    return Click(
        user_id=str((body.get("user") or {}).get("id") or ""),
        action_id=int(value) if value.isdigit() and len(value) < 19 else None,
        channel=container.get("channel_id") or (body.get("channel") or {}).get("id"),
        # An ephemeral message (a card shown by "/signoff show") is not the card: no card
        # check for it; authorization and the compare-and-set still decide.
        ts=None if container.get("is_ephemeral") is True else container.get("message_ts"),
        trigger_id=body.get("trigger_id"),
        control=control,
    )


@dataclass(frozen=True)
class ModalContext:
    action_id: int
    channel: str | None
    ts: str | None
    option: str | None = None  # the source's key of the option picked, where it named one

    def dumps(self) -> str:
        data: dict[str, Any] = {"action_id": self.action_id, "channel": self.channel, "ts": self.ts}
        if self.option is not None:
            data["option"] = self.option
        return json.dumps(data)

    @staticmethod
    def loads(text: str | None) -> ModalContext | None:
        try:
            data = json.loads(text or "")
            action_id = data["action_id"]
            if not isinstance(action_id, int) or isinstance(action_id, bool):
                return None
            option = data.get("option")
            return ModalContext(
                action_id, data.get("channel"), data.get("ts"), option if isinstance(option, str) else None
            )
        except (ValueError, TypeError, KeyError):
            return None


def input_value(view: dict[str, Any], block_id: str, action_id: str) -> str | None:
    values = ((view.get("state") or {}).get("values") or {}).get(block_id) or {}
    value = (values.get(action_id) or {}).get("value")
    return value if isinstance(value, str) else None


def refusal_text(outcome: Outcome) -> str:
    """What to tell a person whose click or submission was not recorded."""
    match outcome.result:
        case Result.NOT_ALLOWED:
            return render.not_allowed_text()
        case Result.CHECK_FAILED:
            return render.check_failed_text()
        case Result.UNKNOWN_ACTION:
            return render.unknown_action_text()
        case Result.WRONG_CARD:
            return render.stale_card_text()
        case Result.UNSUPPORTED:
            return render.stale_card_text()
        case Result.SELF_APPROVAL:
            return render.self_approval_text()
        case Result.STORE_UNAVAILABLE:
            return render.store_unavailable_text()
        case Result.ENDORSED:
            return render.endorsed_text(len(outcome.approvals), outcome.needed)
        case Result.ALREADY_ENDORSED:
            return render.already_endorsed_text(len(outcome.approvals), outcome.needed)
        case Result.CONFIRMATION_REQUIRED:
            return render.confirmation_required_text()
        case _:
            status = Status(outcome.action.status) if outcome.action else Status.READY
            return render.already_decided_text(decision_view(outcome.decision), status)


async def tell_clicker(client: AsyncWebClient, click: Click, text: str) -> None:
    """Answer a click: ephemerally in its channel, or, for a click with no channel (a button
    on the App Home), in a small modal opened with the click's trigger."""
    if click.channel:
        await tell(client, channel=click.channel, user_id=click.user_id, text=text)
        return
    if not click.trigger_id:
        return
    try:
        await client.views_open(trigger_id=click.trigger_id, view=render.info_modal(text))
    except SlackApiError as e:
        log.warning("could not answer %s: %s", click.user_id, e.response.get("error"))


async def tell(client: AsyncWebClient, *, channel: str | None, user_id: str, text: str) -> None:
    """An ephemeral message; best effort, since the card shows the state anyway."""
    if not channel or not user_id:
        return
    try:
        await client.chat_postEphemeral(channel=channel, user=user_id, text=text)
    except SlackApiError as e:
        log.warning("could not send an ephemeral message to %s: %s", user_id, e.response.get("error"))
