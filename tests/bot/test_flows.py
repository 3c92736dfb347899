"""The approval loop end to end: the real bot (``app.Signoff``) against the fake FloKit and the
fake Slack Web API over loopback HTTP, driven by signed Slack requests built from the real
request shapes. Runs on SQLite and, where reachable, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot import ids
from core.deliver import RetryPolicy
from store.models import AuditEvent
from tests.conftest import (
    APPROVER,
    APPROVER_EMAIL,
    CHANNEL,
    GROUP_MEMBER,
    OTHER_APPROVER,
    OUTSIDER,
    Harness,
)
from tests.fakes.cards import audit, buttons, card_for, card_row, card_text, click, ephemerals_for, open_modal, submit
from tests.fakes.slack_api import SlackError
from tests.fakes.slack_requests import block_action_body, view_submission_body


# ---- poll and cards ---------------------------------------------------------------------


async def test_each_ready_action_gets_exactly_one_card_across_polls_and_restarts(harness: Harness) -> None:
    h = harness
    first = h.flokit.add_action()
    second = h.flokit.add_action(type="creative_pause")
    h.flokit.add_action(status="approved")  # not ready: never carded
    h.flokit.add_action(status="draft")
    await h.start()
    one = await card_for(h, first["id"])
    await card_for(h, second["id"])
    await h.poll()
    await h.poll()
    await h.restart()
    await h.poll()
    await h.run_job("cards")  # the card sync after that poll has run: a second card would be posted by now
    posts = h.slack.calls_to("chat.postMessage")
    assert len(posts) == 2, [p.params.get("text") for p in posts]
    assert not h.slack.calls_to("conversations.history")  # only a crash mid-post needs a look
    assert first["title"] in card_text(one)
    assert set(buttons(one)) == {ids.APPROVE, ids.REJECT}


async def test_poll_pages_through_every_ready_action(harness: Harness) -> None:
    h = harness
    created = [h.flokit.add_action() for _ in range(130)]
    await h.start(digest_threshold=1000)  # a card each, not a digest
    await h.wait_for(lambda: len(h.slack.messages_in(CHANNEL)) == 130, timeout=30)
    lists = h.flokit.calls("GET", "/v1/actions")
    offsets = sorted({int(c.query.get("offset", 0)) for c in lists if c.query.get("status") == "ready"})
    assert offsets == [0, 100]
    assert {m.metadata["event_payload"]["external_id"] for m in h.slack.messages_in(CHANNEL)} == {
        a["id"] for a in created
    }


async def test_poll_survives_garbage_and_errors_and_recovers_next_cycle(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    h.flokit.fail_next("/v1/actions", status=200, body="<html>not json</html>", content_type="text/html")
    await h.start()
    await h.poll()  # the first poll (at start) got garbage; this one works
    await card_for(h, action["id"])
    h.flokit.fail_next("/v1/actions", status=503)
    await h.poll()
    second = h.flokit.add_action()
    h.flokit.fail_next(f"/v1/actions/{second['id']}", status=500)  # its detail fails once
    await h.poll()
    assert len(h.slack.messages_in(CHANNEL)) == 1
    await h.poll()
    await card_for(h, second["id"])


async def test_status_changed_upstream_updates_the_card(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    h.flokit.set_status(action["id"], "approved", approved_by="lead@flokit-ui.example")
    await h.poll()
    await h.wait_for(lambda: "lead@flokit-ui.example" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    updated = h.slack.messages[(CHANNEL, card.ts)]
    assert set(buttons(updated)) == {ids.ROLLBACK}
    h.flokit.set_status(action["id"], "rolled_back")  # not listable: found by reading the action
    await h.poll()
    await h.wait_for(lambda: not buttons(h.slack.messages[(CHANNEL, card.ts)]))
    trail = await audit(h, action["id"])
    assert [(d.event, d.to_status) for d in trail] == [
        (AuditEvent.DISCOVERED.value, "ready"),
        (AuditEvent.UPSTREAM.value, "approved"),
        (AuditEvent.UPSTREAM.value, "rolled_back"),
    ]


async def test_a_card_posted_but_unacknowledged_is_found_not_posted_again(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    answered = []

    def post_then_fail(params: dict[str, Any]) -> dict[str, Any]:
        if not answered:
            answered.append(h.slack._chat_post_message(params))  # Slack posted it ...
            raise SlackError("internal_error", status=500)  # ... but the answer was an error
        return h.slack._chat_post_message(params)

    h.slack.on("chat.postMessage", post_then_fail)
    await h.start()
    card = await card_for(h, action["id"])
    assert len(h.slack.calls_to("conversations.history")) == 1
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)  # the store knows the card's ts
    await submit(h, modal, APPROVER, None)
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})
    # One card; the thread below it gets the approval's notice, which is not a second card.
    assert [m.ts for m in h.slack.messages_in(CHANNEL) if m.thread_ts is None] == [card.ts]
    assert len([c for c in h.slack.calls_to("chat.postMessage") if not c.params.get("thread_ts")]) == 1


async def test_slack_rate_limits_are_honoured_and_no_card_is_lost(harness: Harness) -> None:
    h = harness
    actions = [h.flokit.add_action() for _ in range(3)]
    h.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    h.slack.fail_next("chat.postMessage", error="ratelimited")
    await h.start()
    for action in actions:
        await card_for(h, action["id"])
    assert len(h.slack.messages_in(CHANNEL)) == 3


# ---- approve, reject, rollback ---------------------------------------------------------------


async def test_approve_with_note_reaches_flokit_and_the_card(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    assert modal["callback_id"] == ids.APPROVE_VIEW
    status, answer = await submit(h, modal, APPROVER, "Aligned with Q1 plan")
    assert status == 200 and answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))
    [call] = h.flokit.calls("POST", "/approve")
    assert call.json == {"approved_by": APPROVER_EMAIL, "note": "Aligned with Q1 plan"}
    assert h.flokit.actions[action["id"]]["status"] == "approved"
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})
    final = card_text(h.slack.messages[(CHANNEL, card.ts)])
    assert f"<@{APPROVER}>" in final and "Aligned with Q1 plan" in final
    async def settled() -> bool:
        row = await card_row(h, action["id"])
        return row is not None and not row.dirty and row.rendered_version == row.wanted_version

    await h.wait_for(settled)
    trail = await audit(h, action["id"])
    assert [(d.event, d.actor, d.to_status) for d in trail] == [
        ("discovered", "upstream", "ready"),
        ("requested", APPROVER, "approving"),
        ("confirmed", APPROVER, "approved"),
    ]


async def test_running_upstream_still_credits_the_slack_approval(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, modal, APPROVER, "ship it")
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    h.flokit.set_status(action["id"], "running")
    await h.poll()
    await h.wait_for(lambda: "Running" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    text = card_text(h.slack.messages[(CHANNEL, card.ts)])
    assert f"<@{APPROVER}>" in text and "ship it" in text
    assert "in FloKit" not in text


async def test_card_shows_approving_between_ack_and_upstream_answer(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    h.flokit.fail_next("/approve", status=503, times=1, delay=1.0)  # slow, then failing once
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _ = await submit(h, modal, APPROVER, None)
    assert status == 200
    assert loop.time() - started < 1.0, "the ack waited for the upstream"
    await h.wait_for(lambda: "Approving" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    assert h.flokit.calls("POST", "/approve")[-1].json == {"approved_by": APPROVER_EMAIL}


async def test_reject_requires_a_reason_and_sends_it(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.REJECT, OTHER_APPROVER)
    assert modal["callback_id"] == ids.REJECT_VIEW
    status, answer = await submit(h, modal, OTHER_APPROVER, "   ")
    assert status == 200 and json.loads(answer)["response_action"] == "errors"
    assert not h.flokit.calls("POST", "/reject")
    status, answer = await submit(h, modal, OTHER_APPROVER, "Creative refresh next week")
    assert status == 200 and answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.calls("POST", "/reject"))
    assert h.flokit.calls("POST", "/reject")[0].json == {
        "rejected_by": "other@example.com",
        "reason": "Creative refresh next week",
    }
    await h.wait_for(lambda: "Creative refresh next week" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    assert not buttons(h.slack.messages[(CHANNEL, card.ts)])


async def test_rollback_after_confirmation(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action(status="ready")
    await h.start()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, modal, APPROVER, None)
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    current = h.slack.messages[(CHANNEL, card.ts)]
    assert "confirm" in buttons(current)[ids.ROLLBACK]
    status, _ = await click(h, current, ids.ROLLBACK, OTHER_APPROVER)
    assert status == 200
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "rolled_back")
    await h.wait_for(lambda: not buttons(h.slack.messages[(CHANNEL, card.ts)]))
    assert len(h.flokit.calls("POST", "/rollback")) == 1


async def test_group_member_may_decide_and_falls_back_to_user_id(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, GROUP_MEMBER)
    await submit(h, modal, GROUP_MEMBER, None)
    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))
    assert h.flokit.calls("POST", "/approve")[0].json == {"approved_by": GROUP_MEMBER}


# ---- refusals -------------------------------------------------------------------------------


async def test_outsider_is_told_and_nothing_is_recorded(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    status, _ = await click(h, card, ids.APPROVE, OUTSIDER)
    assert status == 200
    await h.wait_for(lambda: ephemerals_for(h, OUTSIDER))
    assert not h.slack.views
    # A forged modal submission by the outsider (as if they had the modal) is refused too.
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    status, answer = await submit(h, modal, OUTSIDER, "me")
    assert json.loads(answer)["response_action"] == "errors"
    trail = await audit(h, action["id"])
    assert [d.event for d in trail] == ["discovered"]
    assert not h.flokit.calls("POST", "/approve")


async def test_button_value_edited_to_another_action_is_refused(harness: Harness) -> None:
    h = harness
    first = h.flokit.add_action()
    second = h.flokit.add_action()
    await h.start()
    card = await card_for(h, first["id"])
    other = await card_for(h, second["id"])
    other_value = buttons(other)[ids.APPROVE]["value"]
    status, _ = await click(h, card, ids.APPROVE, APPROVER, value=other_value)
    assert status == 200
    await h.wait_for(lambda: ephemerals_for(h, APPROVER))
    assert not h.slack.views
    status, _ = await click(h, card, ids.APPROVE, APPROVER, value="not-a-number")
    assert status == 200
    await h.wait_for(lambda: len(ephemerals_for(h, APPROVER)) == 2)
    assert not h.slack.views


async def test_twenty_racing_submissions_have_one_winner(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    approve = await open_modal(h, card, ids.APPROVE, APPROVER)
    reject = await open_modal(h, card, ids.REJECT, OTHER_APPROVER)
    lead = await open_modal(h, card, ids.APPROVE, GROUP_MEMBER)
    plan = [(approve, APPROVER), (reject, OTHER_APPROVER), (lead, GROUP_MEMBER)] * 7
    answers = await asyncio.gather(*[submit(h, view, user, f"text {i}") for i, (view, user) in enumerate(plan[:20])])
    assert all(status == 200 for status, _ in answers)
    trail = await audit(h, action["id"])
    [won] = [d for d in trail if d.event == "requested"]
    for (view, user), (_, answer) in zip(plan[:20], answers):
        same = user == won.actor and view["callback_id"] == (ids.APPROVE_VIEW if won.op == "approve" else ids.REJECT_VIEW)
        if same:
            assert answer in ("", "{}")  # the winner's own duplicates just close the modal
        else:
            loser = json.loads(answer)
            assert loser["response_action"] == "errors"
            assert f"<@{won.actor}>" in next(iter(loser["errors"].values()))
    await h.wait_for(lambda: len(h.flokit.calls("POST", "/approve")) + len(h.flokit.calls("POST", "/reject")) == 1)
    await h.wait_for(lambda: not buttons(h.slack.messages[(CHANNEL, card.ts)]) or ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    # The stale Approve button on the decided card explains instead of opening a modal.
    views_before = len(h.slack.views)
    await click(h, card, ids.APPROVE, OTHER_APPROVER)
    await h.wait_for(lambda: ephemerals_for(h, OTHER_APPROVER))
    assert len(h.slack.views) == views_before
    assert len(h.flokit.calls("POST", "/approve")) + len(h.flokit.calls("POST", "/reject")) == 1


async def test_a_redelivered_submission_is_one_decision_and_one_call(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    body = view_submission_body(
        user_id=APPROVER, callback_id=view["callback_id"], private_metadata=view["private_metadata"],
        values={ids.NOTE_BLOCK: {ids.NOTE_INPUT: "once"}},
    )
    first = await h.requester.post(body)
    again = await h.requester.post(body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert first[0] == again[0] == 200 and again[1] in ("", "{}")
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    # A Rollback click delivered twice: one decision, the second told it is under way or done.
    current = h.slack.messages[(CHANNEL, card.ts)]
    await asyncio.gather(click(h, current, ids.ROLLBACK, APPROVER), click(h, current, ids.ROLLBACK, APPROVER))
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "rolled_back")
    await h.wait_for(lambda: not buttons(h.slack.messages[(CHANNEL, card.ts)]))
    events = [(d.event, d.op) for d in await audit(h, action["id"])]
    assert events.count(("requested", "approve")) == 1 and events.count(("requested", "rollback")) == 1
    assert len(h.flokit.calls("POST", "/approve")) == 1 and len(h.flokit.calls("POST", "/rollback")) == 1


async def test_forged_and_stale_signatures_are_refused(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    body = block_action_body(
        user_id=APPROVER, action_id=ids.APPROVE, value=buttons(card)[ids.APPROVE]["value"],
        channel=card.channel, message_ts=card.ts,
    )
    status, _, _ = await h.requester.post(body, sign_with="not-the-secret")
    assert status == 401
    status, _, _ = await h.requester.post(body, tamper=True)
    assert status == 401
    import time

    status, _, _ = await h.requester.post(body, timestamp=int(time.time()) - 301)
    assert status == 401
    assert not h.slack.views


# ---- the outbox: faults, conflicts, restarts -------------------------------------------------


async def test_conflict_adopts_upstream_state_and_tells_the_clicker(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    h.flokit.set_status(action["id"], "rejected")  # decided in FloKit's own UI meanwhile
    await submit(h, modal, APPROVER, None)
    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))
    await h.wait_for(lambda: ephemerals_for(h, APPROVER))
    await h.wait_for(lambda: "Rejected" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    assert not buttons(h.slack.messages[(CHANNEL, card.ts)])
    trail = await audit(h, action["id"])
    assert [(d.event, d.to_status) for d in trail][-1] == ("conflict", "rejected")


async def test_upstream_5xx_then_recovery_delivers_once(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    h.flokit.fail_next("/approve", status=503, times=2)
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, modal, APPROVER, None)
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    assert len(h.flokit.calls("POST", "/approve")) == 3
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))


async def test_lost_answer_is_reconciled_not_applied_twice(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    # FloKit approves but the answer is garbage; the retry gets 409 and reads the action.
    h.flokit.fail_next("/approve", status=200, body="oops", content_type="text/plain", after_effect=True)
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, modal, APPROVER, None)
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    trail = await audit(h, action["id"])
    assert [d.event for d in trail][-1] == "confirmed"
    assert not ephemerals_for(h, APPROVER)


async def test_permanent_failure_shows_retry_which_delivers(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    h.flokit.fail_next("/approve", status=422)
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, modal, APPROVER, "go")
    await h.wait_for(lambda: ids.RETRY in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    assert h.flokit.actions[action["id"]]["status"] == "ready"
    await h.wait_for(lambda: ephemerals_for(h, APPROVER))
    status, _ = await click(h, h.slack.messages[(CHANNEL, card.ts)], ids.RETRY, OTHER_APPROVER)
    assert status == 200
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    assert [c.json for c in h.flokit.calls("POST", "/approve")] == [
        {"approved_by": APPROVER_EMAIL, "note": "go"},
        {"approved_by": APPROVER_EMAIL, "note": "go"},
    ]
    trail = await audit(h, action["id"])
    assert [d.event for d in trail] == ["discovered", "requested", "failed", "retried", "confirmed"]


async def test_pending_decision_survives_a_restart(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    # A bot whose upstream calls keep failing (connection reset): the decision is durable,
    # its call pending with backoff when the bot stops.
    h.flokit.fail_next("/approve", status=0, times=1000)
    await h.start(retry=RetryPolicy(base_seconds=1, cap_seconds=1, max_attempts=100))
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, modal, APPROVER, "after restart")
    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))
    await h.stop()
    assert h.flokit.actions[action["id"]]["status"] == "ready"
    h.flokit.clear_faults()
    await h.start()
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved", timeout=15)
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    assert h.flokit.calls("POST", "/approve")[-1].json == {"approved_by": APPROVER_EMAIL, "note": "after restart"}
    trail = await audit(h, action["id"])
    assert [d.event for d in trail].count("confirmed") == 1


async def test_unknown_action_id_is_a_clear_4xx(harness: Harness) -> None:
    h = harness
    await h.start()
    body = block_action_body(user_id=APPROVER, action_id="somebody.else", value="1", channel=CHANNEL, message_ts="1.1")
    status, _, _ = await h.requester.post(body)
    assert status == 404


@pytest.mark.parametrize("path", ["/healthz"])
async def test_health(harness: Harness, path: str) -> None:
    h = harness
    await h.start()
    async with h.http.get(f"http://127.0.0.1:{h.bot.port}{path}") as response:  # type: ignore[union-attr]
        assert response.status == 200
        assert (await response.json())["ok"] is True
