"""Decide: what a click, a modal or a command asks for, carried out against the store.
Adapters parse and render; this authorizes and decides, from the options the action offers
now (its source's own, or those its state and the source's capabilities allow).

A decision is durable when ``decide`` returns: the compare-and-set on the action, the audit
entry and the outbox entry for the upstream call commit in one transaction, before the
listener acknowledges Slack.
"""

from __future__ import annotations

import enum
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from core import logs
from core.clock import Clock, utc_now
from core.events import Changed, Events
from core.lifecycle import TRANSITIONS, find_option, options_for, stored_options, transition_for
from core.people import Approvers, ApproversFor, Directory, Verdict, names_requester
from policy import Policy
from sources.base import Capabilities, Op, Option, Status
from store import queries
from store.db import Database
from store.hot import Lost, Moved
from store.models import Action, Decision

__all__ = ["Clock", "utc_now", "DecisionService", "Outcome", "Result"]

CONFIRMATION_WORD = "approve"  # what to type to approve despite failed guardrails, where a route asks
API_ACTOR_PREFIX = "api:"  # an API client's decisions are recorded as api:<client>
log = logging.getLogger(__name__)


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


def has_failed_guardrail(action: Action) -> bool:
    return any(isinstance(g, dict) and g.get("passed") is False for g in action.guardrail_checks or [])


class DecisionService:
    def __init__(
        self,
        *,
        db: Database,
        approvers: Directory,
        capabilities: Callable[[str], Capabilities],
        on_change: Callable[[], None],
        clock: Clock = utc_now,
        approvers_for: ApproversFor | None = None,
        policy: Policy | None = None,
        events: Events | None = None,
        lease: Callable[[str], timedelta] = lambda _source: timedelta(seconds=35),
        on_recorded: Callable[[], None] | None = None,
    ) -> None:
        """``events``: where a recorded decision is announced for delivery in this process
        (without, the outbox sweep delivers it); ``lease``: how long an entry is this
        process's to deliver, by source; ``on_change``: the sweeps have work (a change not
        announced as an event); ``on_recorded``: a decision was recorded and announced."""
        self._events = events
        self._lease = lease
        self._on_recorded = on_recorded or on_change
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
        approvers = (
            self._approvers_for(action.type, action.risk, source=action.source)
            if action is not None and self._approvers_for
            else None
        )
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

    def options(self, action: Action) -> tuple[Option, ...]:
        """The decisions the action offers now."""
        return options_for(Status(action.status), self._caps(action.source), stored_options(action.options))

    def _pick(self, action: Action, op: Op, key: str | None) -> Option | Result:
        """The option a click or command names, or why there is none: the source cannot do
        that at all (UNSUPPORTED), or not in the action's state (NOT_POSSIBLE)."""
        option = find_option(self.options(action), op=op, key=key)
        if option is not None:
            return option
        caps = self._caps(action.source)
        if not caps.own_options and op not in caps.ops:
            return Result.UNSUPPORTED
        return Result.NOT_POSSIBLE

    async def check_click(
        self,
        *,
        user_id: str,
        action_id: int,
        channel: str | None,
        ts: str | None,
        op: Op | None,
        option_key: str | None = None,
    ) -> Outcome:
        """Everything a button click must pass before anything opens: an approver, a real
        action, the card the click came from, and a state that still allows the op."""
        try:
            return await self._check_click(
                user_id=user_id, action_id=action_id, channel=channel, ts=ts, op=op, option_key=option_key
            )
        except DBAPIError as e:
            log.error("store unavailable while checking a click: %s", type(e).__name__)
            return Outcome(Result.STORE_UNAVAILABLE)

    async def _check_click(
        self,
        *,
        user_id: str,
        action_id: int,
        channel: str | None,
        ts: str | None,
        op: Op | None,
        option_key: str | None,
    ) -> Outcome:
        # One read for everything the answer needs (the card check included), then no database
        # connection held across Slack's group lookup.
        action, shown = await self._db.hot.click_check(action_id=action_id, channel=channel, ts=ts)
        # Once, against the action's route (no action: APPROVERS say whether to tell them so).
        refused = await self.authorize(user_id, action)
        if refused is not None:
            return Outcome(refused)
        if action is None:
            return Outcome(Result.UNKNOWN_ACTION)
        if not shown:  # neither the card itself nor a notice in its thread (a trip's Rollback)
            return Outcome(Result.WRONG_CARD, action)
        if op is not None:
            picked = self._pick(action, op, option_key)
            if picked is Result.UNSUPPORTED:
                return Outcome(Result.UNSUPPORTED, action)
            if picked is Result.NOT_POSSIBLE:
                async with self._db.read() as session:
                    latest = await queries.latest_decision(session, action_id=action_id)
                return Outcome(Result.NOT_POSSIBLE, action, latest)
        if await self._is_requester(action, user_id):
            return Outcome(Result.SELF_APPROVAL, action)
        return Outcome(Result.RECORDED, action)

    async def decide(
        self,
        *,
        action_id: int,
        op: Op,
        user_id: str,
        note: str | None,
        channel: str | None,
        confirmation: str | None = None,
        option_key: str | None = None,
    ) -> Outcome:
        """Authorize and record one decision durably. Of racing decisions exactly one wins;
        the others get the winner's decision back. Nothing is recorded if the store fails.

        Where the action's route needs several approvers, an approval is recorded toward
        them (ENDORSED) and the last one needed begins the decision; where it needs a typed
        confirmation for failed guardrails, ``confirmation`` must say "approve"."""
        try:
            with logs.bind(action_id=action_id):
                outcome = await self._decide(
                    action_id=action_id,
                    op=op,
                    user_id=user_id,
                    note=note,
                    channel=channel,
                    confirmation=confirmation,
                    option_key=option_key,
                )
                source = outcome.action.source if outcome.action is not None else None
                log.info("%s of action %s: %s", op.value, action_id, outcome.result.value, extra={"source": source})
                return outcome
        except DBAPIError as e:
            log.error("store unavailable while recording a decision: %s", type(e).__name__)
            return Outcome(Result.STORE_UNAVAILABLE)

    async def decide_as_client(
        self,
        *,
        action_id: int,
        op: Op,
        client: str,
        note: str | None,
        confirmation: str | None = None,
        request_key: str | None = None,
    ) -> Outcome:
        """One decision by an API client with the admin role (``POST .../decide``), under the
        same rules as a click: the route's two-person rule (the client counts as one approver,
        recorded as ``api:<client>``), its typed confirmation for failed guardrails, no
        approving what the client itself requested, and one winner among racing decisions.
        Who may decide at all is the adapter's check (the key's role), not ``APPROVERS``.
        ``request_key`` (at most 64 characters) keys the decision's outbox entry, so that the
        adapter can tell its own decision after a crash (``queries.outbox_keyed``)."""
        try:
            with logs.bind(action_id=action_id):
                outcome = await self._decide(
                    action_id=action_id,
                    op=op,
                    user_id=f"{API_ACTOR_PREFIX}{client}",
                    note=note,
                    channel=None,
                    confirmation=confirmation,
                    option_key=None,
                    client=client,
                    request_key=request_key,
                )
                source = outcome.action.source if outcome.action is not None else None
                log.info(
                    "%s of action %s by API client %s: %s",
                    op.value,
                    action_id,
                    client,
                    outcome.result.value,
                    extra={"source": source},
                )
                return outcome
        except DBAPIError as e:
            log.error("store unavailable while recording a decision: %s", type(e).__name__)
            return Outcome(Result.STORE_UNAVAILABLE)

    async def _decide(self, *, action_id: int, **request: Any) -> Outcome:
        """Decide from the action as a click's check in this process read it moments ago,
        where it kept it: that can only record a decision from the version it shows (a strict
        compare-and-set). Anything else (a refusal, a multi-approver count, an action that
        moved on since) is worked out again from the action as stored."""
        kept = self._db.hot.kept(action_id=action_id)
        if kept is not None:
            outcome = await self._decide_once(kept, strict=True, action_id=action_id, **request)
            if outcome is not None and outcome.result is Result.RECORDED:
                return outcome
        action = await self._db.hot.action(action_id=action_id)
        outcome = await self._decide_once(action, strict=False, action_id=action_id, **request)
        assert outcome is not None  # not strict: always an answer
        return outcome

    async def _decide_once(
        self,
        action: Action | None,
        *,
        strict: bool,
        action_id: int,
        op: Op,
        user_id: str,
        note: str | None,
        channel: str | None,
        confirmation: str | None,
        option_key: str | None,
        client: str | None = None,
        request_key: str | None = None,
    ) -> Outcome | None:
        """One decision from ``action`` as read; ``strict``: None, writing nothing, where it
        is no longer the stored version or needs more than the single-approver write."""
        if action is not None and self._pick(action, op, option_key) is Result.UNSUPPORTED:
            return Outcome(Result.UNSUPPORTED)
        if client is None:
            refused = await self.authorize(user_id, action)
            if refused is not None:
                return Outcome(refused)
        if action is None:
            return Outcome(Result.UNKNOWN_ACTION)
        picked = self._pick(action, op, option_key)
        if not isinstance(picked, Option):
            async with self._db.read() as session:
                latest = await queries.latest_decision(session, action_id=action_id)
            return Outcome(Result.NOT_POSSIBLE, action, latest)
        if client is not None:
            if (action.requested_by or "").strip() == client:
                return Outcome(Result.SELF_APPROVAL, action)
            identifier: str | None = client
        else:
            if await self._is_requester(action, user_id):
                return Outcome(Result.SELF_APPROVAL, action)
            identifier = await self._identifier(action, user_id)
        note = (note or "").strip() or None
        needed = 1
        approvals: tuple[str, ...] = ()
        if op is Op.APPROVE and self._policy is not None:
            if (
                self._policy.confirm_failed_guardrails(action.type, action.risk, source=action.source)
                and has_failed_guardrail(action)
                and (confirmation or "").strip().casefold() != CONFIRMATION_WORD.casefold()
            ):
                return Outcome(Result.CONFIRMATION_REQUIRED, action)
            needed = self._policy.required_approvals(action.type, action.risk, source=action.source)
        begin_args = functools.partial(
            self._begin_args,
            action,
            op,
            user_id=user_id,
            picked=picked,
            request_key=request_key,
            channel=channel,
            identifier=identifier,
        )
        if needed == 1:
            # The common case, on the store's fast path: one write transaction, nothing else.
            written = await self._db.hot.begin_decision(**begin_args(note=note, now=self._clock()), strict=strict)
            if isinstance(written, Moved):
                return None
            if isinstance(written, Lost):
                return Outcome(Result.NOT_POSSIBLE, written.action, written.latest)
            return self._recorded(written, approvals=approvals, needed=needed)
        if strict:
            return None  # the count of approvers needed is worked out from the stored row
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
                    approvals = endorsed.approvers
                    others = ", ".join(f"<@{a}>" if a[:1] in ("U", "W") else a for a in endorsed.approvers[:-1])
                    note = f"{note + ' — ' if note else ''}also approved by {others}"
            begun = await queries.begin_decision(session, **begin_args(note=note, now=self._clock(), seen=False))
            if begun is None:
                action = await queries.get_action(session, action_id=action_id)
                latest = await queries.latest_decision(session, action_id=action_id)
                return Outcome(Result.NOT_POSSIBLE, action, latest)
        return self._recorded(begun, approvals=approvals, needed=needed)

    def _begin_args(
        self,
        action: Action,
        op: Op,
        *,
        user_id: str,
        note: str | None,
        picked: Option,
        request_key: str | None,
        channel: str | None,
        identifier: str | None,
        now: datetime,
        seen: bool = True,
    ) -> dict[str, Any]:
        """The decision's write (``begin_decision``): from the version just read where
        ``seen`` (nothing else was written since), under a claim for this process's delivery."""
        transition = TRANSITIONS[op]
        claim = queries.Claim(now + self._lease(action.source)) if self._events is not None else None
        return {
            "action_id": action.id,
            "op": op,
            "allowed_from": transition.allowed_from,
            "in_flight": transition.in_flight,
            "actor": user_id,
            "note": note,
            "option": picked,
            "idempotency_key": request_key or str(uuid.uuid4()),
            "notify_channel": channel,
            "now": now,
            "actor_identifier": identifier,
            "claim": claim,
            "seen": action if seen else None,
        }

    def _recorded(self, begun: queries.Begun, *, approvals: tuple[str, ...], needed: int) -> Outcome:
        """A decision committed: deliver it now, and show it in flight, in this process."""
        if self._events is None:
            self._on_change()
        else:
            self._on_recorded()
            assert begun.action.id is not None
            self._events.decided(begun.outbox, begun.action)
            self._events.changed([Changed(begun.action.id, urgent=False)])
        return Outcome(Result.RECORDED, begun.action, begun.decision, approvals=approvals, needed=needed)

    async def _identifier(self, action: Action, user_id: str) -> str | None:
        """What the upstream will record as the decider, where the directory knows it without
        asking anyone now (its cache); otherwise delivery resolves it once, after the ack."""
        known, email = self._approvers.cached_email(user_id)
        if user_id[:1] not in ("U", "W"):
            return user_id
        return (email or user_id) if known else None

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
            # Where the source keys its requests, a Retry is a new decision with a new key: the
            # old key would only replay the old failure.
            keyed = found is not None and self._caps(found.source).idempotency_keys
            outbox = await queries.retry_failed(
                session,
                action_id=action_id,
                actor=user_id,
                now=self._clock(),
                transition_for=transition_for,
                new_key=str(uuid.uuid4()) if keyed else None,
            )
            action = await queries.get_action(session, action_id=action_id)
            latest = await queries.latest_decision(session, action_id=action_id)
        if action is None:
            return Outcome(Result.UNKNOWN_ACTION)
        if outbox is None:
            return Outcome(Result.NOT_POSSIBLE, action, latest)
        self._on_change()
        return Outcome(Result.RECORDED, action, latest)
