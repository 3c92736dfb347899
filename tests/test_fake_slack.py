"""Tests for the test fakes: FakeSlack (tests/fakes/slack_api.py) and the signed
request builders (tests/fakes/slack_requests.py), driven by the real slack_sdk
and slack_bolt clients so the fakes are held to what those libraries send."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    HeaderBlock,
    InputBlock,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.metadata import Metadata
from slack_sdk.models.views import View
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import (
    SlackRequester,
    block_action_body,
    event_body,
    parse_payload,
    sign,
    slash_command_body,
    view_submission_body,
)

SECRET = "test-signing-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)


def approval_blocks(n_buttons: int = 2) -> list:
    buttons = [ButtonElement(text=f"Option {i}", action_id=f"opt_{i}", value=f"v{i}") for i in range(n_buttons)]
    return [
        HeaderBlock(text="Approval needed"),
        SectionBlock(text="*deploy* `api` to production", fields=["*Requester*\n<@U1>", "*Risk*\nlow"]),
        ActionsBlock(block_id="decision", elements=buttons),
    ]


# --------------------------------------------------------------------------- messages


async def test_post_update_and_history_with_metadata(fake: FakeSlack, client: AsyncWebClient) -> None:
    auth = await client.auth_test()
    assert auth["bot_id"] == fake.bot_id and auth["user_id"] == fake.bot_user_id

    posted = await client.chat_postMessage(
        channel="C123",
        text="Approval needed: deploy api",
        blocks=approval_blocks(),
        metadata=Metadata(event_type="approval_requested", event_payload={"request_id": "r1"}),
    )
    assert posted["ok"] and posted["channel"] == "C123"
    ts = posted["ts"]
    assert ts == "1700000000.000100"
    assert posted["message"]["blocks"][0]["type"] == "header"

    call = fake.calls_to("chat.postMessage")[0]
    assert call.params["blocks"][2]["elements"][1]["action_id"] == "opt_1"
    assert call.headers["Authorization"] == f"Bearer {fake.bot_token}"
    assert call.content_type == "application/json"

    stored = fake.messages[("C123", ts)]
    assert stored.metadata == {"event_type": "approval_requested", "event_payload": {"request_id": "r1"}}

    later = await client.chat_postMessage(channel="C123", text="second")
    assert later["ts"] > ts

    updated = await client.chat_update(
        channel="C123", ts=ts, text="Approved", blocks=[SectionBlock(text="Approved by <@U2>")]
    )
    assert updated["ok"] and updated["ts"] == ts and updated["text"] == "Approved"
    assert fake.messages[("C123", ts)].text == "Approved"
    assert fake.messages[("C123", ts)].blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Approved by <@U2>"}}
    ]
    assert fake.messages[("C123", ts)].metadata["event_type"] == "approval_requested"  # kept
    assert len(fake.messages[("C123", ts)].previous) == 1

    history = await client.conversations_history(channel="C123", include_all_metadata=True)
    assert [m["ts"] for m in history["messages"]] == [later["ts"], ts]  # newest first
    assert history["messages"][1]["metadata"]["event_payload"] == {"request_id": "r1"}
    assert history["messages"][1]["text"] == "Approved"
    assert "edited" in history["messages"][1]

    without = await client.conversations_history(channel="C123")
    assert "metadata" not in without["messages"][1]
    assert fake.violations == []


async def test_update_of_unknown_message_is_refused(fake: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as e:
        await client.chat_update(channel="C123", ts="1.000001", text="x")
    assert e.value.response["error"] == "message_not_found"


async def test_form_encoded_calls_are_decoded(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    response = await client.api_call(
        "chat.postMessage", data={"channel": "C9", "text": "hi", "blocks": json.dumps(blocks)}
    )
    assert response["ok"]
    call = fake.calls_to("chat.postMessage")[0]
    assert call.content_type == "application/x-www-form-urlencoded"
    assert call.params["blocks"] == blocks
    assert fake.messages[("C9", response["ts"])].blocks == blocks


async def test_history_paging_oldest_and_threads(fake: FakeSlack, client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=f"m{i}"))["ts"] for i in range(5)]
    reply = await client.chat_postMessage(channel="C1", text="reply", thread_ts=stamps[0])

    first = await client.conversations_history(channel="C1", limit=2)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3"]
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    rest = await client.conversations_history(channel="C1", limit=10, cursor=cursor)
    assert [m["text"] for m in rest["messages"]] == ["m2", "m1", "m0"]  # the reply is not top-level
    assert rest["has_more"] is False
    assert rest["messages"][-1]["reply_count"] == 1

    newer = await client.conversations_history(channel="C1", oldest=stamps[2])
    assert [m["text"] for m in newer["messages"]] == ["m4", "m3"]

    thread = await client.conversations_replies(channel="C1", ts=stamps[0])
    assert [m["ts"] for m in thread["messages"]] == [stamps[0], reply["ts"]]

    link = await client.chat_getPermalink(channel="C1", message_ts=stamps[1])
    assert link["permalink"].endswith(f"/archives/C1/p{stamps[1].replace('.', '')}")
    assert fake.violations == []


async def test_post_to_a_user_lands_in_the_dm(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="U777", text="please review")
    assert posted["channel"] == fake.dm_channel("U777") == "D777"
    assert (posted["channel"], posted["ts"]) in fake.messages


async def test_ephemeral(fake: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert response["message_ts"]
    assert fake.ephemerals == [
        {
            "channel": "C1",
            "user": "U1",
            "text": "only you",
            "blocks": [],
            "thread_ts": None,
            "message_ts": response["message_ts"],
        }
    ]


# --------------------------------------------------------------------------- users


async def test_users_and_usergroups(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_user("U1", email="ada@example.com", name="ada", tz="Europe/Paris")
    fake.add_user("U2")
    fake.add_usergroup("S1", ["U1", "U2"])

    info = await client.users_info(user="U1")
    assert info["user"]["profile"]["email"] == "ada@example.com"
    assert info["user"]["name"] == "ada" and info["user"]["tz"] == "Europe/Paris"
    assert info["user"]["tz_offset"] in (3600, 7200)
    no_email = await client.users_info(user="U2")
    assert "email" not in no_email["user"]["profile"]
    assert fake.calls_to("users.info")[0].http_method == "GET"

    by_email = await client.users_lookupByEmail(email="ADA@example.com")
    assert by_email["user"]["id"] == "U1"

    members = await client.usergroups_users_list(usergroup="S1")
    assert members["users"] == ["U1", "U2"]

    with pytest.raises(SlackApiError) as e:
        await client.users_info(user="U404")
    assert e.value.response["error"] == "user_not_found"
    with pytest.raises(SlackApiError) as e:
        await client.usergroups_users_list(usergroup="S404")
    assert e.value.response["error"] == "no_such_subteam"
    assert fake.violations == []


# --------------------------------------------------------------------------- failures


async def test_rate_limit_is_retried_after_retry_after(fake: FakeSlack) -> None:
    client = AsyncWebClient(
        token=fake.bot_token,
        base_url=fake.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    response = await client.chat_postMessage(channel="C1", text="hello")
    elapsed = time.monotonic() - started

    assert response["ok"]
    calls = fake.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[0].response == {"ok": False, "error": "ratelimited"}
    assert elapsed >= 1.0  # slack_sdk waited Retry-After before retrying
    assert len(fake.messages) == 1


async def test_rate_limit_without_retry_handler_surfaces(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="hello")
    assert e.value.response.status_code == 429
    assert e.value.response.headers["Retry-After"] == "7"
    assert e.value.response["error"] == "ratelimited"


async def test_server_error_and_error_answers(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel="C1", text="x")
    ts = next(iter(fake.messages))[1]
    fake.fail_next("chat.update", status=503)
    with pytest.raises(SlackApiError) as e:
        await client.chat_update(channel="C1", ts=ts, text="y")
    assert e.value.response.status_code == 503
    assert (await client.chat_update(channel="C1", ts=ts, text="y"))["ok"]  # only the next one failed

    fake.add_user("U1")
    fake.fail_next("users.info", error="user_not_found", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as e:
            await client.users_info(user="U1")
        assert e.value.response.status_code == 200
        assert e.value.response["error"] == "user_not_found"
    assert (await client.users_info(user="U1"))["ok"]


async def test_wrong_or_missing_token(fake: FakeSlack) -> None:
    for token in ("xoxb-wrong", None):
        client = AsyncWebClient(token=token, base_url=fake.api_url)
        with pytest.raises(SlackApiError) as e:
            await client.auth_test()
        assert e.value.response.data == {"ok": False, "error": "invalid_auth"}


async def test_unknown_method(fake: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as e:
        await client.api_call("chat.postMesage", json={"channel": "C1", "text": "typo"})
    assert e.value.response["error"] == "unknown_method"
    assert fake.violations and "chat.postMesage" in fake.violations[0]


# --------------------------------------------------------------------------- strict checks


async def test_missing_required_parameter_is_a_violation(fake: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as e:
        await client.api_call("chat.update", json={"channel": "C1", "text": "no ts"})
    assert e.value.response["error"] == "invalid_arguments"
    assert e.value.response["response_metadata"]["messages"] == ["[ERROR] missing required field: ts"]
    assert fake.violations == ["chat.update: missing required parameter(s) ts"]

    with pytest.raises(SlackApiError):
        await client.views_open(trigger_id="", view={"type": "modal", "title": {"type": "plain_text", "text": "t"}})
    assert "views.open: missing required parameter(s) trigger_id" in fake.violations


async def test_message_without_content_is_refused(fake: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as e, pytest.warns(UserWarning, match="top-level `text`"):
        await client.chat_postMessage(channel="C1")
    assert e.value.response["error"] == "no_text"
    assert fake.violations


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(text: str = "b", action_id: str = "a", value: str = "v") -> dict:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, "action_id": action_id, "value": value}


# Raw dicts: slack_sdk's model classes refuse some of these before sending, a bot's dicts are not checked.
@pytest.mark.parametrize(
    "blocks, problem",
    [
        ([section(f"b{i}") for i in range(51)], "51 blocks, more than 50"),
        ([section("x" * 3001)], "blocks[0].text: 3001 characters, more than 3000"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "151 characters, more than 150"),
        ([{**section("f"), "fields": [{"type": "mrkdwn", "text": str(i)} for i in range(11)]}], "11 fields, more than 10"),
        ([{"type": "actions", "elements": [button(text="b" * 76)]}], "elements[0].text: 76 characters, more than 75"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "s"}, "accessory": button(value="v" * 2001)}],
         "accessory.value: 2001 characters, more than 2000"),
        ([{"type": "actions", "elements": [button(action_id="a" * 256)]}], "action_id: 256 characters, more than 255"),
        ([section("")], "needs a non-empty text"),
        (["not a block"], "a block must be an object with a type"),
    ],
)
async def test_block_kit_limits(fake: FakeSlack, client: AsyncWebClient, blocks: list, problem: str) -> None:
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="fallback", blocks=blocks)
    assert e.value.response["error"] == "invalid_blocks"
    assert len(fake.violations) == 1 and problem in fake.violations[0], fake.violations
    assert fake.messages == {}


async def test_block_kit_limits_at_the_edge_pass(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [section("x" * 3000), {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}]
    blocks += [section(f"b{i}") for i in range(48)]
    blocks.append({"type": "actions", "elements": [button(text="b" * 75, action_id="a" * 255, value="v" * 2000)]})
    with pytest.raises(SlackApiError):  # 51 blocks
        await client.chat_postMessage(channel="C1", text="fallback", blocks=blocks)
    fake.violations.clear()
    response = await client.chat_postMessage(channel="C1", text="fallback", blocks=blocks[:50])
    assert response["ok"] and fake.violations == []


async def test_bad_metadata_is_refused(fake: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="C1", text="x", metadata={"event_payload": {}})
    assert e.value.response["error"] == "invalid_metadata_format"
    assert "event_type" in fake.violations[0]


# --------------------------------------------------------------------------- views


def modal(n_blocks: int = 1, **extra) -> dict:
    # raw dicts: slack_sdk's View model already refuses some of what the fake must catch
    blocks = [
        InputBlock(block_id=f"b{i}", label="Reason", element=PlainTextInputElement(action_id="reason")).to_dict()
        for i in range(n_blocks)
    ]
    view = View(type="modal", callback_id="reject", title="Reject", submit="Reject", blocks=blocks[:1]).to_dict()
    return {**view, "blocks": blocks, **extra}


async def test_views_open_update_push_publish(fake: FakeSlack, client: AsyncWebClient) -> None:
    opened = await client.views_open(trigger_id="111.222.valid", view=modal(private_metadata="req-1"))
    view = opened["view"]
    assert view["id"].startswith("V") and view["callback_id"] == "reject"
    assert view["private_metadata"] == "req-1" and view["root_view_id"] == view["id"]
    assert fake.views[0]["trigger_id"] == "111.222.valid"
    assert fake.views[0]["view"]["blocks"][0]["block_id"] == "b0"

    updated = await client.views_update(view_id=view["id"], view=modal(2), hash=view["hash"])
    assert updated["view"]["id"] == view["id"] and len(updated["view"]["blocks"]) == 2
    with pytest.raises(SlackApiError) as e:  # the old hash is stale now
        await client.views_update(view_id=view["id"], view=modal(), hash=view["hash"])
    assert e.value.response["error"] == "hash_conflict"

    pushed = await client.views_push(trigger_id="111.333.valid", view=modal())
    assert pushed["view"]["id"] != view["id"]

    home = await client.views_publish(user_id="U1", view=View(type="home", blocks=[SectionBlock(text="hi")]))
    assert home["view"]["type"] == "home"
    assert [v["method"] for v in fake.views] == ["views.open", "views.update", "views.push", "views.publish"]
    assert fake.violations == []


async def test_modal_block_limit_is_100(fake: FakeSlack, client: AsyncWebClient) -> None:
    assert (await client.views_open(trigger_id="t", view=modal(100)))["ok"]
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id="t", view=modal(101))
    assert e.value.response["error"] == "invalid_blocks"
    assert "101 blocks, more than 100" in fake.violations[0]


async def test_view_private_metadata_limit(fake: FakeSlack, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id="t", view=modal(private_metadata="m" * 3001))
    assert e.value.response["error"] == "invalid_arguments"
    assert "private_metadata" in fake.violations[0]


# --------------------------------------------------------------------------- response URLs and wait_for


async def test_response_url_records_and_replaces(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="pending")
    url = fake.response_url("decision", channel="C1", ts=posted["ts"])
    assert url == f"{fake.url}/response/decision"

    webhook = AsyncWebhookClient(url)
    response = await webhook.send(text="approved", replace_original=True)
    assert response.status_code == 200
    assert fake.responses[0]["name"] == "decision"
    assert fake.responses[0]["body"]["text"] == "approved"
    assert fake.messages[("C1", posted["ts"])].text == "approved"

    fake.fail_next("response_url", error="expired_url", status=404)
    expired = await webhook.send(text="late")
    assert expired.status_code == 404 and expired.body == "expired_url"


async def test_wait_for_waits_for_a_condition(fake: FakeSlack, client: AsyncWebClient) -> None:
    async def post_later() -> None:
        await fake.wait_for(lambda: fake.calls_to("auth.test"))
        await client.chat_postMessage(channel="C5", text="done")

    task = asyncio.create_task(post_later())
    await client.auth_test()
    message = await fake.wait_for(lambda: [m for m in fake.messages.values() if m.text == "done"])
    assert message[0].channel == "C5"
    await task

    with pytest.raises(AssertionError) as e:
        await fake.wait_for(lambda: fake.messages[("C404", "1.1")], timeout=0.1)
    text = str(e.value)
    assert "still not true after 0.1s" in text and "KeyError" in text and "chat.postMessage -> 200" in text


# --------------------------------------------------------------------------- request builders and signing


def test_sign_is_accepted_by_slack_sdk_verifier() -> None:
    body = slash_command_body(user_id="U1", command="/signoff", text="list")
    headers = sign(body, SECRET)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    assert not SignatureVerifier("other").is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert not verifier.is_valid(body + "x", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"])
    old = sign(body, SECRET, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid(body, old["X-Slack-Request-Timestamp"], old["X-Slack-Signature"])
    # a fixed timestamp gives the signature Slack's docs describe
    fixed = sign("a=b", "s", timestamp=1531420618)
    assert SignatureVerifier("s", clock=_FixedClock(1531420618)).is_valid(
        "a=b", fixed["X-Slack-Request-Timestamp"], fixed["X-Slack-Signature"]
    )


class _FixedClock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_block_action_body_shape() -> None:
    body = block_action_body(
        user_id="U9",
        action_id="approve",
        value="req-7",
        channel="C42",
        message_ts="1700000000.000100",
        response_url="http://127.0.0.1:1/response/x",
    )
    assert body.startswith("payload=")
    payload = parse_payload(body)
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U9"
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000100",
        "channel_id": "C42",
        "is_ephemeral": False,
    }
    assert payload["channel"]["id"] == "C42" and payload["message"]["ts"] == "1700000000.000100"
    action = payload["actions"][0]
    assert (action["action_id"], action["value"], action["block_id"]) == ("approve", "req-7", "actions")
    assert payload["message"]["blocks"][0]["accessory"]["action_id"] == "approve"
    assert payload["response_url"] == "http://127.0.0.1:1/response/x"
    assert payload["trigger_id"] == "100.200.signoff"


def test_view_submission_body_shape() -> None:
    body = view_submission_body(
        user_id="U3",
        callback_id="reject",
        private_metadata='{"request": "r1"}',
        values={"reason": {"reason_input": "too risky"}, "note": {"note_input": None}},
    )
    payload = parse_payload(body)
    view = payload["view"]
    assert payload["type"] == "view_submission" and payload["user"]["id"] == "U3"
    assert view["callback_id"] == "reject" and view["private_metadata"] == '{"request": "r1"}'
    assert view["state"]["values"] == {
        "reason": {"reason_input": {"type": "plain_text_input", "value": "too risky"}},
        "note": {"note_input": {"type": "plain_text_input", "value": None}},
    }
    assert [(b["block_id"], b["element"]["action_id"]) for b in view["blocks"]] == [
        ("reason", "reason_input"),
        ("note", "note_input"),
    ]


def test_slash_command_and_event_bodies() -> None:
    form = parse_qs(slash_command_body(user_id="U5", command="/signoff", text="status 12", channel="C7"))
    assert form["user_id"] == ["U5"] and form["command"] == ["/signoff"]
    assert form["text"] == ["status 12"] and form["channel_id"] == ["C7"]
    assert form["response_url"] == ["https://hooks.slack.com/commands/T0SIGNOFF/1/signoff"]  # kept; never posted to

    first = json.loads(event_body({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"}))
    second = json.loads(event_body({"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home"}))
    assert first["type"] == "event_callback" and first["event"]["type"] == "app_home_opened"
    assert first["event_id"] != second["event_id"]


async def test_requester_against_a_verifying_server() -> None:
    verifier = SignatureVerifier(SECRET)
    seen: list[dict] = []

    async def endpoint(request: web.Request) -> web.Response:
        raw = (await request.read()).decode()
        if not verifier.is_valid_request(raw, dict(request.headers)):
            return web.Response(status=401, text="invalid signature")
        seen.append({"content_type": request.content_type, "body": raw, "retry": request.headers.get("X-Slack-Retry-Num")})
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/slack/events", endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            requester = SlackRequester(f"http://{host}:{port}/slack/events", SECRET, session)
            form = slash_command_body(user_id="U1", command="/signoff", text="")
            assert (await requester.post(form))[0] == 200
            event = event_body({"type": "app_mention", "user": "U1", "text": "hi", "channel": "C1", "ts": "1.2"})
            status, _, _ = await requester.post(event, headers={"X-Slack-Retry-Num": "1"})
            assert status == 200
            assert [s["content_type"] for s in seen] == ["application/x-www-form-urlencoded", "application/json"]
            assert seen[1]["retry"] == "1"

            assert (await requester.post(form, tamper=True))[0] == 401
            assert (await requester.post(event, tamper=True))[0] == 401
            assert (await requester.post(form, sign_with="wrong-secret"))[0] == 401
            assert (await requester.post(form, timestamp=int(time.time()) - 600))[0] == 401
            assert len(seen) == 2
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- the fakes with slack_bolt


async def test_bolt_app_end_to_end_through_the_fakes(fake: FakeSlack) -> None:
    """A bolt AsyncApp talking to FakeSlack, driven by signed fixture-based requests."""
    app = AsyncApp(
        signing_secret=SECRET,
        client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url),
    )

    @app.action("approve")
    async def on_approve(ack, body, client, respond):
        await ack()
        await client.chat_update(
            channel=body["channel"]["id"], ts=body["message"]["ts"], text=f"Approved by <@{body['user']['id']}>"
        )
        await respond(text="thanks", replace_original=False)

    @app.command("/signoff")
    async def on_command(ack, command):
        await ack(text=f"got {command['text']}")

    runner = web.AppRunner(app.web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        posted = await app.client.chat_postMessage(channel="C1", text="deploy?", blocks=approval_blocks())
        async with aiohttp.ClientSession() as session:
            bot = SlackRequester(f"http://{host}:{port}/slack/events", SECRET, session)
            body = block_action_body(
                user_id="U2",
                action_id="approve",
                value="r1",
                channel="C1",
                message_ts=posted["ts"],
                response_url=fake.response_url("approve"),
                message_blocks=fake.messages[("C1", posted["ts"])].blocks,
            )
            status, _, _ = await bot.post(body)
            assert status == 200
            await fake.wait_for(lambda: fake.responses)
            await fake.wait_for(lambda: fake.messages[("C1", posted["ts"])].text == "Approved by <@U2>")
            assert fake.responses[0]["body"]["text"] == "thanks"

            status, text, _ = await bot.post(slash_command_body(user_id="U2", command="/signoff", text="list"))
            assert (status, text) == (200, "got list")  # bolt answers a text-only ack as plain text

            status, _, _ = await bot.post(body, tamper=True)
            assert status == 401
    finally:
        await runner.cleanup()
    assert fake.calls_to("auth.test")  # bolt authorized against the fake
    assert fake.violations == []
