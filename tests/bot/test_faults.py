"""Faults and bad input (issue 3's table): each row checked against the real bot, on both
stores. Nothing a person decided is lost or applied twice; bad input gets a clear answer."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy.exc import OperationalError

from bot import ids
from tests.conftest import APPROVER, APPROVER_EMAIL, CHANNEL, OTHER_APPROVER, Harness
from tests.fakes.cards import audit, buttons, card_for, card_text, click, ephemerals_for, open_modal, submit
from tests.fakes.slack_requests import block_action_body


async def test_timestamps_more_than_five_minutes_off_either_way_are_refused(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    body = block_action_body(
        user_id=APPROVER, action_id=ids.ROLLBACK, value=buttons(card)[ids.APPROVE]["value"],
        channel=card.channel, message_ts=card.ts,
    )
    for skew in (-301, 301):
        status, _, _ = await h.requester.post(body, timestamp=int(time.time()) + skew)
        assert status == 401
    assert [d.event for d in await audit(h, action["id"])] == ["discovered"]


@pytest.mark.parametrize(("status", "retried"), [(500, True), (429, True), (400, False), (422, False)])
async def test_upstream_errors_are_retried_only_where_it_can_help(harness: Harness, status: int, retried: bool) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    h.flokit.fail_next("/approve", status=status, times=2)
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, view, APPROVER, None)
    if retried:
        await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
        assert len(h.flokit.calls("POST", "/approve")) == 3
        await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    else:
        await h.wait_for(lambda: ids.RETRY in buttons(h.slack.messages[(CHANNEL, card.ts)]))
        assert len(h.flokit.calls("POST", "/approve")) == 1
        assert str(status) in card_text(h.slack.messages[(CHANNEL, card.ts)])


async def test_self_approval_is_refused_by_email_or_slack_id(harness: Harness) -> None:
    h = harness
    mine = h.flokit.add_action()
    h.flokit.actions[mine["id"]]["requested_by"] = APPROVER_EMAIL.upper()
    theirs = h.flokit.add_action()
    h.flokit.actions[theirs["id"]]["requested_by"] = OTHER_APPROVER
    await h.start()
    card = await card_for(h, mine["id"])
    other_card = await card_for(h, theirs["id"])
    await click(h, card, ids.APPROVE, APPROVER)
    await h.wait_for(lambda: any("requested by you" in t for t in ephemerals_for(h, APPROVER)))
    assert not h.slack.views
    # Even a modal opened by someone else and submitted as the requester is refused.
    view = await open_modal(h, other_card, ids.REJECT, APPROVER)
    _, answer = await submit(h, view, OTHER_APPROVER, "not mine to judge")
    assert "requested by you" in next(iter(json.loads(answer)["errors"].values()))
    assert [d.event for d in await audit(h, theirs["id"])] == ["discovered"]
    # Anyone else may decide.
    view = await open_modal(h, card, ids.APPROVE, OTHER_APPROVER)
    _, answer = await submit(h, view, OTHER_APPROVER, None)
    assert answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))


async def test_store_failure_records_nothing_and_says_so(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    action = h.flokit.add_action()
    bot = await h.start()
    card = await card_for(h, action["id"])
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    real_write = bot.db.hot.begin_decision  # the decision's write, on the store's ack path
    failures = []

    async def failing_write(**kwargs):  # type: ignore[no-untyped-def]
        if not failures:
            failures.append(1)
            raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))
        return await real_write(**kwargs)

    monkeypatch.setattr(bot.db.hot, "begin_decision", failing_write)
    status, answer = await submit(h, view, APPROVER, None)
    assert status == 200
    assert "couldn't record" in next(iter(json.loads(answer)["errors"].values()))
    assert [d.event for d in await audit(h, action["id"])] == ["discovered"]
    status, answer = await submit(h, view, APPROVER, None)  # the person tries again: it works
    assert answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_postgres_connections_killed_are_replaced(harness: Harness) -> None:
    h = harness
    import psycopg

    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    name = h.database_url.rsplit("/", 1)[1]
    base = h.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(base, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    assert killed and killed[0] >= 1
    _, answer = await submit(h, view, APPROVER, None)
    assert answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    events = [d.event for d in await audit(h, action["id"])]
    assert events.count("requested") == 1


async def test_slack_failures_on_update_and_views_are_retried(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    h.slack.fail_next("views.open", status=429, retry_after=1)
    view = await open_modal(h, card, ids.APPROVE, APPROVER)  # honoured Retry-After, then opened
    h.slack.fail_next("chat.update", status=503)
    h.slack.fail_next("chat.update", error="ratelimited")
    await submit(h, view, APPROVER, None)
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]), timeout=20)
    assert len(h.flokit.calls("POST", "/approve")) == 1


async def test_unknown_action_in_a_signed_click_gets_an_explanation(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    status, _ = await click(h, card, ids.APPROVE, APPROVER, value="987654")
    assert status == 200
    await h.wait_for(lambda: ephemerals_for(h, APPROVER))
    assert not h.slack.views


async def test_a_slow_upstream_never_slows_the_ack(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start(flokit_timeout_seconds=1.5)
    card = await card_for(h, action["id"])
    h.flokit.fail_next("/approve", status=503, delay=20)  # 20 s before it even answers
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    started = time.monotonic()
    status, answer = await submit(h, view, APPROVER, "while slow")
    assert status == 200 and answer in ("", "{}")
    assert time.monotonic() - started < 1.0  # Slack allows 3 s; the ack waits for nothing upstream
    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))
    await h.wait_for(lambda: "Approving" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    assert [d.event for d in await audit(h, action["id"])][-1] == "requested"
    # The client gives up after FLOKIT_TIMEOUT_SECONDS and tries again, and the retry lands.
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]), timeout=10)
    assert [d.event for d in await audit(h, action["id"])].count("confirmed") == 1


async def test_a_stale_poll_page_never_undoes_a_delivered_decision(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    # The next "ready" page is read now but arrives late, after the decision has landed.
    snapshot = {"actions": [{k: v for k, v in action.items() if k in ("id", "type", "status", "title", "rationale",
                                                                       "expected_impact", "created_at")}],
                "total": 1, "limit": 100, "offset": 0}
    h.flokit.fail_next("/v1/actions", status=200, body=json.dumps(snapshot), delay=1.5)
    polling = asyncio.ensure_future(h.poll())
    await h.wait_for(lambda: h.flokit.calls("GET", "/v1/actions"))
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, view, APPROVER, None)
    await h.wait_for(lambda: ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    await polling
    await h.poll()
    assert ids.ROLLBACK in buttons(h.slack.messages[(CHANNEL, card.ts)])
    assert ("upstream", "ready") not in [(d.event, d.to_status) for d in await audit(h, action["id"])]
