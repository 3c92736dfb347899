"""The Fieldkit client against the fake Fieldkit over loopback: what it reads, what it sends
(headers and bodies, byte for byte), and how each answer maps onto the error family."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from sources.base import (
    ConflictError,
    DecisionRequest,
    InProgressError,
    IntakeError,
    NotFoundError,
    Op,
    PermanentError,
    Status,
    TransientError,
)
from sources.fieldkit import FieldkitSource, decision_reason
from tests.fakes.fieldkit import ADMIN_KEY, SERVICE_KEY, FakeFieldkit


@pytest.fixture
async def fake() -> AsyncIterator[FakeFieldkit]:
    server = FakeFieldkit()
    await server.start()
    yield server
    await server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(session: aiohttp.ClientSession, fake: FakeFieldkit, *, key: str = ADMIN_KEY, clock: Clock | None = None,
           timeout: float = 5.0) -> FieldkitSource:
    return FieldkitSource(session, base_url=fake.url, api_key=key, timeout=timeout, clock=clock or Clock())


def request(external_id: str, op: Op = Op.APPROVE, *, key: str = "key-1", note: str | None = "ship it") -> DecisionRequest:
    return DecisionRequest(op=op, external_id=external_id, actor="ada@example.com", note=note, idempotency_key=key,
                           actor_name="Ada Lovelace")


async def test_an_action_is_read_with_its_types_summary_risk_and_details(
    session: aiohttp.ClientSession, fake: FakeFieldkit
) -> None:
    x = fake.submit("refund_payment", payload={"amount": 120.5, "currency": "EUR", "note": "n" * 5000})
    action = await client(session, fake).get_action(x)
    assert (action.external_id, action.status, action.upstream_status) == (x, Status.READY, "needs_approval")
    assert (action.type, action.title, action.risk) == ("refund_payment", "Refund a customer payment", "high")
    details = dict((d.label, d.value) for d in action.details)
    assert details["Scope"] == "FULFILLMENT" and details["Mode"] == "EXECUTE"
    assert details["Target"] == "sales_order c3a1af57-2f5a-4e85-98b1-23b3501fa9d4"
    assert "amount: 120.5" in details["Payload"] and "currency: EUR" in details["Payload"]
    assert len(details["Payload"]) < 1500 and "…" in details["Payload"]  # a long value is cut, not refused
    assert details["Preconditions"] == "expected_status: ready"
    assert details["Correlation ID"] == "5df4f2e5-cc45-4e75-bf69-f056eae5b7c3"
    assert action.created_at is not None and action.detailed
    sent = fake.calls("GET", f"/actions/{x}")[0]
    assert sent.headers["X-API-Key"] == ADMIN_KEY and "Authorization" not in sent.headers


@pytest.mark.parametrize(("word", "status"), [
    ("needs_approval", Status.READY), ("pending", Status.APPROVED), ("running", Status.RUNNING),
    ("succeeded", Status.SUCCEEDED), ("failed", Status.FAILED), ("rejected", Status.REJECTED),
])
async def test_statuses_map_onto_the_lifecycle(
    session: aiohttp.ClientSession, fake: FakeFieldkit, word: str, status: Status
) -> None:
    x = fake.submit(status=word)
    assert (await client(session, fake).get_action(x)).status is status


async def test_the_execution_ledger_is_shown(session: aiohttp.ClientSession, fake: FakeFieldkit) -> None:
    x = fake.submit(status="pending")
    fake.run(x)
    fake.fail(x, {"code": "PRECONDITION_FAILED", "message": "order is shipped"})
    details = dict((d.label, d.value) for d in (await client(session, fake).get_action(x)).details)
    assert details["Execution"].startswith("1 attempt, started ") and "completed" in details["Execution"]
    assert "order is shipped" in details["Error"]


async def test_the_catalog_is_cached_and_read_again_for_an_unknown_type_at_most_so_often(
    session: aiohttp.ClientSession, fake: FakeFieldkit
) -> None:
    clock = Clock()
    source = client(session, fake, clock=clock)
    a, b = fake.submit(), fake.submit("refund_payment")
    await source.get_action(a)
    await source.get_action(b)
    assert len(fake.calls("GET", "/types")) == 1
    fake.types.append({"action_type": "purge_cache", "summary": "Purge a CDN cache", "risk": "low"})
    c = fake.submit("purge_cache")
    early = await source.get_action(c)  # unknown, but the catalog was read a moment ago
    assert early.risk is None and early.title == "Purge cache" and len(fake.calls("GET", "/types")) == 1
    clock.now += 31
    later = await source.get_action(c)
    assert (later.title, later.risk) == ("Purge a CDN cache", "low") and len(fake.calls("GET", "/types")) == 2
    clock.now += 300
    await source.get_action(a)  # a known type, but the catalog is old: read again
    assert len(fake.calls("GET", "/types")) == 3
    fake.fail_next("/types", status=503)
    clock.now += 301
    assert (await source.get_action(b)).risk == "high"  # a failed refresh keeps the cached catalog


async def test_the_decide_carries_the_key_and_a_body_naming_the_person(
    session: aiohttp.ClientSession, fake: FakeFieldkit
) -> None:
    x = fake.submit()
    source = client(session, fake)
    req = request(x)
    body = source.request_body(req)
    assert json.loads(body) == {"decision": "APPROVE", "reason": "Approved by Ada Lovelace <ada@example.com> in Slack: ship it"}
    landed = await source.submit(DecisionRequest(**{**req.__dict__, "body": body}))
    assert landed.upstream is not None and landed.upstream.status is Status.APPROVED
    sent = fake.decides(x)[0]
    assert sent.body == body.encode() and sent.headers["Idempotency-Key"] == "key-1"
    assert sent.headers["X-API-Key"] == ADMIN_KEY and sent.headers["Content-Type"].startswith("application/json")
    assert fake.actions[x]["status"] == "pending"

    y = fake.submit()
    rejected = request(y, Op.REJECT, key="key-2", note="wrong order")
    assert decision_reason(rejected) == "Rejected by Ada Lovelace <ada@example.com> in Slack: wrong order"
    assert (await source.submit(rejected)).upstream.status is Status.REJECTED  # type: ignore[union-attr]
    assert fake.decisions[-1] == {"action_id": y, "decision": "REJECT", "key": "key-2",
                                  "reason": "Rejected by Ada Lovelace <ada@example.com> in Slack: wrong order"}


async def test_a_lost_answer_is_retried_with_the_same_key_and_replayed(
    session: aiohttp.ClientSession, fake: FakeFieldkit
) -> None:
    x = fake.submit()
    source = client(session, fake)
    fake.fail_next(f"/{x}/decide", status=0, after_effect=True)  # took effect, then the connection reset
    with pytest.raises(TransientError):
        await source.submit(request(x))
    landed = await source.submit(request(x))
    assert landed.upstream is not None and landed.upstream.status is Status.APPROVED
    assert len(fake.decisions) == 1 and len(fake.decides(x)) == 2
    assert fake.decides(x)[0].body == fake.decides(x)[1].body


async def test_idempotency_answers_map_onto_the_error_family(
    session: aiohttp.ClientSession, fake: FakeFieldkit
) -> None:
    x = fake.submit()
    source = client(session, fake, timeout=1.0)
    fake.hold_decides()
    with pytest.raises(TransientError):  # timed out; Fieldkit still works on it
        await source.submit(request(x))
    with pytest.raises(InProgressError):
        await source.submit(request(x))
    fake.release_decides()
    await fake.wait_decided(x)
    with pytest.raises(PermanentError, match="IDEMPOTENCY_CONFLICT.*key-1") as conflict:
        await source.submit(request(x, note="another note"))
    assert not isinstance(conflict.value, ConflictError)
    with pytest.raises(ConflictError, match="INVALID_STATE"):  # a new key on a decided action: it moved
        await source.submit(request(x, key="key-9"))


async def test_a_service_key_cannot_decide_and_errors_keep_the_key_out(
    session: aiohttp.ClientSession, fake: FakeFieldkit
) -> None:
    x = fake.submit()
    with pytest.raises(PermanentError, match="403.*admin") as refused:
        await client(session, fake, key=SERVICE_KEY).submit(request(x))
    assert SERVICE_KEY not in str(refused.value)
    with pytest.raises(PermanentError, match="401"):
        await client(session, fake, key="wrong").get_action(x)
    with pytest.raises(NotFoundError):
        await client(session, fake).get_action("nope")
    fake.fail_next(f"/{x}", status=503)
    with pytest.raises(TransientError):
        await client(session, fake).get_action(x)


async def test_intake_takes_only_the_id(session: aiohttp.ClientSession, fake: FakeFieldkit) -> None:
    x = fake.submit()
    source = client(session, fake)
    action = await source.intake({"action_id": x, "status": "succeeded", "risk": "low"})
    assert action.status is Status.READY and action.risk == "medium"  # read, not taken from the body
    for bad in ({}, {"action_id": ""}, {"action_id": 7}, {"action_id": "a b"}, {"action_id": "x" * 300}):
        with pytest.raises(IntakeError) as e:
            await source.intake(bad)
        assert e.value.field == "action_id"
