"""Signoff's own Actions API end to end, over real loopback: the bot built by ``app.Signoff``
with ``API_KEYS`` set, its API driven with the typed client and raw requests, the fake
Slack for the cards, and a local HTTP server receiving the callbacks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from aiohttp import web
from sqlmodel import col, select

from api.client import SignoffApiError, SignoffClient
from bot import ids
from store import queries
from store.models import Action, ApiIdempotencyKey, Notice, Outbox
from tests.conftest import APPROVER, APPROVER_EMAIL, CHANNEL, Harness
from tests.fakes.cards import buttons, card_text, click, open_modal, submit
from tests.fakes.clock import FakeClock
from tests.fakes.slack_api import Message

SERVICE_KEY = "svc-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
API_KEYS = f"deployer:service:{SERVICE_KEY},other:service:{OTHER_KEY},ops:admin:{ADMIN_KEY}"
HIGH = "C0HIGHRISK"

POLICY = f"""
[[routes]]
sources = ["signoff"]
risk = ["high"]
channel = "{HIGH}"

[[action_types]]
action_type = "restart_service"
summary = "Restart a service"
risk = "low"
required_fields = ["service"]
example_payload = {{ service = "web" }}

[[action_types]]
action_type = "drop_table"
summary = "Drop a database table"
risk = "high"
required_fields = ["target.id"]

[[action_types]]
action_type = "warm_cache"
summary = "Warm a cache"
risk = "low"
approval_required_by_default = false
"""


class Callbacks:
    """A client's callback endpoint: records each POST; answers ``fail`` errors first."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail > 0:
            self.fail -= 1
            return web.Response(status=503)
        self.received.append((dict(request.headers), body))
        return web.Response(status=204)

    def events(self) -> list[str]:
        return [json.loads(b)["event"] for _h, b in self.received]


@pytest.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    c = Callbacks()
    await c.start()
    yield c
    await c.stop()


async def start(h: Harness, tmp_path: Path, *, policy: str = POLICY, api_keys: str = API_KEYS, **overrides: Any) -> str:
    h.slack.add_user(APPROVER, email=APPROVER_EMAIL, real_name="Ada Lovelace")
    config = tmp_path / "signoff.toml"
    config.write_text(policy, encoding="utf-8")
    await h.start(api_keys=api_keys, signoff_config=str(config), **overrides)
    assert h.bot is not None and h.bot.port
    return f"http://127.0.0.1:{h.bot.port}"


def card_of(h: Harness, external_id: str, channel: str = CHANNEL) -> Message | None:
    for m in h.slack.messages_in(channel):
        if ((m.metadata or {}).get("event_payload") or {}).get("external_id") == external_id and m.thread_ts is None:
            return m
    return None


async def carded(h: Harness, external_id: str, channel: str = CHANNEL) -> Message:
    """The action's card, once posted and known to the store (a click on it is then taken)."""
    card = await h.wait_for(lambda: card_of(h, external_id, channel))

    async def known() -> bool:
        assert h.bot is not None
        async with h.bot.db.read() as session:
            found = await queries.known_actions(session, source="signoff", external_ids=[external_id])
            row = await queries.card_for_action(session, action_id=found[external_id][0])
        return row is not None and row.ts is not None

    for _ in range(200):
        if await known():
            return card
        await asyncio.sleep(0.05)
    raise AssertionError("the card's ts was never stored")


def thread_of(h: Harness, card: Message) -> list[str]:
    return [json.dumps(m.blocks) + (m.text or "") for m in h.slack.messages_in(card.channel) if m.thread_ts == card.ts and m.ts != card.ts]


async def raw(
    h: Harness, base: str, method: str, path: str, body: Any = None, *, key: str | None = SERVICE_KEY,
    idem: str | None = "auto", headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["X-API-Key"] = key
    if idem == "auto":
        idem = str(uuid.uuid4())
    if idem is not None:
        hdrs["Idempotency-Key"] = idem
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    async with h.http.request(method, base + path, data=data, headers=hdrs) as r:
        text = await r.text()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        return r.status, dict(r.headers), parsed


def verify(headers: dict[str, str], body: bytes, key: str) -> bool:
    sig = headers["Signoff-Signature"]
    parts = dict(p.split("=", 1) for p in sig.split(","))
    expected = hmac.new(key.encode(), f"{parts['t']}.{body.decode()}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


async def test_submit_card_approve_in_slack_wait_callback_report(harness: Harness, tmp_path: Path, callbacks: Callbacks) -> None:
    h = harness
    base = await start(h, tmp_path)
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        types = await api.types()
        assert {t["action_type"] for t in types} == {"restart_service", "drop_table", "warm_cache"}
        assert set(types[0]) == {
            "action_type", "summary", "risk", "approval_required_by_default", "required_fields", "example_payload",
        }
        action = await api.submit(
            "restart_service", target={"type": "service", "id": "web-1"}, payload={"service": "web", "region": "eu"},
            rationale="memory leak", callback_url=callbacks.url,
        )
        assert action["status"] == "needs_approval" and action["requires_approval"] is True
        x = action["action_id"]
        card = await carded(h, x)
        text = card_text(card)
        assert "Restart a service" in text and "web-1" in text and "region" in text and "deployer" in text
        assert {ids.APPROVE, ids.REJECT} <= set(buttons(card))

        # A plain GET with ?wait holds until a person decides in Slack.
        waiting = asyncio.create_task(api.get(x, wait=20))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        view = await open_modal(h, card, ids.APPROVE, APPROVER)
        assert (await submit(h, view, APPROVER, "go ahead"))[0] == 200
        decided = await asyncio.wait_for(waiting, 15)
        assert decided["status"] == "pending"
        decision = decided["decision"]
        assert decision is not None
        assert decision["decision"] == "APPROVE" and decision["decided_by"] == APPROVER_EMAIL
        assert decision["decided_by_name"] == "Ada Lovelace" and decision["reason"] == "go ahead"
        await h.wait_for(lambda: (m := card_of(h, x)) and ids.APPROVE not in buttons(m) and "Approved" in card_text(m))

        # The submitter reports its progress; the card and the callback follow each.
        running = await api.report(x, "running")
        assert running["status"] == "running" and running["attempts"] == 1 and running["started_at"]
        done = await api.report(x, "succeeded", result={"restarted": 3})
        assert done["status"] == "succeeded" and done["result"] == {"restarted": 3} and done["completed_at"]
        await h.wait_for(lambda: (m := card_of(h, x)) and "Succeeded" in card_text(m), timeout=15)
        await h.run_job("notices")
        thread = await h.wait_for(lambda: (t := thread_of(h, card)) and len(t) >= 3 and t)
        assert "Approved by" in thread[0] and "go ahead" in thread[0]
        assert "Running" in thread[1] and "deployer" in thread[1]
        assert "Succeeded" in thread[2] and "deployer" in thread[2]
        with pytest.raises(SignoffApiError) as refused:
            await api.report(x, "running")
        assert refused.value.status == 409 and refused.value.code == "INVALID_TRANSITION"

    await h.wait_for(lambda: len(callbacks.received) >= 3, timeout=15)
    assert callbacks.events() == ["action.pending", "action.running", "action.succeeded"]
    for headers, body in callbacks.received:
        assert verify(headers, body, SERVICE_KEY)
        assert json.loads(body)["action"]["action_id"] == x
    assert json.loads(callbacks.received[-1][1])["action"]["result"] == {"restarted": 3}
    assert h.bot is not None
    # Counted for /metrics: three delivered (recorded just after each answer arrived).
    await h.wait_for(lambda: h.bot and h.bot.metrics.callbacks.labels("delivered")._value.get() == 3)


async def test_rollback_clicked_in_slack_is_asked_of_the_submitter(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path)
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        x = (await api.submit("restart_service", payload={"service": "web"}))["action_id"]
        card = await carded(h, x)
        view = await open_modal(h, card, ids.APPROVE, APPROVER)
        assert (await submit(h, view, APPROVER, None))[0] == 200
        assert (await api.wait_for_decision(x, timeout=15))["status"] == "pending"
        await api.report(x, "succeeded", result={})
        await h.wait_for(lambda: (m := card_of(h, x)) and ids.ROLLBACK in buttons(m) and "Succeeded" in card_text(m), timeout=15)
        card = await carded(h, x)
        assert (await click(h, card, ids.ROLLBACK, APPROVER))[0] == 200
        asked = await api.get(x, wait=15)
        assert asked["status"] == "rollback_requested"
        back = await api.report(x, "rolled_back")
        assert back["status"] == "rolled_back"
        await h.wait_for(lambda: (m := card_of(h, x)) and "olled back" in card_text(m), timeout=15)


async def test_admin_decides_over_the_api_and_a_second_decision_is_409(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path)
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api, SignoffClient(base, ADMIN_KEY, session=h.http) as admin:
        x = (await api.submit("drop_table", target={"type": "table", "id": "users"}))["action_id"]
        card = await h.wait_for(lambda: card_of(h, x, HIGH))  # routed by risk
        assert "Drop a database table" in card_text(card)
        with pytest.raises(SignoffApiError) as forbidden:
            await api.decide(x, "REJECT")
        assert forbidden.value.status == 403
        rejected = await admin.decide(x, "REJECT", "not today")
        assert rejected["status"] == "rejected"
        assert rejected["decision"] is not None and rejected["decision"]["decided_by"] == "ops"
        assert rejected["decision"]["reason"] == "not today"
        with pytest.raises(SignoffApiError) as again:
            await admin.decide(x, "APPROVE")
        assert again.value.status == 409
        await h.wait_for(lambda: (m := card_of(h, x, HIGH)) and not buttons(m) and "Rejected" in card_text(m), timeout=15)
        # Admins read every client's actions; another service client sees none of them.
        assert (await admin.get(x))["status"] == "rejected"
        async with SignoffClient(base, OTHER_KEY, session=h.http) as other:
            with pytest.raises(SignoffApiError) as hidden:
                await other.get(x)
            assert hidden.value.status == 404


async def test_a_type_that_needs_no_approval_is_pending_and_not_carded(harness: Harness, tmp_path: Path) -> None:
    """No card, and so no thread: what it reports is the client's to read (and the audit
    trail's), never a notice queued for a thread that will not come."""
    h = harness
    base = await start(h, tmp_path)
    assert h.bot is not None
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        action = await api.submit("warm_cache", payload={})
        assert action["status"] == "pending"
        assert (await api.report(action["action_id"], "running"))["status"] == "running"
        done = await api.report(action["action_id"], "failed", error="cache node down")
        assert done["status"] == "failed" and done["attempts"] == 1
    await h.run_job("cards")
    await h.run_job("notices")
    assert h.slack.messages_in(CHANNEL) == []
    async with h.bot.db.read() as session:
        found = await queries.known_actions(session, source="signoff", external_ids=[action["action_id"]])
        action_id, status = found[action["action_id"]]
        notices = list(await session.exec(select(Notice).where(Notice.action_id == action_id)))
        trail = await queries.audit_trail(session, action_id=action_id)
    assert status == "failed"
    assert notices == []  # nothing owed: the queue does not grow with every report
    assert [d.to_status for d in trail][-2:] == ["running", "failed"]  # the audit trail has each change


async def test_idempotency_replay_conflict_and_required(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path)
    body = {"action_type": "restart_service", "payload": {"service": "web"}}
    status, headers, first = await raw(h, base, "POST", "/api/v1/actions", body, idem="key-1")
    assert status == 201 and "X-Idempotent-Replay" not in headers
    status, headers, again = await raw(h, base, "POST", "/api/v1/actions", body, idem="key-1")
    assert status == 201 and headers.get("X-Idempotent-Replay") == "true" and again == first
    status, _, conflict = await raw(h, base, "POST", "/api/v1/actions", {**body, "title": "other"}, idem="key-1")
    assert status == 409 and conflict["code"] == "IDEMPOTENCY_CONFLICT"
    status, _, missing = await raw(h, base, "POST", "/api/v1/actions", body, idem=None)
    assert status == 400 and missing["code"] == "IDEMPOTENCY_KEY_REQUIRED"
    # Keys are per client: another client's same key is its own.
    status, headers, theirs = await raw(h, base, "POST", "/api/v1/actions", body, idem="key-1", key=OTHER_KEY)
    assert status == 201 and theirs["action_id"] != first["action_id"]
    # One card for the replayed submission.
    await h.wait_for(lambda: card_of(h, first["action_id"]) and card_of(h, theirs["action_id"]))
    assert sum(1 for m in h.slack.messages_in(CHANNEL) if m.thread_ts is None) == 2
    # Kept in the store: a restart replays too.
    await h.restart(api_keys=API_KEYS, signoff_config=str(tmp_path / "signoff.toml"))
    assert h.bot is not None
    base = f"http://127.0.0.1:{h.bot.port}"
    status, headers, after = await raw(h, base, "POST", "/api/v1/actions", body, idem="key-1")
    assert status == 201 and headers.get("X-Idempotent-Replay") == "true" and after == first


async def test_a_key_still_being_handled_is_409_in_progress(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path)
    assert h.bot is not None and h.bot.signoff_source is not None
    source = h.bot.signoff_source
    release = asyncio.Event()
    real_submit = source.submit

    async def held(*args: Any, **kwargs: Any) -> Any:
        await release.wait()
        return await real_submit(*args, **kwargs)

    # An admin's decide is answered once the decision landed: hold its delivery, and the
    # request stays in progress (its key locked) meanwhile.
    source.submit = held  # type: ignore[method-assign]
    try:
        _, _, action = await raw(h, base, "POST", "/api/v1/actions", {"action_type": "restart_service", "payload": {"service": "web"}})
        path = f"/api/v1/actions/{action['action_id']}/decide"
        first = asyncio.create_task(raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="slow"))

        async def locked() -> bool:
            async with h.bot.db.read() as session:  # type: ignore[union-attr]
                row = (await session.exec(select(ApiIdempotencyKey).where(ApiIdempotencyKey.key == "slow"))).first()
            return row is not None and row.status is None

        await h.wait_for(locked)
        status, headers, busy = await raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="slow")
        assert status == 409 and busy["code"] == "IDEMPOTENCY_IN_PROGRESS"
        release.set()
        status, _, answer = await first
        assert status == 200 and answer["status"] == "pending"
        status, headers, replay = await raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="slow")
        assert status == 200 and headers.get("X-Idempotent-Replay") == "true" and replay == answer
    finally:
        release.set()
        source.submit = real_submit  # type: ignore[method-assign]


async def test_a_decide_whose_answer_was_lost_is_answered_on_retry_not_refused(harness: Harness, tmp_path: Path) -> None:
    """The decision committed but the handler died before it stored its answer (as if killed
    there: the key stays unanswered and its hold lapses). The client's retry with the same key
    finds the decision its request made and gets the action, 200, instead of 409 "decided
    already"; a new request (another key) is still 409."""
    h = harness
    base = await start(h, tmp_path)
    assert h.bot is not None
    _, _, action = await raw(h, base, "POST", "/api/v1/actions", {"action_type": "restart_service", "payload": {"service": "web"}})
    path = f"/api/v1/actions/{action['action_id']}/decide"
    status, _, first = await raw(h, base, "POST", path, {"decision": "APPROVE", "reason": "ok"}, key=ADMIN_KEY, idem="d-1")
    assert status == 200 and first["status"] == "pending"
    async with h.bot.db.write() as session:  # the answer never stored, the dead request's hold over
        await session.exec(sa.update(ApiIdempotencyKey).where(col(ApiIdempotencyKey.key) == "d-1").values(
            status=None, body=None, locked_until=datetime.now(timezone.utc) - timedelta(seconds=1),
        ))
    status, headers, again = await raw(h, base, "POST", path, {"decision": "APPROVE", "reason": "ok"}, key=ADMIN_KEY, idem="d-1")
    assert status == 200, again
    assert again["status"] == "pending" and again["decision"]["decision"] == "APPROVE"
    status, _, other = await raw(h, base, "POST", path, {"decision": "APPROVE", "reason": "ok"}, key=ADMIN_KEY, idem="d-2")
    assert status == 409 and other["code"] == "INVALID_STATE"
    async with h.bot.db.read() as session:
        decided = (await session.exec(select(sa.func.count()).select_from(Outbox))).one()
    assert decided == 1  # one decision, however many retries


TWO_PERSON_POLICY = POLICY + """
[[routes]]
sources = ["signoff"]
types = ["rotate_keys"]
required_approvals = 2

[[routes]]
sources = ["signoff"]
types = ["purge_cdn"]
confirm_failed_guardrails = true

[[action_types]]
action_type = "rotate_keys"
summary = "Rotate the signing keys"

[[action_types]]
action_type = "purge_cdn"
summary = "Purge the CDN"
"""
# The first route of POLICY (high risk) comes first; these two types have no risk.
LEAD_KEY = "lead-key-0123456789abcdef"


async def test_admin_decide_follows_the_routes_two_person_rule(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path, policy=TWO_PERSON_POLICY, api_keys=f"{API_KEYS},lead:admin:{LEAD_KEY}")
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api, SignoffClient(base, ADMIN_KEY, session=h.http) as admin:
        x = (await api.submit("rotate_keys"))["action_id"]
        card = await carded(h, x)
        # The first approval is counted; the action waits for a second, distinct approver.
        status, _, first = await raw(h, base, "POST", f"/api/v1/actions/{x}/decide", {"decision": "APPROVE", "reason": "ok"}, key=ADMIN_KEY)
        assert status == 202, first
        assert first["status"] == "needs_approval" and first["decision"] is None
        assert first["approvals"] == {"required": 2, "received": 1, "approved_by": ["api:ops"]}
        assert (await api.get(x))["status"] == "needs_approval"
        # The same key again is not a second person.
        with pytest.raises(SignoffApiError) as again:
            await admin.decide(x, "APPROVE")
        assert again.value.status == 409 and again.value.code == "ALREADY_APPROVED"
        await h.wait_for(lambda: (m := card_of(h, x)) and "1 of 2" in card_text(m), timeout=15)
        # A person in Slack is the second approver: the decision is taken, as from two clicks.
        card = await carded(h, x)
        view = await open_modal(h, card, ids.APPROVE, APPROVER)
        assert (await submit(h, view, APPROVER, "second"))[0] == 200
        decided = await api.wait_for_decision(x, timeout=15)
        assert decided["status"] == "pending"
        assert decided["decision"]["decided_by"] == APPROVER_EMAIL and "api:ops" in decided["decision"]["reason"]

        # Two admin keys are two approvers too; the second one's answer is the decision.
        y = (await api.submit("rotate_keys"))["action_id"]
        await carded(h, y)
        assert (await raw(h, base, "POST", f"/api/v1/actions/{y}/decide", {"decision": "APPROVE"}, key=ADMIN_KEY))[0] == 202
        status, _, done = await raw(h, base, "POST", f"/api/v1/actions/{y}/decide", {"decision": "APPROVE"}, key=LEAD_KEY)
        assert status == 200 and done["status"] == "pending" and done["decision"]["decided_by"] == "lead"
        assert done["approvals"] == {"required": 2, "received": 2, "approved_by": ["api:ops", "api:lead"]}
        # A rejection needs one person, as in Slack.
        z = (await api.submit("rotate_keys"))["action_id"]
        await carded(h, z)
        assert (await admin.decide(z, "REJECT", "no"))["status"] == "rejected"


async def test_a_two_person_approval_whose_answer_was_lost_is_answered_on_retry(harness: Harness, tmp_path: Path) -> None:
    """Under the two-person rule, the first approval committed but its answer was lost (the
    handler died: the key unanswered, its hold over). The retry with the same key is answered
    as the first would have been (202, one approval counted), not 409; another request by the
    same key is still 409 ALREADY_APPROVED, and one approval is counted either way."""
    h = harness
    base = await start(h, tmp_path, policy=TWO_PERSON_POLICY)
    assert h.bot is not None
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        x = (await api.submit("rotate_keys"))["action_id"]
        await carded(h, x)
    path = f"/api/v1/actions/{x}/decide"
    status, _, first = await raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="two-1")
    assert status == 202 and first["approvals"]["received"] == 1
    async with h.bot.db.write() as session:  # the answer never stored, the dead request's hold over
        await session.exec(sa.update(ApiIdempotencyKey).where(col(ApiIdempotencyKey.key) == "two-1").values(
            status=None, body=None, locked_until=datetime.now(timezone.utc) - timedelta(seconds=1),
        ))
    status, headers, again = await raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="two-1")
    assert status == 202, again
    assert again["status"] == "needs_approval"
    assert again["approvals"] == {"required": 2, "received": 1, "approved_by": ["api:ops"]}
    status, _, other = await raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="two-2")
    assert status == 409 and other["code"] == "ALREADY_APPROVED"
    status, _, replayed = await raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="two-1")
    assert status == 202 and replayed == again  # now stored: replayed as answered


async def test_admin_decide_needs_the_typed_confirmation_and_refuses_self_approval(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path, policy=TWO_PERSON_POLICY)
    assert h.bot is not None
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        x = (await api.submit("purge_cdn"))["action_id"]
        await carded(h, x)
    # The API's own actions carry no guardrail checks; the rule applies to any action that
    # has a failed one, so the test gives this one such a check, as FloKit's actions have.
    async with h.bot.db.write() as session:
        await session.exec(
            sa.update(Action).where(col(Action.source) == "signoff", col(Action.external_id) == x)
            .values(guardrail_checks=[{"check": "blast radius", "passed": False, "detail": "all regions"}])
        )
    path = f"/api/v1/actions/{x}/decide"
    status, _, refused = await raw(h, base, "POST", path, {"decision": "APPROVE"}, key=ADMIN_KEY, idem="confirm")
    assert status == 422 and refused["field"] == "confirmation" and '"approve"' in refused["message"]
    status, _, refused = await raw(h, base, "POST", path, {"decision": "APPROVE", "confirmation": "yes"}, key=ADMIN_KEY)
    assert status == 422 and refused["field"] == "confirmation"
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        assert (await api.get(x))["status"] == "needs_approval"
    # Refused for its body, the key was not kept: the same key with the word typed is taken.
    status, _, done = await raw(h, base, "POST", path, {"decision": "APPROVE", "confirmation": "Approve"}, key=ADMIN_KEY, idem="confirm")
    assert status == 200 and done["status"] == "pending"

    # An admin key cannot approve what it submitted itself (a requester cannot, in Slack).
    _, _, own = await raw(h, base, "POST", "/api/v1/actions", {"action_type": "restart_service", "payload": {"service": "web"}}, key=ADMIN_KEY)
    await carded(h, own["action_id"])
    status, _, answer = await raw(h, base, "POST", f"/api/v1/actions/{own['action_id']}/decide", {"decision": "APPROVE"}, key=ADMIN_KEY)
    assert status == 403 and answer["code"] == "SELF_APPROVAL"


async def test_bad_bodies_auth_and_the_catalog_are_answered_clearly(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path)
    path = "/api/v1/actions"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "nope"})
    assert status == 422 and answer["field"] == "action_type" and answer["code"] == "UNKNOWN_ACTION_TYPE"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "restart_service", "payload": {}})
    assert status == 422 and answer["field"] == "service" and answer["code"] == "MISSING_FIELD"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "drop_table", "target": {"type": "table"}})
    assert status == 422 and answer["field"] == "target.id"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "warm_cache", "payload": []})
    assert status == 422 and answer["field"] == "payload"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "warm_cache", "callback_url": "ftp://x"})
    assert status == 422 and answer["field"] == "callback_url"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "warm_cache", "expires_in_seconds": -1})
    assert status == 422 and answer["field"] == "expires_in_seconds"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "warm_cache", "bogus": 1})
    assert status == 422 and answer["field"] == "bogus"
    assert (await raw(h, base, "POST", path, "not json"))[0] == 400
    assert (await raw(h, base, "POST", path, '{"action_type": "warm_cache", "payload": {"x": NaN}}'))[0] == 400
    assert (await raw(h, base, "POST", path, '{"action_type": "warm_cache", "title": "a\\u0000b"}'))[0] == 400
    assert (await raw(h, base, "POST", path, "[" * 5000 + "]" * 5000))[0] == 400
    deep: Any = {}
    for _ in range(40):
        deep = {"x": deep}
    assert (await raw(h, base, "POST", path, {"action_type": "warm_cache", "payload": deep}))[0] == 400
    status, _, big = await raw(h, base, "POST", path, {"action_type": "warm_cache", "payload": {"x": "y" * 60000}})
    assert status == 201, big  # more than one read of the body, taken whole
    assert (await raw(h, base, "POST", path, [1]))[0] == 400
    assert (await raw(h, base, "POST", path, {"action_type": "x" * (70 * 1024)}))[0] == 413
    # Keys: missing or wrong is 401, Bearer works too, a service key on an admin call 403.
    assert (await raw(h, base, "GET", "/api/v1/actions/types", key=None))[0] == 401
    assert (await raw(h, base, "GET", "/api/v1/actions/types", key="wrong-key-0123456789"))[0] == 401
    status, _, _ = await raw(h, base, "GET", "/api/v1/actions/types", key=None, headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    assert status == 200
    status, _, answer = await raw(h, base, "POST", "/api/v1/actions/x/decide", {"decision": "APPROVE"})
    assert status == 403
    status, _, answer = await raw(h, base, "GET", "/api/v1/actions/nope")
    assert status == 404 and answer["code"] == "NOT_FOUND"
    status, _, answer = await raw(h, base, "GET", "/api/v1/actions/nope?wait=61")
    assert status in (400, 404)
    status, _, doc = await raw(h, base, "GET", "/openapi.json", key=None)
    assert status == 200 and doc["openapi"].startswith("3.1")


async def test_requests_are_rate_limited_per_key(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path, api_rate_limit=5)
    answers = [(await raw(h, base, "GET", "/api/v1/actions/types"))[:2] for _ in range(6)]
    assert [s for s, _ in answers[:5]] == [200] * 5
    status, headers = answers[5]
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert (await raw(h, base, "GET", "/api/v1/actions/types", key=ADMIN_KEY))[0] == 200  # its own bucket


async def test_the_rate_limit_is_shared_by_replicas_on_one_database(harness: Harness, tmp_path: Path) -> None:
    """Two Signoffs on one store: a key's requests are counted together, whichever replica
    answers them (a token bucket in the store, not in each process)."""
    h = harness
    clock = FakeClock()  # the buckets refill only when the test moves the clock
    first = await start(h, tmp_path, api_rate_limit=6, clock=clock)
    second_bot = await h.start(api_keys=API_KEYS, signoff_config=str(tmp_path / "signoff.toml"), api_rate_limit=6, clock=clock)
    second = f"http://127.0.0.1:{second_bot.port}"
    answers = [(await raw(h, base, "GET", "/api/v1/actions/types"))[:2] for base in [first, second] * 3]
    assert [s for s, _ in answers] == [200] * 6  # a burst of six in all, three from each
    for base in (first, second):
        status, headers, answer = await raw(h, base, "GET", "/api/v1/actions/types")
        assert status == 429 and answer["code"] == "RATE_LIMITED"
        assert headers["Retry-After"] == "10"  # six a minute: one more in ten seconds
    assert (await raw(h, second, "GET", "/api/v1/actions/types", key=ADMIN_KEY))[0] == 200  # its own bucket
    clock.advance(timedelta(seconds=10))
    assert (await raw(h, first, "GET", "/api/v1/actions/types"))[0] == 200
    assert (await raw(h, second, "GET", "/api/v1/actions/types"))[0] == 429


async def test_the_api_is_off_without_keys(harness: Harness) -> None:
    h = harness
    await h.start()
    assert h.bot is not None
    base = f"http://127.0.0.1:{h.bot.port}"
    assert (await raw(h, base, "GET", "/api/v1/actions/types"))[0] == 404


async def test_an_undecided_action_expires(harness: Harness, tmp_path: Path, callbacks: Callbacks) -> None:
    h = harness
    base = await start(h, tmp_path)
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        x = (await api.submit("restart_service", payload={"service": "web"}, expires_in_seconds=1, callback_url=callbacks.url))["action_id"]
        await h.wait_for(lambda: card_of(h, x))
        await asyncio.sleep(1.2)
        await h.run_job("api_expiry")
        assert (await api.get(x))["status"] == "expired"
        await h.wait_for(lambda: (m := card_of(h, x)) and not buttons(m) and "xpired" in card_text(m), timeout=15)
    await h.wait_for(lambda: callbacks.events() == ["action.expired"], timeout=15)


async def test_a_failing_callback_is_retried_and_survives_a_restart(harness: Harness, tmp_path: Path, callbacks: Callbacks) -> None:
    h = harness
    base = await start(h, tmp_path)
    callbacks.fail = 1
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        x = (await api.submit("warm_cache", callback_url=callbacks.url))["action_id"]
        await api.report(x, "running")
    # The first attempt failed (503); the retry is due later, and a restart keeps it.
    await asyncio.sleep(0.5)
    assert callbacks.received == [] and callbacks.fail == 0
    assert h.bot is not None
    from store.models import ApiCallback

    async with h.bot.db.write() as session:
        from sqlmodel import select

        rows = list(await session.exec(select(ApiCallback)))
        assert len(rows) == 1 and rows[0].state == "pending" and rows[0].attempts == 1
        rows[0].next_attempt_at = rows[0].created_at  # due now
        session.add(rows[0])
    await h.restart(api_keys=API_KEYS, signoff_config=str(tmp_path / "signoff.toml"))
    await h.run_job("callbacks")
    await h.wait_for(lambda: callbacks.events() == ["action.running"], timeout=10)
    await h.run_job("callbacks")
    assert callbacks.events() == ["action.running"]  # once


def schema_check(doc: dict[str, Any], name: str, value: Any) -> None:
    jsonschema.Draft202012Validator({**doc, "$ref": f"#/components/schemas/{name}"}).validate(value)


async def test_the_openapi_document_describes_the_answers(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path)
    status, _, doc = await raw(h, base, "GET", "/openapi.json", key=None)
    assert status == 200 and doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/api/v1/actions/types", "/api/v1/actions", "/api/v1/actions/{id}", "/api/v1/actions/{id}/decide",
        "/api/v1/actions/{id}/status",
    }
    for name in ("Action", "ActionType", "Error", "SubmitRequest"):
        jsonschema.Draft202012Validator.check_schema({**doc, "$ref": f"#/components/schemas/{name}"})
    _, _, types = await raw(h, base, "GET", "/api/v1/actions/types")
    for t in types["types"]:
        schema_check(doc, "ActionType", t)
    body = {"action_type": "restart_service", "payload": {"service": "web"}, "target": {"type": "service", "id": "a"}}
    schema_check(doc, "SubmitRequest", body)
    status, _, action = await raw(h, base, "POST", "/api/v1/actions", body)
    assert status == 201
    schema_check(doc, "Action", action)
    _, _, decided = await raw(h, base, "POST", f"/api/v1/actions/{action['action_id']}/decide", {"decision": "APPROVE"}, key=ADMIN_KEY)
    schema_check(doc, "Action", decided)
    _, _, reported = await raw(h, base, "POST", f"/api/v1/actions/{action['action_id']}/status", {"status": "failed", "error": "boom"})
    schema_check(doc, "Action", reported)
    for bad in ({"action_type": 1}, {"action_type": "restart_service"}, {}):
        status, _, answer = await raw(h, base, "POST", "/api/v1/actions", bad)
        assert status == 422
        schema_check(doc, "Error", answer)


async def test_an_action_expired_by_the_policys_timings_is_expired_for_its_client(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path, expire_after_seconds=1)
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        x = (await api.submit("restart_service", payload={"service": "web"}))["action_id"]
        await carded(h, x)
        await asyncio.sleep(1.2)
        await h.run_job("reminders")
        await h.run_job("api_expiry")
        assert (await api.get(x))["status"] == "expired"


async def test_a_refused_body_keeps_no_key_and_callback_hosts_can_be_restricted(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path, callback_allowed_hosts="hooks.example.com, 127.0.0.1")
    path = "/api/v1/actions"
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "restart_service"}, idem="fix-me")
    assert status == 422 and answer["field"] == "service"
    # The same key with the body fixed: taken (a refused request keeps no key, as Stripe's).
    status, headers, _ = await raw(h, base, "POST", path, {"action_type": "restart_service", "payload": {"service": "web"}}, idem="fix-me")
    assert status == 201 and "X-Idempotent-Replay" not in headers
    status, _, answer = await raw(h, base, "POST", path, {"action_type": "warm_cache", "callback_url": "https://evil.example.net/x"})
    assert status == 422 and answer["field"] == "callback_url" and "not allowed" in answer["message"]
    status, _, _ = await raw(h, base, "POST", path, {"action_type": "warm_cache", "callback_url": "https://hooks.example.com/x"})
    assert status == 201


async def test_an_action_brings_its_signals_guardrails_rollback_rules_and_own_buttons(harness: Harness, tmp_path: Path) -> None:
    h = harness
    base = await start(h, tmp_path)
    async with SignoffClient(base, SERVICE_KEY, session=h.http) as api:
        action = await api.submit(
            "restart_service", payload={"service": "web"}, title="Restart web (leak)",
            expected_impact={"metric": "p99_latency", "direction": "decrease", "magnitude": 0.4},
            data_signals=[{"label": "RSS growth", "value": "+3% an hour"}],
            guardrail_checks=[{"check": "off_peak", "passed": False, "detail": "peak traffic now"}],
            rollback_conditions=["If error rate exceeds 0.05"],
            options=[
                {"key": "go", "label": "Restart now", "decision": "APPROVE"},
                {"key": "no", "label": "Leave it running", "decision": "REJECT"},
            ],
        )
        x = action["action_id"]
        assert action["data_signals"] == [{"label": "RSS growth", "value": "+3% an hour"}]
        assert action["options"][0] == {"key": "go", "label": "Restart now", "decision": "APPROVE"}
        card = await carded(h, x)
        text = card_text(card)
        for shown in ("p99_latency", "RSS growth", "+3% an hour", "off_peak", "peak traffic now", "If error rate exceeds 0.05"):
            assert shown in text
        labels = {b["text"]["text"] for b in buttons(card).values()}
        assert labels == {"Restart now", "Leave it running"}
        approve = next(a for a, b in buttons(card).items() if b["text"]["text"] == "Restart now")
        view = await open_modal(h, card, approve, APPROVER)
        assert (await submit(h, view, APPROVER, None))[0] == 200
        decided = await api.wait_for_decision(x, timeout=15)
        assert decided["status"] == "pending"
        assert decided["decision"] is not None and decided["decision"].get("option") == "go"

    bad = [
        ({"data_signals": [{"label": "x"}]}, "data_signals[0].value"),
        ({"guardrail_checks": [{"check": "x", "passed": "yes"}]}, "guardrail_checks[0].passed"),
        ({"rollback_conditions": ["   "]}, "rollback_conditions[0]"),
        ({"expected_impact": {"metric": "m", "direction": "sideways"}}, "expected_impact.direction"),
        ({"options": [{"key": "a", "label": "No", "decision": "REJECT"}]}, "options"),
        ({"options": [{"key": "a", "label": "A", "decision": "APPROVE"}, {"key": "a", "label": "B", "decision": "REJECT"}]}, "options[1].key"),
        ({"options": [{"key": "a", "label": "A", "decision": "MAYBE"}]}, "options[0].decision"),
    ]
    for extra, field in bad:
        status, _h, answer = await raw(h, base, "POST", "/api/v1/actions", {"action_type": "restart_service", "payload": {"service": "web"}, **extra})
        assert status == 422 and answer["field"] == field, (extra, answer)
