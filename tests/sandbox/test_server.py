"""The sandbox's own endpoints answer bad input with a 400 saying why, never a 500; a proposal
the Actions API refuses comes back with the API's reason for the form to show."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from sandbox import workspace
from tests.sandbox.conftest import RunningSandbox


async def post(
    http: aiohttp.ClientSession, base: str, path: str, body: Any, content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    async with http.post(f"{base}{path}", data=data, headers={"Content-Type": content_type}) as r:
        return r.status, dict(await r.json())


async def test_bad_requests_are_answered_clearly(sandbox: RunningSandbox) -> None:
    base = sandbox.url.removesuffix("/sandbox")
    async with aiohttp.ClientSession() as http:
        assert await post(http, base, "/sandbox/click", {"where": "message"}) == (400, {"ok": False, "error": "pick a person to act as"})
        status, answer = await post(http, base, "/sandbox/click", "{not json")
        assert status == 400 and answer["ok"] is False
        status, answer = await post(http, base, "/sandbox/click", [1, 2])
        assert status == 400 and "JSON object" in answer["error"]
        status, answer = await post(http, base, "/sandbox/click", {"user": workspace.APPROVER.user_id, "where": "message"})
        assert status == 400 and "element" in answer["error"]
        status, answer = await post(http, base, "/sandbox/click", {
            "user": workspace.APPROVER.user_id, "where": "message", "ts": "1.2", "element": {"action_id": "x"},
        })
        assert status == 400 and "gone" in answer["error"]
        status, answer = await post(http, base, "/sandbox/submit", {"user": workspace.APPROVER.user_id, "view_id": "V1"})
        assert status == 400 and "not open" in answer["error"]
        status, answer = await post(http, base, "/sandbox/metrics", {"metric": "blended_roas", "value": "lots"})
        assert status == 400 and "number" in answer["error"]
        status, answer = await post(http, base, "/sandbox/metrics", '{"metric": "blended_roas", "value": Infinity}')
        assert status == 400
        # Only JSON: a form another site's page could post without asking is refused.
        status, answer = await post(
            http, base, "/sandbox/click", f"user={workspace.APPROVER.user_id}", content_type="application/x-www-form-urlencoded",
        )
        assert status == 415 and answer["ok"] is False
        async with http.get(f"{base}/sandbox/metric", params={"metric": "nothing", "action_id": "1"}) as r:
            assert r.status == 404
        async with http.get(f"{base}/sandbox/static/../../app.py") as r:
            assert r.status == 404

        # What the Actions API refuses, the form shows (with the field at fault).
        status, answer = await post(http, base, "/sandbox/propose", {"action_type": "no_such_type"})
        assert status == 200 and answer["created"] is False and answer["field"] == "action_type"
        status, answer = await post(http, base, "/sandbox/propose", {"action_type": "refund_order", "payload": "{"})
        assert answer["created"] is False and answer["field"] == "payload"
        status, answer = await post(http, base, "/sandbox/propose", {"action_type": "refund_order", "payload": '{"order_id": "A-1"}'})
        assert answer["created"] is False and answer["field"] == "amount"


async def test_the_metric_a_visitor_sets_is_what_the_watch_reads(sandbox: RunningSandbox) -> None:
    base = sandbox.url.removesuffix("/sandbox")
    async with aiohttp.ClientSession() as http:
        assert (await post(http, base, "/sandbox/metrics", {"metric": "blended_roas", "value": "1.6"}))[0] == 200
        async with http.get(f"{base}/sandbox/metric", params={"metric": "blended_roas", "action_id": "7"}) as r:
            answer = await r.json()
        assert answer["metric"] == "blended_roas" and answer["value"] == 1.6 and answer["observed_at"]
