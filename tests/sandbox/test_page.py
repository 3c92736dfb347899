"""The sandbox in a real headless Chromium: what a person sees and does on the page reaches the
bot as Slack's requests would, and what the bot sends back is what the page shows."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

import app
from tests.sandbox.conftest import SCREENSHOTS, RunningSandbox

pytestmark = pytest.mark.timeout(120)

BUDGET = "Shift 20% budget from TikTok Broad to Meta Search"
PAUSE = "Pause creative TK_VID_042"
ORDER = "Move sales order SO-1042 to production"
TASK = "Review vendor invoice #8812"


def card(page: Any, title: str) -> Any:
    return page.locator("#messages > li.message", has_text=title)


async def test_approve_a_card_through_its_modal(page: Any) -> None:
    from playwright.async_api import expect

    budget = card(page, BUDGET)
    await expect(budget).to_have_count(1)
    await expect(budget.get_by_role("button", name="Approve")).to_be_visible()
    if SCREENSHOTS is not None:
        await budget.screenshot(path=str(SCREENSHOTS / "card.png"))
    await budget.get_by_role("button", name="Approve").click()

    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("heading")).to_have_text("Approve action")
    await dialog.get_by_label("Note").fill("Q1 shift, as planned")
    if SCREENSHOTS is not None:
        await page.screenshot(path=str(SCREENSHOTS / "modal.png"))
    await dialog.get_by_role("button", name="Approve").click()

    await expect(dialog).to_be_hidden()
    # Updated in place, without a reload: approved, by the approver (the mention shows her name).
    await expect(budget).to_contain_text("Approved", timeout=10_000)
    await expect(budget).to_contain_text("@Ada")
    await expect(budget.get_by_role("button", name="Approve")).to_have_count(0)
    # The decision's line in the card's thread.
    await expect(budget.get_by_role("list", name="Thread")).to_contain_text("Ada", timeout=10_000)


async def test_reject_without_a_reason_shows_the_modals_error(page: Any) -> None:
    from playwright.async_api import expect

    pause = card(page, PAUSE)
    await pause.get_by_role("button", name="Reject").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Reject").click()
    await expect(dialog.get_by_role("alert")).to_have_text("Please give a reason for rejecting.")
    await expect(dialog).to_be_visible()
    await expect(pause).to_contain_text("Awaiting decision")

    await dialog.get_by_label("Reason").fill("A creative refresh is planned next week")
    await dialog.get_by_role("button", name="Reject").click()
    await expect(dialog).to_be_hidden()
    await expect(pause).to_contain_text("Rejected", timeout=10_000)


async def test_a_flowdash_style_task_offers_its_own_buttons_and_overflow_menu(page: Any, sandbox: RunningSandbox) -> None:
    from playwright.async_api import expect

    task = card(page, TASK)
    for label in ("Pay invoice", "Send back to vendor", "Pay and flag for audit", "Ask for a credit note"):
        await expect(task.get_by_role("button", name=label)).to_be_visible()
    await expect(task.get_by_role("button", name="Approve")).to_have_count(0)
    # The rest of the task's steps are in the card's overflow menu.
    await task.get_by_role("button", name="More actions").click()
    await task.get_by_role("menuitem", name="Dispute the amount").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Reason").fill("The PO says $2,090")
    await dialog.get_by_role("button", name="Reject").click()
    await expect(dialog).to_be_hidden()
    await expect(task).to_contain_text("Rejected", timeout=10_000)
    # The step picked is the one the task's submitter sees as the decision's option.
    with sqlite3.connect(sandbox.workdir / app.DEMO_DB) as db:
        decisions = [json.loads(row[0]) for row in db.execute("SELECT decision FROM api_actions WHERE decision IS NOT NULL")]
    assert [d.get("option") for d in decisions if d] == ["D1sput"]


async def test_roll_back_asks_for_confirmation_first(page: Any) -> None:
    from playwright.async_api import expect

    pause = card(page, PAUSE)
    await pause.get_by_role("button", name="Approve").click()
    await page.get_by_role("dialog").get_by_role("button", name="Approve").click()
    rollback = pause.get_by_role("button", name="Roll back")
    await expect(rollback).to_be_visible(timeout=10_000)

    await rollback.click()
    confirm = page.get_by_role("alertdialog")
    await expect(confirm).to_contain_text("Roll back this action?")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_have_count(0)
    await expect(rollback).to_be_visible()

    await rollback.click()
    await page.get_by_role("alertdialog").get_by_role("button", name="Roll back").click()
    await expect(pause.get_by_role("button", name="Roll back")).to_have_count(0, timeout=10_000)
    await expect(pause).to_contain_text("Running 'Roll back'", timeout=10_000)  # asked of the submitter


async def test_rich_text_is_drawn_and_an_unknown_block_is_named(page: Any, sandbox: RunningSandbox) -> None:
    """Blocks the bot does not send today are drawn too, and one the page cannot draw says so."""
    import aiohttp
    from playwright.async_api import expect

    from sandbox import workspace

    blocks = [
        {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
            {"type": "text", "text": "Heads up "}, {"type": "user", "user_id": workspace.APPROVER.user_id},
            {"type": "text", "text": ": quarter close", "style": {"bold": True}},
        ]}]},
        {"type": "video", "title": {"type": "plain_text", "text": "Demo"}, "video_url": "https://example.com/v",
         "thumbnail_url": "https://example.com/t.png", "alt_text": "a video"},
    ]
    base = sandbox.url.removesuffix("/sandbox")
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/api/chat.postMessage", json={"channel": workspace.CHANNEL, "text": "Heads up", "blocks": blocks},
        headers={"Authorization": f"Bearer {workspace.BOT_TOKEN}"},
    ) as r:
        assert (await r.json())["ok"] is True
    message = page.locator("#messages > li.message", has_text="Heads up")
    await expect(message).to_contain_text("Heads up @Ada Lovelace: quarter close")
    await expect(message.locator("b")).to_have_text(": quarter close")
    await expect(message).to_contain_text("unsupported block: video")


async def test_signoff_list_in_the_message_box(page: Any) -> None:
    from playwright.async_api import expect

    await page.get_by_label("Message #approvals").fill("/signoff list")
    await page.get_by_label("Message #approvals").press("Enter")
    answer = page.locator("#messages > li.message.ephemeral")
    await expect(answer).to_contain_text("Only visible to you")
    await expect(answer).to_contain_text("newest first")
    for title in (BUDGET, ORDER):
        await expect(answer).to_contain_text(title.split(" to ")[0][:30])


async def test_the_app_home(page: Any) -> None:
    from playwright.async_api import expect

    await page.get_by_role("button", name="Home").click()
    home = page.locator("#home-view")
    await expect(home).to_contain_text("You're an approver", timeout=10_000)
    await expect(home).to_contain_text("Awaiting your decision · 4")
    # Decided from the Home: the same modal, and the Home updates in place.
    await home.get_by_role("button", name="Approve").first.click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Approve").click()
    await expect(dialog).to_be_hidden()
    await expect(home).to_contain_text("Awaiting your decision · 3", timeout=10_000)
    await expect(home).to_contain_text("Your recent decisions")


async def test_an_outsider_is_refused(page: Any) -> None:
    from playwright.async_api import expect

    await page.get_by_label("Act as").select_option(label="Oscar Outsider — not an approver")
    order = card(page, ORDER)
    await order.get_by_role("button", name="Approve").click()
    refusal = page.locator("#messages > li.message.ephemeral")
    await expect(refusal).to_contain_text("You're not on the approvers list")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(order).to_contain_text("Awaiting decision")


async def test_the_people_picker_says_who_is_who(page: Any) -> None:
    from playwright.async_api import expect

    picker = page.get_by_label("Act as")
    await expect(picker.locator("option")).to_have_text([
        "Ada Lovelace — approver", "Oscar Outsider — not an approver", "Rita Requester — requester",
    ])


async def test_a_proposed_action_arrives_as_a_card(page: Any, sandbox: RunningSandbox) -> None:
    from playwright.async_api import expect

    form = page.locator("#propose")
    await form.get_by_label("Type").select_option("refund_order")
    await form.get_by_label("Title").fill("Refund order A-1042 (damaged)")
    await form.get_by_role("button", name="Propose").click()
    await expect(form.get_by_role("status")).to_contain_text("needs_approval")
    refund = card(page, "Refund order A-1042 (damaged)")
    await expect(refund).to_have_count(1, timeout=10_000)
    # Rita asked for it: as herself she is refused, as anyone who may decide on her own request would be.
    await page.get_by_label("Act as").select_option(label="Rita Requester — requester")
    await refund.get_by_role("button", name="Approve").click()
    await expect(page.locator("#messages > li.message.ephemeral")).to_contain_text("requested by you")
