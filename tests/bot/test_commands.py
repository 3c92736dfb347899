"""The ``/signoff`` slash command end to end: the real bot against the fake Slack and the fake
FloKit, driven by signed slash-command requests built from Slack's real request shape. Every
subcommand and its errors; decisions go through the same path as the buttons. Runs on SQLite
and, where reachable, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest

from bot import ids
from bot.command_service import CommandService
from core.lifecycle import TRANSITIONS
from sources.base import Op
from store import queries
from tests.conftest import (
    APPROVER,
    APPROVER_EMAIL,
    CHANNEL,
    GROUP_MEMBER,
    OTHER_APPROVER,
    OUTSIDER,
    Harness,
)
from tests.fakes.cards import audit, buttons, card_for, card_row, card_text, ephemerals_for, open_modal, submit
from tests.fakes.clock import FakeClock
from tests.fakes.slack_api import MAX_MESSAGE_BLOCKS, check_blocks
from tests.fakes.slack_requests import block_action_body, parse_payload, slash_command_body

NOT_ALLOWED = "not on the approvers list"
# In mrkdwn "<" only ever opens a mention of a real user, a date or a link of ours.
CONTROL = re.compile(r"<(?!@[UW][A-Z0-9]+>|!date\^\d+\^|https://)")


def mrkdwn_texts(value: Any) -> list[str]:
    """Every mrkdwn text in a Block Kit structure."""
    if isinstance(value, list):
        return [t for v in value for t in mrkdwn_texts(v)]
    if not isinstance(value, dict):
        return []
    own = [value["text"]] if value.get("type") == "mrkdwn" and isinstance(value.get("text"), str) else []
    return own + [t for v in value.values() for t in mrkdwn_texts(v)]


@dataclass
class Answer:
    """The bot's answer to one slash command (the HTTP response Slack shows the user)."""

    body: dict[str, Any]

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return self.body.get("blocks") or []

    @property
    def said(self) -> str:
        """Everything shown: the text and every block, as JSON text."""
        return self.body["text"] + "\n" + json.dumps(self.blocks, ensure_ascii=False)

    def buttons(self) -> dict[str, dict[str, Any]]:
        return {
            e["action_id"]: e
            for b in self.blocks for e in b.get("elements") or [] if isinstance(e, dict) and e.get("type") == "button"
        }


async def command(h: Harness, text: str, user: str = APPROVER, channel: str = CHANNEL) -> Answer:
    """Send ``/signoff <text>`` as Slack does and check the answer is one Slack takes."""
    body = slash_command_body(user_id=user, command="/signoff", text=text, channel=channel)
    status, raw, _ = await h.requester.post(body)
    assert status == 200, (text[:80], status, raw[:500])
    answer = json.loads(raw)
    assert answer["response_type"] == "ephemeral"
    assert isinstance(answer["text"], str) and 0 < len(answer["text"]) <= 3000
    assert check_blocks(answer.get("blocks") or [], max_blocks=MAX_MESSAGE_BLOCKS) == []
    assert "Traceback" not in raw
    for text in [answer["text"], *mrkdwn_texts(answer.get("blocks") or [])]:
        assert not CONTROL.search(text), (text[:300], CONTROL.search(text))
    return Answer(answer)


async def number(h: Harness, external_id: str) -> int:
    """The store's id for an upstream action (what ``/signoff list`` shows)."""
    row = await card_row(h, external_id)
    assert row is not None
    return row.action_id



async def events(h: Harness, external_id: str) -> list[tuple[str, str | None, str]]:
    return [(d.event, d.op, d.actor) for d in await audit(h, external_id)]


async def confirmed(h: Harness, external_id: str, op: Op, count: int = 1) -> None:
    async def landed() -> bool:
        return [(e, o) for e, o, _ in await events(h, external_id)].count(("confirmed", op.value)) >= count

    await h.wait_for(landed)


def ephemeral_click(body: str) -> str:
    """A click on a button in an ephemeral message: Slack marks the container so."""
    payload = parse_payload(body)
    payload["container"]["is_ephemeral"] = True
    return "payload=" + quote(json.dumps(payload, separators=(",", ":")), safe="")


# ---- help and errors -----------------------------------------------------------------------


async def test_help_for_everyone_and_for_nothing_typed(harness: Harness) -> None:
    h = harness
    await h.start()
    for text, user in [("", APPROVER), ("   ", APPROVER), ("help", OUTSIDER), ("HELP", GROUP_MEMBER)]:
        answer = await command(h, text, user)
        for usage in ("/signoff list [status] [page]", "/signoff show &lt;id&gt;", "/signoff approve &lt;id&gt; [note]",
                      "/signoff reject &lt;id&gt; &lt;reason&gt;", "/signoff rollback &lt;id&gt;",
                      "/signoff retry &lt;id&gt;", "/signoff history [&lt;id&gt;]", "/signoff stats [7d|30d]"):
            assert usage in answer.said, (text, usage)
        assert NOT_ALLOWED not in answer.said


async def test_unknown_subcommands_and_malformed_arguments_get_a_helpful_answer(harness: Harness) -> None:
    h = harness
    await h.start()
    cases = {
        "aprove 1": ["Did you mean `/signoff approve`?", "/signoff list [status] [page]"],
        "frobnicate": ["doesn't know `/signoff frobnicate`", "/signoff show &lt;id&gt;"],
        "show": ["Which action?", "/signoff show &lt;id&gt;"],
        "approve": ["Which action?", "/signoff approve &lt;id&gt; [note]"],
        "show 1 2": ["didn't expect `2`"],
        "list ready two": ["isn't a page number"],
        "stats 1y": ["`1y` isn't a period", "/signoff stats 30d"],
        "show %$#": ["isn't an action id", "flokit:act_01hx"],
    }
    for text, expected in cases.items():
        answer = await command(h, text)
        for words in expected:
            assert words in answer.said, (text, words, answer.said[:600])


async def test_any_input_gets_an_answer_and_typed_text_never_pings_anyone(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    await card_for(h, action["id"])
    n = await number(h, action["id"])
    weird = [
        "x" * 10_240,
        "show " + "9" * 10_000,
        "approve " + "a" * 10_000,
        f"approve {n} " + "é" * 1_001,
        "🙂" * 3_000,
        "\u202e\u0000\ufeff",
        "<!channel> hello",
        "show <@U0OTHER>",
        "list <!here>",
        "stats <!everyone>",
        f"history {n} <@U0OTHER>",
        "approve <#C0CARDS> <!subteam^S0LEADS>",
        "ünïcødé ✓ 日本語",
        "list ready 99999",
    ]
    for text in weird:
        answer = await command(h, text)
        for ping in ("<!channel>", "<!here>", "<!everyone>", "<@U0OTHER>", "<#C0CARDS>", "<!subteam"):
            assert ping not in answer.said, (text[:40], ping)
    assert "approve" not in [e for e, _, _ in await events(h, action["id"])]
    assert [e for e, _, _ in await events(h, action["id"])] == ["discovered"]
    assert not h.flokit.calls("POST", "/approve")


async def test_an_unexpected_failure_is_an_apology_not_a_500(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = harness
    await h.start()

    async def broken(self: CommandService, **_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(CommandService, "list_actions", broken)
    answer = await command(h, "list")
    assert "couldn't answer that just now" in answer.said and "boom" not in answer.said


# ---- who may ask ---------------------------------------------------------------------------


async def test_outsiders_see_no_details_and_decide_nothing(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    await card_for(h, action["id"])
    n = await number(h, action["id"])
    for text in ["list", f"show {n}", f"show {action['id']}", "history", f"history {n}", "stats",
                 f"approve {n} me", f"reject {n} no", f"rollback {n}", f"retry {n}", "approve 999999", "show 999999"]:
        answer = await command(h, text, OUTSIDER)
        assert NOT_ALLOWED in answer.said, text
        assert action["title"] not in answer.said and action["id"] not in answer.said, text
    assert [e for e, _, _ in await events(h, action["id"])] == ["discovered"]
    assert not h.flokit.calls("POST", "/approve") and not h.flokit.calls("POST", "/reject")
    # A member of an approvers' user group may.
    answer = await command(h, "list", GROUP_MEMBER)
    assert action["title"] in answer.said


async def test_the_requester_cannot_approve_their_own_action(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    h.flokit.actions[action["id"]]["requested_by"] = APPROVER
    await h.start()
    await card_for(h, action["id"])
    answer = await command(h, f"approve {action['id']} mine")
    assert "requested by you" in answer.said
    assert [e for e, _, _ in await events(h, action["id"])] == ["discovered"]
    answer = await command(h, f"approve {action['id']}", OTHER_APPROVER)
    assert "is recorded" in answer.said


# ---- list ----------------------------------------------------------------------------------


async def stored(h: Harness, external_ids: list[str]) -> bool:
    """The store knows every one of these actions (whether or not its card is posted yet)."""
    assert h.bot is not None
    async with h.bot.db.read() as session:
        known = await queries.known_actions(session, source="flokit", external_ids=external_ids)
    return len(known) == len(external_ids)


async def test_list_pages_newest_first(harness: Harness) -> None:
    h = harness
    approved = h.flokit.add_action(title="Approved one")
    created = [h.flokit.add_action(title=f"Action number {i:02d}") for i in range(23)]
    await h.start()
    await h.wait_for(lambda: stored(h, [a["id"] for a in [approved, *created]]), timeout=20)
    numbers = {a["title"]: await number(h, a["id"]) for a in created}
    await command(h, f"approve {approved['id']}")
    await confirmed(h, approved["id"], Op.APPROVE)

    first = await command(h, "list")
    assert "*Actions awaiting a decision* (`ready`) — 23, newest first" in first.said
    assert "Page 1 of 3 — `/signoff list ready 2` for more" in first.said
    newest = sorted(numbers, key=numbers.__getitem__, reverse=True)
    positions = [first.said.index(t) for t in newest[:10]]
    assert positions == sorted(positions), "newest first"
    assert not any(t in first.said for t in newest[10:]) and "Approved one" not in first.said
    assert len(first.blocks) == 12  # head, ten actions, footer
    assert f"`#{numbers[newest[0]]}`" in first.said and "FloKit `act_01hx" in first.said

    second = await command(h, "list 2")
    assert "Page 2 of 3 — `/signoff list ready 3` for more" in second.said
    assert all(t in second.said for t in newest[10:20])
    last = await command(h, "list ready 3")
    assert "Page 3 of 3" in last.said and "for more" not in last.said
    assert len(last.blocks) == 2 + 3 and all(t in last.said for t in newest[20:])
    assert "There is no page 4: 23 actions awaiting a decision fill 3 pages" in (await command(h, "list ready 4")).said

    listed = await command(h, "list approved")
    assert "Approved one" in listed.said and "Page 1 of 1" in listed.said and "Action number" not in listed.said
    assert "No actions are rolled back right now" in (await command(h, "list rolled_back")).said
    bad = await command(h, "list pending")
    assert "`pending` isn't a status" in bad.said and "`rolled_back`" in bad.said and "`ready`" in bad.said


async def test_list_links_each_card_through_chat_get_permalink(harness: Harness) -> None:
    h = harness
    actions = [h.flokit.add_action() for _ in range(3)]
    await h.start()
    cards = [await card_for(h, a["id"]) for a in actions]
    answer = await command(h, "list")
    assert len(h.slack.calls_to("chat.getPermalink")) == 3
    base = h.slack.workspace_url.rstrip("/")
    for card in cards:
        assert f"<{base}/archives/{CHANNEL}/p{card.ts.replace('.', '')}|Open card>" in answer.said
    await command(h, "list")  # a card's link never changes: asked once
    assert len(h.slack.calls_to("chat.getPermalink")) == 3


async def test_list_falls_back_to_a_built_link_when_slack_refuses(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    h.slack.fail_next("chat.getPermalink", error="internal_error", times=5)
    answer = await command(h, "list")
    assert f"https://slack.com/archives/{CHANNEL}/p{card.ts.replace('.', '')}|Open card>" in answer.said


# ---- show ----------------------------------------------------------------------------------


async def test_show_finds_an_action_by_every_kind_of_id(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action(title="Pause <!channel> creative")
    await h.start()
    card = await card_for(h, action["id"])
    n = await number(h, action["id"])
    ext = action["id"]
    for ref in (str(n), f"#{n}", ext, f"flokit:{ext}", f"FloKit/{ext}", f"FLOKIT:{ext}"):
        answer = await command(h, f"show {ref}")
        assert answer.blocks[: len(card.blocks)] == card.blocks, ref  # the card itself
        assert set(answer.buttons()) == {ids.APPROVE, ids.REJECT}
        mrkdwn = [b for b in answer.blocks if b["type"] != "header"]  # a header is plain text: never a ping
        assert "<!channel>" not in answer.body["text"] + json.dumps(mrkdwn)
    for ref in ("999999", "act_nope", f"fieldkit:{ext}"):
        answer = await command(h, f"show {ref}")
        assert f"doesn't know an action `{ref}`" in answer.said and "/signoff list" in answer.said


async def test_an_approve_click_on_the_shown_card_works_and_forged_clicks_are_refused(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    other = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    other_card = await card_for(h, other["id"])
    n = await number(h, action["id"])
    shown = await command(h, f"show {n}")
    value = shown.buttons()[ids.APPROVE]["value"]
    ephemeral_ts = "1700099999.000100"  # the ephemeral message: not a card
    click = block_action_body(
        user_id=APPROVER, action_id=ids.APPROVE, value=value, channel=CHANNEL, message_ts=ephemeral_ts,
        message_blocks=shown.blocks,
    )

    # Forged: the same click, not marked ephemeral, on a message that is no card...
    status, _, _ = await h.requester.post(click)
    assert status == 200
    await h.wait_for(lambda: ephemerals_for(h, APPROVER))
    assert "out of date" in ephemerals_for(h, APPROVER)[-1] and not h.slack.views
    # ... and a click on another card whose value was edited to this action.
    forged = block_action_body(
        user_id=APPROVER, action_id=ids.APPROVE, value=value, channel=CHANNEL, message_ts=other_card.ts,
    )
    status, _, _ = await h.requester.post(forged)
    assert status == 200
    await h.wait_for(lambda: len(ephemerals_for(h, APPROVER)) == 2)
    assert not h.slack.views

    # The real click from the ephemeral copy opens the modal; submitting it decides.
    status, _, _ = await h.requester.post(ephemeral_click(click))
    assert status == 200
    await h.wait_for(lambda: h.slack.views)
    modal = h.slack.views[-1]["view"]
    assert modal["callback_id"] == ids.APPROVE_VIEW
    status, answer = await submit(h, modal, APPROVER, "from the shown card")
    assert status == 200 and answer in ("", "{}")
    await confirmed(h, action["id"], Op.APPROVE)
    assert [c.json for c in h.flokit.calls("POST", "/approve")] == [
        {"approved_by": APPROVER_EMAIL, "note": "from the shown card"}
    ]
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})
    # An outsider's click on an ephemeral copy is still refused by the approvers check.
    outsider = block_action_body(
        user_id=OUTSIDER, action_id=ids.REJECT, value=buttons(other_card)[ids.REJECT]["value"], channel=CHANNEL,
        message_ts=ephemeral_ts,
    )
    await h.requester.post(ephemeral_click(outsider))
    await h.wait_for(lambda: ephemerals_for(h, OUTSIDER))
    assert NOT_ALLOWED in ephemerals_for(h, OUTSIDER)[-1]
    assert len(h.slack.views) == 1


# ---- decisions -----------------------------------------------------------------------------


async def test_approve_from_the_keyboard_reaches_flokit_once_and_updates_the_card(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    n = await number(h, action["id"])
    loop = asyncio.get_running_loop()
    h.flokit.set_delay(1.5)  # a slow upstream must not hold the answer up
    started = loop.time()
    answer = await command(h, f"approve {n} Aligned with Q1 plan")
    assert loop.time() - started < 1.5
    assert "Your approval of" in answer.said and "is recorded" in answer.said
    # Durable before the answer: the decision is in the store already.
    assert [(e, o, a) for e, o, a in await events(h, action["id"])][1] == ("requested", "approve", APPROVER)
    await confirmed(h, action["id"], Op.APPROVE)
    h.flokit.set_delay(0)
    assert [c.json for c in h.flokit.calls("POST", "/approve")] == [
        {"approved_by": APPROVER_EMAIL, "note": "Aligned with Q1 plan"}
    ]
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})
    text = card_text(h.slack.messages[(CHANNEL, card.ts)])
    assert f"<@{APPROVER}>" in text and "Aligned with Q1 plan" in text
    # Asking again records nothing more.
    again = await command(h, f"approve {action['id']}", OTHER_APPROVER)
    assert f"Already approved by <@{APPROVER}>" in again.said
    assert len(h.flokit.calls("POST", "/approve")) == 1


async def test_reject_requires_a_reason_and_sends_it(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    n = await number(h, action["id"])
    for text in (f"reject {n}", f"reject {n}    "):
        answer = await command(h, text, OTHER_APPROVER)
        assert "A reason is required to reject" in answer.said and f"/signoff reject {n} &lt;reason&gt;" in answer.said
    assert [e for e, _, _ in await events(h, action["id"])] == ["discovered"]
    answer = await command(h, f"reject flokit:{action['id']} creative refresh next week", OTHER_APPROVER)
    assert "Your rejection of" in answer.said
    await confirmed(h, action["id"], Op.REJECT)
    assert [c.json for c in h.flokit.calls("POST", "/reject")] == [
        {"rejected_by": "other@example.com", "reason": "creative refresh next week"}
    ]
    await h.wait_for(lambda: "creative refresh next week" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    assert not buttons(h.slack.messages[(CHANNEL, card.ts)])


async def test_rollback_only_where_the_status_allows_it(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    n = await number(h, action["id"])
    answer = await command(h, f"rollback {n}")
    assert "is awaiting a decision, so it can't be rolled back" in answer.said and "Nothing was recorded" in answer.said
    await command(h, f"approve {n}")
    await confirmed(h, action["id"], Op.APPROVE)
    answer = await command(h, f"rollback {n} ROAS fell off a cliff", OTHER_APPROVER)
    assert "Your rollback of" in answer.said
    await confirmed(h, action["id"], Op.ROLLBACK)
    assert h.flokit.actions[action["id"]]["status"] == "rolled_back"
    assert len(h.flokit.calls("POST", "/rollback")) == 1
    await h.wait_for(lambda: not buttons(h.slack.messages[(CHANNEL, card.ts)]))
    answer = await command(h, f"approve {n}")
    assert f"Already rolled back by <@{OTHER_APPROVER}>" in answer.said and "nothing was recorded" in answer.said
    answer = await command(h, f"rollback {n}")
    assert f"Already rolled back by <@{OTHER_APPROVER}>" in answer.said
    assert len(h.flokit.calls("POST", "/rollback")) == 1 and len(h.flokit.calls("POST", "/approve")) == 1


async def test_retry_sends_a_failed_decision_again(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    n = await number(h, action["id"])
    assert "no failed upstream call to retry" in (await command(h, f"retry {n}")).said
    h.flokit.fail_next("/approve", status=422)
    await command(h, f"approve {n} go")
    await h.wait_for(lambda: ids.RETRY in buttons(h.slack.messages[(CHANNEL, card.ts)]))
    answer = await command(h, f"retry {action['id']}", OTHER_APPROVER)
    assert "The approval of" in answer.said and "again" in answer.said
    await confirmed(h, action["id"], Op.APPROVE)
    assert [c.json for c in h.flokit.calls("POST", "/approve")] == [{"approved_by": APPROVER_EMAIL, "note": "go"}] * 2
    assert [e for e, _, _ in await events(h, action["id"])] == ["discovered", "requested", "failed", "retried", "confirmed"]
    assert "doesn't know an action `999999`" in (await command(h, "retry 999999")).said


async def test_racing_commands_and_a_modal_have_one_winner(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    n = await number(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, GROUP_MEMBER)  # the button click
    first, second, (status, modal_answer) = await asyncio.gather(
        command(h, f"approve {n} from APPROVER"),
        command(h, f"approve {action['id']} from OTHER", OTHER_APPROVER),
        submit(h, modal, GROUP_MEMBER, "from the modal"),
    )
    assert status == 200
    trail = await audit(h, action["id"])
    [won] = [d for d in trail if d.event == "requested"]
    recorded = [a for a in (first, second) if "is recorded" in a.said]
    if won.actor == GROUP_MEMBER:
        assert not recorded and modal_answer in ("", "{}")
    else:
        assert len(recorded) == 1 and json.loads(modal_answer)["response_action"] == "errors"
    for loser in (a for a in (first, second) if "is recorded" not in a.said):
        assert f"<@{won.actor}>" in loser.said and "nothing was recorded" in loser.said
    await confirmed(h, action["id"], Op.APPROVE)
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})
    assert len(h.flokit.calls("POST", "/approve")) == 1
    assert h.flokit.calls("POST", "/approve")[0].json["note"] == won.note


# ---- history -------------------------------------------------------------------------------


async def test_history_of_an_action_and_the_latest_decisions(harness: Harness) -> None:
    h = harness
    first = h.flokit.add_action(title="First action")
    second = h.flokit.add_action(title="Second action")
    await h.start()
    await card_for(h, first["id"])
    await card_for(h, second["id"])
    one, two = await number(h, first["id"]), await number(h, second["id"])
    await command(h, f"approve {one} <!channel> ship it")
    await confirmed(h, first["id"], Op.APPROVE)
    await command(h, f"reject {two} not this week", OTHER_APPROVER)
    await confirmed(h, second["id"], Op.REJECT)

    trail = await command(h, f"history {one}")
    said = trail.said
    assert "First action" in said and "Second action" not in said
    marks = ["Found in FloKit", f"<@{APPROVER}> asked for the approval", "FloKit confirmed the approval"]
    positions = [said.index(m) for m in marks]
    assert positions == sorted(positions), "oldest first"
    assert "&lt;!channel&gt; ship it" in said and "<!channel>" not in said
    assert trail.body["text"] == f"History of #{one}: 3 entries"

    latest = await command(h, "history")
    said = latest.said
    assert "Found in FloKit" not in said  # discoveries are left out
    rejected = said.index(f"<@{OTHER_APPROVER}>")
    approved = said.index(f"<@{APPROVER}> asked for the approval")
    assert rejected < approved, "newest first"
    assert f"`#{two}` Second action" in said and f"`#{one}` First action" in said
    assert "doesn't know an action `999999`" in (await command(h, "history 999999")).said


# ---- stats ---------------------------------------------------------------------------------


async def test_stats_over_a_known_week_and_month(harness: Harness) -> None:
    h = harness
    clock = FakeClock()
    old = h.flokit.add_action()
    await h.start(clock=clock)
    await card_for(h, old["id"])
    assert "No decisions were confirmed in the last 7 days" in (await command(h, "stats")).said

    clock.advance(timedelta(hours=2))
    await command(h, f"approve {old['id']}")  # 2 h after it was first seen, 10 days ago
    await confirmed(h, old["id"], Op.APPROVE)
    clock.advance(timedelta(days=10))
    a1, a2, a3 = (h.flokit.add_action() for _ in range(3))
    await h.poll()
    for a in (a1, a2, a3):
        await card_for(h, a["id"])
    for minutes, text, user, external_id, op in [
        (10, "approve {}", APPROVER, a1["id"], Op.APPROVE),
        (20, "reject {} not now", OTHER_APPROVER, a2["id"], Op.REJECT),
        (30, "approve {}", OTHER_APPROVER, a3["id"], Op.APPROVE),
        (10, "rollback {}", OTHER_APPROVER, a1["id"], Op.ROLLBACK),
    ]:
        clock.advance(timedelta(minutes=minutes))
        assert "is recorded" in (await command(h, text.format(external_id), user)).said
        await confirmed(h, external_id, op)
    # An automatic rollback: Signoff itself decides, through the same outbox.
    clock.advance(timedelta(minutes=10))
    assert h.bot is not None
    async with h.bot.db.write() as session:
        decided = await queries.begin_decision(
            session, action_id=await number(h, a3["id"]), op=Op.ROLLBACK,
                allowed_from=TRANSITIONS[Op.ROLLBACK].allowed_from, in_flight=TRANSITIONS[Op.ROLLBACK].in_flight,
                actor="signoff", note="rule tripped",
            idempotency_key="auto-rollback-a3", notify_channel=None, now=clock(),
        )
        assert decided is not None
    h.bot.kick("outbox")
    await confirmed(h, a3["id"], Op.ROLLBACK)

    week = (await command(h, "stats")).said
    assert "*Decisions in the last 7 days* — 5 confirmed" in week
    assert f"<@{APPROVER}> — 1: 1 approved" in week
    assert f"<@{OTHER_APPROVER}> — 3: 1 approved · 1 rejected · 1 rolled back" in week
    assert "Signoff (automatic) — 1: 1 rolled back" in week
    assert "*By type*\\n2 approved · 1 rejected · 2 rolled back" in week
    assert "*Median time to decision*\\n30m from first seen to approved or rejected, over 3 actions" in week
    assert "*Rollbacks*\\n2 (1 automatic)" in week
    assert week == (await command(h, "stats 7d")).said

    month = (await command(h, "stats 30d")).said
    assert "— 6 confirmed" in month
    assert f"<@{APPROVER}> — 2: 2 approved" in month
    assert "45m from first seen to approved or rejected, over 4 actions" in month
    assert "`1y` isn't a period" in (await command(h, "stats 1y")).said
