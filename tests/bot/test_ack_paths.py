"""How much store work a person waits for: the transactions a click and a decision open
before Slack gets its answer (the ack path), counted, not timed."""

from __future__ import annotations

from typing import Any

from app import Signoff
from bot import ids
from tests.conftest import APPROVER, OUTSIDER, Harness
from tests.fakes.cards import audit, card_for, card_row, change_action, click, ephemerals_for, open_modal, submit


async def _clicked(h: Harness, **start: Any) -> tuple[Signoff, dict[str, Any], dict[str, Any]]:
    """A bot with one card, clicked: the bot, the upstream action, the approve modal opened."""
    action = h.flokit.add_action()
    bot = await h.start(**start)
    await h.poll()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    return bot, action, modal


async def test_a_click_is_answered_after_one_read_and_its_decision_after_one_write(harness: Harness) -> None:
    h = harness
    bot, action, modal = await _clicked(h)
    paths = bot.ack_paths
    assert paths.requests["block_actions"] == 1
    assert paths.most["block_actions"] == 1  # the check (and the modal's content) from one read
    assert paths.writes["block_actions"] == 0  # a click writes nothing

    status, _ = await submit(h, modal, APPROVER, "fine")
    assert status == 200
    assert paths.requests["view_submission"] == 1
    # The decision's one write, from the action as the click's check read it (unchanged since).
    assert paths.most["view_submission"] == 1 and paths.writes["view_submission"] == 1
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")


async def test_a_decision_without_a_click_here_reads_the_action_first(harness: Harness) -> None:
    # The modal was opened through another replica, or before a restart: nothing kept here.
    h = harness
    bot, action, modal = await _clicked(h)
    row = await card_row(h, action["id"])
    assert row is not None
    assert bot.db.hot.kept(action_id=row.action_id) is not None  # forgets what the click kept
    status, _ = await submit(h, modal, APPROVER, "fine")
    assert status == 200
    assert bot.ack_paths.most["view_submission"] == 2  # the action read, then the decision's write
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")


async def test_an_action_changed_after_the_click_is_decided_as_it_now_is(harness: Harness, tmp_path: Any) -> None:
    # After the click, the action's risk became high, where two approvers are needed: the
    # decision counts one approval of two, as the stored action says, not the click's read.
    h = harness
    config = tmp_path / "signoff.toml"
    config.write_text('[[routes]]\nrisk = ["high"]\nrequired_approvals = 2\n')
    bot, action, modal = await _clicked(h, signoff_config=str(config))
    row = await card_row(h, action["id"])
    assert row is not None
    await change_action(bot.db, row.action_id, risk="high")
    status, answer = await submit(h, modal, APPROVER, "fine")
    assert status == 200 and answer in ("", "{}")
    await h.wait_for(lambda: any("1 of 2" in e for e in ephemerals_for(h, APPROVER)))
    await h.run_job("outbox")  # a queued approval would be sent now
    assert not h.flokit.calls("POST", "/approve")
    assert [d.event for d in await audit(h, action["id"])][-1] != "requested"


async def test_a_refused_click_opens_no_more_than_a_granted_one(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    bot = await h.start()
    await h.poll()
    card = await card_for(h, action["id"])
    status, _ = await click(h, card, ids.APPROVE, OUTSIDER)
    assert status == 200
    assert bot.ack_paths.most["block_actions"] == 1
