"""Flowdash (seed 001) end to end, over real loopback HTTP: a fake Flowdash, the fake Slack,
and the real bot. Tasks arrive through the intake, their actions become the card's buttons,
a decision is an execution followed until it ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot import ids
from sources.base import DecisionRequest, Landed, Op, Option, RequirementsError, Status, TransientError
from sources.flowdash import FlowdashSource, option_kind
from store import queries
from tests.conftest import APPROVER, APPROVER_EMAIL, CHANNEL, OUTSIDER, Harness
from tests.fakes.cards import buttons, card_stored, card_text, click, ephemerals_for, open_modal, submit
from tests.fakes.flowdash import FakeFlowdash
from tests.fakes.slack_api import Message
from urllib.parse import urlencode

from tests.fakes.slack_requests import block_action_body, parse_payload

FLOWDASH_KEY = "test-flowdash-key"
TOKEN = "flowdash-intake-token"
WF = "abc123"


@pytest.fixture
async def flowdash() -> AsyncIterator[FakeFlowdash]:
    fake = FakeFlowdash(api_key=FLOWDASH_KEY)
    await fake.start()
    yield fake
    await fake.stop()


async def start(h: Harness, fd: FakeFlowdash, **overrides: Any) -> None:
    await h.start(
        flowdash_api_url=fd.url, flowdash_api_key=FLOWDASH_KEY, flowdash_intake_token=TOKEN, **overrides
    )


async def push(h: Harness, body: Any, *, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    assert h.bot is not None and h.bot.port
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with h.http.post(f"http://127.0.0.1:{h.bot.port}/intake/flowdash", data=data, headers=headers) as r:
        return r.status, await r.json()


def task_card(h: Harness, task_id: str, workflow_id: str = WF) -> Message | None:
    for m in h.slack.messages_in(CHANNEL):
        payload = (m.metadata or {}).get("event_payload") or {}
        if payload.get("external_id") == f"{workflow_id}/{task_id}" and m.thread_ts is None:
            return m
    return None


def mrkdwn(node: Any) -> list[str]:
    """Every mrkdwn text in a block tree."""
    if isinstance(node, list):
        return [t for n in node for t in mrkdwn(n)]
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str) else []
        return own + [t for v in node.values() if isinstance(v, (dict, list)) for t in mrkdwn(v)]
    return []


def overflow(message: Message) -> dict[str, Any] | None:
    for block in message.blocks:
        for element in block.get("elements") or []:
            if element.get("type") == "overflow":
                return element
    return None


async def stored(h: Harness, action_id: int) -> Any:
    assert h.bot is not None
    async with h.bot.db.read() as session:
        return await queries.get_action(session, action_id=action_id)


async def trail(h: Harness, action_id: int) -> list[tuple[str, str | None, str | None, str | None]]:
    assert h.bot is not None
    async with h.bot.db.read() as session:
        return [(d.event, d.op, d.option, d.note) for d in await queries.audit_trail(session, action_id=action_id)]


async def carded(h: Harness, fd: FakeFlowdash, task_id: str, **body: Any) -> tuple[int, Message]:
    status, answer = await push(h, {"workflow_id": WF, "task_id": task_id, **body})
    assert status == 202, answer
    message = await h.wait_for(lambda: task_card(h, task_id))
    await h.wait_for(lambda: card_stored(h, answer["id"]))  # a click on it is checked against the store
    return answer["id"], message



async def approve(h: Harness, card: Message, note: str | None = None) -> None:
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    assert (await submit(h, view, APPROVER, note))[0] == 200


# ---- the source on its own -------------------------------------------------------------------


def test_actions_named_like_approve_or_reject_get_those_kinds() -> None:
    assert option_kind("Approve") is Op.APPROVE and option_kind("Approve expense") is Op.APPROVE
    assert option_kind("Reject") is Op.REJECT and option_kind("Decline") is Op.REJECT
    assert option_kind("Escalate") is Op.OTHER and option_kind("Send back") is Op.OTHER


async def test_the_source_maps_the_document_and_never_shows_the_key(flowdash: FakeFlowdash) -> None:
    flowdash.add_task(WF, "678", requirements=["Name is required", "Must be assigned"])
    async with aiohttp.ClientSession() as http:
        source = FlowdashSource(http, base_url=flowdash.url, api_key=FLOWDASH_KEY, timeout=2)
        action = await source.get_action(f"{WF}/678")
        assert action.options == (Option(Op.APPROVE, "Approve", "edHR10"), Option(Op.REJECT, "Reject", "PvHaOO"))
        request = DecisionRequest(Op.APPROVE, f"{WF}/678", APPROVER_EMAIL, None, "k", "edHR10", "Approve")
        with pytest.raises(RequirementsError) as refused:
            await source.submit(request)
        assert refused.value.messages == ("Name is required", "Must be assigned")
        flowdash.fail_next("/actions", status=502)
        with pytest.raises(TransientError):
            await source.get_action(f"{WF}/678")
        wrong = FlowdashSource(http, base_url=flowdash.url, api_key="not-the-key", timeout=2)
        with pytest.raises(Exception) as bad_key:
            await wrong.get_action(f"{WF}/678")
        assert "401" in str(bad_key.value) and "not-the-key" not in str(bad_key.value)
    assert flowdash.calls("GET", "/tasks/678/actions")[0].headers["Authorization"] == f"Bearer {FLOWDASH_KEY}"


# ---- intake ----------------------------------------------------------------------------------


async def test_intake_authenticates_validates_and_takes_a_task_once(harness: Harness, flowdash: FakeFlowdash) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "678")
    body = {"workflow_id": WF, "task_id": "678", "title": "Expense <!channel> #42",
            "fields": {"Name": "Ada <@U999>", "Amount": 1200}, "url": "https://app.flowdash.com/t/678"}
    assert (await push(h, body, token=None))[0] == 401
    assert (await push(h, body, token="wrong"))[0] == 401
    status, answer = await push(h, {**body, "task_id": ""})
    assert status == 422 and answer["field"] == "task_id"
    status, answer = await push(h, {**body, "fields": ["x"]})
    assert status == 422 and answer["field"] == "fields"
    status, answer = await push(h, {"task_id": "678"})
    assert status == 422 and answer["field"] == "workflow_id"
    assert (await push(h, "not json"))[0] == 400
    assert (await push(h, {**body, "title": "x" * (70 * 1024)}))[0] == 413
    status, answer = await push(h, {**body, "task_id": "999"})
    assert status == 502  # Flowdash does not know the task

    status, answer = await push(h, body)
    assert status == 202 and answer["created"] is True and answer["options"] == ["Approve", "Reject"]
    action_id = answer["id"]
    status, again = await push(h, body)  # a repeat: the same action, no second card
    assert (status, again["id"], again["created"]) == (200, action_id, False)

    card = await h.wait_for(lambda: task_card(h, "678"))
    text = card_text(card)
    shown_mrkdwn = " ".join(mrkdwn(card.blocks))
    # In mrkdwn everything from the body is escaped (the title is plain text in the header).
    assert "<!channel>" not in shown_mrkdwn and "<@U999>" not in shown_mrkdwn and "&lt;@U999&gt;" in shown_mrkdwn
    assert card.blocks[0]["text"]["type"] == "plain_text"
    assert "1200" in text and "https://app.flowdash.com/t/678" in text
    shown = buttons(card)
    assert shown[ids.APPROVE]["text"]["text"] == "Approve" and shown[ids.APPROVE]["style"] == "primary"
    assert shown[ids.REJECT]["text"]["text"] == "Reject" and shown[ids.REJECT]["style"] == "danger"
    assert len([m for m in h.slack.messages_in(CHANNEL) if m.thread_ts is None]) == 1


async def test_a_task_with_no_actions_is_stored_but_not_carded_until_it_has_some(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    task = flowdash.add_task(WF, "700", actions=[])
    status, answer = await push(h, {"workflow_id": WF, "task_id": "700", "title": "Nothing yet"})
    assert status == 202 and answer["carded"] is False and "not carded" in answer["message"]
    await h.run_job("cards")
    assert task_card(h, "700") is None
    assert (await stored(h, answer["id"])).status == Status.READY.value
    # The task reaches a stage with actions: the automation tells Signoff again, and now it is carded.
    task.actions = [{"id": "a1", "name": "Approve"}]
    status, again = await push(h, {"workflow_id": WF, "task_id": "700", "title": "Now decidable"})
    assert status == 200 and again["carded"] is True
    card = await h.wait_for(lambda: task_card(h, "700"))
    assert set(buttons(card)) == {ids.APPROVE} and "Now decidable" in card_text(card)


# ---- the card and the decision ---------------------------------------------------------------


async def test_buttons_per_task_with_an_overflow_past_five_and_confirmation_for_other_actions(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    names = ["Approve", "Reject", "Escalate", "Send back", "Hold", "Archive", "Reassign"]
    flowdash.add_task(WF, "801", actions=[{"id": f"id{i}", "name": n} for i, n in enumerate(names)])
    flowdash.add_task(WF, "802", actions=[{"id": "esc", "name": "Escalate"}, {"id": "ok", "name": "Approve"}])
    _id1, card = await carded(h, flowdash, "801")
    shown = buttons(card)
    assert [b["text"]["text"] for b in shown.values()] == names[:4]
    assert shown[ids.option_action_id("id2")]["confirm"]["confirm"]["text"] == "Run"
    assert "confirm" not in shown[ids.APPROVE]
    menu = overflow(card)
    assert menu is not None and [o["text"]["text"] for o in menu["options"]] == names[4:]

    # Picking "Archive" from the overflow menu runs it, like its own button would.
    value = next(o["value"] for o in menu["options"] if o["text"]["text"] == "Archive")
    body = block_action_body(user_id=APPROVER, action_id=ids.OVERFLOW, value="", channel=card.channel,
                             message_ts=card.ts)
    payload = parse_payload(body)
    payload["actions"][0].pop("value", None)
    payload["actions"][0]["type"] = "overflow"
    payload["actions"][0]["selected_option"] = {"text": {"type": "plain_text", "text": "Archive"}, "value": value}
    status, _, _ = await h.requester.post(urlencode({"payload": json.dumps(payload)}))
    assert status == 200
    await h.wait_for(lambda: flowdash.executions_of("801"), timeout=10)
    assert flowdash.executions_of("801")[0].action_id == "id5"

    # Escalate (another action) runs at once after Slack's confirmation.
    _id2, card2 = await carded(h, flowdash, "802")
    status, _ = await click(h, card2, ids.option_action_id("esc"), APPROVER)
    assert status == 200
    await h.wait_for(lambda: flowdash.executions_of("802"), timeout=10)


async def test_approve_executes_as_the_clicker_shows_running_then_the_outcome(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "678")
    flowdash.hold = True
    action_id, card = await carded(h, flowdash, "678", title="Laptop for Ada")
    await approve(h, card, "fine by me")
    running = await h.wait_for(
        lambda: (m := task_card(h, "678")) and "Running 'Approve' in Flowdash" in card_text(m) and m, timeout=15
    )
    assert f"started by <@{APPROVER}>" in card_text(running) and not buttons(running)
    posted = flowdash.calls("POST", "/executions")
    assert [p.json for p in posted] == [{"task_id": "678", "action_id": "edHR10", "performed_by": APPROVER_EMAIL}]
    assert (await stored(h, action_id)).status == Status.APPROVING.value
    flowdash.release()
    done = await h.wait_for(lambda: (m := task_card(h, "678")) and "Approved" in card_text(m) and m, timeout=15)
    assert f"<@{APPROVER}>" in card_text(done) and "fine by me" in card_text(done) and not buttons(done)
    assert (await stored(h, action_id)).status == Status.APPROVED.value
    assert [e[0] for e in await trail(h, action_id)] == ["discovered", "requested", "confirmed"]
    assert len(flowdash.executions) == 1


async def test_reject_with_reason_and_another_action_settling_with_what_comes_next(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(
        WF, "901", actions=[{"id": "esc", "name": "Escalate"}, {"id": "no", "name": "Reject"}],
        next_actions={"esc": [{"id": "yes2", "name": "Approve"}, {"id": "no2", "name": "Reject"}]},
    )
    action_id, card = await carded(h, flowdash, "901")
    await click(h, card, ids.option_action_id("esc"), APPROVER)
    card = await h.wait_for(lambda: (m := task_card(h, "901")) and ids.APPROVE in buttons(m) and m, timeout=15)
    assert "Escalate" in card_text(card) and f"<@{APPROVER}>" in card_text(card)
    assert (await stored(h, action_id)).status == Status.READY.value
    view = await open_modal(h, card, ids.REJECT, APPROVER)
    assert (await submit(h, view, APPROVER, "over budget"))[0] == 200
    done = await h.wait_for(lambda: (m := task_card(h, "901")) and "Rejected" in card_text(m) and m, timeout=15)
    assert "over budget" in card_text(done)
    assert [e.action_id for e in flowdash.executions.values()] == ["esc", "no2"]


async def test_unmet_requirements_are_shown_word_for_word_at_once_and_the_card_stays_decidable(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    task = flowdash.add_task(WF, "422", requirements=["Name is required", "Checklist must be completed"])
    action_id, card = await carded(h, flowdash, "422")
    await approve(h, card)
    said = await h.wait_for(lambda: [t for t in ephemerals_for(h, APPROVER) if "Name is required" in t], timeout=10)
    assert "Checklist must be completed" in said[0]
    card = await h.wait_for(
        lambda: (m := task_card(h, "422")) and "Name is required" in card_text(m) and ids.APPROVE in buttons(m) and m
    )
    assert ids.RETRY in buttons(card)
    assert (await stored(h, action_id)).status == Status.READY.value
    assert ("failed", "approve", "Approve", "Name is required; Checklist must be completed") in await trail(h, action_id)
    assert flowdash.executions == {}
    # Fixed in Flowdash: approving again works.
    task.requirements = []
    await approve(h, card)
    await h.wait_for(lambda: (m := task_card(h, "422")) and "Approved" in card_text(m), timeout=15)


async def test_an_execution_that_fails_shows_its_errors_and_retry_runs_it_again(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "500")
    flowdash.fail_with = ["foo is not a valid email"]
    action_id, card = await carded(h, flowdash, "500")
    await approve(h, card)
    card = await h.wait_for(
        lambda: (m := task_card(h, "500")) and "foo is not a valid email" in card_text(m) and ids.RETRY in buttons(m) and m,
        timeout=15,
    )
    assert (await stored(h, action_id)).status == Status.READY.value
    assert (await click(h, card, ids.RETRY, APPROVER))[0] == 200
    await h.wait_for(lambda: (m := task_card(h, "500")) and "Approved" in card_text(m), timeout=15)
    assert [e.status for e in flowdash.executions.values()] == ["Fail", "Success"]


async def test_a_lost_answer_never_runs_the_action_twice(harness: Harness, flowdash: FakeFlowdash) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "lost")
    flowdash.add_task(WF, "unsent")
    # The POST ran in Flowdash, but its answer never came back (the connection was reset).
    flowdash.fail_next("/executions", method="POST", status=0, after_effect=True)
    action_id, card = await carded(h, flowdash, "lost")
    await approve(h, card)
    done = await h.wait_for(
        lambda: (m := task_card(h, "lost")) and "Approved" in card_text(m) and m, timeout=15
    )
    assert "landed; confirmation lost" in card_text(done)
    assert len(flowdash.executions_of("lost")) == 1
    assert ("confirmed", "approve", "Approve", "landed; confirmation lost") in await trail(h, action_id)
    # Lost before Flowdash ran it (a 503, a reset before the effect): the action is still
    # offered, so it is POSTed again, once.
    flowdash.fail_next("/executions", method="POST", status=503)
    _id, card = await carded(h, flowdash, "unsent")
    await approve(h, card)
    done = await h.wait_for(lambda: (m := task_card(h, "unsent")) and "Approved" in card_text(m) and m, timeout=15)
    assert "confirmation lost" not in card_text(done)
    assert len(flowdash.executions_of("unsent")) == 1
    assert len(flowdash.calls("POST", "/executions")) == 3


async def test_an_action_gone_before_executing_tells_the_clicker_and_refreshes_the_card(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    task = flowdash.add_task(WF, "gone")
    _id, card = await carded(h, flowdash, "gone")
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    task.actions = [{"id": "back", "name": "Send back"}]  # someone moved the task on in Flowdash
    assert (await submit(h, view, APPROVER, None))[0] == 200
    await h.wait_for(lambda: [t for t in ephemerals_for(h, APPROVER) if "no longer offers" in t], timeout=10)
    card = await h.wait_for(lambda: (m := task_card(h, "gone")) and ids.option_action_id("back") in buttons(m) and m)
    assert ids.APPROVE not in buttons(card)
    assert flowdash.executions == {}


async def test_no_permission_is_a_permanent_failure_with_retry_and_5xx_is_retried(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "403")
    flowdash.forbidden.add(APPROVER_EMAIL)
    action_id, card = await carded(h, flowdash, "403")
    await approve(h, card)
    card = await h.wait_for(
        lambda: (m := task_card(h, "403")) and "403" in card_text(m) and ids.RETRY in buttons(m) and m, timeout=15
    )
    assert "no permission" in card_text(card)
    assert len(flowdash.calls("POST", "/executions")) == 1  # not retried by itself
    flowdash.forbidden.clear()
    flowdash.fail_next("/executions", method="POST", status=502, times=2)
    await click(h, card, ids.RETRY, APPROVER)
    await h.wait_for(lambda: (m := task_card(h, "403")) and "Approved" in card_text(m), timeout=20)
    assert len(flowdash.calls("POST", "/executions")) == 4 and len(flowdash.executions) == 1


async def test_an_outsider_cannot_run_a_task_action(harness: Harness, flowdash: FakeFlowdash) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "out", actions=[{"id": "esc", "name": "Escalate"}])
    _id, card = await carded(h, flowdash, "out")
    await click(h, card, ids.option_action_id("esc"), OUTSIDER)
    await h.wait_for(lambda: ephemerals_for(h, OUTSIDER))
    assert flowdash.calls("POST") == []


async def test_flokit_and_flowdash_at_once_on_one_channel(harness: Harness, flowdash: FakeFlowdash) -> None:
    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "both")
    flokit_action = h.flokit.add_action()
    await h.poll()
    _id, fd_card = await carded(h, flowdash, "both")
    fk_card = await h.wait_for(lambda: task_card(h, flokit_action["id"].split("/")[-1], workflow_id="") or next(
        (m for m in h.slack.messages_in(CHANNEL)
         if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == flokit_action["id"]), None))
    assert ((fk_card.metadata or {}).get("event_payload") or {}).get("source") == "flokit"
    assert ((fd_card.metadata or {}).get("event_payload") or {}).get("source") == "flowdash"
    await approve(h, fd_card)
    await approve(h, fk_card)
    await h.wait_for(lambda: (m := task_card(h, "both")) and "Approved" in card_text(m), timeout=15)
    await h.wait_for(lambda: h.flokit.actions[flokit_action["id"]]["status"] == "approved", timeout=15)
    assert len(flowdash.executions) == 1 and len(h.flokit.calls("POST")) == 1


async def test_a_signoff_with_only_flowdash_configured_starts_and_works(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    h = harness
    await start(h, flowdash, flokit_api_key=None)
    assert h.bot is not None and h.bot.sources.names == ("flowdash",)
    flowdash.add_task(WF, "solo")
    _id, card = await carded(h, flowdash, "solo")
    await approve(h, card)
    await h.wait_for(lambda: (m := task_card(h, "solo")) and "Approved" in card_text(m), timeout=15)
    assert h.flokit.requests == []


async def test_signoff_track_takes_a_task_through_the_same_intake_for_approvers(
    harness: Harness, flowdash: FakeFlowdash
) -> None:
    from tests.bot.test_commands import command

    h = harness
    await start(h, flowdash)
    flowdash.add_task(WF, "t1")
    flowdash.add_task(WF, "t2", actions=[])
    refused = await command(h, f"track flowdash {WF} t1", user=OUTSIDER)
    assert "approvers" in refused.said and task_card(h, "t1") is None
    answer = await command(h, f"track flowdash {WF} t1")
    assert "Tracking" in answer.said
    card = await h.wait_for(lambda: task_card(h, "t1"))
    assert set(buttons(card)) == {ids.APPROVE, ids.REJECT}
    again = await command(h, f"track flowdash {WF} t1")
    assert "already tracked" in again.said
    assert len([m for m in h.slack.messages_in(CHANNEL) if m.thread_ts is None]) == 1
    assert "offers nothing" in (await command(h, f"track flowdash {WF} t2")).said
    assert "couldn't track" in (await command(h, f"track flowdash {WF} nosuch")).said
    assert "couldn't track" in (await command(h, f"track flokit {WF} t1")).said
    assert "couldn't track" in (await command(h, f"track flowdash {WF}")).said
    assert "Which action" in (await command(h, "track flowdash")).said
    # Tracked tasks are decided like pushed ones.
    await approve(h, card)
    await h.wait_for(lambda: (m := task_card(h, "t1")) and "Approved" in card_text(m), timeout=15)
