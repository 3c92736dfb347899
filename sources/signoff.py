"""Signoff's own Actions API (``API_KEYS``) as a source: its "upstream" is Signoff's own store.

The only module that knows the API's words (Fieldkit's, plus ``expired``,
``rollback_requested`` and ``rolled_back``). Its clients' actions live in ``api_actions``
(what they see, read and waited on by ``api/actions.py``); each has a row in ``actions``
(source ``signoff``, the same external id) that cards, routes, decisions and the audit trail
use unchanged. A decision made in Slack lands here at once: ``submit`` moves the API row
(needs_approval → pending or rejected) in one transaction with the callback it owes; a
Rollback asks the submitter (``rollback_requested``) and is followed until it reports
``rolled_back``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import Clock, utc_now
from policy import ActionTypeDecl
from sources.base import (
    Accepted,
    Capabilities,
    ConflictError,
    DecisionRequest,
    Detail,
    Guardrail,
    Impact,
    Landed,
    NotFoundError,
    Op,
    Option,
    PermanentError,
    Signal,
    Status,
    Submitted,
    UpstreamAction,
)
from sources.fieldkit import _as_text, _readable
from store.db import Database
from store.models import ApiAction, ApiCallback

log = logging.getLogger(__name__)

NAME: Final = "signoff"

# The API's words, onto the lifecycle. ``expired`` reads as ready (the card's own expiry is
# Signoff's, and "still ready upstream" is no news to an expired action); a rollback asked of
# the submitter reads as the state it was asked in (the card keeps its rolling-back state).
_STATUSES: Final[dict[str, Status]] = {
    "needs_approval": Status.READY,
    "pending": Status.APPROVED,
    "running": Status.RUNNING,
    "succeeded": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "rejected": Status.REJECTED,
    "expired": Status.READY,
    "rolled_back": Status.ROLLED_BACK,
}
API_STATUSES: Final = (
    "needs_approval",
    "pending",
    "running",
    "succeeded",
    "failed",
    "rejected",
    "expired",
    "rollback_requested",
    "rolled_back",
)
# What the submitter may report, from where (anything else is 409).
REPORTS: Final[dict[str, frozenset[str]]] = {
    "running": frozenset({"pending"}),
    "succeeded": frozenset({"pending", "running"}),
    "failed": frozenset({"pending", "running"}),
    "rolled_back": frozenset({"rollback_requested", "succeeded", "failed", "running"}),
}
_ROLLBACK_FROM: Final = frozenset({"pending", "running", "succeeded"})
_MAX_PAYLOAD_DETAILS: Final = 12


def lifecycle_status(row: ApiAction) -> Status:
    if row.status == "rollback_requested":
        return (
            Status.SUCCEEDED if row.completed_at is not None else Status.RUNNING if row.started_at else Status.APPROVED
        )
    return _STATUSES.get(row.status, Status.READY)


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def view(row: ApiAction, catalog: dict[str, ActionTypeDecl]) -> dict[str, Any]:
    """The action as ``GET /api/v1/actions/{id}`` returns it: Fieldkit's fields, the status,
    the decision and the execution ledger."""
    req = row.request
    known = catalog.get(str(req.get("action_type", "")))
    return {
        "action_id": row.external_id,
        "event_id": req.get("event_id"),
        "rule_id": None,
        "action_type": req.get("action_type"),
        "schema_version": req.get("schema_version", 1),
        "status": row.status,
        "requires_approval": bool(req.get("requires_approval", True)),
        "risk": known.risk if known is not None else None,
        "target": req.get("target"),
        "scope": req.get("scope"),
        "mode": req.get("mode"),
        "preconditions": req.get("preconditions"),
        "payload": req.get("payload", {}),
        "correlation_id": req.get("correlation_id"),
        "causation_id": req.get("causation_id"),
        "title": req.get("title"),
        "rationale": req.get("rationale"),
        "requested_by": row.client,
        "callback_url": row.callback_url,
        "expires_at": _iso(row.expires_at),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "decision": row.decision,
        "attempts": row.attempts,
        "started_at": _iso(row.started_at),
        "completed_at": _iso(row.completed_at),
        "result": row.result,
        "error": row.error,
        "expected_impact": req.get("expected_impact"),
        "data_signals": req.get("data_signals") or [],
        "guardrail_checks": req.get("guardrail_checks") or [],
        "rollback_conditions": req.get("rollback_conditions") or [],
        "options": req.get("options") or [],
    }


def _card_facts(req: dict[str, Any]) -> dict[str, Any]:
    """The impact, signals, guardrails and rollback conditions a client gave (validated by
    the API), as the card shows FloKit's."""
    impact = req.get("expected_impact")
    return {
        "expected_impact": Impact(str(impact["metric"]), str(impact["direction"]), impact.get("magnitude"))
        if isinstance(impact, dict)
        else None,
        "data_signals": tuple(Signal(str(s["label"]), str(s["value"])) for s in req.get("data_signals") or ()),
        "guardrail_checks": tuple(
            Guardrail(str(g["check"]), bool(g["passed"]), str(g.get("detail") or ""))
            for g in req.get("guardrail_checks") or ()
        ),
        "rollback_conditions": tuple(str(c) for c in req.get("rollback_conditions") or ()),
    }


def _options(row: ApiAction) -> tuple[Option, ...] | None:
    """The action's own buttons while it awaits a decision (None: Approve and Reject)."""
    req = row.request
    if not req.get("requires_approval", True) and row.status != "rollback_requested":
        return ()  # nothing to decide for an action that needed no approval: no card until it does
    own = req.get("options") or []
    if not own or row.status != "needs_approval":
        return None
    return tuple(
        Option(Op.APPROVE if o["decision"] == "APPROVE" else Op.REJECT, str(o["label"]), str(o["key"])) for o in own
    )


def upstream_of(row: ApiAction, catalog: dict[str, ActionTypeDecl]) -> UpstreamAction:
    """The action in Signoff's words, for its card: the title or the type's summary, the
    target, the payload's fields, the client as requester, the ledger once there is one."""
    req = row.request
    action_type = str(req.get("action_type", ""))
    known = catalog.get(action_type)
    details: list[Detail] = [Detail("Requested by", row.client)]
    target = req.get("target")
    if isinstance(target, dict):
        text = " ".join(_readable(target.get(k), 120) for k in ("type", "id") if target.get(k) not in (None, ""))
        if text:
            details.append(Detail("Target", text))
    payload = req.get("payload")
    if isinstance(payload, dict):
        items = list(payload.items())
        for key, value in items[:_MAX_PAYLOAD_DETAILS]:
            details.append(Detail(_readable(key, 80), _readable(value)))
        if len(items) > _MAX_PAYLOAD_DETAILS:
            details.append(Detail("…", f"and {len(items) - _MAX_PAYLOAD_DETAILS} more payload fields"))
    for label, key in (("Scope", "scope"), ("Mode", "mode"), ("Preconditions", "preconditions")):
        if req.get(key) not in (None, "", {}, []):
            details.append(Detail(label, _as_text(req[key])))
    if row.attempts:
        details.append(Detail("Execution", f"{row.attempts} attempt{'s' if row.attempts != 1 else ''}"))
    if row.result not in (None, {}, []):
        details.append(Detail("Result", _as_text(row.result)))
    if row.error:
        details.append(Detail("Error", _readable(row.error)))
    if row.status == "rollback_requested":
        details.append(Detail("Rollback", f"asked of {row.client}; waiting for it to report rolled_back"))
    title = req.get("title") if isinstance(req.get("title"), str) and req.get("title") else None
    decision = row.decision or {}
    return UpstreamAction(
        external_id=row.external_id,
        status=lifecycle_status(row),
        upstream_status=row.status,
        type=action_type,
        title=title
        or (known.summary if known is not None and known.summary else action_type.replace("_", " ").capitalize()),
        rationale=str(req.get("rationale") or ""),
        created_at=row.created_at,
        # Who moved it last: the submitter for what it reports, else who decided.
        decided_by=row.client
        if row.status in REPORTS
        else (decision.get("decided_by") if isinstance(decision.get("decided_by"), str) else None),
        requested_by=row.client,
        risk=known.risk if known is not None else None,
        options=_options(row),
        details=tuple(details),
        **_card_facts(req),
        detailed=True,
        raw=view(row, catalog),
    )


async def api_row(session: AsyncSession, external_id: str, *, lock: bool = False) -> ApiAction | None:
    stmt = select(ApiAction).where(ApiAction.external_id == external_id)
    if lock:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt.execution_options(populate_existing=True))).first()


def changed(
    session: AsyncSession,
    row: ApiAction,
    now: datetime,
    catalog: dict[str, ActionTypeDecl],
    signer: Callable[[str], bool] = lambda _client: True,
) -> None:
    """A change the client can see: bumped, and owed to its callback URL (in the caller's
    transaction, so the change and its callback commit together)."""
    row.version += 1
    row.updated_at = now
    session.add(row)
    if row.callback_url and signer(row.client):
        body = json.dumps(
            {"event": f"action.{row.status}", "action": view(row, catalog)}, ensure_ascii=False, separators=(",", ":")
        )
        assert row.id is not None
        session.add(
            ApiCallback(
                api_action_id=row.id,
                version=row.version,
                url=row.callback_url,
                body=body,
                next_attempt_at=now,
                created_at=now,
            )
        )


class SignoffSource:
    """The ``signoff`` source: reads and decides over the store's ``api_actions``."""

    name = NAME
    capabilities = Capabilities(ops=frozenset({Op.APPROVE, Op.REJECT, Op.ROLLBACK}), idempotency_keys=True)

    def __init__(
        self,
        db: Database,
        catalog: dict[str, ActionTypeDecl],
        *,
        clock: Clock = utc_now,
        on_callback: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self.catalog = catalog
        self._clock = clock
        self._on_callback = on_callback

    def __repr__(self) -> str:
        return "SignoffSource()"

    async def get_action(self, external_id: str) -> UpstreamAction:
        async with self._db.read() as session:
            row = await api_row(session, external_id)
        if row is None:
            raise NotFoundError(f"no API action {external_id[:80]}")
        return upstream_of(row, self.catalog)

    def request_body(self, request: DecisionRequest) -> str:
        """Who decided, built once per decision (with the person's name from the directory)."""
        return json.dumps(
            {"actor": request.actor, "name": request.actor_name, "note": request.note},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    async def submit(self, request: DecisionRequest) -> Submitted:
        who: dict[str, Any] = {}
        if request.body:
            try:
                loaded = json.loads(request.body)
                who = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                who = {}
        actor = str(who.get("actor") or request.actor)
        name = str(who.get("name") or request.actor_name or "") or None
        note = who.get("note", request.note)
        async with self._db.write() as session:
            row = await api_row(session, request.external_id, lock=True)
            if row is None:
                raise NotFoundError(f"no API action {request.external_id[:80]}")
            now = self._clock()
            if request.op in (Op.APPROVE, Op.REJECT):
                if row.status != "needs_approval":
                    raise ConflictError(f"the action is {row.status}", status=409)
                row.status = "pending" if request.op is Op.APPROVE else "rejected"
                row.decision = {
                    "decision": "APPROVE" if request.op is Op.APPROVE else "REJECT",
                    "decided_by": actor,
                    "decided_by_name": name,
                    "decided_at": _iso(now),
                    "reason": note,
                }
                if any(o.get("key") == request.option_key for o in row.request.get("options") or ()):
                    row.decision["option"] = request.option_key  # which of its own buttons
                changed(session, row, now, self.catalog)
                upstream = upstream_of(row, self.catalog)
                answer: Submitted = Landed(upstream)
            elif request.op is Op.ROLLBACK:
                if row.status == "rollback_requested":
                    return Accepted("rollback")
                if row.status not in _ROLLBACK_FROM:
                    raise ConflictError(f"the action is {row.status}", status=409)
                row.status = "rollback_requested"
                changed(session, row, now, self.catalog)
                answer = Accepted("rollback")
            else:
                raise PermanentError(f"Signoff's API cannot {request.op.value}")
        self._on_callback()
        return answer

    async def track(self, request: DecisionRequest, reference: str) -> Submitted:
        """A rollback asked of the submitter: landed once it reports ``rolled_back``."""
        async with self._db.read() as session:
            row = await api_row(session, request.external_id)
        if row is None:
            raise NotFoundError(f"no API action {request.external_id[:80]}")
        if row.status == "rolled_back":
            return Landed(upstream_of(row, self.catalog))
        if row.status == "rollback_requested":
            return Accepted(reference)
        raise ConflictError(f"the action is {row.status}", status=409)


async def due_callbacks(session: AsyncSession, *, now: datetime, lease: timedelta, limit: int) -> list[ApiCallback]:
    """Claim pending callbacks that are due (each leased by moving its next attempt on)."""
    rows = list(
        await session.exec(
            select(ApiCallback)
            .where(ApiCallback.state == "pending", col(ApiCallback.next_attempt_at) <= now)
            .order_by(col(ApiCallback.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        await session.exec(
            sa.update(ApiCallback).where(col(ApiCallback.id) == row.id).values(next_attempt_at=now + lease)
        )
        row.next_attempt_at = now + lease
    return rows
