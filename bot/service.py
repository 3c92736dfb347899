"""Decision services: what a click, a modal or a command asks for, carried out against the
store. Listeners parse and render; these functions authorize and decide.

A decision is durable when ``decide`` returns: the compare-and-set on the action, the audit
entry and the outbox entry for the upstream call commit in one transaction, before the
listener acknowledges Slack.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.auth import ApproverCheck, Verdict, names_requester
from bot.render import CardView, DecisionView, WatchView
from policy import Policy
from settings import Approvers
from sources.base import TRANSITIONS, Capabilities, Op, Status
from store import queries
from store.db import Database
from store.models import Action, AuditEvent, Decision, Outbox, OutboxState, Watch

Clock = Callable[[], datetime]
CONFIRMATION_WORD = "approve"  # what to type to approve despite failed guardrails, where a route asks
log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Result(enum.Enum):
    RECORDED = "recorded"  # durable; the upstream call is queued
    NOT_ALLOWED = "not_allowed"  # the user is not an approver
    CHECK_FAILED = "check_failed"  # approvers could not be verified right now
    UNKNOWN_ACTION = "unknown_action"
    WRONG_CARD = "wrong_card"  # the button's value does not belong to the card it was on
    NOT_POSSIBLE = "not_possible"  # the action is not in a state that allows this (someone decided)
    UNSUPPORTED = "unsupported"  # the source cannot do this op
    SELF_APPROVAL = "self_approval"  # the action names this user as its requester
    STORE_UNAVAILABLE = "store_unavailable"  # nothing was recorded: the database did not answer
    ENDORSED = "endorsed"  # durable: one approval of several the action's route requires
    ALREADY_ENDORSED = "already_endorsed"  # this person's approval is already counted
    CONFIRMATION_REQUIRED = "confirmation_required"  # failed guardrails: Approve needs a typed confirmation


@dataclass(frozen=True)
class Outcome:
    result: Result
    action: Action | None = None
    decision: Decision | None = None  # ours when recorded; the latest one otherwise
    approvals: tuple[str, ...] = ()  # toward a multi-approver decision: who approved so far
    needed: int = 1  # how many distinct approvers the action needs


def decision_view(decision: Decision | None) -> DecisionView | None:
    if decision is None or decision.at is None:
        return None
    return DecisionView(
        event=decision.event, op=decision.op, actor=decision.actor, note=decision.note,
        at=decision.at, to_status=decision.to_status,
    )


_FOLLOWS_APPROVAL = frozenset({Status.APPROVED, Status.RUNNING, Status.SUCCEEDED})


def watch_view(watch: Watch) -> WatchView:
    return WatchView(
        position=watch.position, reading=watch.reading, detail=watch.reading_detail, tripped=watch.tripped,
        baseline=watch.baseline, active=watch.active, ended=watch.ended,
    )


def card_view(
    action: Action, decision: Decision | None, outbox: Outbox | None, caps: Capabilities,
    confirmed: Decision | None = None, watches: Sequence[Watch] = (),
    approvals: Sequence[str] = (), needed: int = 1, confirm_required: bool = False,
) -> CardView:
    """What a card shows. Once the upstream moves an action we approved on (to running, say),
    the card keeps crediting our approval rather than the upstream's record of it."""
    assert action.id is not None
    status = Status(action.status)
    failed = outbox is not None and outbox.state == OutboxState.FAILED.value
    decided_by_upstream = action.decided_by
    if (
        decision is not None and decision.event == AuditEvent.UPSTREAM.value
        and confirmed is not None and confirmed.op == Op.APPROVE.value and status in _FOLLOWS_APPROVAL
    ):
        decision, decided_by_upstream = confirmed, None
    return CardView(
        action_id=action.id,
        source=action.source,
        external_id=action.external_id,
        type=action.type,
        title=action.title,
        rationale=action.rationale,
        status=status,
        expected_impact=action.expected_impact,
        data_signals=list(action.data_signals or []),
        guardrail_checks=list(action.guardrail_checks or []),
        rollback_conditions=list(action.rollback_conditions or []),
        created_at=action.upstream_created_at,
        ops=caps.ops,
        decision=decision_view(decision),
        decided_by_upstream=decided_by_upstream,
        last_error=action.last_error,
        retry_available=failed and action.last_error is not None,
        watches=tuple(watch_view(w) for w in watches),
        approvals=tuple(approvals),
        approvals_needed=needed,
        confirm_required=confirm_required,
    )


def has_failed_guardrail(action: Action) -> bool:
    return any(isinstance(g, dict) and g.get("passed") is False for g in action.guardrail_checks or [])


async def load_card(
    session: AsyncSession, *, action: Action, caps: Capabilities, policy: Policy | None = None
) -> CardView:
    """Everything the card shows, from the store (and the action's route, when given)."""
    assert action.id is not None
    needed = policy.required_approvals(action.type, action.risk) if policy is not None else 1
    confirm = policy is not None and policy.confirm_failed_guardrails(action.type, action.risk) and has_failed_guardrail(action)
    approvals: list[str] = []
    if needed > 1 and action.status == Status.READY.value:
        approvals = list(dict.fromkeys(d.actor for d in await queries.endorsements(session, action_id=action.id)))
    decision = await queries.latest_decision(session, action_id=action.id)
    outbox = await queries.latest_outbox(session, action_id=action.id)
    confirmed = await queries.latest_confirmed(session, action_id=action.id)
    watches = await queries.watches_for(session, action_id=action.id) if action.watch_started_at else ()
    return card_view(action, decision, outbox, caps, confirmed, watches, approvals, needed, confirm)


class DecisionService:
    def __init__(
        self,
        *,
        db: Database,
        approvers: ApproverCheck,
        capabilities: Capabilities,
        on_change: Callable[[], None],
        clock: Clock = utc_now,
        approvers_for: Callable[[str, str | None], Approvers] | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._policy = policy
        self._db = db
        self._approvers = approvers
        self._approvers_for = approvers_for
        self._caps = capabilities
        self._on_change = on_change
        self._clock = clock

    async def authorize(self, user_id: str, action: Action | None = None) -> Result | None:
        """None if the user may decide (this action, when given: its route may name its own
        approvers); else why not."""
        approvers = self._approvers_for(action.type, action.risk) if action is not None and self._approvers_for else None
        verdict = await self._approvers.check(user_id, approvers)
        if verdict is Verdict.ALLOWED:
            return None
        return Result.CHECK_FAILED if verdict is Verdict.UNKNOWN else Result.NOT_ALLOWED

    async def authorize_any(self, user_id: str) -> Result | None:
        """None if the user may decide anything at all: under ``APPROVERS``, or under some
        route's own approvers (what reading action details through ``/signoff`` needs)."""
        refused = await self.authorize(user_id)
        if refused is None or self._policy is None:
            return refused
        for route in self._policy.routes:
            if route.approvers is not None:
                if await self._approvers.check(user_id, Approvers(list(route.approvers))) is Verdict.ALLOWED:
                    return None
        return refused

    async def _is_requester(self, action: Action, user_id: str) -> bool:
        """Whether the action names this user as the one who proposed it."""
        requester = (action.requested_by or "").strip()
        email = await self._approvers.email(user_id) if "@" in requester else None
        return names_requester(requester, user_id, email)

    async def card(self, action_id: int) -> CardView | None:
        async with self._db.read() as session:
            action = await queries.get_action(session, action_id=action_id)
            if action is None:
                return None
            return await load_card(session, action=action, caps=self._caps, policy=self._policy)

    async def check_click(self, *, user_id: str, action_id: int, channel: str | None, ts: str | None, op: Op | None) -> Outcome:
        """Everything a button click must pass before anything opens: an approver, a real
        action, the card the click came from, and a state that still allows the op."""
        try:
            return await self._check_click(user_id=user_id, action_id=action_id, channel=channel, ts=ts, op=op)
        except DBAPIError as e:
            log.error("store unavailable while checking a click: %s", type(e).__name__)
            return Outcome(Result.STORE_UNAVAILABLE)

    async def _check_click(self, *, user_id: str, action_id: int, channel: str | None, ts: str | None, op: Op | None) -> Outcome:
        async with self._db.read() as session:
            action = await queries.get_action(session, action_id=action_id)
        # Once, against the action's route (no action: APPROVERS say whether to tell them so),
        # and with no database connection held across Slack's group lookup.
        refused = await self.authorize(user_id, action)
        if refused is not None:
            return Outcome(refused)
        if action is None:
            return Outcome(Result.UNKNOWN_ACTION)
        async with self._db.read() as session:
            if channel is not None and ts is not None:
                # The card itself, or a notice in its thread (a tripped rule's Rollback button).
                if not await queries.message_shows(session, channel=channel, ts=ts, action_id=action_id):
                    return Outcome(Result.WRONG_CARD, action)
            if op is not None:
                if op not in self._caps.ops:
                    return Outcome(Result.UNSUPPORTED, action)
                if Status(action.status) not in TRANSITIONS[op].allowed_from:
                    latest = await queries.latest_decision(session, action_id=action_id)
                    return Outcome(Result.NOT_POSSIBLE, action, latest)
        if await self._is_requester(action, user_id):
            return Outcome(Result.SELF_APPROVAL, action)
        return Outcome(Result.RECORDED, action)

    async def decide(
        self, *, action_id: int, op: Op, user_id: str, note: str | None, channel: str | None,
        confirmation: str | None = None,
    ) -> Outcome:
        """Authorize and record one decision durably. Of racing decisions exactly one wins;
        the others get the winner's decision back. Nothing is recorded if the store fails.

        Where the action's route needs several approvers, an approval is recorded toward
        them (ENDORSED) and the last one needed begins the decision; where it needs a typed
        confirmation for failed guardrails, ``confirmation`` must say "approve"."""
        try:
            return await self._decide(
                action_id=action_id, op=op, user_id=user_id, note=note, channel=channel, confirmation=confirmation
            )
        except DBAPIError as e:
            log.error("store unavailable while recording a decision: %s", type(e).__name__)
            return Outcome(Result.STORE_UNAVAILABLE)

    async def _decide(
        self, *, action_id: int, op: Op, user_id: str, note: str | None, channel: str | None,
        confirmation: str | None,
    ) -> Outcome:
        if op not in self._caps.ops:
            return Outcome(Result.UNSUPPORTED)
        async with self._db.read() as session:
            action = await queries.get_action(session, action_id=action_id)
        refused = await self.authorize(user_id, action)
        if refused is not None:
            return Outcome(refused)
        if action is None:
            return Outcome(Result.UNKNOWN_ACTION)
        if await self._is_requester(action, user_id):
            return Outcome(Result.SELF_APPROVAL, action)
        note = (note or "").strip() or None
        needed = 1
        if op is Op.APPROVE and self._policy is not None:
            if (
                self._policy.confirm_failed_guardrails(action.type, action.risk) and has_failed_guardrail(action)
                and (confirmation or "").strip().casefold() != CONFIRMATION_WORD.casefold()
            ):
                return Outcome(Result.CONFIRMATION_REQUIRED, action)
            needed = self._policy.required_approvals(action.type, action.risk)
        async with self._db.write(urgent=True) as session:
            if needed > 1:
                endorsed = await queries.endorse(
                    session, action_id=action_id, actor=user_id, note=note, required=needed, now=self._clock()
                )
                if endorsed.state == "duplicate":
                    return Outcome(Result.ALREADY_ENDORSED, action, approvals=endorsed.approvers, needed=needed)
                if endorsed.state == "pending":
                    self._on_change()
                    return Outcome(Result.ENDORSED, action, approvals=endorsed.approvers, needed=needed)
                if endorsed.state == "complete":
                    others = ", ".join(f"<@{a}>" if a[:1] in ("U", "W") else a for a in endorsed.approvers[:-1])
                    note = f"{note + ' — ' if note else ''}also approved by {others}"
            decision = await queries.begin_decision(
                session, action_id=action_id, op=op, actor=user_id, note=note,
                idempotency_key=str(uuid.uuid4()), notify_channel=channel, now=self._clock(),
            )
            action = await queries.get_action(session, action_id=action_id)
            if decision is None:
                latest = await queries.latest_decision(session, action_id=action_id)
                return Outcome(Result.NOT_POSSIBLE, action, latest)
        self._on_change()
        return Outcome(Result.RECORDED, action, decision, needed=needed)

    async def retry(self, *, action_id: int, user_id: str) -> Outcome:
        try:
            return await self._retry(action_id=action_id, user_id=user_id)
        except DBAPIError as e:
            log.error("store unavailable while retrying: %s", type(e).__name__)
            return Outcome(Result.STORE_UNAVAILABLE)

    async def _retry(self, *, action_id: int, user_id: str) -> Outcome:
        async with self._db.read() as session:
            found = await queries.get_action(session, action_id=action_id)
        refused = await self.authorize(user_id, found)
        if refused is not None:
            return Outcome(refused)
        async with self._db.write(urgent=True) as session:
            outbox = await queries.retry_failed(session, action_id=action_id, actor=user_id, now=self._clock())
            action = await queries.get_action(session, action_id=action_id)
            latest = await queries.latest_decision(session, action_id=action_id)
        if action is None:
            return Outcome(Result.UNKNOWN_ACTION)
        if outbox is None:
            return Outcome(Result.NOT_POSSIBLE, action, latest)
        self._on_change()
        return Outcome(Result.RECORDED, action, latest)
