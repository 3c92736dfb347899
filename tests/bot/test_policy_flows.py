"""Routes that change how a decision is made: the two-person rule and a typed confirmation
for failed guardrails. Real bot, fakes over loopback, signed modal submissions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot import ids
from tests.conftest import APPROVER, CHANNEL, OTHER_APPROVER, Harness
from tests.fakes.cards import audit, card_for, card_text, ephemerals_for, open_modal, submit
from tests.fakes.slack_requests import view_submission_body

FAILED_GUARDRAILS = [
    {"check": "minimum_cohort_size", "passed": False, "detail": "n=40, below 500"},
    {"check": "spend_change_within_limit", "passed": True, "detail": "10%"},
]


async def start_with(h: Harness, tmp_path: Any, toml: str) -> None:
    config = tmp_path / "signoff.toml"
    config.write_text(toml)
    await h.start(signoff_config=str(config))


async def submit_approval(h: Harness, modal: dict[str, Any], user: str, note: str | None, confirm: str | None) -> tuple[int, str]:
    values: dict[str, dict[str, str | None]] = {ids.NOTE_BLOCK: {ids.NOTE_INPUT: note}}
    if confirm is not None:
        values[ids.CONFIRM_BLOCK] = {ids.CONFIRM_INPUT: confirm}
    body = view_submission_body(
        user_id=user, callback_id=modal["callback_id"], private_metadata=modal["private_metadata"], values=values
    )
    status, answer, _ = await h.requester.post(body)
    return status, answer


async def test_two_person_rule_one_approval_waits_and_the_same_person_twice_does_not_count(
    harness: Harness, tmp_path: Any
) -> None:
    h = harness
    await start_with(h, tmp_path, '[[routes]]\ntypes = ["budget_shift"]\nrequired_approvals = 2\n')
    action = h.flokit.add_action()
    await h.poll()
    card = await card_for(h, action["id"])

    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    assert "2 different approvers" in json.dumps(modal)
    status, answer = await submit(h, modal, APPROVER, "first look")
    assert status == 200 and answer in ("", "{}")
    await h.wait_for(lambda: any("1 of 2" in e for e in ephemerals_for(h, APPROVER)))
    await h.wait_for(lambda: "1 of 2 approvals" in card_text(h.slack.messages[(CHANNEL, card.ts)]))
    assert not h.flokit.calls("POST", "/approve")

    again = await open_modal(h, card, ids.APPROVE, APPROVER)
    status, answer = await submit(h, again, APPROVER, "me again")
    assert status == 200 and "already approved" in answer
    await h.run_job("outbox")  # a queued approval would be sent now
    assert not h.flokit.calls("POST", "/approve")

    second = await open_modal(h, card, ids.APPROVE, OTHER_APPROVER)
    status, answer = await submit(h, second, OTHER_APPROVER, "agreed")
    assert status == 200 and answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    [call] = h.flokit.calls("POST", "/approve")
    assert call.json["approved_by"] == "other@example.com"
    assert f"also approved by <@{APPROVER}>" in call.json["note"]
    async def confirmed() -> bool:
        return any(d.event == "confirmed" for d in await audit(h, action["id"]))

    await h.wait_for(confirmed)
    trail = [(d.event, d.actor) for d in await audit(h, action["id"])]
    assert trail[1:] == [
        ("endorsed", APPROVER), ("endorsed", OTHER_APPROVER), ("requested", OTHER_APPROVER), ("confirmed", OTHER_APPROVER),
    ]


async def test_racing_second_approvals_send_one_approval(harness: Harness, tmp_path: Any) -> None:
    h = harness
    await start_with(h, tmp_path, "[[routes]]\nrequired_approvals = 2\n")
    action = h.flokit.add_action()
    await h.poll()
    card = await card_for(h, action["id"])
    first = await open_modal(h, card, ids.APPROVE, APPROVER)
    second = await open_modal(h, card, ids.APPROVE, OTHER_APPROVER)
    await asyncio.gather(
        submit(h, first, APPROVER, None), submit(h, second, OTHER_APPROVER, None),
        submit(h, first, APPROVER, None), submit(h, second, OTHER_APPROVER, None),
    )
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    await h.run_job("outbox")  # a second queued approval would be sent now
    assert len(h.flokit.calls("POST", "/approve")) == 1
    events = [d.event for d in await audit(h, action["id"])]
    assert events.count("endorsed") == 2 and events.count("requested") == 1


async def test_failed_guardrails_need_a_typed_confirmation_where_the_route_says_so(harness: Harness, tmp_path: Any) -> None:
    h = harness
    await start_with(h, tmp_path, '[[routes]]\ntypes = ["budget_shift"]\nconfirm_failed_guardrails = true\n')
    risky = h.flokit.add_action(guardrail_checks=FAILED_GUARDRAILS)
    fine = h.flokit.add_action()
    await h.poll()
    risky_card, fine_card = await card_for(h, risky["id"]), await card_for(h, fine["id"])

    assert ids.CONFIRM_BLOCK not in json.dumps(await open_modal(h, fine_card, ids.APPROVE, APPROVER))
    modal = await open_modal(h, risky_card, ids.APPROVE, APPROVER)
    assert ids.CONFIRM_BLOCK in json.dumps(modal)
    status, answer = await submit_approval(h, modal, APPROVER, None, "yes")
    assert status == 200 and ids.CONFIRM_BLOCK in answer and "type APPROVE" in answer
    await h.run_job("outbox")  # a queued approval would be sent now
    assert not h.flokit.calls("POST", "/approve")
    status, answer = await submit_approval(h, modal, APPROVER, "accepting the small cohort", "approve")
    assert status == 200 and answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.actions[risky["id"]]["status"] == "approved")


async def test_the_slash_command_takes_the_same_two_person_and_confirmation_rules(harness: Harness, tmp_path: Any) -> None:
    from tests.bot.test_commands import command

    h = harness
    await start_with(
        h, tmp_path,
        '[[routes]]\ntypes = ["budget_shift"]\nrequired_approvals = 2\n\n'
        '[[routes]]\ntypes = ["creative_pause"]\nconfirm_failed_guardrails = true\n',
    )
    pair = h.flokit.add_action()
    risky = h.flokit.add_action(type="creative_pause", guardrail_checks=FAILED_GUARDRAILS)
    await h.poll()
    await card_for(h, pair["id"])
    await card_for(h, risky["id"])

    first = await command(h, f"approve {pair['id']} looks right", APPROVER)
    assert "1 of 2" in first.said
    again = await command(h, f"approve {pair['id']}", APPROVER)
    assert "already approved" in again.said
    await h.run_job("outbox")  # a queued approval would be sent now
    assert not h.flokit.calls("POST", "/approve")
    await command(h, f"approve {pair['id']}", OTHER_APPROVER)
    await h.wait_for(lambda: h.flokit.actions[pair["id"]]["status"] == "approved")

    refused = await command(h, f"approve {risky['id']}", APPROVER)
    assert "typed confirmation" in refused.said
    await h.run_job("outbox")  # a queued approval would be sent now
    assert h.flokit.actions[risky["id"]]["status"] == "ready"
    assert not [c for c in h.flokit.calls("POST", "/approve") if risky["id"] in c.path]


async def test_a_route_only_approver_may_use_the_slash_command_for_their_actions(harness: Harness, tmp_path: Any) -> None:
    from tests.bot.test_commands import command

    h = harness
    h.slack.add_user("U0ROUTEONLY", email="route@example.com")
    await start_with(h, tmp_path, '[[routes]]\ntypes = ["creative_pause"]\napprovers = ["U0ROUTEONLY"]\n')
    creative = h.flokit.add_action(type="creative_pause")
    budget = h.flokit.add_action()
    await h.poll()
    await card_for(h, creative["id"])
    await card_for(h, budget["id"])
    listed = await command(h, "list", "U0ROUTEONLY")
    assert "not on the approvers list" not in listed.said and creative["title"][:20] in json.dumps(listed.blocks)
    refused = await command(h, f"approve {budget['id']}", "U0ROUTEONLY")
    assert "approvers" in refused.said
    await command(h, f"approve {creative['id']}", "U0ROUTEONLY")
    await h.wait_for(lambda: h.flokit.actions[creative["id"]]["status"] == "approved")
    assert h.flokit.actions[budget["id"]]["status"] == "ready"
