"""Credentials checked at start, and ``/healthz`` naming the part whose credential stops
working later (and saying so in the log once per change, not once per retry)."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta
from typing import Any

import pytest

from app import StartupError
from tests.conftest import BOT_TOKEN, FLOKIT_KEY, Harness
from tests.fakes.cards import card_for
from tests.fakes.clock import FakeClock


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def healthz(h: Harness) -> tuple[int, dict[str, Any]]:
    assert h.bot is not None
    async with h.http.get(f"http://127.0.0.1:{h.bot.port}/healthz") as r:
        return r.status, await r.json()


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_wrong_bot_token_is_refused_at_start(harness: Harness) -> None:
    harness.slack.bot_token = "xoxb-the-real-one"  # Slack now knows another token than ours
    with pytest.raises(StartupError, match=r"^SLACK_BOT_TOKEN was refused by Slack \(invalid_auth\)$"):
        await harness.start()
    assert [c.method for c in harness.slack.calls] == ["auth.test"]


async def test_wrong_flokit_key_is_refused_at_start(harness: Harness) -> None:
    with pytest.raises(StartupError, match=r"^FLOKIT_API_KEY was refused by FloKit \(HTTP 401\)$"):
        await harness.start(flokit_api_key="fk-wrong")
    assert len(harness.flokit.calls("GET", "/v1/actions")) == 1


async def test_a_flokit_key_without_rights_is_refused_at_start(harness: Harness) -> None:
    harness.flokit.fail_next("/v1/actions", status=403)
    with pytest.raises(StartupError, match=r"FLOKIT_API_KEY was refused by FloKit \(HTTP 403\)"):
        await harness.start()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_unreachable_source_is_a_warning_not_a_refusal(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await harness.start(flokit_api_url=closed_port_url())
    assert lines(caplog, "FloKit unreachable at start")
    status, body = await healthz(harness)
    assert (status, body) == (200, {"ok": True})  # unreachable is not a refused credential


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_source_answering_5xx_at_start_is_a_warning(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    harness.flokit.fail_next("/v1/actions", status=503)
    action = harness.flokit.add_action()
    await harness.start()
    assert lines(caplog, "FloKit unreachable at start") and "HTTP 503" in lines(caplog, "FloKit unreachable")[0]
    await harness.poll()
    await card_for(harness, action["id"])


async def test_healthz_names_slack_while_the_bot_token_is_refused_and_recovers(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    await h.start(clock=clock)
    assert (await healthz(h))[0] == 200

    h.slack.bot_token = "xoxb-rotated"  # our token is revoked: every call is invalid_auth now
    h.flokit.add_action()
    await h.poll()
    for _ in range(3):  # the card job retries; each retry is refused again
        await h.run_job("cards")
        clock.advance(timedelta(hours=1))
    status, body = await healthz(h)
    assert status == 503
    assert body["unhealthy"] == ["slack"]
    assert "SLACK_BOT_TOKEN refused by Slack (invalid_auth)" in body["problems"]
    refused = [c for c in h.slack.calls if isinstance(c.response, dict) and c.response.get("error") == "invalid_auth"]
    assert len(refused) >= 3  # the first post, then each retry looking for it
    assert len(lines(caplog, "slack is unhealthy")) == 1  # said once, not once per retry
    assert not lines(caplog, "Slack said invalid_auth")

    h.slack.bot_token = BOT_TOKEN  # the token works again
    await h.run_job("cards")
    assert h.slack.messages_in(h.bot.settings.slack_channel)
    assert await healthz(h) == (200, {"ok": True})
    assert len(lines(caplog, "slack is healthy again")) == 1


async def test_healthz_names_flokit_while_its_key_is_refused_and_recovers(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    caplog.set_level(logging.INFO)
    await h.start()
    h.flokit.api_key = "fk-rotated"  # FloKit no longer takes our key
    for _ in range(3):
        await h.poll()
    status, body = await healthz(h)
    assert status == 503 and body["unhealthy"] == ["flokit"]
    assert "FLOKIT_API_KEY refused by FloKit (HTTP 401)" in body["problems"]
    assert len(lines(caplog, "flokit is unhealthy")) == 1
    assert not lines(caplog, "poll of flokit failed")

    h.flokit.api_key = FLOKIT_KEY
    await h.poll()
    assert await healthz(h) == (200, {"ok": True})
    assert len(lines(caplog, "flokit is healthy again")) == 1
