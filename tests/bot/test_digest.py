"""Flood control: more new actions than DIGEST_THRESHOLD in one poll become one digest
message (with an Open button each) instead of a wall of cards, and posts to a channel are
paced. Real bot, fakes over loopback, signed clicks."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from bot import ids
from tests.conftest import APPROVER, CHANNEL, OUTSIDER, Harness
from tests.fakes.cards import buttons, ephemerals_for, submit
from tests.fakes.slack_api import Message
from tests.fakes.slack_requests import block_action_body, parse_payload


def top_level(h: Harness) -> list[Message]:
    return [m for m in h.slack.messages_in(CHANNEL) if m.thread_ts is None]


def digest_of(h: Harness) -> Message | None:
    found = [m for m in top_level(h) if (m.metadata or {}).get("event_type") == ids.DIGEST_EVENT_TYPE]
    return found[0] if found else None


def open_buttons(message: Message) -> dict[str, dict[str, Any]]:
    """The digest's Open buttons by the action (store id) each opens."""
    return {
        b["accessory"]["value"]: b["accessory"] for b in message.blocks
        if (b.get("accessory") or {}).get("action_id") == ids.OPEN_CARD
    }


def ephemeral(body: str) -> str:
    payload = parse_payload(body)
    payload["container"]["is_ephemeral"] = True
    return "payload=" + quote(json.dumps(payload, separators=(",", ":")), safe="")


async def test_a_flood_posts_one_digest_whose_open_buttons_lead_to_a_decision(harness: Harness) -> None:
    h = harness
    actions = [h.flokit.add_action() for _ in range(25)]
    await h.start(digest_threshold=10)
    digest = await h.wait_for(lambda: digest_of(h))
    await h.run_job("cards")
    assert top_level(h) == [digest], "one message, not 25 cards"
    assert "25 new actions" in (digest.text or "")
    opens = open_buttons(digest)
    assert len(opens) == 25
    assert len(digest.blocks) <= 50

    first = sorted(opens, key=int)[0]
    body = block_action_body(user_id=APPROVER, action_id=ids.OPEN_CARD, value=first, channel=CHANNEL, message_ts=digest.ts)
    status, _, _ = await h.requester.post(body)
    assert status == 200
    await h.wait_for(lambda: any(e.get("user") == APPROVER and e.get("blocks") for e in h.slack.ephemerals))
    shown = next(e for e in h.slack.ephemerals if e.get("user") == APPROVER and e.get("blocks"))
    card_blocks = shown["blocks"] if isinstance(shown["blocks"], list) else json.loads(shown["blocks"])
    approve = next(
        el for b in card_blocks for el in (b.get("elements") or []) if el.get("action_id") == ids.APPROVE
    )
    assert approve["value"] == first

    # Approve from the ephemeral card: the usual modal, the usual decision.
    click = ephemeral(block_action_body(
        user_id=APPROVER, action_id=ids.APPROVE, value=first, channel=CHANNEL, message_ts="1700000999.000001",
    ))
    before = len(h.slack.views)
    status, _, _ = await h.requester.post(click)
    assert status == 200
    await h.wait_for(lambda: len(h.slack.views) > before)
    await submit(h, h.slack.views[-1]["view"], APPROVER, "from the digest")
    await h.wait_for(lambda: h.flokit.actions[actions[0]["id"]]["status"] == "approved")
    assert len(h.flokit.calls("POST", "/approve")) == 1

    # The digest shows it, and the approval is told in the digest's thread.
    await h.run_job("cards")
    await h.wait_for(lambda: "Approved" in json.dumps(h.slack.messages[(CHANNEL, digest.ts)].blocks))
    await h.run_job("notices")
    await h.wait_for(lambda: any(
        m.thread_ts == digest.ts and "Approved" in (m.text or "") for m in h.slack.messages_in(CHANNEL)
    ))


async def test_an_outsider_cannot_open_a_digest_item(harness: Harness) -> None:
    h = harness
    for _ in range(12):
        h.flokit.add_action()
    await h.start(digest_threshold=10)
    digest = await h.wait_for(lambda: digest_of(h))
    value = sorted(open_buttons(digest), key=int)[0]
    body = block_action_body(user_id=OUTSIDER, action_id=ids.OPEN_CARD, value=value, channel=CHANNEL, message_ts=digest.ts)
    status, _, _ = await h.requester.post(body)
    assert status == 200
    await h.wait_for(lambda: ephemerals_for(h, OUTSIDER))
    assert not any(e.get("blocks") for e in h.slack.ephemerals if e.get("user") == OUTSIDER)


async def test_at_the_threshold_each_action_still_gets_its_card(harness: Harness) -> None:
    h = harness
    for _ in range(10):
        h.flokit.add_action()
    await h.start(digest_threshold=10)
    await h.wait_for(lambda: len(top_level(h)) == 10)
    assert digest_of(h) is None
    assert all(set(buttons(m)) == {ids.APPROVE, ids.REJECT} for m in top_level(h))


async def test_the_digest_survives_slack_429s_and_is_posted_once(harness: Harness) -> None:
    h = harness
    for _ in range(30):
        h.flokit.add_action()
    h.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    h.slack.fail_next("chat.postMessage", error="ratelimited")
    await h.start(digest_threshold=10, slack_post_interval_seconds=0.3)
    digest = await h.wait_for(lambda: digest_of(h), timeout=20)
    await h.run_job("cards")
    assert top_level(h) == [digest]
    assert len(open_buttons(digest)) == 30
    # Three more below the threshold: a card each, as usual.
    for _ in range(3):
        h.flokit.add_action()
    await h.poll()
    await h.wait_for(lambda: len(top_level(h)) == 4, timeout=20)
    digests = [c for c in h.slack.calls_to("chat.postMessage") if (c.params.get("metadata") or {}).get("event_type") == ids.DIGEST_EVENT_TYPE]
    assert len([c for c in digests if c.status == 200 and (c.response or {}).get("ok")]) == 1
