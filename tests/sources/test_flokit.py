"""FloKitSource against the fake FloKit over real loopback HTTP, plus the pure mappings."""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest

from sources.base import (
    ActionSource,
    BadResponseError,
    ConflictError,
    DecisionRequest,
    Guardrail,
    Impact,
    NotFoundError,
    Op,
    PermanentError,
    Signal,
    SourceError,
    Status,
    TransientError,
)
from sources.flokit import FloKitSource, parse_action, status_from_flokit, status_to_flokit
from tests.fakes.flokit import LIST_FIELDS, FakeFloKit

KEY = "sk-flokit-Zq81-do-not-leak"

# The document's example of GET /v1/actions/{id}.
DOC_ACTION: dict[str, Any] = {
    "id": "act_01hx4j7k9m2n3p5q6r8s",
    "type": "budget_shift",
    "status": "ready",
    "title": "Shift 20% budget from TikTok Broad to Meta Search",
    "rationale": "...",
    "expected_impact": {"metric": "blended_roas_30d", "direction": "increase", "magnitude": 0.3},
    "created_at": "2024-03-15T06:00:00Z",
    "approved_at": None,
    "approved_by": None,
    "data_signals": [
        {"label": "Meta Search 30-day ROAS", "value": "2.31x"},
        {"label": "TikTok Broad 30-day ROAS", "value": "0.91x"},
    ],
    "guardrail_checks": [
        {"check": "minimum_cohort_size", "passed": True, "detail": "Meta Search cohort n=1,989"},
    ],
    "rollback_conditions": ["If blended ROAS drops >15% within 7 days of execution"],
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeFloKit]:
    async with FakeFloKit(api_key=KEY) as server:
        yield server


@pytest.fixture
def source(fake: FakeFloKit, session: aiohttp.ClientSession) -> FloKitSource:
    return FloKitSource(session, base_url=fake.url, api_key=KEY, timeout=2.0)


def decision(
    op: Op, external_id: str, *, actor: str = "dana@example.com", note: str | None = None
) -> DecisionRequest:
    return DecisionRequest(op=op, external_id=external_id, actor=actor, note=note, idempotency_key="dec-1")


def assert_no_key(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), repr(exc.__cause__)):
        assert KEY not in text


# ---- pure mapping and parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("draft", Status.DRAFT),
        ("ready", Status.READY),
        ("approved", Status.APPROVED),
        ("running", Status.RUNNING),
        ("rejected", Status.REJECTED),
        ("rolled_back", Status.ROLLED_BACK),
    ],
)
def test_flokit_words_map_onto_the_lifecycle(word: str, status: Status) -> None:
    assert status_from_flokit(word) is status


@pytest.mark.parametrize("word", ["paused", "READY", "approving", "succeeded", ""])
def test_unknown_flokit_word_is_a_bad_response(word: str) -> None:
    with pytest.raises(BadResponseError):
        status_from_flokit(word)


def test_only_documented_filters_can_be_listed() -> None:
    listable = [Status.DRAFT, Status.READY, Status.APPROVED, Status.RUNNING, Status.ROLLED_BACK]
    assert [status_to_flokit(s) for s in listable] == ["draft", "ready", "approved", "running", "rolled_back"]
    for status in (Status.REJECTED, Status.SUCCEEDED, Status.FAILED, Status.APPROVING):
        with pytest.raises(ValueError):
            status_to_flokit(status)


def test_declares_what_it_can_do(session: aiohttp.ClientSession) -> None:
    source: ActionSource = FloKitSource(session, base_url="http://127.0.0.1:9", api_key=KEY)
    assert source.name == "flokit"
    assert source.capabilities.ops == {Op.APPROVE, Op.REJECT, Op.ROLLBACK}
    assert source.capabilities.idempotency_keys is False
    assert source.listed_statuses() == (Status.READY, Status.APPROVED, Status.RUNNING)
    assert KEY not in repr(source)


def test_parses_the_documented_detail() -> None:
    action = parse_action(DOC_ACTION, detailed=True)
    assert action.external_id == "act_01hx4j7k9m2n3p5q6r8s"
    assert action.status is Status.READY and action.upstream_status == "ready"
    assert action.type == "budget_shift"
    assert action.expected_impact == Impact("blended_roas_30d", "increase", 0.3)
    assert action.data_signals[1] == Signal("TikTok Broad 30-day ROAS", "0.91x")
    assert action.guardrail_checks == (Guardrail("minimum_cohort_size", True, "Meta Search cohort n=1,989"),)
    assert action.rollback_conditions == ("If blended ROAS drops >15% within 7 days of execution",)
    assert action.created_at == datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)
    assert action.decided_at is None and action.decided_by is None
    assert action.detailed is True
    assert action.raw == DOC_ACTION


def test_timestamps_become_aware_utc_and_numbers_become_signal_text() -> None:
    data = copy.deepcopy(DOC_ACTION)
    data.update(status="approved", approved_at="2024-03-15T16:30:00+02:00", approved_by="a@b.c")
    data["created_at"] = "2024-03-15T06:00:00"  # naive: taken as UTC
    data["data_signals"] = [{"label": "Meta Search payback days", "value": 16}]
    action = parse_action(data, detailed=True)
    assert action.decided_at == datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc)
    assert action.decided_at.tzinfo is timezone.utc
    assert action.created_at == datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)
    assert action.decided_by == "a@b.c"
    assert action.data_signals == (Signal("Meta Search payback days", "16"),)


def _without(key: str) -> dict[str, Any]:
    data = copy.deepcopy(DOC_ACTION)
    del data[key]
    return data


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(DOC_ACTION)
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data",
    [
        _without("id"),
        _without("status"),
        _with(id=42),
        _with(id=""),
        _with(status=None),
        _with(status="archived"),
        _with(title=7),
        _with(expected_impact={"metric": "roas", "direction": "increase", "magnitude": "0.3"}),
        _with(expected_impact="big"),
        _with(guardrail_checks=[{"check": "x", "passed": "yes", "detail": ""}]),
        _with(data_signals={"label": "x", "value": "y"}),
        _with(rollback_conditions=[1, 2]),
        _with(created_at="last tuesday"),
        _with(created_at=1710482400),
        ["not", "an", "object"],
        None,
    ],
)
def test_garbage_is_a_bad_response(data: Any) -> None:
    with pytest.raises(BadResponseError):
        parse_action(data, detailed=True)


# ---- listing --------------------------------------------------------------------------------


async def test_pages_through_45_ready_actions(fake: FakeFloKit, source: FloKitSource) -> None:
    ready = [fake.add_action()["id"] for _ in range(45)]
    fake.add_action(status="approved")
    fake.add_action(status="draft")

    seen: list[str] = []
    totals = set()
    for offset in (0, 20, 40):
        page = await source.list_actions(status=Status.READY, limit=20, offset=offset)
        assert (page.limit, page.offset) == (20, offset)
        totals.add(page.total)
        seen += [a.external_id for a in page.actions]
    assert totals == {45}
    assert seen == ready  # stable order, nothing lost or repeated

    queries = [r.query for r in fake.calls("GET", "/v1/actions")]
    assert queries == [{"status": "ready", "limit": "20", "offset": str(o)} for o in (0, 20, 40)]


async def test_list_items_are_not_detailed(fake: FakeFloKit, source: FloKitSource) -> None:
    fake.add_action(type="creative_pause")
    page = await source.list_actions(status=Status.READY, limit=20, offset=0)
    (action,) = page.actions
    assert action.detailed is False
    assert action.type == "creative_pause"
    assert action.title == "Pause creative TK_VID_042 — fatigue detected"
    assert action.expected_impact == Impact("campaign_trial_conversion_rate", "increase", 0.06)
    assert action.data_signals == () and action.guardrail_checks == () and action.rollback_conditions == ()
    assert set(action.raw) == set(LIST_FIELDS)


async def test_limit_is_capped_at_100(fake: FakeFloKit, source: FloKitSource) -> None:
    for _ in range(3):
        fake.add_action(status="running")
    page = await source.list_actions(status=Status.RUNNING, limit=500, offset=0)
    assert len(page.actions) == 3 and page.limit == 100
    assert fake.requests[-1].query["limit"] == "100"


async def test_statuses_flokit_cannot_list_are_refused_locally(
    fake: FakeFloKit, source: FloKitSource
) -> None:
    with pytest.raises(ValueError):
        await source.list_actions(status=Status.SUCCEEDED, limit=20, offset=0)
    assert fake.requests == []


async def test_one_malformed_item_fails_the_whole_page(fake: FakeFloKit, source: FloKitSource) -> None:
    fake.add_action()
    broken = fake.add_action()["id"]
    fake.actions[broken]["title"] = 123
    with pytest.raises(BadResponseError, match=r"actions\.1"):
        await source.list_actions(status=Status.READY, limit=20, offset=0)


# ---- detail ---------------------------------------------------------------------------------


async def test_get_action_maps_the_full_detail(fake: FakeFloKit, source: FloKitSource) -> None:
    stored = fake.add_action(
        type="creative_pause",
        status="approved",
        approved_at="2024-03-15T14:30:00Z",
        approved_by="lee@example.com",
    )
    action = await source.get_action(stored["id"])

    assert action.external_id == stored["id"] and action.detailed is True
    assert action.status is Status.APPROVED
    assert action.rationale.startswith("Creative TK_VID_042 has served 1.2M impressions")
    assert action.data_signals[0] == Signal("TK_VID_042 impressions (8 days)", "1.2M")
    assert action.guardrail_checks[1] == Guardrail("campaign_floor", False, "0.48 vs. 0.65 floor")
    assert action.rollback_conditions == ("If campaign trial conversion rate falls below 0.60 within 7 days",)
    assert action.created_at is not None and action.created_at.tzinfo is not None
    assert action.decided_at == datetime(2024, 3, 15, 14, 30, tzinfo=timezone.utc)
    assert action.decided_by == "lee@example.com"
    assert action.raw == stored

    (request,) = fake.requests
    assert request.method == "GET" and request.path == f"/v1/actions/{stored['id']}"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "application/json"


async def test_ids_are_quoted_and_base_url_may_end_with_slash(
    fake: FakeFloKit, session: aiohttp.ClientSession
) -> None:
    source = FloKitSource(session, base_url=fake.url + "/", api_key=KEY)
    fake.add_action("act/odd id?x=1")
    action = await source.get_action("act/odd id?x=1")
    assert action.external_id == "act/odd id?x=1"
    assert fake.requests[-1].raw_path == "/v1/actions/act%2Fodd%20id%3Fx%3D1"


async def test_unknown_status_upstream_is_a_bad_response(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    fake.set_status(action_id, "paused")
    with pytest.raises(BadResponseError, match="paused"):
        await source.get_action(action_id)


async def test_unknown_action_is_not_found(source: FloKitSource) -> None:
    with pytest.raises(NotFoundError) as caught:
        await source.get_action("act_nope")
    assert caught.value.status == 404
    with pytest.raises(NotFoundError):
        (await source.submit(decision(Op.APPROVE, "act_nope"))).upstream


# ---- decisions ------------------------------------------------------------------------------


async def test_approve_sends_the_actor_and_note(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    result = (await source.submit(decision(Op.APPROVE, action_id, note="Aligned with Q1 plan"))).upstream

    assert result is not None
    assert result.external_id == action_id and result.status is Status.APPROVED
    assert result.detailed is False and result.title == ""
    assert result.decided_by == "dana@example.com" and result.decided_at is not None
    assert fake.actions[action_id]["status"] == "approved"
    assert fake.audit[-1]["note"] == "Aligned with Q1 plan"

    (request,) = fake.calls("POST", "/approve")
    assert request.path == f"/v1/actions/{action_id}/approve"
    assert request.json == {"approved_by": "dana@example.com", "note": "Aligned with Q1 plan"}
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.headers["Accept"] == "application/json"
    assert "Idempotency-Key" not in request.headers  # FloKit honours none


async def test_approve_without_note_omits_it(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    (await source.submit(decision(Op.APPROVE, action_id))).upstream
    assert fake.calls("POST", "/approve")[0].json == {"approved_by": "dana@example.com"}


async def test_reject_sends_the_actor_and_reason(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action(type="creative_pause")["id"]
    result = (await source.submit(decision(Op.REJECT, action_id, note="Creative refresh next week"))).upstream
    assert result is not None and result.status is Status.REJECTED
    assert fake.actions[action_id]["status"] == "rejected"
    assert fake.calls("POST", "/reject")[0].json == {
        "rejected_by": "dana@example.com",
        "reason": "Creative refresh next week",
    }


async def test_rollback_posts_an_empty_object(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    fake.set_status(action_id, "running")
    result = (await source.submit(decision(Op.ROLLBACK, action_id))).upstream
    assert result is not None and result.status is Status.ROLLED_BACK
    assert fake.calls("POST", "/rollback")[0].json == {}


async def test_approving_a_running_action_conflicts(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action(status="running")["id"]
    with pytest.raises(ConflictError) as caught:
        (await source.submit(decision(Op.APPROVE, action_id))).upstream
    assert caught.value.status == 409
    assert "Action is in 'running' status and cannot be approved" in str(caught.value)
    assert not caught.value.retryable


async def test_rolling_back_a_ready_action_conflicts(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    with pytest.raises(ConflictError):
        (await source.submit(decision(Op.ROLLBACK, action_id))).upstream


async def test_work_done_but_answer_lost_then_retry_conflicts(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    fake.fail_next("/approve", status=503, after_effect=True)
    with pytest.raises(TransientError):
        (await source.submit(decision(Op.APPROVE, action_id))).upstream
    assert fake.actions[action_id]["status"] == "approved"
    with pytest.raises(ConflictError, match="'approved'"):
        (await source.submit(decision(Op.APPROVE, action_id))).upstream


async def test_missing_actor_is_permanent(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    with pytest.raises(PermanentError) as caught:
        (await source.submit(decision(Op.APPROVE, action_id, actor=""))).upstream
    assert type(caught.value) is PermanentError and caught.value.status == 400
    assert "approved_by is required" in str(caught.value)


@pytest.mark.parametrize("body", ['{"status": "ok"}', '{"status": "ok", "action": null}', ""])
async def test_answer_without_action_gives_none(fake: FakeFloKit, source: FloKitSource, body: str) -> None:
    action_id = fake.add_action()["id"]
    fake.fail_next("/approve", status=200, body=body, after_effect=True)
    assert (await source.submit(decision(Op.APPROVE, action_id))).upstream is None


@pytest.mark.parametrize(
    "body",
    [
        "<html>ok</html>",
        '["ok"]',
        '{"status": "error"}',
        '{"status": "ok", "action": {"id": "act_other", "status": "approved"}}',
        '{"status": "ok", "action": {"id": "x"}}',
    ],
)
async def test_odd_decision_answers_are_bad_responses(
    fake: FakeFloKit, source: FloKitSource, body: str
) -> None:
    action_id = fake.add_action()["id"]
    fake.fail_next("/approve", status=200, body=body)
    with pytest.raises(BadResponseError):
        (await source.submit(decision(Op.APPROVE, action_id))).upstream


# ---- transport and status errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PermanentError),
        (401, PermanentError),
        (403, PermanentError),
        (422, PermanentError),
        (404, NotFoundError),
        (409, ConflictError),
        (429, TransientError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
    ],
)
async def test_http_status_maps_onto_the_error_family(
    fake: FakeFloKit, source: FloKitSource, status: int, error: type[SourceError]
) -> None:
    fake.fail_next("/v1/actions", status=status)
    with pytest.raises(SourceError) as caught:
        await source.list_actions(status=Status.READY, limit=20, offset=0)
    assert type(caught.value) is error
    assert caught.value.status == status
    # The fault is used up: the next call goes through.
    await source.list_actions(status=Status.READY, limit=20, offset=0)


async def test_wrong_key_is_permanent_and_not_echoed(
    fake: FakeFloKit, session: aiohttp.ClientSession
) -> None:
    wrong = FloKitSource(session, base_url=fake.url, api_key="sk-wrong-key-123")
    with pytest.raises(PermanentError) as caught:
        await wrong.list_actions(status=Status.READY, limit=20, offset=0)
    assert caught.value.status == 401
    assert "sk-wrong-key-123" not in str(caught.value)


async def test_connection_reset_is_transient(fake: FakeFloKit, source: FloKitSource) -> None:
    action_id = fake.add_action()["id"]
    fake.fail_next("/approve", status=0)
    with pytest.raises(TransientError) as caught:
        (await source.submit(decision(Op.APPROVE, action_id))).upstream
    assert not isinstance(caught.value, BadResponseError)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)
    assert fake.actions[action_id]["status"] == "ready"


async def test_connection_refused_is_transient(session: aiohttp.ClientSession) -> None:
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        source = FloKitSource(session, base_url=f"http://127.0.0.1:{port}", api_key=KEY)
        with pytest.raises(TransientError) as caught:
            await source.get_action("act_1")
    assert_no_key(caught.value)


async def test_slow_upstream_times_out_as_transient(fake: FakeFloKit, session: aiohttp.ClientSession) -> None:
    source = FloKitSource(session, base_url=fake.url, api_key=KEY, timeout=0.2)
    fake.add_action()
    fake.set_delay(30)
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        await source.list_actions(status=Status.READY, limit=20, offset=0)
    assert time.monotonic() - started < 5  # the client's timeout, not the upstream's delay
    assert "timed out" in str(caught.value)
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_one_slow_answer_times_out(fake: FakeFloKit, session: aiohttp.ClientSession) -> None:
    source = FloKitSource(session, base_url=fake.url, api_key=KEY, timeout=0.2)
    action_id = fake.add_action()["id"]
    fake.fail_next(f"/{action_id}", status=200, delay=30)
    with pytest.raises(TransientError):
        await source.get_action(action_id)
    assert (await source.get_action(action_id)).external_id == action_id


@pytest.mark.parametrize(
    ("path_suffix", "body", "content_type"),
    [
        ("/v1/actions", "<html><body>Bad gateway, but 200</body></html>", "text/html"),
        ("/v1/actions", "", "application/json"),
        ("/v1/actions", "[]", "application/json"),
        ("/v1/actions", '{"actions": "none", "total": 0}', "application/json"),
        ("/v1/actions", '{"actions": [], "total": "0"}', "application/json"),
        ("/v1/actions", '{"actions": []}', "application/json"),
        ("/v1/actions", '{"actions": [{"id": "a"}], "total": 1}', "application/json"),
        ("/act_1", '{"id": "act_1", "status": "ready"}', "application/json"),
        ("/act_1", '{"action": null}', "application/json"),
        ("/act_1", '{"action": {"id": "act_1", "status": 3}}', "application/json"),
    ],
)
async def test_2xx_with_wrong_content_is_a_bad_response(
    fake: FakeFloKit, source: FloKitSource, path_suffix: str, body: str, content_type: str
) -> None:
    fake.add_action("act_1")
    fake.fail_next(path_suffix, status=200, body=body, content_type=content_type)
    with pytest.raises(BadResponseError) as caught:
        if path_suffix == "/v1/actions":
            await source.list_actions(status=Status.READY, limit=20, offset=0)
        else:
            await source.get_action("act_1")
    assert caught.value.retryable
    assert len(str(caught.value)) < 200


async def test_the_key_never_appears_in_errors(fake: FakeFloKit, session: aiohttp.ClientSession) -> None:
    source = FloKitSource(session, base_url=fake.url, api_key=KEY, timeout=0.2)
    action_id = fake.add_action(status="running")["id"]
    echo = f'{{"error": "unauthorized", "message": "Key {KEY} is revoked"}}'
    fake.fail_next("/v1/actions", status=401, body=echo)
    fake.fail_next("/approve", status=0)
    fake.fail_next("/reject", status=200, body="not json")
    fake.fail_next("/rollback", status=503, delay=30)

    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: source.list_actions(status=Status.READY, limit=20, offset=0),
        lambda: source.submit(decision(Op.APPROVE, action_id)),
        lambda: source.submit(decision(Op.REJECT, action_id)),
        lambda: source.submit(decision(Op.ROLLBACK, action_id)),
        lambda: source.submit(decision(Op.APPROVE, action_id)),  # 409
        lambda: source.get_action("act_missing"),  # 404
    ]
    errors: list[SourceError] = []
    for attempt in attempts:
        with pytest.raises(SourceError) as caught:
            await attempt()
        errors.append(caught.value)
    assert [type(e) for e in errors] == [
        PermanentError,
        TransientError,
        BadResponseError,
        TransientError,
        ConflictError,
        NotFoundError,
    ]
    assert "[redacted]" in str(errors[0])
    for error in errors:
        assert_no_key(error)
        assert len(str(error)) < 300


# ---- the fake keeps to the document --------------------------------------------------------


async def test_fake_follows_the_document(fake: FakeFloKit, session: aiohttp.ClientSession) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    for _ in range(3):
        fake.add_action()

    async def get(path: str, headers: dict[str, str] = auth) -> tuple[int, Any]:
        async with session.get(fake.url + path, headers=headers) as resp:
            return resp.status, await resp.json()

    status, body = await get("/v1/actions")
    assert status == 200 and (body["limit"], body["offset"], body["total"]) == (20, 0, 3)
    assert (await get("/v1/actions?limit=1000"))[1]["limit"] == 100
    assert (await get("/v1/actions?limit=ten"))[0] == 400
    assert (await get("/v1/actions?status=archived"))[0] == 400
    assert (await get("/v1/actions", headers={}))[0] == 401
    assert (await get("/v1/actions", headers={"Authorization": "Bearer nope"}))[0] == 401
    assert await get("/v2/things") == (404, {"error": "not_found", "message": "Not Found"})
    status, body = await get("/v1/actions/act_nope")
    assert status == 404 and body["error"] == "not_found"
