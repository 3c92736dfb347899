"""The tools' own logic, without a bot: argument checks, what a result says for each status,
derived idempotency keys, and refusals said so that a model can act on them."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web

from api.client import ApiAction, SignoffApiError, SignoffClient
from signoff_mcp import tools
from signoff_mcp.tools import GET_APPROVAL, REQUEST_APPROVAL, argument_problems, call, derived_key, describe

ASK: dict[str, Any] = {
    "action_type": "restart_service", "target": {"type": "service", "id": "web-1"}, "payload": {"service": "web"},
    "title": "Restart web-1", "rationale": "memory leak",
}


def action(status: str, **extra: Any) -> ApiAction:
    return {"action_id": "a1", "action_type": "restart_service", "status": status, **extra}  # type: ignore[typeddict-item]


def test_argument_problems_name_each_by_its_path() -> None:
    assert argument_problems(REQUEST_APPROVAL, ASK) == []
    assert argument_problems(REQUEST_APPROVAL, {"action_type": "x"}) == [
        "target: required", "payload: required", "title: required", "rationale: required",
    ]
    problems = argument_problems(REQUEST_APPROVAL, {**ASK, "target": {"type": "service"}, "extra": 1, "title": ""})
    assert "target.id: required" in problems and any(p.startswith("extra: unknown argument") for p in problems)
    assert any(p.startswith("title: ") for p in problems)
    assert argument_problems(GET_APPROVAL, {"action_id": "a", "wait_seconds": -1}) == [
        "wait_seconds: -1 is less than the minimum of 0",
    ]
    assert argument_problems(GET_APPROVAL, {"action_id": "a", "wait_seconds": 2.5}) == [
        "wait_seconds: 2.5 is not of type 'integer'",
    ]


def test_a_derived_key_is_the_same_for_the_same_request_only() -> None:
    assert derived_key(ASK) == derived_key(dict(reversed(list(ASK.items()))))
    assert derived_key(ASK) != derived_key({**ASK, "payload": {"service": "api"}})
    assert derived_key(ASK).startswith("mcp-") and len(derived_key(ASK)) <= 255


@pytest.mark.parametrize(("status", "extra", "says"), [
    ("needs_approval", {}, "Do not act yet"),
    ("pending", {"decision": {"decision": "APPROVE", "decided_by": "ada@example.com", "decided_by_name": "Ada",
                              "decided_at": "t", "reason": "ok"}}, 'Approved by Ada <ada@example.com> with the note "ok". Do it now'),
    ("pending", {"decision": None}, "needs no approval: do it now"),
    ("rejected", {"decision": {"decision": "REJECT", "decided_by": "U1", "decided_by_name": None,
                               "decided_at": "t", "reason": None}}, "Rejected by U1. Do not do it."),
    ("expired", {}, "Nobody decided in time. Do not do it"),
    ("rollback_requested", {}, "undo it, then report_status 'rolled_back'"),
    ("running", {}, "'succeeded' or 'failed'"),
])
def test_each_status_says_what_to_do_next(status: str, extra: dict[str, Any], says: str) -> None:
    text = describe(action(status, **extra))
    assert text.startswith(f"Action a1 (restart_service) is {status}.") and says in text


@pytest.mark.parametrize(("error", "says"), [
    (SignoffApiError(429, "RATE_LIMITED", "over", retry_after=7), "rate limit for this API key is reached; try again in 7 s"),
    (SignoffApiError(503, "", "down"), "Signoff could not answer (503: down); try again shortly"),
    (SignoffApiError(502, "NOT_JSON", "answered 502 without JSON"), "Signoff could not answer (502 NOT_JSON"),
    (SignoffApiError(401, "UNAUTHORIZED", "wrong"), "Signoff refused the API key"),
    (SignoffApiError(422, "INVALID_FIELD", "payload: must be an object", "payload"), "Signoff refused it: payload: must be an object"),
])
async def test_refusals_are_tool_errors(monkeypatch: pytest.MonkeyPatch, error: SignoffApiError, says: str) -> None:
    async def refuse(_api: SignoffClient, _args: dict[str, Any]) -> Any:
        raise error

    monkeypatch.setitem(tools.HANDLERS, GET_APPROVAL, refuse)
    result = await call(SignoffClient("http://127.0.0.1:1", "k"), GET_APPROVAL, {"action_id": "a1"})
    assert result.is_error and says in result.content[0].text  # type: ignore[union-attr]


async def test_an_unreachable_signoff_is_a_tool_error() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with SignoffClient(f"http://127.0.0.1:{port}", "k") as api:
        result = await call(api, "list_action_types", {})
    assert result.is_error
    assert result.content[0].text == "Signoff could not be reached (ClientConnectorError); try again shortly"  # type: ignore[union-attr]


async def test_a_signoff_that_does_not_answer_is_a_tool_error_to_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    never = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    monkeypatch.setattr(tools, "CALL_SECONDS", 0.2)
    try:
        async with SignoffClient(f"http://127.0.0.1:{runner.addresses[0][1]}", "k") as api:
            result = await call(api, REQUEST_APPROVAL, ASK)
        assert result.is_error
        assert result.content[0].text == (  # type: ignore[union-attr]
            "Signoff could not be reached (TimeoutError); try again shortly"
            " (the same arguments return the same action, never a second one)"
        )
    finally:
        never.set()
        await runner.cleanup()
