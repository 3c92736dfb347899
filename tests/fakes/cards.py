"""Reading Signoff's cards back from the fake Slack and the store, for scenario tests."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from bot import ids
from store import queries
from store.models import Card
from tests.fakes.identities import CHANNEL
from tests.fakes.slack_api import Message
from tests.fakes.slack_requests import block_action_body, view_submission_body

if TYPE_CHECKING:
    from store.db import Database
    from tests.conftest import Harness



def card_text(message: Message) -> str:
    return json.dumps(message.blocks, ensure_ascii=False)


def buttons(message: Message) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in message.blocks:
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                out[element["action_id"]] = element
    return out


async def card_row(h: Harness, external_id: str) -> Card | None:
    """The store's row for the action's card."""
    assert h.bot is not None
    async with h.bot.db.read() as session:
        known = await queries.known_actions(session, source="flokit", external_ids=[external_id])
        return await queries.card_for_action(session, action_id=known[external_id][0])


async def card_stored(h: Harness, action_id: int) -> bool:
    """The store knows where the action's card is (recorded just after Slack took the post):
    a click on it is checked against that."""
    assert h.bot is not None
    async with h.bot.db.read() as session:
        card = await queries.card_for_action(session, action_id=action_id)
    return card is not None and card.ts is not None


async def card_known(h: Harness, external_id: str) -> bool:
    """The store has recorded where the action's card is."""
    card = await card_row(h, external_id)
    return card is not None and card.ts is not None


async def card_for(h: Harness, external_id: str, timeout: float = 10.0) -> Message:
    """The card posted for an upstream action (found by the metadata every card carries),
    once the store knows it too."""

    def find() -> Message | None:
        for m in h.slack.messages_in(CHANNEL):
            if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == external_id:
                return m
        return None

    message = await h.wait_for(find, timeout=timeout)
    await h.wait_for(lambda: card_known(h, external_id), timeout=timeout)
    return message


async def audit(h: Harness, external_id: str) -> list[Any]:
    """The action's audit trail, oldest first."""
    assert h.bot is not None
    async with h.bot.db.read() as session:
        known = await queries.known_actions(session, source="flokit", external_ids=[external_id])
        return list(await queries.audit_trail(session, action_id=known[external_id][0]))


def ephemerals_for(h: Harness, user: str) -> list[str]:
    return [e.get("text") or "" for e in h.slack.ephemerals if e.get("user") == user]


# ---- driving a card through signed requests --------------------------------------------


async def click(h: Harness, message: Message, action_id: str, user: str, value: str | None = None) -> tuple[int, str]:
    button = buttons(message).get(action_id)
    body = block_action_body(
        user_id=user, action_id=action_id, value=value if value is not None else (button or {}).get("value", "0"),
        channel=message.channel, message_ts=message.ts,
    )
    status, text, _ = await h.requester.post(body)
    return status, text


async def submit(h: Harness, view: dict[str, Any], user: str, text: str | None) -> tuple[int, str]:
    block_id = ids.NOTE_BLOCK if view["callback_id"] == ids.APPROVE_VIEW else ids.REASON_BLOCK
    input_id = ids.NOTE_INPUT if view["callback_id"] == ids.APPROVE_VIEW else ids.REASON_INPUT
    body = view_submission_body(
        user_id=user, callback_id=view["callback_id"], private_metadata=view["private_metadata"],
        values={block_id: {input_id: text}},
    )
    status, answer, _ = await h.requester.post(body)
    return status, answer


async def open_modal(h: Harness, message: Message, action_id: str, user: str) -> dict[str, Any]:
    before = len(h.slack.views)
    status, _ = await click(h, message, action_id, user)
    assert status == 200
    await h.wait_for(lambda: len(h.slack.views) > before)
    return h.slack.views[-1]["view"]


async def change_action(db: Database, action_id: int, **fields: Any) -> None:
    """Change a stored action as a refresh from its upstream does: new values, a new version."""
    async with db.write() as session:
        stored = await queries.get_action(session, action_id=action_id, lock=True)
        assert stored is not None
        for key, value in fields.items():
            setattr(stored, key, value)
        stored.version += 1
        session.add(stored)
