"""Fieldkit end to end, over real loopback: the bot built by ``app.Signoff`` with Fieldkit on,
the fake Fieldkit (seed 002) and the fake Slack. Each branch of the issue: intake auth and
repeats, the catalog on the card, risk routing, approve and reject bodies and headers, a lost
answer replayed (decided once upstream), in-progress retried, an idempotency conflict
surfaced (and a Retry with a new key), another 409 adopted, tracking to succeeded and failed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot import ids
from sources.base import Status
from store import queries
from store.models import Outbox
from tests.conftest import APPROVER, APPROVER_EMAIL, CHANNEL, OTHER_APPROVER, Harness
from tests.fakes.cards import buttons, card_stored, card_text, click, open_modal, submit
from tests.fakes.fieldkit import ADMIN_KEY, FakeFieldkit
from tests.fakes.slack_api import FakeSlack, Message

TOKEN = "fieldkit-intake-token"
HIGH = "C0HIGHRISK"


@pytest.fixture
async def fieldkit() -> AsyncIterator[FakeFieldkit]:
    fake = FakeFieldkit()
    await fake.start()
    yield fake
    await fake.stop()


async def start(h: Harness, fk: FakeFieldkit, **overrides: Any) -> None:
    h.slack.add_user(APPROVER, email=APPROVER_EMAIL, real_name="Ada Lovelace")
    await h.start(
        fieldkit_api_url=fk.url, fieldkit_api_key=ADMIN_KEY, fieldkit_intake_token=TOKEN, **overrides,
    )
    assert h.bot is not None
    # Read open actions again quickly (the defaults are seconds to minutes).
    h.bot.refresh.base_seconds, h.bot.refresh.active_cap_seconds, h.bot.refresh.idle_cap_seconds = 0.05, 0.2, 0.2


async def push(h: Harness, body: Any, *, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    assert h.bot is not None and h.bot.port
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with h.http.post(f"http://127.0.0.1:{h.bot.port}/intake/fieldkit", data=data, headers=headers) as r:
        return r.status, await r.json()


def card_of(slack: FakeSlack, external_id: str, channel: str = CHANNEL) -> Message | None:
    for m in slack.messages_in(channel):
        if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == external_id and m.thread_ts is None:
            return m
    return None


def thread_of(slack: FakeSlack, card: Message) -> list[str]:
    return [m.text or "" for m in slack.messages_in(card.channel) if m.thread_ts == card.ts and m.ts != card.ts]


async def until(h: Harness, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Read open actions again (the refresh job) until ``predicate`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("still not true after refreshing")
        await h.run_job("refresh")
        await asyncio.sleep(0.05)


async def carded(h: Harness, fk: FakeFieldkit, channel: str = CHANNEL, **submitted: Any) -> tuple[str, int, Message]:
    x = fk.submit(**submitted)
    status, answer = await push(h, {"action_id": x})
    assert status == 202, answer
    card = await h.wait_for(lambda: card_of(h.slack, x, channel))
    await h.wait_for(lambda: card_stored(h, answer["id"]))  # a click on it is checked against the store
    return x, answer["id"], card


async def outbox_of(h: Harness, action_id: int) -> Outbox:
    assert h.bot is not None
    async with h.bot.db.read() as session:
        entry = await queries.latest_outbox(session, action_id=action_id)
    assert entry is not None
    return entry


async def approve(h: Harness, card: Message, note: str | None = "looks right", user: str = APPROVER) -> None:
    view = await open_modal(h, card, ids.APPROVE, user)
    assert (await submit(h, view, user, note))[0] == 200


# ---- intake and the card -------------------------------------------------------------------


async def test_intake_auth_repeats_and_the_card_from_the_catalog(harness: Harness, fieldkit: FakeFieldkit) -> None:
    h = harness
    await start(h, fieldkit)
    x = fieldkit.submit(payload={"status": "in_production", "note": "n" * 4000})
    assert (await push(h, {"action_id": x}, token=None))[0] == 401
    assert (await push(h, {"action_id": x}, token="wrong"))[0] == 401
    status, answer = await push(h, {"id": x})
    assert status == 422 and answer["field"] == "action_id"
    status, answer = await push(h, {"action_id": "no-such-action"})
    assert status == 502 and answer["code"] == "upstream_refused"

    status, answer = await push(h, {"action_id": x, "status": "succeeded"})  # only the id is taken
    assert status == 202 and answer["created"] is True and answer["status"] == "ready"
    status, again = await push(h, {"action_id": x})
    assert (status, again["id"], again["created"]) == (200, answer["id"], False)

    card = await h.wait_for(lambda: card_of(h.slack, x))
    text = card_text(card)
    assert card.blocks[0]["text"]["text"] == "Update a sales order's status"  # the type's summary
    for shown in ("update_sales_order_status", "🟠 Medium", "*Scope*", "FULFILLMENT", "*Mode*", "EXECUTE",
                  "sales_order c3a1af57-2f5a-4e85-98b1-23b3501fa9d4", "status: in_production", "expected_status: ready",
                  "5df4f2e5-cc45-4e75-bf69-f056eae5b7c3", "*Created*"):
        assert shown in text, shown
    assert "…" in text and "n" * 2000 not in text  # the long value was cut to fit
    assert "High risk" not in text
    assert set(buttons(card)) == {ids.APPROVE, ids.REJECT}  # no rollback: Fieldkit has none
    assert len([m for m in h.slack.messages_in(CHANNEL) if m.thread_ts is None and "fieldkit" in json.dumps(m.metadata)]) == 1

    # An action that needs no approval is carded with its status, without buttons.
    y = fieldkit.submit("reindex_inventory")
    status, answer = await push(h, {"action_id": y})
    assert status == 202 and answer["status"] == "approved"
    other = await h.wait_for(lambda: card_of(h.slack, y))
    assert not buttons(other) and "✅ Approved" in card_text(other) and "🟢 Low" in card_text(other)


async def test_high_risk_routes_to_its_channel_and_needs_two_approvers(
    harness: Harness, fieldkit: FakeFieldkit, tmp_path: Any
) -> None:
    h = harness
    config = tmp_path / "signoff.toml"
    config.write_text(f'[[routes]]\nrisk = ["high"]\nchannel = "{HIGH}"\nrequired_approvals = 2\n')
    await start(h, fieldkit, signoff_config=str(config))
    x, _, card = await carded(h, fieldkit, HIGH, action_type="refund_payment")
    assert card.channel == HIGH and card_of(h.slack, x, CHANNEL) is None
    assert "🔴 *High risk*" in card_text(card) and "🔴 *High*" in card_text(card)
    await approve(h, card, "first")
    await asyncio.sleep(0.3)
    assert fieldkit.decides(x) == []  # one of two
    card = await h.wait_for(lambda: card_of(h.slack, x, HIGH))
    await approve(h, card, "second", user=OTHER_APPROVER)
    await fieldkit.wait_decided(x)
    assert len(fieldkit.decisions) == 1 and fieldkit.actions[x]["status"] == "pending"
    medium, _, medium_card = await carded(h, fieldkit)
    assert medium_card.channel == CHANNEL


# ---- deciding ----------------------------------------------------------------------------------


async def test_approve_sends_the_key_and_a_body_naming_the_person_then_follows_it_to_succeeded(
    harness: Harness, fieldkit: FakeFieldkit
) -> None:
    h = harness
    await start(h, fieldkit)
    x, action_id, card = await carded(h, fieldkit)
    await approve(h, card, "ship it")
    await fieldkit.wait_decided(x)
    sent = fieldkit.decides(x)
    entry = await outbox_of(h, action_id)
    assert len(sent) == 1 and sent[0].headers["Idempotency-Key"] == entry.idempotency_key
    assert sent[0].headers["X-API-Key"] == ADMIN_KEY
    assert sent[0].json == {"decision": "APPROVE", "reason": f"Approved by Ada Lovelace <{APPROVER_EMAIL}> in Slack: ship it"}
    assert sent[0].body.decode() == entry.request_body  # the body stored with the decision, sent as is
    card = await h.wait_for(lambda: (m := card_of(h.slack, x)) and "✅ Approved" in card_text(m) and m)
    assert f"<@{APPROVER}>" in card_text(card) and not buttons(card)

    fieldkit.run(x)
    card = await until(h, lambda: (m := card_of(h.slack, x)) and "▶️ Running" in card_text(m) and m)
    assert "1 attempt, started" in card_text(card)
    fieldkit.succeed(x, {"order_status": "in_production"})
    card = await until(h, lambda: (m := card_of(h.slack, x)) and "🏁 Succeeded" in card_text(m) and m)
    assert "order_status: in_production" in card_text(card)
    thread = await h.wait_for(lambda: (t := thread_of(h.slack, card)) and len(t) >= 3 and t)
    assert any("Approved" in line for line in thread) and any("Running" in line for line in thread)
    assert any("Succeeded" in line for line in thread)
    assert h.bot is not None
    async with h.bot.db.read() as session:
        trail = [(d.event, d.actor, d.to_status) for d in await queries.audit_trail(session, action_id=action_id)]
    assert trail == [
        ("discovered", "upstream", "ready"), ("requested", APPROVER, "approving"), ("confirmed", APPROVER, "approved"),
        ("upstream", "upstream", "running"), ("upstream", "upstream", "succeeded"),
    ]
    reads = len(fieldkit.calls("GET", f"/actions/{x}"))
    for _ in range(3):
        await h.run_job("refresh")
    assert len(fieldkit.calls("GET", f"/actions/{x}")) == reads  # terminal: no longer read


async def test_reject_needs_a_reason_and_a_failed_run_shows_its_error(harness: Harness, fieldkit: FakeFieldkit) -> None:
    h = harness
    await start(h, fieldkit)
    x, _, card = await carded(h, fieldkit)
    view = await open_modal(h, card, ids.REJECT, APPROVER)
    assert view["callback_id"] == ids.REJECT_VIEW
    reason = next(b for b in view["blocks"] if b.get("block_id") == ids.REASON_BLOCK)
    assert reason["optional"] is False
    assert (await submit(h, view, APPROVER, "wrong order"))[0] == 200
    await fieldkit.wait_decided(x)
    assert fieldkit.decides(x)[0].json == {
        "decision": "REJECT", "reason": f"Rejected by Ada Lovelace <{APPROVER_EMAIL}> in Slack: wrong order"
    }
    await h.wait_for(lambda: (m := card_of(h.slack, x)) and "🚫 Rejected" in card_text(m))

    y, _, card = await carded(h, fieldkit)
    await approve(h, card, None)
    await fieldkit.wait_decided(y)
    assert fieldkit.decides(y)[0].json["reason"] == f"Approved by Ada Lovelace <{APPROVER_EMAIL}> in Slack"
    fieldkit.run(y)
    fieldkit.fail(y, {"code": "PRECONDITION_FAILED", "message": "order already shipped"})
    card = await until(h, lambda: (m := card_of(h.slack, y)) and "💥 Failed" in card_text(m) and m)
    assert "order already shipped" in card_text(card) and not buttons(card)
    await h.wait_for(lambda: any("Failed" in line for line in thread_of(h.slack, card)))


async def test_a_lost_answer_is_replayed_and_decided_once(harness: Harness, fieldkit: FakeFieldkit) -> None:
    h = harness
    await start(h, fieldkit)
    x, action_id, card = await carded(h, fieldkit)
    fieldkit.fail_next(f"/{x}/decide", status=0, after_effect=True)  # took effect; the connection reset
    fieldkit.fail_next(f"/{x}/decide", status=503)  # then a 5xx before the replay
    await approve(h, card)
    await h.wait_for(lambda: (m := card_of(h.slack, x)) and "✅ Approved" in card_text(m), timeout=15)
    sent = fieldkit.decides(x)
    assert len(sent) == 3 and len(fieldkit.decisions) == 1  # decided once upstream
    assert len({r.headers["Idempotency-Key"] for r in sent}) == 1 and len({r.body for r in sent}) == 1
    assert h.bot is not None
    async with h.bot.db.read() as session:
        events = [d.event for d in await queries.audit_trail(session, action_id=action_id)]
    assert events == ["discovered", "requested", "confirmed"]  # no conflict, no failure
    assert not [e for e in h.slack.ephemerals if e.get("user") == APPROVER]


async def test_in_progress_is_retried_later(harness: Harness, fieldkit: FakeFieldkit) -> None:
    h = harness
    await start(h, fieldkit, fieldkit_timeout_seconds=1.5)
    x, action_id, card = await carded(h, fieldkit)
    fieldkit.hold_decides()  # the first decide outlasts the client's timeout, and its key stays in progress
    await approve(h, card)
    await h.wait_for(lambda: len(fieldkit.decides(x)) >= 2, timeout=15)  # sent again: in progress
    fieldkit.release_decides()
    await fieldkit.wait_decided(x, timeout=15)
    await h.wait_for(lambda: (m := card_of(h.slack, x)) and "✅ Approved" in card_text(m), timeout=15)
    sent = fieldkit.decides(x)
    assert len(sent) >= 2 and len(fieldkit.decisions) == 1
    assert len({r.headers["Idempotency-Key"] for r in sent}) == 1
    entry = await outbox_of(h, action_id)
    assert entry.state == "done" and entry.attempts < len(sent)  # in progress used up no attempts


async def test_an_idempotency_conflict_is_a_permanent_failure_and_retry_uses_a_new_key(
    harness: Harness, fieldkit: FakeFieldkit, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    await start(h, fieldkit)
    x, action_id, card = await carded(h, fieldkit)
    fieldkit.fail_next(f"/{x}/decide", status=409, code="IDEMPOTENCY_CONFLICT")
    await approve(h, card)
    card = await h.wait_for(lambda: (m := card_of(h.slack, x)) and ids.RETRY in buttons(m) and m)
    first = await outbox_of(h, action_id)
    assert "IDEMPOTENCY_CONFLICT" in card_text(card) and first.idempotency_key in card_text(card)
    assert any(first.idempotency_key in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    assert len(fieldkit.decides(x)) == 1 and fieldkit.decisions == []

    assert (await click(h, card, ids.RETRY, APPROVER))[0] == 200
    await fieldkit.wait_decided(x)
    await h.wait_for(lambda: (m := card_of(h.slack, x)) and "✅ Approved" in card_text(m))
    keys = [r.headers["Idempotency-Key"] for r in fieldkit.decides(x)]
    assert len(keys) == 2 and keys[0] == first.idempotency_key and keys[1] != keys[0]
    assert (await outbox_of(h, action_id)).idempotency_key == keys[1]


async def test_another_409_adopts_the_actions_state(harness: Harness, fieldkit: FakeFieldkit) -> None:
    h = harness
    await start(h, fieldkit)
    x, action_id, card = await carded(h, fieldkit)
    fieldkit.actions[x]["status"] = "rejected"  # decided in Fieldkit meanwhile
    await approve(h, card)
    card = await h.wait_for(lambda: (m := card_of(h.slack, x)) and "🚫 Rejected" in card_text(m) and m, timeout=15)
    assert "Conflict" in card_text(card)
    assert fieldkit.decisions == []
    await h.wait_for(lambda: [e for e in h.slack.ephemerals if e.get("user") == APPROVER])


async def test_a_decision_made_in_fieldkit_is_seen_on_the_card(harness: Harness, fieldkit: FakeFieldkit) -> None:
    h = harness
    await start(h, fieldkit)
    x, action_id, _ = await carded(h, fieldkit)
    fieldkit.actions[x]["status"] = "pending"
    card = await until(h, lambda: (m := card_of(h.slack, x)) and "✅ Approved" in card_text(m) and m)
    assert not buttons(card)
    assert h.bot is not None
    async with h.bot.db.read() as session:
        action = await queries.get_action(session, action_id=action_id)
    assert action is not None and action.status == Status.APPROVED.value
