"""``/mcp`` on the bot: the SDK's own MCP client over streamable HTTP, against the real bot
(``API_KEYS`` set) with the fake Slack; the key as Bearer; and the aiohttp-to-ASGI bridge."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiohttp import web
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from signoff_mcp.http import loopback_url, serve_asgi
from tests.api.test_actions_api import OTHER_KEY, SERVICE_KEY, start
from tests.conftest import Harness
from tests.signoff_mcp.flow import ASK, ask_approve_report, call, refused, top_cards

INIT = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]


@asynccontextmanager
async def mcp_client(base: str, key: str, mode: str = "auto") -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(60.0))
    async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http), mode=mode) as client:  # type: ignore[arg-type]
        yield client


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_list_request_approve_in_slack_get_report(harness: Harness, tmp_path: Path, mode: str) -> None:
    """The whole flow through /mcp, with the protocol's current version and its handshake era."""
    base = await start(harness, tmp_path)
    async with mcp_client(base, SERVICE_KEY, mode) as client:
        await ask_approve_report(harness, client)


async def test_a_missing_or_wrong_key_is_401(harness: Harness, tmp_path: Path) -> None:
    base = await start(harness, tmp_path)
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"Basic {SERVICE_KEY}"}):
        async with harness.http.post(f"{base}/mcp", json=INIT, headers={"Accept": "application/json, text/event-stream", **headers}) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["code"] == "UNAUTHORIZED"
    with pytest.raises(Exception) as refused_by_sdk:  # the SDK's client surfaces the 401 as an error
        async with mcp_client(base, "wrong-key-0123456789abc") as client:
            await client.list_tools()
    assert any(isinstance(e, MCPError) for e in leaves(refused_by_sdk.value)), refused_by_sdk.value
    # The right key: the same request is served.
    async with harness.http.post(
        f"{base}/mcp", json=INIT, headers={"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {SERVICE_KEY}"},
    ) as r:
        assert r.status == 200
        assert (await r.json())["result"]["serverInfo"]["name"] == "signoff"
    # What a stateless server does not serve is answered as the SDK answers it, never a 500.
    key = {"Authorization": f"Bearer {SERVICE_KEY}", "Accept": "application/json, text/event-stream"}
    answers = {}
    for method, body in (("GET", None), ("DELETE", None), ("POST", b"{not json"), ("POST", b'{"jsonrpc": "2.0"}')):
        async with harness.http.request(method, f"{base}/mcp", data=body, headers={**key, "Content-Type": "application/json"}) as r:
            answers[(method, body)] = r.status
    assert answers[("DELETE", None)] == 405 and answers[("POST", b"{not json")] == 400
    assert all(status < 500 for status in answers.values()), answers


async def test_without_api_keys_there_is_no_mcp(harness: Harness) -> None:
    await harness.start()
    assert harness.bot is not None
    async with harness.http.post(f"http://127.0.0.1:{harness.bot.port}/mcp", json=INIT) as r:
        assert r.status == 404


async def test_bad_arguments_are_tool_errors_a_model_can_act_on(harness: Harness, tmp_path: Path) -> None:
    base = await start(harness, tmp_path)
    async with mcp_client(base, SERVICE_KEY) as client:
        text = await refused(client, "request_approval", {**ASK, "action_type": "refund"})
        assert "unknown action_type 'refund'; known: drop_table, restart_service, warm_cache" in text
        text = await refused(client, "request_approval", {**ASK, "payload": {"region": "eu"}})
        assert "service: required by restart_service; put it in payload" in text and '"service": "web"' in text
        text = await refused(client, "request_approval", {k: v for k, v in ASK.items() if k != "title"})
        assert "invalid arguments for request_approval: title: required" in text
        text = await refused(client, "request_approval", {**ASK, "target": {"type": "service", "id": 7}, "urgent": True})
        assert "target.id: 7 is not of type 'string'" in text and "urgent: unknown argument" in text
        text = await refused(client, "get_approval", {"action_id": "no-such-action", "wait_seconds": 5})
        assert "no action 'no-such-action' for this API key" in text
        text = await refused(client, "get_approval", {"action_id": "x", "wait_seconds": 60})
        assert "wait_seconds: 60 is greater than the maximum of 50" in text
        text = await refused(client, "report_status", {"action_id": "x", "status": "done"})
        assert "status: 'done' is not one of ['running', 'succeeded', 'failed', 'rolled_back']" in text
        text = await refused(client, "no_such_tool", {})
        assert "unknown tool 'no_such_tool'" in text

        # Not approved yet: it cannot start running, and the model is told to wait.
        asked = await call(client, "request_approval", {**ASK, "idempotency_key": "agent-7-restart"})
        x = asked["action_id"]
        text = await refused(client, "report_status", {"action_id": x, "status": "running"})
        assert f"action {x} is needs_approval: it cannot become running" in text and "get_approval" in text
        # The caller's own key: another service key sees no such action.
        async with mcp_client(base, OTHER_KEY) as other:
            assert f"no action '{x}'" in await refused(other, "get_approval", {"action_id": x})
        # The same key again: the same action; with other arguments: a clear conflict.
        same = await call(client, "request_approval", {**ASK, "idempotency_key": "agent-7-restart"})
        assert same["action_id"] == x
        text = await refused(client, "request_approval", {**ASK, "title": "Other", "idempotency_key": "agent-7-restart"})
        assert "idempotency_key 'agent-7-restart' was used before for a different request" in text
        # A new key for the very same arguments: a new request (and card), as asked.
        fresh = await call(client, "request_approval", {**ASK, "idempotency_key": "agent-7-restart-2"})
        assert fresh["action_id"] != x
    await harness.wait_for(lambda: top_cards(harness, x) == 1 and top_cards(harness, fresh["action_id"]) == 1)


async def test_a_type_that_needs_no_approval_is_pending_at_once(harness: Harness, tmp_path: Path) -> None:
    base = await start(harness, tmp_path)
    async with mcp_client(base, SERVICE_KEY) as client:
        result = await client.call_tool("request_approval", {**ASK, "action_type": "warm_cache", "payload": {}})
        assert not result.is_error and result.structured_content is not None
        assert result.structured_content["status"] == "pending"
        assert "needs no approval: do it now" in " ".join(getattr(c, "text", "") for c in result.content)


def test_loopback_url() -> None:
    assert loopback_url("0.0.0.0", 3000) == "http://127.0.0.1:3000"
    assert loopback_url("::", 3000) == "http://[::1]:3000"
    assert loopback_url("10.1.2.3", 80) == "http://10.1.2.3:80"


async def test_the_asgi_bridge_streams_both_ways() -> None:
    """A request body read in chunks, an answer written in parts (as an SSE stream is), the
    headers and status as the ASGI application set them, and a disconnect once answered."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        seen.update(method=scope["method"], path=scope["path"], query=scope["query_string"], body=body,
                    auth=dict(scope["headers"]).get(b"authorization"))
        await send({"type": "http.response.start", "status": 207, "headers": [(b"content-type", b"text/event-stream"), (b"x-one", b"1")]})
        await send({"type": "http.response.body", "body": b"data: a\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: b\n\n", "more_body": False})
        seen["after"] = (await receive())["type"]

    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve_asgi(app, request)

    web_app = web.Application()
    web_app.router.add_route("*", "/mcp", handler)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    payload = json.dumps({"x": "y" * 300_000}).encode()
    try:
        async with httpx2.AsyncClient() as http:
            r = await http.post(f"http://127.0.0.1:{port}/mcp?a=1", content=payload, headers={"Authorization": "Bearer k"})
        assert r.status_code == 207 and r.headers["x-one"] == "1" and r.headers["content-type"] == "text/event-stream"
        assert r.content == b"data: a\n\ndata: b\n\n"
        assert seen == {"method": "POST", "path": "/mcp", "query": b"a=1", "body": payload, "auth": b"Bearer k", "after": "http.disconnect"}
    finally:
        await runner.cleanup()
