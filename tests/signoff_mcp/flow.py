"""What the MCP tests share: one agent's whole conversation with Signoff through an MCP client
(the SDK's own), against the real bot with the fake Slack, over whichever transport."""

from __future__ import annotations

from typing import Any

from mcp import Client, types

from bot import ids
from tests.api.test_actions_api import carded, card_of
from tests.conftest import APPROVER, APPROVER_EMAIL, Harness
from tests.fakes.cards import card_text, open_modal, submit

TOOLS = {"list_action_types", "request_approval", "get_approval", "report_status"}
ASK: dict[str, Any] = {
    "action_type": "restart_service",
    "target": {"type": "service", "id": "web-1"},
    "payload": {"service": "web", "region": "eu"},
    "title": "Restart web-1 to clear a memory leak",
    "rationale": "RSS grew 4x in an hour; a restart frees it",
}


def text_of(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool call that must succeed: its structured content (the API's JSON)."""
    result = await client.call_tool(name, arguments)
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict) and text_of(result)
    return result.structured_content


async def refused(client: Client, name: str, arguments: dict[str, Any]) -> str:
    """A tool call that must be a tool error (not a protocol error): its text."""
    result = await client.call_tool(name, arguments)
    assert result.is_error, result
    return text_of(result)


def top_cards(h: Harness, external_id: str) -> int:
    return sum(
        1 for m in h.slack.messages.values()
        if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == external_id and m.thread_ts is None
    )


async def ask_approve_report(h: Harness, client: Client) -> str:
    """list, request (and a retry: the same action, one card), approve in Slack, get, report."""
    tools = await client.list_tools()
    assert {t.name for t in tools.tools} == TOOLS
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name["request_approval"].input_schema["required"]) == {
        "action_type", "target", "payload", "title", "rationale",
    }
    assert by_name["get_approval"].input_schema["properties"]["wait_seconds"]["maximum"] == 50
    assert all(t.description and t.output_schema for t in tools.tools)

    catalog = await call(client, "list_action_types", {})
    assert {t["action_type"] for t in catalog["types"]} == {"restart_service", "drop_table", "warm_cache"}

    asked = await call(client, "request_approval", ASK)
    assert asked["status"] == "needs_approval" and asked["title"] == ASK["title"]
    x = asked["action_id"]
    again = await client.call_tool("request_approval", ASK)  # a retry, as after a lost answer
    assert not again.is_error and again.structured_content is not None
    assert again.structured_content["action_id"] == x and "made before" in text_of(again)

    card = await carded(h, x)
    assert "Restart web-1" in card_text(card) and top_cards(h, x) == 1
    undecided = await call(client, "get_approval", {"action_id": x})
    assert undecided["status"] == "needs_approval" and undecided["decision"] is None

    view = await open_modal(h, card, ids.APPROVE, APPROVER)
    assert (await submit(h, view, APPROVER, "go ahead"))[0] == 200
    got = await client.call_tool("get_approval", {"action_id": x, "wait_seconds": 30})
    assert not got.is_error and isinstance(got.structured_content, dict)
    decided = got.structured_content
    assert decided["status"] == "pending"
    assert decided["decision"]["decided_by"] == APPROVER_EMAIL and decided["decision"]["reason"] == "go ahead"
    assert "Approved by Ada Lovelace" in text_of(got) and "go ahead" in text_of(got)

    running = await call(client, "report_status", {"action_id": x, "status": "running"})
    assert running["status"] == "running" and running["attempts"] == 1
    retried = await client.call_tool("report_status", {"action_id": x, "status": "running"})
    assert not retried.is_error and "Already reported" in text_of(retried)
    done = await call(client, "report_status", {"action_id": x, "status": "succeeded", "result": {"restarted": 3}})
    assert done["status"] == "succeeded" and done["result"] == {"restarted": 3}
    await h.wait_for(lambda: (m := card_of(h, x)) and "Succeeded" in card_text(m), timeout=15)
    late = await refused(client, "report_status", {"action_id": x, "status": "running"})
    assert f"action {x} is succeeded: it cannot become running" in late
    assert top_cards(h, x) == 1
    return str(x)
