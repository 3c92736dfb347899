"""Reading Signoff's cards back from the fake Slack and the store, for scenario tests."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from store import queries
from store.models import Card
from tests.fakes.slack_api import Message

if TYPE_CHECKING:
    from tests.conftest import Harness

CHANNEL = "C0CARDS"


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
