"""The rollback watch: a plain async job that ``app.py`` schedules every
``ROLLBACK_CHECK_INTERVAL_SECONDS``.

Each run sets up the watch of actions that became approved or running (one row per parsed
rollback condition; an unparsed one stays on the card as "checked by a person"), then checks
every due rule: reads the metric, takes the first fresh value as the baseline for relative
rules, evaluates, and writes back. A rule that trips is reported once in the card's thread
(and the channel), mentioning the approver; with auto-rollback on for the action's type the
rollback is queued through the same outbox as a person's click, in the same transaction as
the trip. A rule that recovers is re-armed; a window that ends stops the watch.

Watches are leased to one worker at a time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), and
the trip is a compare-and-set on the watch row, so several replicas alert once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from core import rules
from core.clock import Clock, utc_now
from core.lifecycle import TRANSITIONS
from core.registry import NO_CAPABILITIES
from policy import Policy
from sources.base import Capabilities, Op, Status
from sources.metrics import MetricNotFound, MetricsError, MetricsProvider, Observation
from store import queries
from store.db import Database
from store.models import Action, Reading, Watch

log = logging.getLogger(__name__)

WATCHED = frozenset({Status.APPROVED, Status.RUNNING})
# Not checked while a decision is in flight, but not ended either: a failed rollback
# puts the action back under watch.
PAUSED = frozenset({Status.ROLLING_BACK})
SIGNOFF_ACTOR = "signoff"


@dataclass
class WatchContext:
    db: Database
    metrics: MetricsProvider | None
    policy: Policy
    interval: timedelta  # ROLLBACK_CHECK_INTERVAL_SECONDS: each rule is checked at least this often
    tick: timedelta  # how often the job runs: a rule falls due a tick early, so it is never a tick late
    max_age: timedelta  # an observation older than this is stale, never "all good"
    clock: Clock = utc_now
    # What each source can do: an automatic rollback only where the action's source can roll back.
    capabilities: Callable[[str], Capabilities] = lambda _source: NO_CAPABILITIES
    kick_outbox: Callable[[], None] = lambda: None
    kick_cards: Callable[[], None] = lambda: None
    batch: int = 20
    reads_at_once: int = 8
    # A batch is its metrics calls (each bounded by its timeout) and two short transactions.
    lease: timedelta = timedelta(seconds=60)
    setup_batch: int = 100


async def check_rules(ctx: WatchContext) -> int:
    """One run of the watch; returns how many rules were checked.

    Each claimed batch is read in parallel (the metrics calls, outside any transaction) and
    written back in one transaction: a batch costs two writes (claim, record), not one per rule."""
    await _set_up(ctx)
    checked = 0
    limit = asyncio.Semaphore(ctx.reads_at_once)

    async def check(watch: Watch, action: Action) -> _Checked:
        async with limit:
            return await _check(ctx, watch, action)

    while True:
        async with ctx.db.hot.writing() as session:  # statements only: on the driver's connection
            claimed = await queries.claim_watches(session, now=ctx.clock(), lease=ctx.lease, limit=ctx.batch)
        if claimed:
            await _record(ctx, await asyncio.gather(*(check(watch, action) for watch, action in claimed)))
        checked += len(claimed)
        if len(claimed) < ctx.batch:
            break
    return checked


# ---- setting up ---------------------------------------------------------------------------


def plan(action: Action, *, started_at: datetime) -> list[queries.NewWatch]:
    """The watches for an action's parsed rollback conditions (unparsed ones get none)."""
    out = []
    for position, condition in enumerate(action.rollback_conditions or []):
        rule = rules.parse_condition(str(condition))
        if isinstance(rule, rules.Rule):
            out.append(
                queries.NewWatch(
                    position=position,
                    condition=str(condition),
                    rule=rule.to_json(),
                    metric=rule.metric,
                    ends_at=rules.window_ends_at(rule, started_at=started_at),
                )
            )
    return out


NO_PROVIDER = queries.CheckResult(Reading.NO_PROVIDER, "no metrics source is configured (METRICS_URL)")


async def set_up_now(session: AsyncSession, action: Action, *, now: datetime, metrics: bool) -> bool:
    """In the transaction that approved the action (its row locked): set its watch up at once,
    so the card that shows the approval shows what is watched too; with no metrics source
    (``metrics`` False), already as not watched. False if it needs none."""
    if action.watch_started_at is not None or Status(action.status) not in WATCHED:
        return False
    started_at = action.decided_at or now
    await queries.begin_watch(
        session,
        action=action,
        started_at=started_at,
        watches=plan(action, started_at=started_at),
        now=now,
        reading=None if metrics else NO_PROVIDER,
    )
    return True


async def _set_up(ctx: WatchContext) -> None:
    while True:
        async with ctx.db.read() as session:
            actions = await queries.actions_to_watch(session, statuses=WATCHED, limit=ctx.setup_batch)
        for action in actions:
            assert action.id is not None
            # Execution: when the upstream says it was approved, else now (first seen running).
            started_at = action.decided_at or ctx.clock()
            watches = plan(action, started_at=started_at)
            async with ctx.db.write() as session:
                started = await queries.start_watch(
                    session, action_id=action.id, started_at=started_at, watches=watches, now=ctx.clock()
                )
            if started and watches:
                log.info("watching %d rule(s) of action %s", len(watches), action.id)
                ctx.kick_cards()
        if len(actions) < ctx.setup_batch:
            return


# ---- checking -----------------------------------------------------------------------------


async def _read(ctx: WatchContext, watch: Watch, action: Action) -> Observation | queries.CheckResult:
    if ctx.metrics is None:
        return NO_PROVIDER
    try:
        return await ctx.metrics.current(metric=watch.metric, action_id=action.external_id)
    except MetricNotFound:
        return queries.CheckResult(Reading.MISSING, f"the metrics source has no {watch.metric}")
    except MetricsError as e:
        return queries.CheckResult(Reading.ERROR, f"metrics source: {e}"[:500])


def evaluate(watch: Watch, observation: Observation, *, now: datetime, max_age: timedelta) -> queries.CheckResult:
    """What a fresh (or stale) observation means for a watch. Pure."""
    rule = rules.Rule.from_json(watch.rule)
    if now - observation.observed_at > max_age:
        return queries.CheckResult(
            Reading.STALE,
            f"latest {watch.metric} is from {observation.observed_at.isoformat(timespec='minutes')}",
            value=observation.value,
            observed_at=observation.observed_at,
        )
    baseline = watch.baseline
    if rule.needs_baseline and baseline is None:
        baseline = observation.value  # the value at execution
    result = rules.evaluate(rule, value=observation.value, baseline=baseline)
    return queries.CheckResult(
        Reading.OK,
        result.detail,
        value=observation.value,
        observed_at=observation.observed_at,
        baseline=baseline if rule.needs_baseline else None,
        tripped=result.tripped,
    )


@dataclass(frozen=True)
class _Checked:
    watch: Watch
    action: Action
    result: queries.CheckResult
    at: datetime


async def _check(ctx: WatchContext, watch: Watch, action: Action) -> _Checked:
    """What one check found; written back by ``_record`` with the rest of its batch."""
    assert watch.id is not None and action.id is not None
    now = ctx.clock()
    status = Status(action.status)
    if status in PAUSED:
        result = queries.CheckResult(Reading(watch.reading), watch.reading_detail)
    elif status not in WATCHED:
        result = queries.CheckResult(Reading(watch.reading), watch.reading_detail, ended=f"action {status.value}")
    elif watch.ends_at is not None and now >= watch.ends_at:
        result = queries.CheckResult(Reading(watch.reading), watch.reading_detail, ended="window_over")
    else:
        read = await _read(ctx, watch, action)
        now = ctx.clock()
        result = read if isinstance(read, queries.CheckResult) else evaluate(watch, read, now=now, max_age=ctx.max_age)
    return _Checked(watch, action, result, now)


async def _record(ctx: WatchContext, checks: Sequence[_Checked]) -> None:
    """Write a batch of checks back in one transaction, each under its watch's row lock."""
    transitions: list[tuple[rules.Rule, int, str]] = []
    rollbacks: list[tuple[rules.Rule, int]] = []
    async with ctx.db.hot.writing() as session:
        for check in checks:
            transition, queued = await _record_one(ctx, session, check)
            assert check.action.id is not None
            if transition is not None:
                transitions.append((rules.Rule.from_json(check.watch.rule), check.action.id, transition))
            if queued:
                rollbacks.append((rules.Rule.from_json(check.watch.rule), check.action.id))
    for rule, action_id, transition in transitions:
        log.info("rule %r of action %s: %s", rule.describe(), action_id, transition)
    for rule, action_id in rollbacks:
        log.warning("rule %r tripped: rolling back action %s automatically", rule.describe(), action_id)
    if transitions:
        ctx.kick_cards()
    if rollbacks:
        ctx.kick_outbox()


async def _record_one(ctx: WatchContext, session: AsyncSession, check: _Checked) -> tuple[str | None, bool]:
    """One check written back: its transition (or None) and whether a rollback was queued."""
    watch, action, result, now = check.watch, check.action, check.result, check.at
    assert watch.id is not None and action.id is not None
    rule = rules.Rule.from_json(watch.rule)
    queued_rollback = False
    written = await queries.record_check(
        session,
        watch_id=watch.id,
        result=result,
        now=now,
        next_check_at=now + ctx.interval - ctx.tick,
    )
    if written is None:
        return None, False
    saved, transition = written
    if transition == "tripped":
        auto = ctx.policy.auto_rollback_for(action.type, action.risk, source=action.source)
        if auto and Op.ROLLBACK in ctx.capabilities(action.source).ops:
            rollback = TRANSITIONS[Op.ROLLBACK]
            decision = await queries.begin_decision(
                session,
                action_id=action.id,
                op=Op.ROLLBACK,
                allowed_from=rollback.allowed_from,
                in_flight=rollback.in_flight,
                actor=SIGNOFF_ACTOR,
                note=f"rollback condition tripped: {rule.describe()}",
                idempotency_key=str(uuid.uuid4()),
                notify_channel=None,
                now=now,
            )
            queued_rollback = decision is not None
        approver = await _approver(session, action)
        await queries.add_notice(
            session,
            action_id=action.id,
            key=f"trip:{saved.id}:{saved.trips}",
            kind="trip",
            now=now,
            broadcast=True,
            payload={
                "rule": rule.describe(),
                "condition": saved.condition,
                "metric": saved.metric,
                "value": saved.last_value,
                "observed_at": _iso(saved.last_observed_at),
                "baseline": saved.baseline,
                "detail": result.detail,
                "approver": approver,
                "auto_rollback": auto,
                "rollback_queued": queued_rollback,
                "trips": saved.trips,
            },
        )
    elif transition == "recovered":
        await queries.add_notice(
            session,
            action_id=action.id,
            key=f"recovered:{saved.id}:{saved.trips}",
            kind="recovered",
            now=now,
            payload={"rule": rule.describe(), "value": saved.last_value, "detail": result.detail},
        )
    elif transition == "ended" and saved.ended == "window_over":
        await queries.add_notice(
            session,
            action_id=action.id,
            key=f"window:{saved.id}",
            kind="window_over",
            now=now,
            payload={"rule": rule.describe(), "trips": saved.trips, "tripped": saved.tripped},
        )
    return transition, queued_rollback


async def _approver(session: AsyncSession, action: Action) -> str | None:
    """Who approved the action: the Slack user whose approval the upstream confirmed, else
    whoever the upstream names."""
    assert action.id is not None
    confirmed = await queries.latest_confirmed(session, action_id=action.id)
    if confirmed is not None and confirmed.op == Op.APPROVE.value:
        return confirmed.actor
    return action.decided_by


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None
