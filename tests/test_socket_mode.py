"""Socket Mode: FakeSlack's Socket Mode server checked against slack_sdk's own client, then the
real bot (``app.Signoff`` with ``SLACK_APP_TOKEN`` set) connecting to it and deciding through
envelopes, on SQLite and, where reachable, PostgreSQL.

Envelopes carry the same bodies the HTTP tests POST (built from tests/fakes/slack_shapes.py),
as JSON objects instead of signed form posts; the app answers each with an ack on the socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from app import Signoff
from bot import ids
from tests.conftest import APPROVER, APPROVER_EMAIL, CHANNEL, OTHER_APPROVER, OUTSIDER, Harness
from tests.fakes.cards import audit, buttons, card_for
from tests.fakes.slack_shapes import SOCKET_ENVELOPE_KEYS, SOCKET_RETRY_KEYS
from tests.fakes.slack_api import SOCKET_ACK_DEADLINE_SECONDS, FakeSlack, Message
from tests.fakes.slack_requests import (
    block_action_body,
    event_body,
    parse_payload,
    slash_command_body,
    view_submission_body,
)

APP_TOKEN = "xapp-test-token"
START_TIMEOUT = 15.0


def empty_ack(ack: dict[str, Any]) -> bool:
    """An ack with no response payload: Slack closes the modal / takes the click as handled."""
    return ack.get("payload") in (None, {})


# --------------------------------------------------------------------------- the fake itself


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


async def test_apps_connections_open_takes_only_the_app_token(fake: FakeSlack) -> None:
    web = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    answer = await web.apps_connections_open(app_token=fake.app_token)
    assert answer["ok"] is True
    assert answer["url"].startswith(fake.url.replace("http://", "ws://") + "/socket?ticket=")
    [call] = fake.calls_to("apps.connections.open")
    assert call.headers["Authorization"] == f"Bearer {fake.app_token}"
    assert fake.violations == []

    with pytest.raises(SlackApiError) as e:
        await web.apps_connections_open(app_token="xapp-someone-else")
    assert e.value.response.data == {"ok": False, "error": "invalid_auth"}
    assert fake.violations == []

    with pytest.raises(SlackApiError) as e:  # the bot token is the wrong kind of token here
        await web.apps_connections_open(app_token=fake.bot_token)
    assert e.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as e:  # and the app token is for nothing else
        await AsyncWebClient(token=fake.app_token, base_url=fake.api_url).auth_test()
    assert e.value.response["error"] == "not_allowed_token_type"
    assert len(fake.violations) == 2 and "apps.connections.open" in fake.violations[0], fake.violations


async def test_round_trip_with_slack_sdks_socket_mode_client(fake: FakeSlack) -> None:
    """slack_sdk's aiohttp client (what Bolt's AsyncSocketModeHandler runs) connects, gets
    envelopes, acks them with and without payloads, reconnects on ``disconnect`` and closes."""
    received: list[SocketModeRequest] = []

    async def listener(client: SocketModeClient, req: SocketModeRequest) -> None:
        received.append(req)
        if req.type == "slash_commands":
            await client.send_socket_mode_response(
                SocketModeResponse(envelope_id=req.envelope_id, payload={"text": f"got {req.payload['text']}"})
            )
        else:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    client = SocketModeClient(
        app_token=fake.app_token, web_client=AsyncWebClient(base_url=fake.api_url), ping_interval=1
    )
    client.socket_mode_request_listeners.append(listener)
    try:
        await asyncio.wait_for(client.connect(), START_TIMEOUT)
        first = await fake.wait_socket()
        assert first.sent[0]["type"] == "hello"
        assert first.sent[0]["connection_info"]["app_id"]

        command = dict(parse_qsl(slash_command_body(user_id="U1", command="/signoff", text="list")))
        envelope_id = await fake.socket_send("slash_commands", command)
        ack = await fake.socket_ack(envelope_id)
        assert ack == {"envelope_id": envelope_id, "payload": {"text": "got list"}}
        assert received[-1].accepts_response_payload is True
        sent = fake.socket_envelopes[-1]
        assert set(sent) == SOCKET_ENVELOPE_KEYS, "an envelope has the keys Slack's have"

        event = json.loads(event_body({"type": "app_uninstalled"}))
        envelope_id = await fake.socket_send("events_api", event, retry_attempt=1)
        assert await fake.socket_ack(envelope_id) == {"envelope_id": envelope_id}
        assert (received[-1].retry_attempt, received[-1].retry_reason) == (1, "timeout")
        assert set(fake.socket_envelopes[-1]) == SOCKET_ENVELOPE_KEYS | SOCKET_RETRY_KEYS
        assert fake.socket_envelopes[-1]["accepts_response_payload"] is False

        second = await fake.socket_disconnect()
        assert second.id > first.id
        await fake.wait_for(lambda: not first.open)
        assert len(fake.calls_to("apps.connections.open")) == 2
        envelope_id = await fake.socket_send("slash_commands", {**command, "text": "again"})
        assert (await fake.socket_ack(envelope_id))["payload"] == {"text": "got again"}
    finally:
        await client.close()
    await fake.wait_for(lambda: not fake.socket_connected)
    assert [(c.closed_by, c.close_code) for c in fake.socket_connections][-1] == ("app", 1000)
    assert fake.violations == []


async def test_bad_acks_are_violations_and_used_urls_are_refused() -> None:
    fake = FakeSlack()
    await fake.start()
    try:
        web = AsyncWebClient(base_url=fake.api_url)
        url = (await web.apps_connections_open(app_token=fake.app_token))["url"]
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as ws:
                hello = await ws.receive_json(timeout=5)
                assert hello["type"] == "hello"
                await fake.wait_socket()
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await session.ws_connect(url)  # a URL is good for one connection
                assert e.value.status == 401

                envelope_id = await fake.socket_send("interactive", {"type": "block_actions"})
                envelope = await ws.receive_json(timeout=5)
                assert envelope["envelope_id"] == envelope_id and envelope["accepts_response_payload"] is True
                await ws.send_str("not json")
                await ws.send_json({"envelope_id": "never-sent"})
                await ws.send_json({"envelope_id": envelope_id, "payload": "text"})
                await ws.send_json({"envelope_id": envelope_id})
                await fake.wait_for(lambda: len(fake.violations) == 4)
                assert "not JSON" in fake.violations[0]
                assert "never sent" in fake.violations[1]
                assert "not an object" in fake.violations[2]
                assert "more than once" in fake.violations[3]
                assert (await fake.socket_ack(envelope_id))["payload"] == "text"

                with pytest.raises(AssertionError, match="no ack"):
                    await fake.socket_ack(await fake.socket_send("interactive", {}), timeout=0.2)
                assert (await ws.receive_json(timeout=5))["type"] == "interactive"

                # stop() closes the socket with a close handshake (answered by the client), not a reset
                stopping = asyncio.ensure_future(fake.stop())
                closing = await ws.receive(timeout=5)
                assert closing.type == aiohttp.WSMsgType.CLOSE
                assert closing.data == aiohttp.WSCloseCode.GOING_AWAY
                await asyncio.wait_for(stopping, 5)
                assert fake.socket_connections[-1].closed_by == "fake"
    finally:
        await fake.stop()


# --------------------------------------------------------------------------- the bot


async def start_socket_bot(h: Harness) -> Signoff:
    try:
        bot = await asyncio.wait_for(
            h.start(slack_app_token=APP_TOKEN, slack_signing_secret=None), START_TIMEOUT
        )
    except asyncio.TimeoutError:
        pytest.fail(f"the bot did not finish starting in Socket Mode within {START_TIMEOUT}s")
    assert bot.settings.socket_mode
    await h.slack.wait_socket()
    return bot


async def click(h: Harness, card: Message, action_id: str, user: str) -> dict[str, Any]:
    """A button click sent as Slack sends it in Socket Mode; returns the app's ack."""
    body = block_action_body(
        user_id=user, action_id=action_id, value=buttons(card)[action_id]["value"],
        channel=card.channel, message_ts=card.ts, message_blocks=card.blocks,
    )
    envelope_id = await h.slack.socket_send("interactive", parse_payload(body))
    ack = await h.slack.socket_ack(envelope_id)
    assert h.slack.socket_ack_seconds[envelope_id] < SOCKET_ACK_DEADLINE_SECONDS
    return ack


async def submit(h: Harness, view: dict[str, Any], user: str, text: str | None) -> dict[str, Any]:
    """A modal submission sent in Socket Mode; returns the app's ack."""
    approve = view["callback_id"] == ids.APPROVE_VIEW
    block_id, input_id = (ids.NOTE_BLOCK, ids.NOTE_INPUT) if approve else (ids.REASON_BLOCK, ids.REASON_INPUT)
    body = view_submission_body(
        user_id=user, callback_id=view["callback_id"], private_metadata=view["private_metadata"],
        values={block_id: {input_id: text}},
    )
    envelope_id = await h.slack.socket_send("interactive", parse_payload(body))
    ack = await h.slack.socket_ack(envelope_id)
    assert h.slack.socket_ack_seconds[envelope_id] < SOCKET_ACK_DEADLINE_SECONDS
    return ack


async def open_modal(h: Harness, card: Message, action_id: str, user: str) -> dict[str, Any]:
    before = len(h.slack.views)
    ack = await click(h, card, action_id, user)
    assert empty_ack(ack), ack
    await h.wait_for(lambda: len(h.slack.views) > before)
    return h.slack.views[-1]["view"]


async def audit_events(h: Harness, external_id: str) -> list[str]:
    return [d.event for d in await audit(h, external_id)]


async def test_bot_connects_and_serves_only_healthz(harness: Harness) -> None:
    h = harness
    bot = await start_socket_bot(h)
    calls = h.slack.calls_to("apps.connections.open")
    assert len(calls) == 2  # a check of the token at start, then the connection itself
    assert all(c.headers["Authorization"] == f"Bearer {APP_TOKEN}" for c in calls)  # not the bot token
    assert h.slack.socket_connections[-1].sent[0]["type"] == "hello"
    base = f"http://127.0.0.1:{bot.port}"
    async with h.http.get(f"{base}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["ok"] is True
    body = block_action_body(user_id=APPROVER, action_id=ids.APPROVE, value="1", channel=CHANNEL, message_ts="1.1")
    async with h.http.post(f"{base}/slack/events", data=body) as response:
        assert response.status in (404, 405)  # no HTTP door for Slack requests in Socket Mode
    assert not h.slack.views


async def test_approve_through_socket_mode_reaches_flokit(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await start_socket_bot(h)
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)
    assert modal["callback_id"] == ids.APPROVE_VIEW

    ack = await submit(h, modal, APPROVER, "Aligned with Q1 plan")
    assert empty_ack(ack), ack  # an empty ack closes the modal

    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))
    [call] = h.flokit.calls("POST", "/approve")
    assert call.json == {"approved_by": APPROVER_EMAIL, "note": "Aligned with Q1 plan"}
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})
    assert await audit_events(h, action["id"]) == ["discovered", "requested", "confirmed"]
    # acks timed by kind, as over HTTP
    from tests.test_observability import scrape, value

    samples = await scrape(h)
    assert value(samples, "signoff_slack_ack_seconds_count", kind="block_actions") == 1
    assert value(samples, "signoff_slack_ack_seconds_count", kind="view_submission") == 1


async def test_reject_without_reason_is_answered_in_the_ack(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await start_socket_bot(h)
    card = await card_for(h, action["id"])
    modal = await open_modal(h, card, ids.REJECT, OTHER_APPROVER)
    ack = await submit(h, modal, OTHER_APPROVER, "  ")
    assert ack["payload"]["response_action"] == "errors"  # the modal stays open with the reason
    assert ids.REASON_BLOCK in ack["payload"]["errors"]
    ack = await submit(h, modal, OTHER_APPROVER, "Creative refresh next week")
    assert empty_ack(ack), ack
    await h.wait_for(lambda: h.flokit.calls("POST", "/reject"))
    assert h.flokit.calls("POST", "/reject")[0].json == {
        "rejected_by": "other@example.com",
        "reason": "Creative refresh next week",
    }
    await h.wait_for(lambda: not buttons(h.slack.messages[(CHANNEL, card.ts)]))


async def test_outsider_click_is_acked_and_told_and_nothing_reaches_flokit(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await start_socket_bot(h)
    card = await card_for(h, action["id"])
    ack = await click(h, card, ids.APPROVE, OUTSIDER)
    assert empty_ack(ack), ack
    await h.wait_for(lambda: [e for e in h.slack.ephemerals if e["user"] == OUTSIDER])
    [told] = [e for e in h.slack.ephemerals if e["user"] == OUTSIDER]
    assert told["channel"] == CHANNEL and told["text"]
    assert not h.slack.views
    assert await audit_events(h, action["id"]) == ["discovered"]
    assert not h.flokit.calls("POST", "/approve")


async def test_events_are_acked(harness: Harness) -> None:
    h = harness
    await start_socket_bot(h)
    event = json.loads(event_body({"type": "tokens_revoked", "tokens": {"bot": ["U0BOT"]}}))
    envelope_id = await h.slack.socket_send("events_api", event)
    assert await h.slack.socket_ack(envelope_id) == {"envelope_id": envelope_id}


async def test_bot_reconnects_when_slack_recycles_the_connection_and_stops_cleanly(harness: Harness) -> None:
    h = harness
    action = h.flokit.add_action()
    await start_socket_bot(h)
    card = await card_for(h, action["id"])
    first = h.slack.socket_connections[-1]
    second = await h.slack.socket_disconnect()
    await h.wait_for(lambda: not first.open)
    assert second is h.slack.socket_connections[-1]
    modal = await open_modal(h, card, ids.APPROVE, APPROVER)  # over the new connection
    assert empty_ack(await submit(h, modal, APPROVER, None))
    await h.wait_for(lambda: h.flokit.calls("POST", "/approve"))
    assert h.flokit.calls("POST", "/approve")[0].json == {"approved_by": APPROVER_EMAIL}
    await h.wait_for(lambda: set(buttons(h.slack.messages[(CHANNEL, card.ts)])) == {ids.ROLLBACK})

    await h.stop()
    await h.wait_for(lambda: not h.slack.socket_connected)
    assert all(not c.open for c in h.slack.socket_connections)
    last = h.slack.socket_connections[-1]
    assert (last.closed_by, last.close_code) == ("app", 1000)  # the bot closed it, normally
    assert len(h.slack.calls_to("apps.connections.open")) == 3  # the start-up check, then two connections
