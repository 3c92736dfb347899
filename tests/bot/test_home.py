"""App Home publishing end to end: the real bot against fake Slack and fake FloKit, driven by
signed ``app_home_opened`` events and clicks from the Home tab. Runs on SQLite and, where
reachable, PostgreSQL. The refresh job runs on a 10 s interval; tests run it by hand
(``h.run_job("homes")``) so that each refresh happens when the test says."""

from __future__ import annotations

import asyncio
import copy
import html
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from slack_bolt.listener.async_listener_completion_handler import AsyncListenerCompletionHandler
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot import ids
from bot.listeners.common import ModalContext
from core.clock import utc_now
from sources.base import Status
from store import home as home_store
from store import queries
from tests.conftest import APPROVER, APPROVER_EMAIL, GROUP_MEMBER, OTHER_APPROVER, OUTSIDER, Harness
from tests.fakes.cards import card_for, open_modal, submit
from tests.fakes.clock import FakeClock
from tests.fakes.metrics import FakeMetrics
from tests.fakes import slack_shapes as shapes
from tests.fakes.slack_requests import event_body

ROAS = "blended_roas"
CONVERSION = "meta_search_trial_conversion_rate"


# ---- driving the Home -----------------------------------------------------------------------


def home_opened(user: str, tab: str = "home") -> str:
    """A signed-ready ``app_home_opened`` event, in the Events API envelope Slack sends."""
    return event_body(
        {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": tab, "event_ts": f"{time.time():.6f}"}
    )


def publishes(h: Harness, user: str) -> list[dict[str, Any]]:
    return [v for v in h.slack.views if v["method"] == "views.publish" and v["user_id"] == user]


async def open_home(h: Harness, user: str) -> dict[str, Any]:
    """Open the user's Home tab; returns the view published for it."""
    before = len(publishes(h, user))
    status, _, _ = await h.requester.post(home_opened(user))
    assert status == 200
    await h.wait_for(lambda: len(publishes(h, user)) > before)
    return publishes(h, user)[-1]


def listener_runs(h: Harness) -> list[str]:
    """From now on, the type of each request whose Bolt listener has finished running (Bolt
    runs an event's listener after acking it, so the HTTP answer comes before the work)."""
    assert h.bot is not None
    runner = h.bot.bolt.listener_runner
    inner = runner.listener_completion_handler
    finished: list[str] = []

    class Recording(AsyncListenerCompletionHandler):
        async def handle(self, request: AsyncBoltRequest, response: BoltResponse | None) -> None:
            await inner.handle(request=request, response=response)
            finished.append(str(request.body.get("type")))

    runner.listener_completion_handler = Recording()
    return finished


def text(published: dict[str, Any]) -> str:
    return html.unescape(json.dumps(published["view"]["blocks"], ensure_ascii=False))


def home_buttons(published: dict[str, Any]) -> list[tuple[str, str]]:
    """(action_id, value) of every button on the Home, in order."""
    return [
        (e["action_id"], e["value"])
        for block in published["view"]["blocks"]
        for e in block.get("elements") or []
        if e.get("type") == "button"
    ]


async def store_id(h: Harness, external_id: str) -> int:
    assert h.bot is not None
    async with h.bot.db.read() as session:
        known = await queries.known_actions(session, source="flokit", external_ids=[external_id])
    return known[external_id][0]


async def stored(h: Harness, count: int) -> None:
    """Wait until the store has ``count`` ready actions."""
    assert h.bot is not None

    async def enough() -> bool:
        async with h.bot.db.read() as session:
            return await queries.count_in_status(session, source="flokit", statuses=[Status.READY]) >= count

    await h.wait_for(enough, timeout=30)


def home_click(user: str, action_id: str, value: str, published: dict[str, Any]) -> str:
    """A button click on the Home tab, as Slack sends it: the container is the view, and there
    is no message, channel or response URL."""
    body = shapes.block_actions(user_id=user)
    body["container"] = {"type": "view", "view_id": published["view_id"]}
    for key in ("channel", "message", "response_url"):
        body.pop(key, None)
    body["trigger_id"] = "222.333.valid"
    body["view"] = shapes.view(
        view_id=published["view_id"], view_type="home", blocks=copy.deepcopy(published["view"]["blocks"])
    )
    action = body["actions"][0]
    action.update({
        "action_id": action_id, "value": value, "block_id": "home1", "action_ts": f"{time.time():.6f}",
        "text": {"type": "plain_text", "text": "Approve", "emoji": True},
    })
    return "payload=" + quote(json.dumps(body, separators=(",", ":")), safe="")


# ---- who sees what --------------------------------------------------------------------------


async def test_an_approver_sees_ready_actions_newest_first_with_buttons(harness: Harness) -> None:
    h = harness
    actions = [h.flokit.add_action(title=f"Shift budget number {i}") for i in range(3)]
    h.flokit.add_action(status="approved", title="Already approved elsewhere")
    await h.start()
    await h.poll()
    published = await open_home(h, APPROVER)
    shown = text(published)
    assert "Awaiting your decision* · 3" in shown
    positions = [shown.index(a["title"]) for a in actions]
    assert positions == sorted(positions, reverse=True), "newest first"
    assert "Already approved elsewhere" not in shown
    wanted = []
    for a in reversed(actions):
        value = str(await store_id(h, a["id"]))
        wanted += [(ids.APPROVE, value), (ids.REJECT, value)]
    assert home_buttons(published) == wanted
    assert "Your recent decisions" in shown and "None yet" in shown
    # A member of an approver user group is an approver too.
    assert len(home_buttons(await open_home(h, GROUP_MEMBER))) == 6


async def test_an_outsider_sees_no_buttons_and_no_queue(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action(title="Pause the tired creative")
    await h.start()
    await h.poll()
    published = await open_home(h, OUTSIDER)
    assert home_buttons(published) == []
    shown = text(published)
    assert "not on the approvers list" in shown and "1 action is awaiting a decision" in shown
    assert action["title"] not in shown
    assert "None yet" in shown


async def test_when_the_approvers_cannot_be_checked_the_home_says_so_without_buttons(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action(title="Shift budget to search")
    await h.start()
    await h.poll()
    h.slack.fail_next("usergroups.users.list", error="internal_error")
    published = await open_home(h, GROUP_MEMBER)
    assert home_buttons(published) == []
    shown = text(published)
    assert "couldn't verify the approvers list" in shown
    assert action["title"] in shown
    # Once Slack answers again, the next refresh brings the buttons.
    await h.run_job("homes")
    await h.wait_for(lambda: home_buttons(publishes(h, GROUP_MEMBER)[-1]))


async def test_an_action_the_viewer_requested_is_listed_without_buttons(harness: Harness) -> None:
    h = harness
    mine = h.flokit.add_action(title="My own budget shift")
    by_id = h.flokit.add_action(title="Also mine, by Slack id")
    theirs = h.flokit.add_action(title="Someone else's shift")
    h.flokit.actions[mine["id"]]["requested_by"] = APPROVER_EMAIL.upper()
    h.flokit.actions[by_id["id"]]["requested_by"] = APPROVER
    h.flokit.actions[theirs["id"]]["requested_by"] = OTHER_APPROVER
    await h.start()
    await h.poll()
    published = await open_home(h, APPROVER)
    theirs_id = str(await store_id(h, theirs["id"]))
    assert home_buttons(published) == [(ids.APPROVE, theirs_id), (ids.REJECT, theirs_id)]
    shown = text(published)
    assert shown.count("You requested this") == 2
    assert mine["title"] in shown and by_id["title"] in shown
    # The other approver may decide all three except the one they requested.
    assert len(home_buttons(await open_home(h, OTHER_APPROVER))) == 4


# ---- deciding from the Home -------------------------------------------------------------------


async def test_approve_from_the_home_opens_the_modal_reaches_flokit_and_lists_the_decision(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action(title="Raise the search budget")
    await h.start()
    await h.poll()
    published = await open_home(h, APPROVER)
    value = str(await store_id(h, action["id"]))
    assert (ids.APPROVE, value) in home_buttons(published)

    before = len(h.slack.views)
    status, _, _ = await h.requester.post(home_click(APPROVER, ids.APPROVE, value, published))
    assert status == 200
    await h.wait_for(lambda: any(v["method"] == "views.open" for v in h.slack.views[before:]))
    opened = [v for v in h.slack.views[before:] if v["method"] == "views.open"][-1]
    assert opened["trigger_id"] == "222.333.valid"
    modal = opened["view"]
    assert modal["callback_id"] == ids.APPROVE_VIEW
    context = ModalContext.loads(modal["private_metadata"])
    assert context is not None and context.action_id == int(value) and context.channel is None

    status, answer = await submit(h, modal, APPROVER, "From my Home")
    assert status == 200 and answer in ("", "{}")
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    [call] = h.flokit.calls("POST", "/approve")
    assert call.json["approved_by"] == APPROVER_EMAIL

    # The change refreshes the Home without reopening it: the action left the queue, and the
    # decision is listed with where the action is now.
    await h.run_job("outbox")
    await h.run_job("homes")
    await h.wait_for(lambda: "From my Home" in text(publishes(h, APPROVER)[-1]))
    latest = publishes(h, APPROVER)[-1]
    shown = text(latest)
    assert "*Approved* Raise the search budget" in shown and "now ✅ Approved" in shown
    assert home_buttons(latest) == []
    assert "Awaiting your decision* · 0" in shown


async def test_an_outsiders_click_from_the_home_decides_nothing(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    await h.poll()
    published = await open_home(h, APPROVER)
    value = str(await store_id(h, action["id"]))
    before = len(h.slack.views)
    status, _, _ = await h.requester.post(home_click(OUTSIDER, ids.APPROVE, value, published))
    assert status == 200
    await h.wait_for(lambda: [v for v in h.slack.views[before:] if v["method"] == "views.open"])
    [answer] = [v for v in h.slack.views[before:] if v["method"] == "views.open"]
    # Not the approve modal: a modal that only says why not.
    assert answer["view"]["callback_id"] == ids.INFO_VIEW and "approvers list" in json.dumps(answer["view"])
    await h.run_job("outbox")  # a queued decision would be sent now
    assert h.flokit.actions[action["id"]]["status"] == "ready"
    assert not h.flokit.calls("POST")


# ---- the rollback watch on the Home -----------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def metrics(clock: FakeClock) -> AsyncIterator[FakeMetrics]:
    async with FakeMetrics(clock=clock) as fake:
        yield fake


async def test_running_actions_under_watch_are_listed_with_their_watch_state(
    harness: Harness, metrics: FakeMetrics, clock: FakeClock
) -> None:
    h = harness
    action = h.flokit.add_action(title="Shift budget to Meta Search")
    h.flokit.add_action(title="Still waiting")
    metrics.set(ROAS, 3.2)
    metrics.set(CONVERSION, 0.5)  # below 0.65: trips on the first check
    await h.start(
        clock=clock, metrics_url=metrics.url, rollback_check_interval_seconds=3600, metrics_max_age_seconds=7200
    )
    card = await card_for(h, action["id"])
    before = text(await open_home(h, OTHER_APPROVER))
    assert "Under rollback watch* · 0" in before

    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    await submit(h, modal, APPROVER, "go")
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "approved")
    h.flokit.set_status(action["id"], "running")
    await h.poll()
    await h.run_job("watch")  # sets the watch up and checks both rules

    await h.run_job("homes")
    await h.wait_for(lambda: "tripped" in text(publishes(h, OTHER_APPROVER)[-1]))
    shown = text(publishes(h, OTHER_APPROVER)[-1])
    assert "Under rollback watch* · 1" in shown
    watched = shown[shown.index("Under rollback watch"):]
    assert "Shift budget to Meta Search" in watched and "▶️ Running" in watched
    assert "If Meta Search trial conversion rate falls below 0.65 — 🚨 *tripped*" in watched
    assert "If blended ROAS drops >15% within 7 days of execution — ✅ within limit" in watched
    assert watched.index("tripped") < watched.index("within limit"), "a tripped rule comes first"
    assert "Still waiting" not in watched

    # The rule recovers: the next refresh shows it, and a refresh with nothing new publishes nothing.
    metrics.set(CONVERSION, 0.9)
    clock.advance(timedelta(hours=1))
    await h.run_job("watch")
    await h.run_job("homes")
    await h.wait_for(lambda: "tripped" not in text(publishes(h, OTHER_APPROVER)[-1]))
    count = len(publishes(h, OTHER_APPROVER))
    await h.run_job("homes")
    assert len(publishes(h, OTHER_APPROVER)) == count


# ---- refresh ------------------------------------------------------------------------------------


async def test_a_new_ready_action_appears_on_the_next_refresh_without_reopening(harness: Harness) -> None:
    h = harness
    h.flokit.add_action(title="The first action")
    await h.start()
    await h.poll()
    first = await open_home(h, APPROVER)
    outsider_first = await open_home(h, OUTSIDER)
    assert "The first action" in text(first)

    await h.run_job("homes")  # nothing changed: nothing published
    assert publishes(h, APPROVER)[-1] is first

    second = h.flokit.add_action(title="A brand new action")
    await h.poll()
    await h.run_job("homes")
    await h.wait_for(lambda: "A brand new action" in text(publishes(h, APPROVER)[-1]))
    latest = publishes(h, APPROVER)[-1]
    assert latest["view_id"] == first["view_id"]
    assert (ids.APPROVE, str(await store_id(h, second["id"]))) in home_buttons(latest)
    # The outsider's Home shows the count, which changed too.
    await h.wait_for(lambda: "2 actions are awaiting" in text(publishes(h, OUTSIDER)[-1]))
    assert publishes(h, OUTSIDER)[-1] is not outsider_first

    count = len(h.slack.calls_to("views.publish"))
    await h.run_job("homes")
    assert len(h.slack.calls_to("views.publish")) == count, "unchanged Homes are not published again"


async def test_a_home_not_opened_for_a_week_is_no_longer_refreshed(harness: Harness, clock: FakeClock) -> None:
    h = harness
    await h.start(clock=clock)
    await open_home(h, APPROVER)
    clock.advance(timedelta(days=8))
    h.flokit.add_action(title="Nobody is looking")
    await h.poll()
    count = len(publishes(h, APPROVER))
    await h.run_job("homes")
    assert len(publishes(h, APPROVER)) == count
    assert "Nobody is looking" in text(await open_home(h, APPROVER)), "opening it again shows it current"


async def test_two_replicas_refreshing_at_once_settle_on_the_current_home(harness: Harness) -> None:
    h = harness
    h.flokit.add_action(title="Before")
    first = await h.start()
    await h.poll()
    await open_home(h, APPROVER)
    second = await h.start()
    h.flokit.add_action(title="After")
    await h.poll()
    await asyncio.gather(h.run_job("homes", first), h.run_job("homes", second))
    await asyncio.gather(h.run_job("homes", first), h.run_job("homes", second))
    assert "After" in text(publishes(h, APPROVER)[-1])
    count = len(publishes(h, APPROVER))
    assert count <= 4, "at most a duplicate publish per change, and one more to settle a race"
    await asyncio.gather(h.run_job("homes", first), h.run_job("homes", second))
    assert len(publishes(h, APPROVER)) == count, "settled: nothing more to publish"


# ---- what is ignored, and limits ----------------------------------------------------------------


async def test_the_messages_tab_is_ignored(harness: Harness) -> None:
    h = harness
    h.flokit.add_action()
    await h.start()
    await h.poll()
    finished = listener_runs(h)
    status, _, _ = await h.requester.post(home_opened(APPROVER, tab="messages"))
    assert status == 200
    # Bolt acks an event first and runs its listener after: wait until that run is over.
    await h.wait_for(lambda: finished)
    await h.run_job("homes")
    assert publishes(h, APPROVER) == []
    assert h.bot is not None
    async with h.bot.db.read() as session:
        assert await home_store.recent_homes(session, since=utc_now() - timedelta(days=7)) == []


async def test_a_home_with_200_ready_actions_stays_within_block_kit_limits(harness: Harness) -> None:
    h = harness
    long_title = "<!channel> " + "very long title " * 80
    for i in range(200):
        h.flokit.add_action(
            title=f"{i:03d} {long_title}" if i % 2 else f"Action {i:03d}",
            expected_impact={"metric": "roas " * 100, "direction": "increase", "magnitude": 12.5},
        )
    await h.start()
    await h.poll()
    await stored(h, 200)
    published = await open_home(h, APPROVER)
    call = h.slack.calls_to("views.publish")[-1]
    assert call.ok, call.response
    blocks = published["view"]["blocks"]
    assert len(blocks) <= 100
    shown = text(published)
    assert "Awaiting your decision* · 200" in shown
    assert "…and 180 more awaiting a decision" in shown
    assert len(home_buttons(published)) == 40
    assert "<!channel>" not in json.dumps(blocks), "upstream text is escaped"
    assert h.slack.violations == []


# ---- Slack errors ---------------------------------------------------------------------------------


async def test_a_views_publish_error_is_logged_and_breaks_nothing(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    h.flokit.add_action(title="The only action")
    await h.start()
    await h.poll()
    caplog.set_level(logging.WARNING, logger="bot.home")

    # Refused on open: logged with Slack's error code; the event is still acknowledged.
    h.slack.fail_next("views.publish", error="invalid_arguments")
    status, _, _ = await h.requester.post(home_opened(APPROVER))
    assert status == 200
    await h.wait_for(lambda: "invalid_arguments" in caplog.text)
    assert publishes(h, APPROVER) == []

    # A server error during a refresh: logged, and the next refresh publishes.
    h.flokit.add_action(title="A second action")
    await h.poll()
    h.slack.fail_next("views.publish", status=503)
    await h.run_job("homes")
    assert "HTTP 503" in caplog.text
    await h.run_job("homes")
    assert "A second action" in text(publishes(h, APPROVER)[-1])

    # A rate limit is waited out by the client.
    h.flokit.add_action(title="A third action")
    await h.poll()
    h.slack.fail_next("views.publish", status=429, retry_after=1)
    await h.run_job("homes")
    assert "A third action" in text(publishes(h, APPROVER)[-1])

    # The bot still works: opening the Home publishes it, and the jobs keep running.
    assert "The only action" in text(await open_home(h, APPROVER))
    await h.poll()


# ---- the homes bookkeeping ---------------------------------------------------------------------


async def test_a_fingerprint_is_saved_only_over_the_one_its_publisher_read(harness: Harness) -> None:
    h = harness
    bot = await h.start()
    now = utc_now()
    async with bot.db.write() as session:
        assert await home_store.record_open(session, user_id=APPROVER, now=now) is None
        assert await home_store.save_fingerprint(session, user_id=APPROVER, previous=None, fingerprint="a", now=now)
    async with bot.db.write() as session:
        assert await home_store.record_open(session, user_id=APPROVER, now=now) == "a"
        # Two publishers read "a"; the first saves "b", the second (content "c") loses the race:
        # the order of their publishes is unknown, so the row is cleared for the next refresh.
        assert await home_store.save_fingerprint(session, user_id=APPROVER, previous="a", fingerprint="b", now=now)
        assert not await home_store.save_fingerprint(session, user_id=APPROVER, previous="a", fingerprint="c", now=now)
    async with bot.db.read() as session:
        assert await home_store.recent_homes(session, since=now - timedelta(days=1)) == [
            home_store.HomeRow(APPROVER, None)
        ]
    async with bot.db.write() as session:
        # Racing publishers that showed the same content leave it saved.
        assert await home_store.save_fingerprint(session, user_id=APPROVER, previous=None, fingerprint="d", now=now)
        assert not await home_store.save_fingerprint(session, user_id=APPROVER, previous=None, fingerprint="d", now=now)
    async with bot.db.read() as session:
        assert [r.fingerprint for r in await home_store.recent_homes(session, since=now - timedelta(days=1))] == ["d"]


async def test_a_route_with_its_own_approvers_shows_buttons_only_to_them(harness: Harness, tmp_path: Any) -> None:
    h = harness
    config = tmp_path / "signoff.toml"
    config.write_text(f'[[routes]]\ntypes = ["creative_pause"]\napprovers = ["{OTHER_APPROVER}", "U0ROUTEONLY"]\n')
    budget = h.flokit.add_action()
    creative = h.flokit.add_action(type="creative_pause")
    h.slack.add_user("U0ROUTEONLY", email="route@example.com")
    await h.start(signoff_config=str(config))
    await card_for(h, budget["id"])
    await card_for(h, creative["id"])
    budget_id, creative_id = await store_id(h, budget["id"]), await store_id(h, creative["id"])

    approver_home = await open_home(h, APPROVER)
    mine = {value for _, value in home_buttons(approver_home)}
    assert str(budget_id) in mine and str(creative_id) not in mine
    assert "Its route names other approvers" in text(approver_home)
    theirs = {value for _, value in home_buttons(await open_home(h, OTHER_APPROVER))}
    assert {str(budget_id), str(creative_id)} <= theirs
    route_only = {value for _, value in home_buttons(await open_home(h, "U0ROUTEONLY"))}
    assert str(creative_id) in route_only and str(budget_id) not in route_only


async def test_a_refused_click_on_the_home_is_answered_in_a_small_modal(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await h.start()
    card = await card_for(h, action["id"])
    published = await open_home(h, APPROVER)
    value = str(await store_id(h, action["id"]))
    modal = await open_modal(h, card, ids.REJECT, OTHER_APPROVER)  # someone else decides first
    await submit(h, modal, OTHER_APPROVER, "not now")
    await h.wait_for(lambda: h.flokit.actions[action["id"]]["status"] == "rejected")
    before = len(h.slack.views)
    status, _, _ = await h.requester.post(home_click(APPROVER, ids.APPROVE, value, published))
    assert status == 200
    await h.wait_for(lambda: len(h.slack.views) > before)
    answer = h.slack.views[-1]["view"]
    assert answer["callback_id"] == ids.INFO_VIEW and "submit" not in answer
    assert f"<@{OTHER_APPROVER}>" in json.dumps(answer)
    assert not h.flokit.calls("POST", "/approve")
