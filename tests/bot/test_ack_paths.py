"""How much store work a person waits for: the transactions a click and a decision open
before Slack gets its answer (the ack path), counted, not timed."""

from __future__ import annotations

from bot import ids
from tests.conftest import APPROVER, OUTSIDER, Harness
from tests.fakes.cards import card_for, click, open_modal, submit


async def test_a_click_is_answered_after_one_read_and_a_decision_after_a_read_and_a_write(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    bot = await h.start()
    await h.poll()
    card = await card_for(h, action["id"])
    before = bot.db.transactions.writes

    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    paths = bot.ack_paths
    assert paths.requests["block_actions"] == 1
    assert paths.most["block_actions"] == 1  # the check (and the modal's content) from one read
    assert bot.db.transactions.writes == before  # a click writes nothing

    status, _ = await submit(h, modal, APPROVER, "fine")
    assert status == 200
    assert paths.requests["view_submission"] == 1
    assert paths.most["view_submission"] == 2  # the action read, then the decision's one write
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")


async def test_a_refused_click_opens_no_more_than_a_granted_one(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    bot = await h.start()
    await h.poll()
    card = await card_for(h, action["id"])
    status, _ = await click(h, card, ids.APPROVE, OUTSIDER)
    assert status == 200
    assert bot.ack_paths.most["block_actions"] == 1
