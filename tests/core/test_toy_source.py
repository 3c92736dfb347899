"""A second source registered in a few lines: pushed to Signoff through its intake, carded
with its own named options, decided in Slack, submitted, tracked until it lands, settled.

The toy source works like an asynchronous Actions API (Flowdash's executions): a decision
is accepted with a reference and lands only after a few reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from bot import ids
from core.registry import Registered
from sources.base import (
    Accepted,
    Capabilities,
    DecisionRequest,
    IntakeError,
    Landed,
    NotFoundError,
    Op,
    Option,
    RequirementsError,
    Status,
    Submitted,
    UpstreamAction,
)
from store import queries
from tests.conftest import APPROVER, CHANNEL, OUTSIDER, Harness
from tests.fakes.cards import buttons, card_stored, card_text, click, open_modal, submit
from tests.fakes.slack_api import Message

TOKEN = "toy-intake-token"
APPROVE = Option(Op.APPROVE, "Ship it", "ship")
REJECT = Option(Op.REJECT, "Stop", "stop")
ESCALATE = Option(Op.OTHER, "Escalate", "escalate")


@dataclass
class ToySource:
    """An Actions API that names each action's options and runs decisions asynchronously."""

    name: str = "toy"
    capabilities: Capabilities = Capabilities(ops=frozenset({Op.APPROVE, Op.REJECT}), own_options=True)
    actions: dict[str, UpstreamAction] = field(default_factory=dict)
    submitted: list[DecisionRequest] = field(default_factory=list)
    reads_until_done: int = 2  # track() answers "still running" this many times first
    reads: dict[str, int] = field(default_factory=dict)
    fail_with: tuple[str, ...] = ()  # the next execution fails with these messages

    def add(self, external_id: str) -> None:
        self.actions[external_id] = UpstreamAction(
            external_id=external_id, status=Status.READY, upstream_status="waiting", type="toy_change",
            title=f"Toy change {external_id}", rationale="Because a test said so", detailed=True,
            options=(APPROVE, REJECT, ESCALATE),
        )

    async def intake(self, body: dict[str, Any]) -> UpstreamAction:
        external_id = body.get("id")
        if not isinstance(external_id, str) or not external_id:
            raise IntakeError("id", "required: the toy action's id, a non-empty string")
        return await self.get_action(external_id)

    async def get_action(self, external_id: str) -> UpstreamAction:
        if external_id not in self.actions:
            raise NotFoundError(f"no toy action {external_id}", status=404)
        return self.actions[external_id]

    async def submit(self, request: DecisionRequest) -> Submitted:
        self.submitted.append(request)
        return Accepted(f"exec-{len(self.submitted)}")

    async def track(self, request: DecisionRequest, reference: str) -> Submitted:
        self.reads[reference] = self.reads.get(reference, 0) + 1
        if self.reads[reference] < self.reads_until_done:
            return Accepted(reference)
        if self.fail_with:
            messages, self.fail_with = self.fail_with, ()
            raise RequirementsError(messages)
        action = self.actions[request.external_id]
        landed = {
            "ship": replace(action, status=Status.APPROVED, upstream_status="shipped", options=()),
            "stop": replace(action, status=Status.REJECTED, upstream_status="stopped", options=()),
            # Escalated: still waiting, but it can no longer be escalated.
            "escalate": replace(action, upstream_status="escalated", options=(APPROVE, REJECT)),
        }[request.option_key]
        self.actions[request.external_id] = landed
        return Landed(landed)


async def start_with_toy(harness: Harness) -> ToySource:
    toy = ToySource()
    await harness.start(extra_sources=lambda _http: [Registered(toy, intake_token=TOKEN)])
    return toy


async def push(h: Harness, body: Any, *, token: str | None = TOKEN, source: str = "toy") -> tuple[int, dict[str, Any]]:
    assert h.bot is not None and h.bot.port
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with h.http.post(f"http://127.0.0.1:{h.bot.port}/intake/{source}", data=data, headers=headers) as r:
        return r.status, await r.json()


def toy_card(h: Harness, external_id: str) -> Message | None:
    for m in h.slack.messages_in(CHANNEL):
        if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == external_id and m.thread_ts is None:
            return m
    return None


async def status_of(h: Harness, action_id: int) -> str:
    assert h.bot is not None
    async with h.bot.db.read() as session:
        action = await queries.get_action(session, action_id=action_id)
    assert action is not None
    return action.status


async def test_a_toy_source_goes_through_intake_decide_submit_track_and_settle(harness: Harness) -> None:
    h = harness
    toy = await start_with_toy(h)
    toy.reads_until_done = 3  # about 3.5 s upstream: long enough for the card to show it in flight
    toy.add("toy-1")

    status, answer = await push(h, {"id": "toy-1"})
    assert status == 202 and answer["created"] is True and answer["status"] == "ready"
    action_id = answer["id"]
    status, again = await push(h, {"id": "toy-1"})  # a repeat: the same action, no second card
    assert (status, again["id"], again["created"]) == (200, action_id, False)

    card = await h.wait_for(lambda: toy_card(h, "toy-1"))
    await h.wait_for(lambda: card_stored(h, action_id))
    shown = buttons(card)
    assert {b["text"]["text"] for b in shown.values()} == {"Ship it", "Stop", "Escalate"}
    assert shown[ids.APPROVE]["text"]["text"] == "Ship it" and shown[ids.REJECT]["text"]["text"] == "Stop"
    escalate_id = ids.option_action_id("escalate")
    assert escalate_id in shown
    assert len([m for m in h.slack.messages_in(CHANNEL) if m.thread_ts is None]) == 1

    # Escalate: decided at once, submitted with the source's own key, tracked until it lands.
    status, _ = await click(h, card, escalate_id, APPROVER)
    assert status == 200
    in_flight = await h.wait_for(lambda: (m := toy_card(h, "toy-1")) and not buttons(m) and m)
    assert "⏳" in card_text(in_flight) and "Escalate" in card_text(in_flight)
    assert await status_of(h, action_id) in (Status.DECIDING.value, Status.READY.value)
    await h.wait_for(lambda: len(toy.submitted) == 1)
    assert (toy.submitted[0].op, toy.submitted[0].option_key) == (Op.OTHER, "escalate")
    await h.wait_for(lambda: toy.actions["toy-1"].upstream_status == "escalated", timeout=15)
    card = await h.wait_for(lambda: (m := toy_card(h, "toy-1")) and ids.APPROVE in buttons(m) and m)
    assert "Escalate" in card_text(card) and f"<@{APPROVER}>" in card_text(card)
    assert set(buttons(card)) == {ids.APPROVE, ids.REJECT}
    assert await status_of(h, action_id) == Status.READY.value
    assert toy.reads["exec-1"] == toy.reads_until_done  # followed until it ended, then no more

    # Approve through the modal: the same two phases, landing in the upstream's state.
    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    status, _ = await submit(h, view, APPROVER, "looks right")
    assert status == 200
    await h.wait_for(lambda: toy.actions["toy-1"].status is Status.APPROVED, timeout=15)
    await h.wait_for(lambda: (m := toy_card(h, "toy-1")) and "Approved" in card_text(m) and not buttons(m))
    assert [(r.op, r.option_key, r.option_label, r.note) for r in toy.submitted] == [
        (Op.OTHER, "escalate", "Escalate", None), (Op.APPROVE, "ship", "Ship it", "looks right"),
    ]
    assert await status_of(h, action_id) == Status.APPROVED.value

    # Every step is in the audit trail, with the option the person picked.
    assert h.bot is not None
    async with h.bot.db.read() as session:
        trail = [(d.event, d.op, d.option, d.to_status) for d in await queries.audit_trail(session, action_id=action_id)]
    assert trail == [
        ("discovered", None, None, "ready"),
        ("requested", "other", "Escalate", "deciding"),
        ("confirmed", "other", "Escalate", "ready"),
        ("requested", "approve", "Ship it", "approving"),
        ("confirmed", "approve", "Ship it", "approved"),
    ]


async def test_an_execution_that_fails_puts_the_action_back_with_the_upstreams_messages(harness: Harness) -> None:
    h = harness
    toy = await start_with_toy(h)
    toy.add("toy-2")
    toy.fail_with = ("Budget owner must be set", "Amount over limit")
    status, answer = await push(h, {"id": "toy-2"})
    assert status == 202
    card = await h.wait_for(lambda: toy_card(h, "toy-2"))
    await h.wait_for(lambda: card_stored(h, answer["id"]))
    view = await open_modal(h, card, ids.REJECT, APPROVER)
    assert (await submit(h, view, APPROVER, "no"))[0] == 200
    card = await h.wait_for(
        lambda: (m := toy_card(h, "toy-2")) and "Budget owner must be set" in card_text(m) and m, timeout=15
    )
    assert "Amount over limit" in card_text(card)
    assert await status_of(h, answer["id"]) == Status.READY.value
    assert ids.RETRY in buttons(card)  # the same decision can be sent again


async def test_a_stale_or_foreign_option_is_refused(harness: Harness) -> None:
    h = harness
    toy = await start_with_toy(h)
    toy.add("toy-3")
    _status, pushed = await push(h, {"id": "toy-3"})
    card = await h.wait_for(lambda: toy_card(h, "toy-3"))
    await h.wait_for(lambda: card_stored(h, pushed["id"]))
    # An option the action does not offer (a forged or stale button): nothing is recorded.
    status, _ = await click(h, card, ids.option_action_id("delete-everything"), APPROVER, value=buttons(card)[ids.APPROVE]["value"])
    assert status == 200
    # An outsider's click on a real option: refused too.
    status, _ = await click(h, card, ids.option_action_id("escalate"), OUTSIDER)
    assert status == 200
    await h.wait_for(lambda: len([e for e in h.slack.ephemerals if e.get("user") in (APPROVER, OUTSIDER)]) >= 2)
    assert toy.submitted == []
    assert h.bot is not None
    async with h.bot.db.read() as session:
        trail = await queries.audit_trail(session, action_id=(await push(h, {"id": "toy-3"}))[1]["id"])
    assert [d.event for d in trail] == ["discovered"]


async def test_intake_answers_bad_requests_clearly(harness: Harness) -> None:
    h = harness
    toy = await start_with_toy(h)
    toy.add("toy-4")
    assert (await push(h, {"id": "toy-4"}, token=None))[0] == 401
    assert (await push(h, {"id": "toy-4"}, token="wrong"))[0] == 401
    status, answer = await push(h, {"id": 7})
    assert status == 422 and answer["field"] == "id"
    assert (await push(h, "not json"))[0] == 400
    assert (await push(h, [1, 2]))[0] == 400
    assert (await push(h, {"id": "x" * (70 * 1024)}))[0] == 413
    assert (await push(h, {"id": "toy-4"}, source="nosuch"))[0] == 404
    assert (await push(h, {"id": "toy-4"}, source="flokit"))[0] == 404  # FloKit is polled, not pushed
    status, answer = await push(h, {"id": "unknown"})
    assert status == 502 and answer["code"] == "upstream_refused"
    assert toy_card(h, "toy-4") is None


async def test_flokit_and_the_toy_source_run_side_by_side(harness: Harness) -> None:
    h = harness
    toy = await start_with_toy(h)
    toy.add("toy-5")
    flokit_action = h.flokit.add_action()
    await h.poll()
    await push(h, {"id": "toy-5"})
    await h.wait_for(lambda: toy_card(h, "toy-5"))
    await h.wait_for(lambda: toy_card(h, flokit_action["id"]))
    flokit_card = toy_card(h, flokit_action["id"])
    assert flokit_card is not None
    # FloKit's card keeps FloKit's options; the toy's, its own.
    assert {b["text"]["text"] for b in buttons(flokit_card).values()} == {"Approve", "Reject"}

