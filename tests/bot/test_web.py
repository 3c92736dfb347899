"""The HTTP door: signed but malformed requests get a 4xx with a reason, never a 500."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from bot.web import shape_problem
from tests.conftest import APPROVER, Harness


def form(payload: object) -> str:
    return "payload=" + quote(json.dumps(payload))


BAD = [
    ("payload=%7Bnot-json", "application/x-www-form-urlencoded", 400, "malformed request body"),
    ("{nope", "application/json", 400, "malformed request body"),
    ("", "application/x-www-form-urlencoded", 400, "request without a type"),
    ("hello", "text/plain", 400, "request without a type"),
    (form({}), "application/x-www-form-urlencoded", 400, "request without a type"),
    (form({"type": "block_actions", "user": {"id": APPROVER}}), "application/x-www-form-urlencoded", 400,
     "block_actions without actions"),
    (form({"type": "block_actions", "actions": [{}]}), "application/x-www-form-urlencoded", 400,
     "block_actions without user.id"),
    (form({"type": "view_submission", "user": {"id": APPROVER}, "view": {"callback_id": "x"}}),
     "application/x-www-form-urlencoded", 400, "view_submission without a view"),
    (form({"type": "block_actions", "user": {"id": APPROVER}, "actions": [{"action_id": "nobody.knows"}]}),
     "application/x-www-form-urlencoded", 404, "unhandled request"),
]


async def test_malformed_signed_requests_get_a_clear_4xx_and_the_bot_stays_healthy(harness: Harness) -> None:
    h = harness
    await h.start()
    for body, content_type, status, reason in BAD:
        got, text, _ = await h.requester.post(body, content_type=content_type)
        assert (got, reason) == (status, reason) and reason in text, (body[:60], got, text)
    got, text, _ = await h.requester.post("payload=" + "a" * 1_100_000)
    assert got == 413
    async with h.http.get(f"http://127.0.0.1:{h.bot.port}/healthz") as response:  # type: ignore[union-attr]
        assert response.status == 200


async def test_unsigned_requests_are_refused_before_parsing(harness: Harness) -> None:
    h = harness
    await h.start()
    url = f"http://127.0.0.1:{h.bot.port}/slack/events"  # type: ignore[union-attr]
    async with h.http.post(url, data="payload=%7Bnot-json") as response:
        assert response.status == 401
    got, _, _ = await h.requester.post("payload=%7Bnot-json", sign_with="wrong-secret")
    assert got == 401


@pytest.mark.parametrize(
    "body",
    [
        {"type": "url_verification", "challenge": "c"},
        {"ssl_check": "1"},
        {"command": "/signoff", "user_id": "U1"},
        {"type": "event_callback", "event": {"type": "app_uninstalled"}},
    ],
)
def test_well_formed_requests_pass_the_shape_check(body: dict[str, object]) -> None:
    assert shape_problem(body) is None
