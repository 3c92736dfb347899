"""A decision recorded here is delivered here at once, under the lease its outbox entry was
given; a delivery that waited past half of it delivers only if the lease is still this
process's, so a sweep that took the entry over is never followed by a second send."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from app import Signoff
from bot import ids
from tests.conftest import APPROVER, CHANNEL, Harness
from tests.fakes.cards import card_for, card_text, open_modal, submit
from tests.fakes.clock import FakeClock
from tests.fakes.slack_api import Message


def decision_posts(h: Harness, external_id: str) -> int:
    return sum(
        1 for r in h.flokit.requests if r.method == "POST" and r.path == f"/v1/actions/{external_id}/approve"
    )


async def test_a_delivery_taken_over_by_the_sweep_is_not_sent_again(harness: Harness) -> None:
    h = harness
    clock = FakeClock()
    action = h.flokit.add_action()
    bot = await h.start(clock=clock)
    await h.poll()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    with bot.foreground.busy():  # a click in flight: the live delivery waits for it to end
        status, _ = await submit(h, modal, APPROVER, None)
        assert status == 200
        clock.now += timedelta(minutes=5)  # meanwhile its lease ran out, and the sweep took it over
        await bot.jobs["outbox"].run()
        assert decision_posts(h, action["id"]) == 1
    await bot.deliverer.drain(10)  # the live delivery wakes, finds the entry no longer its own
    assert decision_posts(h, action["id"]) == 1
    assert h.flokit.actions[action["id"]]["status"] == "approved"


async def test_a_decision_is_delivered_at_once_without_the_sweep(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    bot = await h.start()
    await h.poll()
    card = await card_for(h, action["id"])
    bot.scheduler.pause()  # no sweep runs from here on: only the live delivery can send it
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    assert (await submit(h, modal, APPROVER, "go"))[0] == 200
    await bot.deliverer.drain(10)
    assert decision_posts(h, action["id"]) == 1
    assert h.flokit.actions[action["id"]]["status"] == "approved"


async def _approve_modal_open(h: Harness, patience: float) -> tuple[dict[str, Any], Signoff, Message, dict[str, Any]]:
    """One action carded by a bot with this card patience, its approve modal open; no sweep
    runs from here on (only the live work renders the card)."""
    action = h.flokit.add_action()
    bot = await h.start(card_patience_seconds=patience)
    await h.poll()
    card = await card_for(h, action["id"])
    bot.scheduler.pause()
    return action, bot, card, await open_modal(h, card, ids.APPROVE, APPROVER)


async def test_a_decision_queued_behind_clicks_is_not_shown_in_flight_when_it_then_lands_at_once(
    harness: Harness,
) -> None:
    """A burst of clicks holds the live delivery back (the clicks first). The card's wait for a
    quick landing counts from when the upstream call starts, not from the click: so a decision
    that waited its turn here, then landed at once, is rendered once, landed, with no
    "Approving" in between."""
    h = harness
    patience = 1.0  # well below the clicks' own cap (Foreground: 3 s), well above a landing here
    action, bot, card, modal = await _approve_modal_open(h, patience)
    updates_before = len([c for c in h.slack.calls if c.method == "chat.update"])
    with bot.foreground.busy():  # clicks in flight, for longer than the card's patience
        assert (await submit(h, modal, APPROVER, "go"))[0] == 200
        await asyncio.sleep(patience)  # never returns early: the patience counted from the click is over
        assert decision_posts(h, action["id"]) == 0
    await h.wait_for(lambda: "Approved" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    await bot.deliverer.drain(10)
    await bot.card_updater.drain(10)
    assert decision_posts(h, action["id"]) == 1
    shown = [c for c in h.slack.calls if c.method == "chat.update"][updates_before:]
    assert len(shown) == 1, [c.params.get("text") for c in shown]
    assert "Approved" in card_text(h.slack.messages[(CHANNEL, card.ts)])


async def test_a_decision_left_for_a_retry_is_shown_in_flight_at_once(harness: Harness) -> None:
    """The upstream refused the first attempt (503, to be retried later): the card stops waiting
    for a quick landing and shows the decision in flight now, whatever patience was left."""
    h = harness
    action = h.flokit.add_action()
    bot = await h.start(card_patience_seconds=3600.0)  # without the release, an hour's wait for a quick landing
    await h.poll()
    card = await card_for(h, action["id"])
    bot.scheduler.pause()  # the retry never comes: only the live work acts
    h.flokit.fail_next("/approve", status=503, times=1)
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    assert (await submit(h, modal, APPROVER, "go"))[0] == 200
    await bot.deliverer.drain(10)
    assert decision_posts(h, action["id"]) == 1
    await h.wait_for(lambda: "Approving" in card_text(h.slack.messages[(CHANNEL, card.ts)]))


async def test_a_queued_decision_whose_upstream_is_slow_is_shown_in_flight_after_the_patience(
    harness: Harness,
) -> None:
    """A decision that waited its turn here (clicks in flight) and then meets a slow upstream is
    shown in flight once the card's patience has passed since its upstream call started: the
    delivery tells the card updater when it starts, so the card does not wait out the whole
    hold (10 s) that bounds a queued decision."""
    h = harness
    patience = 0.5
    action, bot, card, modal = await _approve_modal_open(h, patience)
    h.flokit.set_delay(6.0)  # the upstream answers long after the patience, well within the hold
    with bot.foreground.busy():  # clicks in flight: the delivery waits its turn
        assert (await submit(h, modal, APPROVER, "go"))[0] == 200
        await asyncio.sleep(patience)
    # Well before the hold would end it (10 s from the click), and while the call is under way.
    await h.wait_for(lambda: "Approving" in card_text(h.slack.messages[(CHANNEL, card.ts)]), timeout=5.0)
    assert decision_posts(h, action["id"]) == 1  # shown while its upstream call was under way
    h.flokit.set_delay(0.0)
    await bot.deliverer.drain(10)
