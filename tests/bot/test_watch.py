"""The rollback watch end to end: the real bot against fake FloKit, fake Slack and a fake
metrics endpoint over loopback HTTP, with a clock the test moves. The watch job is run by
hand (its interval is an hour), so each check happens exactly when the test says."""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from app import Signoff
from bot import ids
from store import queries
from store.db import TALLY, Transactions
from store.models import Watch
from tests.conftest import APPROVER, CHANNEL, OTHER_APPROVER, Harness
from tests.fakes.cards import buttons, card_for, card_text, click, open_modal, submit
from tests.fakes.clock import FakeClock
from tests.fakes.metrics import FakeMetrics
from tests.fakes.slack_api import Message, SlackError

ROAS = "blended_roas"
CONVERSION = "meta_search_trial_conversion_rate"
HOUR = 3600


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def metrics(clock: FakeClock) -> AsyncIterator[FakeMetrics]:
    async with FakeMetrics(clock=clock) as fake:
        yield fake


async def start(h: Harness, metrics: FakeMetrics, clock: FakeClock, **overrides: Any) -> Signoff:
    values: dict[str, Any] = {
        "metrics_url": metrics.url,
        "rollback_check_interval_seconds": HOUR,
        "metrics_max_age_seconds": 2 * HOUR,
    }
    values.update(overrides)
    return await h.start(clock=clock, **values)


async def approve(h: Harness, external_id: str, user: str = APPROVER) -> Message:
    """Approve through Slack and wait until FloKit has it and the watch is set up."""
    card = await card_for(h, external_id)
    modal = await open_modal(h, card, ids.APPROVE, user)
    status, _ = await submit(h, modal, user, "go")
    assert status == 200
    await h.wait_for(lambda: h.flokit.actions[external_id]["status"] == "approved")
    await h.wait_for(lambda: watches(h, external_id))
    return card


async def watches(h: Harness, external_id: str) -> list[Watch]:
    assert h.bot is not None
    async with h.bot.db.read() as session:
        known = await queries.known_actions(session, source="flokit", external_ids=[external_id])
        return list(await queries.watches_for(session, action_id=known[external_id][0]))


def thread(h: Harness, card: Message) -> list[Message]:
    return [m for m in h.slack.messages_in(CHANNEL) if m.thread_ts == card.ts and m.ts != card.ts]


def alerts(h: Harness, card: Message) -> list[Message]:
    return [m for m in thread(h, card) if "Rollback condition tripped" in (m.text or "")]


async def check(h: Harness, bot: Signoff | None = None) -> None:
    """One run of the watch, then the thread notices it owes."""
    await h.run_job("watch", bot)
    await h.run_job("notices", bot)


async def settle(h: Harness) -> None:
    await h.run_job("outbox")
    await h.run_job("cards")
    await h.run_job("notices")


def card_now(h: Harness, card: Message) -> Message:
    return h.slack.messages[(CHANNEL, card.ts)]


# ---- before approval: what will be watched ----------------------------------------------


async def test_the_card_shows_each_parsed_rule_and_an_unparsed_one_as_checked_by_a_person(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action(
        rollback_conditions=[
            "If blended ROAS drops >15% within 7 days of execution",
            "If Meta Search trial conversion rate falls below 0.65",
            "If the brand team objects",
        ]
    )
    await start(h, metrics, clock)
    card = await card_for(h, action["id"])
    text = html.unescape(card_text(card))
    assert "blended_roas drops >15% vs value at execution · within 7d" in text
    assert "meta_search_trial_conversion_rate < 0.65 · while running" in text
    assert "checked by a person" in text and "If the brand team objects" in text


# ---- trips, alerts and the Rollback button --------------------------------------------------


async def test_a_trip_alerts_once_in_thread_and_channel_and_its_rollback_button_works(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action()
    metrics.set(ROAS, 3.2)
    metrics.set(CONVERSION, 0.8)
    await start(h, metrics, clock)
    card = await approve(h, action["id"])
    await check(h)  # the baseline: 3.2 at execution
    [roas, conversion] = await watches(h, action["id"])
    assert roas.baseline == 3.2 and conversion.baseline is None
    assert not alerts(h, card)

    metrics.set(ROAS, 2.5)  # down 21.9%
    clock.advance(timedelta(hours=1))
    await check(h)
    clock.advance(timedelta(hours=1))
    await check(h)  # still tripped: no second alert

    [alert] = alerts(h, card)
    assert alert.reply_broadcast, "a trip is also shown in the channel"
    assert f"<@{APPROVER}>" in (alert.text or "")
    assert "blended_roas drops >15% vs value at execution" in html.unescape(alert.text or "")
    assert "2.5" in (alert.text or "") and "3.2" in (alert.text or "")
    assert ids.ROLLBACK in buttons(alert)
    assert not h.flokit.calls("POST", "/rollback"), "auto-rollback is off by default"
    await settle(h)
    assert "tripped" in card_text(card_now(h, card))

    status, _ = await click(h, alert, ids.ROLLBACK, OTHER_APPROVER)
    assert status == 200
    await h.wait_for(lambda: h.flokit.calls("POST", "/rollback"))
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "rolled_back")
    await settle(h)
    await h.wait_for(lambda: any("Rolled back" in (m.text or "") for m in thread(h, card)))
    assert len(h.flokit.calls("POST", "/rollback")) == 1
    await h.run_job("cards")
    now_alert = h.slack.messages[(CHANNEL, alert.ts)]
    assert ids.ROLLBACK not in buttons(now_alert), "no stale Rollback once it is rolled back"
    assert "Rolled back" in card_text(now_alert)
    clock.advance(timedelta(hours=1))
    await check(h)
    assert all(not w.active for w in await watches(h, action["id"])), "a rolled-back action is no longer watched"


async def test_an_outsider_cannot_use_the_alerts_rollback_button(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action()
    metrics.set(ROAS, 3.0)
    metrics.set(CONVERSION, 0.5)  # below 0.65 from the first check
    await start(h, metrics, clock)
    card = await approve(h, action["id"])
    await check(h)
    [alert] = alerts(h, card)
    status, _ = await click(h, alert, ids.ROLLBACK, "U0OUTSIDER1")
    assert status == 200  # the ack comes only after a rollback would have been committed
    await h.run_job("outbox")  # a queued rollback would be sent now
    assert not h.flokit.calls("POST", "/rollback")
    assert h.flokit.actions[action["id"]]["status"] == "approved"


# ---- auto-rollback ------------------------------------------------------------------------


async def test_auto_rollback_with_two_replicas_rolls_back_exactly_once(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action()
    metrics.set(ROAS, 3.2)
    metrics.set(CONVERSION, 0.9)
    first = await start(h, metrics, clock, auto_rollback=True)
    card = await approve(h, action["id"])
    await check(h)
    second = await start(h, metrics, clock, auto_rollback=True)

    metrics.set(ROAS, 2.0)
    clock.advance(timedelta(hours=1))
    await asyncio.gather(h.run_job("watch", first), h.run_job("watch", second))
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "rolled_back")
    await asyncio.gather(settle(h), h.run_job("outbox", first))
    await h.wait_for(lambda: any("automatically by Signoff" in (m.text or "") for m in thread(h, card)))

    assert len(h.flokit.calls("POST", "/rollback")) == 1
    [alert] = alerts(h, card)
    assert ids.ROLLBACK not in buttons(alert), "nothing to click: Signoff is rolling it back"
    assert "rolling it back" in (alert.text or "")
    async with first.db.read() as session:
        known = await queries.known_actions(session, source="flokit", external_ids=[action["id"]])
        trail = list(await queries.audit_trail(session, action_id=known[action["id"]][0]))
    rollbacks = [(d.event, d.actor) for d in trail if d.op == "rollback"]
    assert rollbacks == [("requested", "signoff"), ("confirmed", "signoff")]
    requested = next(d for d in trail if d.op == "rollback")
    assert requested.note and "blended_roas drops >15%" in requested.note


async def test_auto_rollback_per_action_type_from_signoff_toml(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock, tmp_path: Any
) -> None:
    h = harness
    config = tmp_path / "signoff.toml"
    config.write_text('[[routes]]\ntypes = ["budget_shift"]\nauto_rollback = true\n')
    budget = h.flokit.add_action()
    pause = h.flokit.add_action(type="creative_pause", rollback_conditions=["If blended ROAS drops >15%"])
    metrics.set(ROAS, 3.0)
    metrics.set(CONVERSION, 0.9)
    await start(h, metrics, clock, signoff_config=str(config))  # AUTO_ROLLBACK stays false
    await approve(h, budget["id"])
    pause_card = await approve(h, pause["id"])
    await check(h)
    metrics.set(ROAS, 1.0)
    clock.advance(timedelta(hours=1))
    await check(h)
    await h.wait_for(lambda: h.flokit.actions[budget["id"]]["status"] == "rolled_back")
    assert h.flokit.actions[pause["id"]]["status"] == "approved"
    [alert] = alerts(h, pause_card)
    assert ids.ROLLBACK in buttons(alert)


async def test_auto_rollback_on_a_route_restricted_by_risk_applies_to_that_risk_only(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock, tmp_path: Any
) -> None:
    h = harness
    config = tmp_path / "signoff.toml"
    config.write_text('[[routes]]\ntypes = ["budget_shift"]\nrisk = ["high"]\nauto_rollback = true\n')
    high = h.flokit.add_action(rollback_conditions=["If blended ROAS drops >15%"])
    h.flokit.actions[high["id"]]["risk"] = "high"
    low = h.flokit.add_action(rollback_conditions=["If blended ROAS drops >15%"])
    h.flokit.actions[low["id"]]["risk"] = "low"
    metrics.set(ROAS, 3.0)
    await start(h, metrics, clock, signoff_config=str(config))  # AUTO_ROLLBACK stays false
    high_card = await approve(h, high["id"])
    low_card = await approve(h, low["id"])
    await check(h)
    metrics.set(ROAS, 1.0)
    clock.advance(timedelta(hours=1))
    await check(h)
    await h.wait_for(lambda: h.flokit.actions[high["id"]]["status"] == "rolled_back")
    [high_alert] = alerts(h, high_card)
    assert ids.ROLLBACK not in buttons(high_alert) and "rolling it back" in (high_alert.text or "")
    await h.run_job("outbox")
    assert h.flokit.actions[low["id"]]["status"] == "approved"
    assert len(h.flokit.calls("POST", "/rollback")) == 1
    [low_alert] = alerts(h, low_card)
    assert ids.ROLLBACK in buttons(low_alert), "the low-risk action is left to a person"


# ---- recovery, re-trip, window --------------------------------------------------------------


async def test_recovery_rearms_and_a_second_trip_alerts_again(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action(rollback_conditions=["If Meta Search trial conversion rate falls below 0.65"])
    metrics.set(CONVERSION, 0.7)
    await start(h, metrics, clock)
    card = await approve(h, action["id"])
    await check(h)
    for value, expected_alerts in ((0.6, 1), (0.55, 1), (0.7, 1), (0.71, 1), (0.5, 2), (0.5, 2)):
        metrics.set(CONVERSION, value)
        clock.advance(timedelta(hours=1))
        await check(h)
        assert len(alerts(h, card)) == expected_alerts, value
    recovered = [m for m in thread(h, card) if "Back within limit" in (m.text or "")]
    assert len(recovered) == 1


async def test_the_window_ending_without_a_trip_is_noted_and_watching_stops(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action(rollback_conditions=["If blended ROAS drops >15% within 7 days of execution"])
    metrics.set(ROAS, 3.0)
    await start(h, metrics, clock)
    card = await approve(h, action["id"])
    await check(h)
    clock.advance(timedelta(days=6, hours=23))
    await check(h)
    assert (await watches(h, action["id"]))[0].active
    clock.advance(timedelta(hours=2))
    await check(h)
    [watch] = await watches(h, action["id"])
    assert not watch.active and watch.ended == "window_over"
    assert any("Window over" in (m.text or "") and "never tripped" in (m.text or "") for m in thread(h, card))
    seen = len(metrics.requests)
    metrics.set(ROAS, 0.1)  # far below, but no longer watched
    clock.advance(timedelta(days=1))
    await check(h)
    assert len(metrics.requests) == seen and not alerts(h, card)
    await settle(h)
    assert "window over" in card_text(card_now(h, card))


# ---- bad or missing metrics -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        ("down", "cannot read the metric"),
        ("garbage", "cannot read the metric"),
        ("500", "cannot read the metric"),
        ("missing", "no data"),
        ("stale", "stale data"),
    ],
)
async def test_missing_stale_or_broken_metrics_are_reported_never_read_as_fine(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock, fault: str, shown: str
) -> None:
    h = harness
    action = h.flokit.add_action(rollback_conditions=["If blended ROAS drops >15% within 7 days of execution"])
    await start(h, metrics, clock)
    metrics.set(ROAS, 3.0)
    card = await approve(h, action["id"])
    await check(h)  # the baseline
    if fault == "down":
        metrics.set_down(True)
    elif fault == "garbage":
        metrics.garbage_next("<html>oops</html>", content_type="text/html")
    elif fault == "500":
        metrics.fail_next(500)
    elif fault == "missing":
        metrics.remove(ROAS)
    else:
        metrics.set(ROAS, 3.0, observed_at=clock.now - timedelta(hours=5))
    clock.advance(timedelta(hours=1))
    await check(h)
    await settle(h)
    [watch] = await watches(h, action["id"])
    assert watch.active and not watch.tripped
    text = card_text(card_now(h, card))
    assert shown in text and "within limit" not in text
    assert not alerts(h, card)
    # It comes back: the card says so, and a real drop is still caught.
    metrics.set_down(False)
    metrics.set(ROAS, 2.0)
    clock.advance(timedelta(hours=1))
    await check(h)
    assert len(alerts(h, card)) == 1


async def test_without_a_metrics_source_rules_show_as_not_watched(harness: Harness, clock: FakeClock) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start(clock=clock, rollback_check_interval_seconds=HOUR)
    card = await approve(h, action["id"])
    await check(h)
    await settle(h)
    assert "no metrics source configured" in card_text(card_now(h, card))


# ---- the thread is the action's story ------------------------------------------------------


async def test_status_changes_seen_upstream_are_posted_in_the_thread(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action()
    metrics.set(ROAS, 3.0)
    metrics.set(CONVERSION, 0.9)
    await start(h, metrics, clock)
    card = await approve(h, action["id"])
    await settle(h)
    await h.wait_for(lambda: any("Approved" in (m.text or "") for m in thread(h, card)))
    h.flokit.set_status(action["id"], "running")
    await h.poll()
    await settle(h)
    await h.wait_for(lambda: any("Running" in (m.text or "") and "FloKit" in (m.text or "") for m in thread(h, card)))
    h.flokit.set_status(action["id"], "rolled_back")
    await h.poll()
    await settle(h)
    await h.wait_for(lambda: any("Rolled back" in (m.text or "") for m in thread(h, card)))
    texts = [m.text or "" for m in thread(h, card)]
    assert len(texts) == 3, texts  # approved, running, rolled back: each once
    clock.advance(timedelta(hours=1))
    await check(h)
    assert all(not w.active for w in await watches(h, action["id"]))


async def test_a_notice_posted_but_unacknowledged_is_found_in_the_thread_not_posted_again(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action()
    failed: list[Any] = []

    def post_then_fail(params: dict[str, Any]) -> dict[str, Any]:
        answer = h.slack._chat_post_message(params)  # Slack posted it ...
        if params.get("thread_ts") and not failed:
            failed.append(answer)
            raise SlackError("internal_error", status=500)  # ... but the answer was an error
        return answer

    h.slack.on("chat.postMessage", post_then_fail)
    await start(h, metrics, clock)
    card = await approve(h, action["id"])
    await h.wait_for(lambda: failed)
    for _ in range(3):  # past the retry's backoff, however the failed attempt's timing fell
        clock.advance(timedelta(minutes=5))
        await h.run_job("notices")
    approved = [m for m in thread(h, card) if "Approved" in (m.text or "")]
    assert len(approved) == 1
    assert h.slack.calls_to("conversations.replies")


async def test_a_run_reads_every_due_rule_and_writes_them_back_in_one_transaction_per_batch(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    """Three approved actions, two rules each: one run claims the six rules (one write) and
    writes all six checks back together (one write), a trip among them included."""
    h = harness
    actions = [h.flokit.add_action() for _ in range(3)]
    metrics.set(ROAS, 3.2)
    metrics.set(CONVERSION, 0.8)
    bot = await start(h, metrics, clock)
    cards = [await approve(h, a["id"]) for a in actions]
    await check(h)  # the baselines
    metrics.set(ROAS, 2.5)  # every action's ROAS rule trips
    clock.advance(timedelta(hours=1))
    await h.run_job("cards")
    await h.run_job("notices")
    await bot.settle_live()
    await bot.jobs["watch"].wait_idle()
    # The run's own transactions (TALLY): the process's other work (the scheduler's sweeps,
    # live card updates) may write meanwhile, and is not this run's.
    tally = Transactions()
    token = TALLY.set(tally)
    try:
        await bot.jobs["watch"].run()
    finally:
        TALLY.reset(token)
    # set-up finds nothing new (no write); one claim of the six due rules; one write-back
    assert tally.writes == 2
    for a in actions:
        roas, conversion = await watches(h, a["id"])
        assert roas.tripped and roas.checked_at == clock() and conversion.checked_at == clock()
    await h.run_job("notices", bot)
    assert all(len(alerts(h, card)) == 1 for card in cards)
