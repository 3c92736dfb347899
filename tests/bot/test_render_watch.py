"""Pure renderers of the rollback watch: rule lines on the card and notices in its thread."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest

from bot import ids
from bot.render import WatchView, card_blocks, rule_line, watch_state
from bot.render_notices import NoticeView, notice_blocks, notice_metadata, notice_text
from tests.bot.test_render import HOSTILE, make_card

SEED = [
    "If blended ROAS drops >15% within 7 days of execution",
    "If Meta Search trial conversion rate falls below 0.65",
]


def watch(**changes: Any) -> WatchView:
    values: dict[str, Any] = dict(
        position=0, reading="ok", detail=None, tripped=False, baseline=3.2, active=True, ended=None
    )
    values.update(changes)
    return WatchView(**values)


def text_of(blocks: list[Any]) -> str:
    return html.unescape(json.dumps([b.to_dict() for b in blocks], ensure_ascii=False))


def test_before_approval_the_card_reads_back_each_rule() -> None:
    text = text_of(card_blocks(make_card(rollback_conditions=SEED)))
    assert "blended_roas drops >15% vs value at execution · within 7d" in text
    assert "meta_search_trial_conversion_rate < 0.65 · while running" in text
    assert "within limit" not in text and "not checked" not in text


def test_an_unparsed_condition_is_kept_and_marked_for_a_person() -> None:
    line = rule_line("If the brand team objects")
    assert "If the brand team objects" in line and "checked by a person" in line


@pytest.mark.parametrize(
    ("view", "shown", "not_shown"),
    [
        (watch(), "within limit", "tripped"),
        (watch(tripped=True), "tripped", "within limit"),
        (watch(reading="pending", baseline=None), "not checked yet", "baseline"),
        (watch(reading="missing", detail="no blended_roas"), "no data: no blended_roas", "within limit"),
        (watch(reading="stale", detail="latest from 2024-03-01"), "stale data", "within limit"),
        (watch(reading="error", detail="metrics source: HTTP 500"), "cannot read the metric", "within limit"),
        (watch(reading="no_provider"), "no metrics source configured", "within limit"),
        (watch(active=False, ended="window_over"), "window over", "within limit"),
        (watch(active=False, ended="action rolled_back"), "no longer watched", "window over"),
    ],
)
def test_watch_states(view: WatchView, shown: str, not_shown: str) -> None:
    state = watch_state(view)
    assert shown in state and not_shown not in state


def test_the_card_pairs_each_condition_with_its_own_watch() -> None:
    card = make_card(
        rollback_conditions=SEED,
        watches=(watch(position=0, tripped=True), watch(position=1, reading="missing", detail="gone", baseline=None)),
    )
    text = text_of(card_blocks(card))
    first, second = text.index("blended_roas drops"), text.index("meta_search_trial_conversion_rate <")
    assert first < text.index("tripped") < second < text.index("no data: gone")


def test_hostile_detail_cannot_mention_anyone() -> None:
    state = watch_state(watch(reading="error", detail=HOSTILE))
    assert "<!channel>" not in state and "<@U123>" not in state


def notice(kind: str, **payload: Any) -> NoticeView:
    return NoticeView(notice_id=7, action_id=42, kind=kind, payload=payload, source="flokit", title="Shift budget")


TRIP = dict(
    rule="blended_roas drops >15% vs value at execution · within 7d", condition=SEED[0], metric="blended_roas",
    value=2.5, baseline=3.2, detail="down 21.9%", approver="U0APPROVER", auto_rollback=False, rollback_queued=False,
)


def test_a_trip_names_rule_value_baseline_and_approver_with_a_rollback_button() -> None:
    view = notice("trip", **TRIP)
    text = html.unescape(notice_text(view))
    assert "blended_roas drops >15%" in text and "2.5" in text and "3.2" in text and "<@U0APPROVER>" in text
    [button] = [e for b in notice_blocks(view) for e in (b.to_dict().get("elements") or [])]
    assert button["action_id"] == ids.ROLLBACK and button["value"] == "42" and button["confirm"]


def test_an_automatic_rollback_offers_no_button_and_says_so() -> None:
    view = notice("trip", **{**TRIP, "auto_rollback": True, "rollback_queued": True})
    assert "rolling it back" in notice_text(view)
    assert len(notice_blocks(view)) == 1


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (dict(event="confirmed", op="approve", actor="U0APPROVER", note="go", to_status="approved"), "Approved by <@U0APPROVER> — go"),
        (dict(event="confirmed", op="rollback", actor="signoff", note="rule tripped", to_status="rolled_back"), "automatically by Signoff"),
        (dict(event="upstream", actor="upstream", note=None, to_status="running"), "Running — seen in FloKit"),
        (dict(event="upstream", actor="upstream", note="ops@x.example", to_status="rolled_back"), "seen in FloKit by ops@x.example"),
        (dict(event="conflict", op="approve", actor="upstream", to_status="rejected"), "FloKit refused the approval"),
        (dict(event="failed", op="approve", actor="signoff", error="HTTP 422", to_status="ready"), "Approval failed: HTTP 422"),
    ],
)
def test_status_notices(payload: dict[str, Any], expected: str) -> None:
    assert expected in html.unescape(notice_text(notice("status", **payload)))


def test_recovered_and_window_notices() -> None:
    assert "Back within limit" in notice_text(notice("recovered", rule="r", value=0.7))
    assert "never tripped" in notice_text(notice("window_over", rule="r", trips=0))
    assert "tripped 2 time(s)" in notice_text(notice("window_over", rule="r", trips=2))


def test_notices_escape_what_came_from_outside_and_carry_their_id() -> None:
    text = notice_text(notice("status", event="upstream", actor="upstream", note=HOSTILE, to_status="running"))
    assert "<!channel>" not in text and "<@U123>" not in text
    assert notice_metadata(notice("recovered")).to_dict()["event_payload"] == {"notice_id": 7}


def test_a_trip_alert_drops_its_button_once_the_action_cannot_be_rolled_back() -> None:
    from sources.base import Status

    view = notice("trip", **TRIP)
    running = [b.to_dict() for b in notice_blocks(view, make_card(status=Status.RUNNING))]
    assert any(b["type"] == "actions" for b in running)
    done = [b.to_dict() for b in notice_blocks(view, make_card(status=Status.ROLLED_BACK))]
    assert not any(b["type"] == "actions" for b in done)
    assert "Now: ↩️ Rolled back" in json.dumps(done, ensure_ascii=False)
