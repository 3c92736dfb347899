"""Nothing waits forever unnoticed, and routes pick channel, approvers and timings: the real
bot against the fakes, with a clock the test moves and the reminder job run by hand."""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bot import ids
from tests.conftest import APPROVER, CHANNEL, GROUP, OTHER_APPROVER, Harness
from tests.fakes.cards import buttons, card_for, card_text, click, ephemerals_for, open_modal, submit
from tests.fakes.clock import FakeClock
from tests.fakes.slack_api import Message

ESCALATION = "C0ESCALATE"
CREATIVE = "C0CREATIVE"


@pytest.fixture
def clock() -> FakeClock:
    # Noon UTC on a fixed day, so quiet hours are predictable.
    return FakeClock(datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0))


async def remind(h: Harness) -> None:
    await h.run_job("reminders")
    await h.run_job("cards")
    await h.run_job("notices")


def thread(h: Harness, card: Message) -> list[Message]:
    return [m for m in h.slack.messages_in(card.channel) if m.thread_ts == card.ts and m.ts != card.ts]


def reminders(h: Harness, card: Message) -> list[Message]:
    return [m for m in thread(h, card) if "waited" in (m.text or "")]


async def test_a_waiting_action_is_reminded_about_once_mentioning_its_approvers(harness: Harness, clock: FakeClock) -> None:
    h = harness
    action = h.flokit.add_action(
        rollback_conditions=["If blended ROAS drops >15% within 7 days", "If the brand team objects"]
    )
    await h.start(clock=clock)
    card = await card_for(h, action["id"])
    clock.advance(timedelta(hours=3, minutes=59))
    await remind(h)
    assert not reminders(h, card)
    clock.advance(timedelta(minutes=2))
    await remind(h)
    clock.advance(timedelta(hours=1))
    await remind(h)
    [reminder] = reminders(h, card)
    text = reminder.text or ""
    assert f"<@{APPROVER}>" in text and f"<@{OTHER_APPROVER}>" in text and f"<!subteam^{GROUP}>" in text
    assert "If the brand team objects" in html.unescape(text), "conditions left to a person are listed"
    assert "If blended ROAS" not in text


async def test_escalation_reposts_the_card_with_working_buttons(harness: Harness, clock: FakeClock) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start(clock=clock, escalation_channel=ESCALATION, escalate_after_seconds=8 * 3600)
    card = await card_for(h, action["id"])
    clock.advance(timedelta(hours=9))
    await remind(h)
    await remind(h)
    [escalated] = [m for m in h.slack.messages_in(ESCALATION)]
    assert escalated.thread_ts is None and "Escalated" in (escalated.text or "")
    assert f"<#{CHANNEL}>" in (escalated.text or "")
    assert set(buttons(escalated)) == {ids.APPROVE, ids.REJECT}
    modal = await open_modal(h, escalated, ids.APPROVE, APPROVER)
    status, _ = await submit(h, modal, APPROVER, "escalated, approving")
    assert status == 200
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    assert len(h.flokit.calls("POST", "/approve")) == 1
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})
    # The escalated copy follows the card: no Approve left on it.
    await h.wait_for(lambda: set(buttons(h.slack.messages[(ESCALATION, escalated.ts)])) == {ids.ROLLBACK})


async def test_without_an_escalation_channel_nothing_is_escalated(harness: Harness, clock: FakeClock) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start(clock=clock, escalate_after_seconds=3600)
    await card_for(h, action["id"])
    clock.advance(timedelta(days=2))
    await remind(h)
    assert [c.params.get("channel") for c in h.slack.calls_to("chat.postMessage") if not c.params.get("thread_ts")] == [CHANNEL]


async def test_expiry_removes_the_buttons_and_refuses_late_clicks_until_upstream_moves(
    harness: Harness, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start(clock=clock, expire_after_seconds=24 * 3600)
    card = await card_for(h, action["id"])
    clock.advance(timedelta(hours=25))
    await remind(h)
    await h.wait_for(lambda: not buttons(h.slack.messages[(CHANNEL, card.ts)]))
    assert "Expired" in card_text(h.slack.messages[(CHANNEL, card.ts)])
    assert any("Expired" in (m.text or "") for m in thread(h, card))
    status, _ = await click(h, card, ids.APPROVE, APPROVER)  # a stale Approve button
    assert status == 200
    await h.wait_for(lambda: ephemerals_for(h, APPROVER))
    assert not h.flokit.calls("POST", "/approve")
    await h.poll()  # still ready upstream: stays expired here
    assert "Expired" in card_text(h.slack.messages[(CHANNEL, card.ts)])
    h.flokit.set_status(action["id"], "approved")  # decided in FloKit's own UI: its word wins
    await h.poll()
    await h.run_job("cards")
    assert "Approved" in card_text(h.slack.messages[(CHANNEL, card.ts)])


async def test_quiet_hours_hold_reminders_until_they_end(harness: Harness, clock: FakeClock) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start(clock=clock, quiet_hours="16:00-08:00")
    card = await card_for(h, action["id"])
    clock.advance(timedelta(hours=5))  # 17:00 UTC, quiet
    await remind(h)
    assert not reminders(h, card)
    clock.advance(timedelta(hours=15, minutes=30))  # 08:30 next day
    await remind(h)
    assert len(reminders(h, card)) == 1


# ---- routing ---------------------------------------------------------------------------------


async def test_routes_pick_channel_approvers_and_timings_by_type(
    harness: Harness, clock: FakeClock, tmp_path: Any
) -> None:
    h = harness
    config = tmp_path / "signoff.toml"
    config.write_text(
        f'[[routes]]\ntypes = ["creative_pause"]\nchannel = "{CREATIVE}"\napprovers = ["{OTHER_APPROVER}"]\n'
        'remind_after = "1h"\n'
    )
    budget = h.flokit.add_action()
    creative = h.flokit.add_action(type="creative_pause")
    await h.start(clock=clock, signoff_config=str(config))
    budget_card = await card_for(h, budget["id"])
    assert budget_card.channel == CHANNEL

    def creative_card() -> Message | None:
        for m in h.slack.messages_in(CREATIVE):
            if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == creative["id"]:
                return m
        return None

    card = await h.wait_for(creative_card)
    # APPROVER may decide budget shifts (APPROVERS) but not creative pauses (the route's list).
    status, _ = await click(h, card, ids.APPROVE, APPROVER)
    assert status == 200
    await h.wait_for(lambda: ephemerals_for(h, APPROVER))
    assert not h.slack.views
    modal = await open_modal(h, card, ids.APPROVE, OTHER_APPROVER)
    await submit(h, modal, OTHER_APPROVER, None)
    await h.wait_for(lambda: h.flokit.actions[creative["id"]]["status"] == "approved")

    clock.advance(timedelta(hours=1, minutes=5))
    await remind(h)
    assert not reminders(h, budget_card), "budget shifts keep the 4h default"
