"""Pure unit tests for bot/render.py: content, buttons per status, escaping and limits."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from bot import ids
from bot.render import (
    CardView,
    DecisionView,
    already_decided_text,
    approve_modal,
    card_blocks,
    card_metadata,
    card_text,
    check_failed_text,
    conflict_text,
    failed_text,
    not_allowed_text,
    reject_modal,
    stale_card_text,
    unknown_action_text,
)
from core.lifecycle import options_for
from sources.base import IN_FLIGHT, Capabilities, Op, Status

CREATED = datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)
DECIDED = datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc)
HOSTILE = "<!channel> hi <@U123> & <https://evil.example|click> <!subteam^S1>"


def make_card(**changes: Any) -> CardView:
    """The seed's example action, as the store would hand it to the renderer."""
    card = CardView(
        action_id=42,
        source="flokit",
        external_id="act_01hx4j7k9m2n3p5q6r8s",
        type="budget_shift",
        title="Shift 20% budget from TikTok Broad to Meta Search",
        rationale=(
            "Meta Search cohort (Jan) reached payback in 16 days vs. TikTok Broad at 34 days. "
            "Reallocating $4,400/week is projected to improve blended ROAS by 0.3x."
        ),
        status=Status.READY,
        expected_impact={"metric": "blended_roas_30d", "direction": "increase", "magnitude": 0.3},
        data_signals=[
            {"label": "Meta Search 30-day ROAS", "value": "2.31x"},
            {"label": "TikTok Broad 30-day ROAS", "value": "0.91x"},
            {"label": "Meta Search payback days", "value": "16"},
            {"label": "TikTok Broad payback days", "value": "34"},
        ],
        guardrail_checks=[
            {"check": "minimum_cohort_size", "passed": True, "detail": "Meta Search cohort n=1,989"},
            {"check": "statistical_confidence", "passed": True, "detail": "95% confidence in ROAS delta"},
            {"check": "spend_change_within_limit", "passed": True, "detail": "Shift is 20% of campaign budget"},
        ],
        rollback_conditions=[
            "If blended ROAS drops >15% within 7 days of execution",
            "If Meta Search trial conversion rate falls below 0.65",
        ],
        created_at=CREATED,
        options=(),
        decision=None,
        decided_by_upstream=None,
        last_error=None,
        retry_available=False,
    )
    ops = changes.pop("ops", frozenset({Op.APPROVE, Op.REJECT, Op.ROLLBACK}))
    card = dataclasses.replace(card, **changes)
    # The options the core would offer for this state, from a source that can do ``ops``.
    options = options_for(card.status, Capabilities(ops=ops), None)
    return dataclasses.replace(card, options=changes.get("options", options))


def decision(event: str = "confirmed", op: str | None = "approve", actor: str = "U0123ABCD", note: str | None = None,
             to_status: str | None = None) -> DecisionView:
    return DecisionView(event=event, op=op, actor=actor, note=note, at=DECIDED, to_status=to_status)


def dicts(blocks: list) -> list[dict]:
    return [b.to_dict() for b in blocks]


def dump(blocks: list) -> str:
    return json.dumps(dicts(blocks), ensure_ascii=False)


def buttons(blocks: list) -> list[dict]:
    return [e for b in dicts(blocks) if b["type"] == "actions" for e in b["elements"]]


def button_ids(blocks: list) -> list[str]:
    return [b["action_id"] for b in buttons(blocks)]


def context_text(blocks: list) -> str:
    return " ".join(e["text"] for b in dicts(blocks) if b["type"] == "context" for e in b["elements"])


def text_objects(node: Any):
    """Every text object (plain_text or mrkdwn) anywhere in a to_dict() tree."""
    if isinstance(node, dict):
        if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
            yield node
        for value in node.values():
            yield from text_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from text_objects(value)


def assert_within_limits(blocks: list) -> None:
    for block in blocks:
        block.validate_json()
    data = dicts(blocks)
    assert 0 < len(data) <= 50
    for block in data:
        for obj in text_objects(block):
            assert 0 < len(obj["text"]) <= 3000, obj["text"][:80]
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            assert len(block.get("text", {}).get("text", "")) <= 3000
            fields = block.get("fields", [])
            assert len(fields) <= 10
            assert all(0 < len(f["text"]) <= 2000 for f in fields)
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
        if block["type"] == "actions":
            assert 0 < len(block["elements"]) <= 25
            for button in block["elements"]:
                assert len(button["text"]["text"]) <= 75
                assert len(button["value"]) <= 2000
                if "confirm" in button:
                    confirm = button["confirm"]
                    assert len(confirm["title"]["text"]) <= 100
                    assert len(confirm["text"]["text"]) <= 300
                    assert len(confirm["confirm"]["text"]) <= 30
                    assert len(confirm["deny"]["text"]) <= 30


def mrkdwn_texts(blocks: list) -> list[str]:
    return [o["text"] for b in dicts(blocks) for o in text_objects(b) if o["type"] == "mrkdwn"]


# ---- content ---------------------------------------------------------------------------


def test_realistic_card_shows_every_section() -> None:
    card = make_card()
    blocks = card_blocks(card)
    text = dump(blocks)

    header = dicts(blocks)[0]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": card.title, "emoji": True}}
    assert "Meta Search cohort (Jan) reached payback in 16 days" in text
    assert "blended_roas_30d" in text
    assert "↑ increase" in text
    assert "0.3" in text
    assert "budget_shift" in text
    for signal in card.data_signals:
        assert signal["label"] in text and signal["value"] in text
    for check in card.guardrail_checks:
        assert f"✅ {check['check']} — {check['detail']}" in text
    assert "all 3 passed" in text
    # ">" in a rollback condition is escaped like any upstream text.
    assert "If blended ROAS drops &gt;15% within 7 days of execution" in text
    assert "If Meta Search trial conversion rate falls below 0.65" in text
    assert "<!date^1710482400^{date_short_pretty} at {time}|2024-03-15 06:00 UTC>" in text
    assert "🟡 Awaiting decision" in context_text(blocks)
    assert_within_limits(blocks)


def test_every_mrkdwn_object_is_verbatim() -> None:
    blocks = card_blocks(make_card(status=Status.APPROVED, decision=decision()))
    objs = [o for b in dicts(blocks) for o in text_objects(b) if o["type"] == "mrkdwn"]
    assert objs and all(o.get("verbatim") is True for o in objs)


def test_failed_guardrails_are_counted_and_listed_first() -> None:
    checks = [
        {"check": "minimum_cohort_size", "passed": True, "detail": "n=1,989"},
        {"check": "spend_change_within_limit", "passed": False, "detail": "Shift is 45% of budget"},
        {"check": "statistical_confidence", "passed": False, "detail": "only 70% confidence"},
    ]
    text = dump(card_blocks(make_card(guardrail_checks=checks)))
    assert "2 of 3 failed" in text
    assert text.index("❌ spend_change_within_limit") < text.index("✅ minimum_cohort_size")
    assert "❌ statistical_confidence — only 70% confidence" in text


def test_missing_optional_parts_still_render() -> None:
    card = make_card(expected_impact=None, data_signals=[], guardrail_checks=[], rollback_conditions=[],
                     created_at=None, rationale="", title="")
    blocks = card_blocks(card)
    assert_within_limits(blocks)
    text = dump(blocks)
    assert "No rationale given" in text
    assert "Guardrail checks:* none reported" in text


def test_partial_impact() -> None:
    text = dump(card_blocks(make_card(expected_impact={"direction": "decrease"})))
    assert "↓ decrease" in text
    assert "*Metric*" not in text and "*Magnitude*" not in text


# ---- buttons per status ----------------------------------------------------------------

EXPECTED_BUTTONS = {
    Status.DRAFT: [],
    Status.READY: [ids.APPROVE, ids.REJECT],
    Status.APPROVED: [ids.ROLLBACK],
    Status.RUNNING: [ids.ROLLBACK],
    Status.SUCCEEDED: [ids.ROLLBACK],
    Status.FAILED: [],
    Status.REJECTED: [],
    Status.ROLLED_BACK: [],
    Status.APPROVING: [],
    Status.REJECTING: [],
    Status.ROLLING_BACK: [],
    Status.DECIDING: [],
    Status.EXPIRED: [],
}


def test_button_table_covers_every_status() -> None:
    assert set(EXPECTED_BUTTONS) == set(Status)


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.value)
def test_buttons_per_status(status: Status) -> None:
    blocks = card_blocks(make_card(status=status))
    assert button_ids(blocks) == EXPECTED_BUTTONS[status]
    for button in buttons(blocks):
        assert button["value"] == "42"
    if not EXPECTED_BUTTONS[status]:
        assert all(b["type"] != "actions" for b in dicts(blocks))
    assert_within_limits(blocks)


def test_button_styles() -> None:
    ready = {b["action_id"]: b for b in buttons(card_blocks(make_card()))}
    assert ready[ids.APPROVE]["style"] == "primary"
    assert ready[ids.REJECT]["style"] == "danger"
    assert "confirm" not in ready[ids.APPROVE]


@pytest.mark.parametrize("status", [Status.APPROVED, Status.RUNNING, Status.SUCCEEDED])
def test_no_rollback_when_source_cannot(status: Status) -> None:
    card = make_card(status=status, ops=frozenset({Op.APPROVE, Op.REJECT}))
    assert ids.ROLLBACK not in button_ids(card_blocks(card))


def test_only_ops_the_source_offers() -> None:
    assert button_ids(card_blocks(make_card(ops=frozenset({Op.APPROVE})))) == [ids.APPROVE]
    assert button_ids(card_blocks(make_card(ops=frozenset()))) == []


def test_rollback_has_a_confirm() -> None:
    card = make_card(status=Status.RUNNING, title="Pause <!here> & stuff")
    (rollback,) = buttons(card_blocks(card))
    assert rollback["action_id"] == ids.ROLLBACK
    assert rollback["style"] == "danger"
    assert rollback["value"] == "42"
    confirm = rollback["confirm"]
    assert confirm["title"]["text"] == "Roll back this action?"
    assert "Pause &lt;!here&gt; &amp; stuff" in confirm["text"]["text"]
    assert confirm["style"] == "danger"


def test_failed_with_retry_shows_retry_and_error() -> None:
    card = make_card(
        decision=decision(event="failed", op="approve"),
        last_error="403 Forbidden: <!channel> key revoked",
        retry_available=True,
    )
    blocks = card_blocks(card)
    assert button_ids(blocks) == [ids.APPROVE, ids.REJECT, ids.RETRY]
    assert all(b["value"] == "42" for b in buttons(blocks))
    text = dump(blocks)
    assert "⚠️ *Approval failed:* 403 Forbidden: &lt;!channel&gt; key revoked" in text
    assert_within_limits(blocks)


@pytest.mark.parametrize(
    ("op", "status", "words"),
    [("reject", Status.READY, "Rejection failed"), ("rollback", Status.RUNNING, "Rollback failed"),
     (None, Status.READY, "The last request failed")],
)
def test_failure_wording_by_op(op: str | None, status: Status, words: str) -> None:
    card = make_card(status=status, decision=decision(event="failed", op=op), last_error="boom",
                     retry_available=True)
    blocks = card_blocks(card)
    assert words in dump(blocks)
    assert ids.RETRY in button_ids(blocks)


def test_failed_without_retry_shows_error_but_no_retry() -> None:
    card = make_card(decision=decision(event="failed"), last_error="boom", retry_available=False)
    blocks = card_blocks(card)
    assert "Approval failed" in dump(blocks)
    assert ids.RETRY not in button_ids(blocks)


@pytest.mark.parametrize("status", sorted(IN_FLIGHT | {Status.REJECTED, Status.ROLLED_BACK}, key=str))
def test_no_retry_in_flight_or_at_the_end(status: Status) -> None:
    card = make_card(status=status, decision=decision(event="failed"), last_error="boom", retry_available=True)
    assert button_ids(card_blocks(card)) == []


# ---- status line -----------------------------------------------------------------------


def test_status_in_flight_names_requester() -> None:
    card = make_card(status=Status.APPROVING, decision=decision(event="requested", actor="U1"))
    assert context_text(card_blocks(card)) == "⏳ Approving… requested by <@U1>"


def test_status_approved_by_with_time_and_note() -> None:
    card = make_card(status=Status.APPROVED, decision=decision(actor="U1", note="Looks good <!channel>"))
    line = context_text(card_blocks(card))
    assert line.startswith("✅ Approved by <@U1> at <!date^1710513000^")
    assert line.endswith(" — Looks good &lt;!channel&gt;")


def test_status_approved_upstream() -> None:
    card = make_card(status=Status.APPROVED, decision=decision(event="upstream", op=None, actor="upstream"),
                     decided_by_upstream="user@x.com")
    assert context_text(card_blocks(card)) == "✅ Approved in FloKit by user@x.com"


def test_status_rejected_with_reason() -> None:
    card = make_card(status=Status.REJECTED, decision=decision(op="reject", actor="U1", note="creative refresh"))
    line = context_text(card_blocks(card))
    assert line.startswith("🚫 Rejected by <@U1> at ")
    assert line.endswith(" — creative refresh")


def test_status_rolled_back_and_running() -> None:
    rolled = make_card(status=Status.ROLLED_BACK, decision=decision(op="rollback", actor="U1"))
    assert context_text(card_blocks(rolled)).startswith("↩️ Rolled back by <@U1>")
    assert context_text(card_blocks(make_card(status=Status.RUNNING))) == "▶️ Running"


def test_status_conflict() -> None:
    card = make_card(status=Status.RUNNING, decision=decision(event="conflict"))
    assert context_text(card_blocks(card)) == "⚠️ Conflict: someone else decided upstream; now ▶️ Running"


def test_non_user_actor_cannot_inject_a_mention() -> None:
    card = make_card(status=Status.APPROVED, decision=decision(actor="x> <!channel"))
    line = context_text(card_blocks(card))
    assert "<!channel" not in line and "&lt;!channel" in line


# ---- hostile and huge input ------------------------------------------------------------


def hostile_card() -> CardView:
    return make_card(
        title=HOSTILE,
        rationale=HOSTILE,
        type=HOSTILE,
        external_id=HOSTILE,
        expected_impact={"metric": HOSTILE, "direction": HOSTILE, "magnitude": HOSTILE},
        data_signals=[{"label": HOSTILE, "value": HOSTILE}],
        guardrail_checks=[{"check": HOSTILE, "passed": False, "detail": HOSTILE}],
        rollback_conditions=[HOSTILE],
        status=Status.ROLLED_BACK,
        decision=decision(op="rollback", actor="U1", note=HOSTILE),
        last_error=HOSTILE,
    )


def test_hostile_input_is_escaped_in_mrkdwn() -> None:
    card = hostile_card()
    blocks = card_blocks(card)
    texts = mrkdwn_texts(blocks)
    joined = "\n".join(texts)
    for raw in ("<!channel>", "<@U123>", "<https://evil", "<!subteam"):
        assert raw not in joined
    assert "&lt;!channel&gt;" in joined
    assert "&lt;@U123&gt;" in joined
    assert "&amp;" in joined
    # Only Signoff's own markup opens an angle bracket: the real decider and dates.
    assert all(part.startswith(("@U1>", "!date^")) for t in texts for part in t.split("<")[1:])
    # Plain text (the header) is shown literally by Slack, never parsed.
    assert dicts(blocks)[0]["text"]["type"] == "plain_text"
    assert_within_limits(blocks)


def test_hostile_input_is_escaped_in_text_modals_and_replies() -> None:
    card = hostile_card()
    assert "<" not in card_text(card)
    for view in (approve_modal(card, "{}"), reject_modal(card, "{}")):
        for obj in text_objects(view.to_dict()):
            if obj["type"] == "mrkdwn":
                assert "<!channel>" not in obj["text"] and "<@U123>" not in obj["text"]
    assert "<" not in failed_text("approve", HOSTILE)


def test_huge_input_stays_within_every_limit() -> None:
    card = make_card(
        title="T" * 10_000,
        rationale="R&<" * 40_000,
        type="y" * 5000,
        external_id="e" * 5000,
        expected_impact={"metric": "m" * 5000, "direction": "d" * 5000, "magnitude": "9" * 5000},
        data_signals=[{"label": f"signal {i} " + "L" * 300, "value": "V" * 300} for i in range(500)],
        guardrail_checks=[{"check": f"check {i}", "passed": i % 2 == 0, "detail": "D&" * 2000} for i in range(500)],
        rollback_conditions=[f"condition {i} " + "C>" * 1000 for i in range(200)],
        status=Status.READY,
        decision=decision(event="failed", note="N" * 5000),
        decided_by_upstream="u" * 5000,
        last_error="E<" * 5000,
        retry_available=True,
    )
    blocks = card_blocks(card)
    assert_within_limits(blocks)
    text = dump(blocks)
    assert "more" in text and "…and " in text
    assert "250 of 500 failed" in text
    assert len(card_text(card)) <= 3000
    assert_within_limits(card_blocks(dataclasses.replace(card, status=Status.APPROVED, decision=decision(note="N" * 5000))))
    for view in (approve_modal(card, "x" * 3000), reject_modal(card, "x" * 3000)):
        view.validate_json()
        for block in view.blocks:
            block.validate_json()
        for obj in text_objects(view.to_dict()):
            assert 0 < len(obj["text"]) <= 3000


def test_list_overflow_says_how_many_more() -> None:
    signals = [{"label": f"s{i}", "value": "v" * 100} for i in range(500)]
    section = next(b for b in dicts(card_blocks(make_card(data_signals=signals))) if "Data signals" in b.get("text", {}).get("text", ""))
    body = section["text"]["text"]
    shown = body.count("\n• ")
    assert 0 < shown < 500
    assert body.endswith(f"…and {500 - shown} more")


# ---- text, metadata ----------------------------------------------------------------------


def test_card_text() -> None:
    card = make_card()
    assert card_text(card) == "Action awaiting approval: Shift 20% budget from TikTok Broad to Meta Search"
    assert card_text(make_card(status=Status.APPROVED)).startswith("Action approved: ")
    assert len(card_text(make_card(title="x" * 10_000))) <= 3000


def test_card_metadata() -> None:
    meta = card_metadata(make_card()).to_dict()
    assert meta == {
        "event_type": ids.CARD_EVENT_TYPE,
        "event_payload": {"action_id": 42, "source": "flokit", "external_id": "act_01hx4j7k9m2n3p5q6r8s"},
    }


# ---- modals ------------------------------------------------------------------------------


def input_block(view_dict: dict) -> dict:
    (block,) = [b for b in view_dict["blocks"] if b["type"] == "input"]
    return block


def test_approve_modal() -> None:
    view = approve_modal(make_card(), '{"action_id": 42}')
    view.validate_json()
    data = view.to_dict()
    assert data["type"] == "modal"
    assert data["callback_id"] == ids.APPROVE_VIEW
    assert data["title"]["text"] == "Approve action" and len(data["title"]["text"]) <= 24
    assert data["submit"]["text"] == "Approve"
    assert data["private_metadata"] == '{"action_id": 42}'
    block = input_block(data)
    assert block["block_id"] == ids.NOTE_BLOCK
    assert block["optional"] is True
    assert block["element"]["action_id"] == ids.NOTE_INPUT
    assert block["element"]["multiline"] is True
    assert block["element"]["max_length"] == 1000
    assert "Shift 20% budget" in json.dumps(data)
    assert "guardrail checks failed" not in json.dumps(data)


def test_approve_modal_warns_about_failed_guardrails() -> None:
    checks = [{"check": "spend_change_within_limit", "passed": False, "detail": "45%"},
              {"check": "minimum_cohort_size", "passed": True, "detail": "ok"}]
    data = approve_modal(make_card(guardrail_checks=checks), "{}").to_dict()
    first = data["blocks"][0]["text"]["text"]
    assert "1 of 2 guardrail checks failed" in first
    assert "❌ spend_change_within_limit — 45%" in first


def test_reject_modal() -> None:
    view = reject_modal(make_card(), "meta")
    view.validate_json()
    data = view.to_dict()
    assert data["callback_id"] == ids.REJECT_VIEW
    assert len(data["title"]["text"]) <= 24
    assert data["submit"]["text"] == "Reject"
    block = input_block(data)
    assert block["block_id"] == ids.REASON_BLOCK
    assert block["optional"] is False
    assert block["element"]["action_id"] == ids.REASON_INPUT
    assert block["element"]["multiline"] is True
    assert block["element"]["min_length"] == 1
    assert block["element"]["max_length"] == 1000


def test_modal_refuses_oversized_private_metadata() -> None:
    with pytest.raises(ValueError):
        approve_modal(make_card(), "x" * 3001)


# ---- ephemeral replies -------------------------------------------------------------------


def test_already_decided_text() -> None:
    text = already_decided_text(decision(actor="U1"), Status.APPROVED)
    assert text.startswith("Already approved by <@U1> at <!date^1710513000^")
    assert text.endswith("nothing was recorded for you.")
    assert "already rejected" in already_decided_text(None, Status.REJECTED)
    in_flight = already_decided_text(decision(event="requested", actor="U1"), Status.APPROVING)
    assert "being approved" in in_flight and "<@U1>" in in_flight


def test_conflict_and_failed_texts() -> None:
    assert "already running" in conflict_text(Status.RUNNING, Op.APPROVE)
    assert "your approval" in conflict_text(Status.RUNNING, "approve")
    assert "Rollback failed" in failed_text(Op.ROLLBACK, "timeout")
    assert "E" * 900 in failed_text("approve", "E" * 10_000) and len(failed_text("approve", "E" * 10_000)) < 1200


def test_plain_replies() -> None:
    assert "approvers list" in not_allowed_text()
    assert "<@U9>" in not_allowed_text(["U9"])
    assert "<!channel>" not in not_allowed_text(["<!channel>"])
    for text in (stale_card_text(), unknown_action_text(), check_failed_text(), not_allowed_text()):
        assert text and len(text) <= 3000 and "nothing was recorded" in text.lower()
    assert "try again" in check_failed_text()


def test_a_sources_own_details_are_shown_escaped_cut_and_counted() -> None:
    details = tuple((f"Field {i}", f"value {i}") for i in range(12)) + (("Name", "<!channel> & " + "x" * 5000),)
    card = make_card(details=(("Name", "<!channel> & " + "x" * 5000),) + details, url="https://flow.example/t/1")
    blocks = [b.to_dict() for b in card_blocks(card)]
    detail_fields = next(b["fields"] for b in blocks if b["type"] == "section" and "*Name*" in json.dumps(b))
    assert len(detail_fields) == 10
    first = detail_fields[0]["text"]
    assert "&lt;!channel&gt; &amp;" in first and "<!channel>" not in first and len(first) <= 2000
    assert detail_fields[-1]["text"] == "*More*\n5 more fields upstream"
    assert "<https://flow.example/t/1|" in json.dumps(blocks)
    # A link that could break out of mrkdwn is not made a link.
    unsafe = [b.to_dict() for b in card_blocks(make_card(url="https://x.example/a|<!here>"))]
    assert "<!here>" not in json.dumps(unsafe)


def test_option_buttons_past_five_go_to_an_overflow_menu_and_other_options_ask_first() -> None:
    from bot import ids
    from bot.render import MAX_BUTTONS, option_buttons
    from sources.base import Option

    five = [Option(Op.APPROVE, "Approve", "a"), Option(Op.REJECT, "Reject", "r")] + [
        Option(Op.OTHER, f"Step {i}", f"s{i}") for i in range(3)
    ]
    elements = [e.to_dict() for e in option_buttons(five, "7", source="flowdash")]
    assert [e["type"] for e in elements] == ["button"] * 5
    assert "confirm" not in elements[0] and elements[2]["confirm"]["confirm"]["text"] == "Run"
    six = five + [Option(Op.OTHER, "Step 9", "s9")]
    elements = [e.to_dict() for e in option_buttons(six, "7", source="flowdash")]
    assert [e["type"] for e in elements] == ["button"] * (MAX_BUTTONS - 1) + ["overflow"]
    menu = elements[-1]
    assert menu["action_id"] == ids.OVERFLOW and [o["text"]["text"] for o in menu["options"]] == ["Step 2", "Step 9"]
    assert ids.parse_overflow_value(menu["options"][0]["value"]) == ("7", "other", "s2")
    many = five + [Option(Op.OTHER, f"More {i}", f"m{i}") for i in range(20)]
    assert len(option_buttons(many, "7")[-1].to_dict()["options"]) == 5  # Slack's limit
