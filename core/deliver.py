"""Deliver, track and settle: each recorded decision carried to its source exactly once, and
followed until it lands.

An outbox entry is claimed under a lease (so a dead worker's entries are taken over), sent
with the key that is stable for the decision across every retry and replica, and then:

- ``Landed``: settled in the decision's outcome (or the state the upstream reports);
- ``Accepted``: the upstream works on it (an asynchronous execution); the entry keeps its
  lease-and-backoff schedule and is *tracked*, never sent again, until it ends;
- a conflict (409): the upstream's real state is read; ours if our decision got there
  (an earlier answer was lost), else adopted, and the person who decided is told;
- a retryable failure: tried again with backoff; a permanent one (or too many): the action
  goes back where the decision found it, with the error and a Retry on its card.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from core import logs, watch
from core.clock import Clock, utc_now
from core.events import Changed, Events, Foreground, LiveTasks
from core.lifecycle import TRANSITIONS
from core.metrics import Metrics
from core.people import Directory
from core.registry import SourceRegistry, UnknownSource
from sources.base import (
    Accepted,
    ActionSource,
    ConflictError,
    DecisionRequest,
    InProgressError,
    Landed,
    Op,
    SourceError,
    Status,
    UpstreamAction,
    builds_body,
)
from store import queries
from store.db import Database, Grouped
from store.models import Action, Outbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits between d/2 and d, d = base * 2**n, capped."""

    base_seconds: float = 2.0
    cap_seconds: float = 300.0
    max_attempts: int = 10

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> timedelta:
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** max(0, attempt)))
        return timedelta(seconds=ceiling / 2 + rng() * ceiling / 2)


class Notifier(Protocol):
    """Tells the person who decided what became of it (an adapter's job: Slack's, say)."""

    async def conflict(self, entry: Outbox, status: Status, op: Op) -> None: ...

    async def failed(self, entry: Outbox, op: Op, message: str) -> None: ...


class _Silent:
    async def conflict(self, entry: Outbox, status: Status, op: Op) -> None:
        return None

    async def failed(self, entry: Outbox, op: Op, message: str) -> None:
        return None


@dataclass
class DeliveryContext:
    db: Database
    sources: SourceRegistry
    people: Directory
    notifier: Notifier = field(default_factory=_Silent)
    # An action changed: what else may follow from it (the watch, the App Home). Without
    # ``events``, the card and notice sweeps too.
    on_change: Callable[[], None] = lambda: None
    # Where settled changes are announced, for this process to re-render the card and post the
    # notices at once (leased to it for ``card_lease``); without, the sweeps do it.
    events: Events | None = None
    card_lease: timedelta = timedelta(seconds=60)
    metrics_on: bool = False  # a metrics source is configured (the rollback watch reads it)
    clock: Clock = utc_now
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Claim only what one worker finishes well within its lease: one round of concurrent deliveries.
    deliveries_at_once: int = 8
    # How long to wait between reads of a decision the upstream is still working on.
    track_base_seconds: float = 1.0
    track_cap_seconds: float = 60.0
    metrics: Metrics = field(default_factory=Metrics)  # decisions counted by their final outcome
    # Settles landing together share one write transaction (group commit), on the store's
    # driver connection (its statements only: no ORM session); set in __post_init__.
    settles: Grouped = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.settles = Grouped(self.db.hot.writing)


def _counted(ctx: DeliveryContext, entry: Outbox, action: Action | None, outcome: str) -> None:
    """A decision reached its final outcome here (``action`` is None when another worker
    settled it first: counted there, once)."""
    if action is not None:
        ctx.metrics.decision(action.source, entry.op, outcome)


async def deliver_outbox(ctx: DeliveryContext) -> int:
    """Deliver (or follow) every due outbox entry of a configured source, a few at a time;
    returns how many were attempted. Each entry is its action's only one in flight."""
    attempted = 0
    limit = asyncio.Semaphore(ctx.deliveries_at_once)
    names = list(ctx.sources.names)
    if not names:
        return 0

    async def deliver(entry: Outbox) -> None:
        async with limit:
            await _deliver(ctx, entry)

    while True:
        async with ctx.db.write() as session:
            entries = await queries.claim_outbox(
                session, now=ctx.clock(), lease=ctx.sources.outbox_lease, limit=ctx.deliveries_at_once, sources=names
            )
        await asyncio.gather(*(deliver(entry) for entry in entries))
        attempted += len(entries)
        if len(entries) < ctx.deliveries_at_once:
            return attempted


async def _identifier(ctx: DeliveryContext, entry: Outbox) -> str:
    """What the upstream records as the decider: the person's email, else their ID.
    Resolved once and stored, so every retry sends the same request."""
    if entry.actor_identifier:
        return entry.actor_identifier
    identifier = entry.actor
    if entry.actor[:1] in ("U", "W"):
        identifier = await ctx.people.email(entry.actor) or entry.actor
    async with ctx.db.write() as session:
        await queries.set_outbox_identifier(session, outbox_id=entry.id or 0, identifier=identifier)
    return identifier


async def _with_body(
    ctx: DeliveryContext, source: ActionSource, entry: Outbox, request: DecisionRequest
) -> DecisionRequest:
    """For a source that wants the same body on every attempt (``BodyBuilder``): the body it
    built once for this decision, stored before the first send (the one stored first, should
    replicas race), so every retry, restart and replica sends it byte for byte."""
    if not builds_body(source):
        return request
    body = entry.request_body
    if body is None:
        name = await ctx.people.name(entry.actor) if entry.actor[:1] in ("U", "W") else None
        built = source.request_body(replace(request, actor_name=name or ""))  # type: ignore[attr-defined]
        async with ctx.db.write() as session:
            body = await queries.set_outbox_body(session, outbox_id=entry.id or 0, body=built)
    return replace(request, body=body)


QUEUED = float("inf")  # Deliverer.started: recorded here, its upstream call not started yet


class Deliverer:
    """Delivers decisions recorded in this process at once, a few at a time: the outbox
    entry was leased to this process when it was recorded (the sweep takes it over only if
    this process dies first)."""

    def __init__(self, ctx: DeliveryContext, *, foreground: Foreground | None = None) -> None:
        self._ctx = ctx
        self._foreground = foreground or Foreground()
        self._limit = asyncio.Semaphore(ctx.deliveries_at_once)
        self._tasks = LiveTasks()
        # action id -> loop time its upstream call started (QUEUED before): what the card
        # updater asks before showing a decision as in flight (``started``).
        self._under_way: dict[int, float] = {}
        self._events = ctx.events or Events()  # says when it starts and stops carrying one

    def deliver_now(self, entry: Outbox, action: Action) -> None:
        # Its log lines still name the request, and the person, that made it.
        self._under_way[entry.action_id] = QUEUED
        self._tasks.spawn(self._run(entry, action), context=logs.carried())

    def started(self, action_id: int) -> float | None:
        """When this process started carrying the action's decision upstream (loop time),
        ``QUEUED`` while it waits its turn here, None if it is not delivering it (any more)."""
        return self._under_way.get(action_id)

    async def _run(self, entry: Outbox, action: Action) -> None:
        try:
            await self._foreground.idle()  # the clicks people wait on first
            async with self._limit:
                self._under_way[entry.action_id] = asyncio.get_running_loop().time()
                self._events.carrying(entry.action_id)
                try:
                    if not await self._still_ours(entry, action.source):
                        return  # waited so long that another worker took it over: it delivers
                    await _deliver(self._ctx, entry, action)
                except SQLAlchemyError as e:
                    # The store failed mid-delivery: the entry's lease ends and the sweep retries
                    # it (a repeat is reconciled as any lost answer is).
                    log.error("delivery of outbox entry %s stopped: store error %s", entry.id, type(e).__name__)
        finally:
            self._under_way.pop(entry.action_id, None)
            self._events.released(entry.action_id)

    async def _still_ours(self, entry: Outbox, source: str) -> bool:
        """Whether this process may deliver the entry now: its lease has at least half its
        length left (a delivery fits in that), or it was renewed while still this process's."""
        assert entry.id is not None
        if entry.lease_until is None:
            return True
        ctx, now = self._ctx, self._ctx.clock()
        lease = ctx.sources.entry(source).outbox_lease if source in ctx.sources else ctx.sources.outbox_lease
        if entry.lease_until - now >= lease / 2:
            return True
        async with ctx.db.write() as session:
            renewed = await queries.renew_outbox_lease(
                session, outbox_id=entry.id, held_until=entry.lease_until, until=now + lease
            )
        if renewed:
            entry.lease_until = now + lease
        return renewed

    async def drain(self, timeout: float) -> None:
        await self._tasks.drain(timeout)

    def cancel(self) -> None:
        self._tasks.cancel()


def _claim(ctx: DeliveryContext) -> queries.Claim | None:
    return queries.Claim(ctx.clock() + ctx.card_lease) if ctx.events is not None else None


def _announce(ctx: DeliveryContext, action_id: int, claim: queries.Claim | None) -> None:
    if ctx.events is not None and claim is not None:
        ctx.events.changed([Changed(action_id, tuple(claim.notices))])
    ctx.on_change()


async def _deliver(ctx: DeliveryContext, entry: Outbox, action: Action | None = None) -> None:
    assert entry.id is not None
    if action is None:
        async with ctx.db.read() as session:
            action = await queries.get_action(session, action_id=entry.action_id)
    assert action is not None
    with logs.bind(action_id=action.id, source=action.source):
        await _deliver_action(ctx, entry, action)


async def _deliver_action(ctx: DeliveryContext, entry: Outbox, action: Action) -> None:
    assert entry.id is not None
    op = Op(entry.op)
    try:
        source = ctx.sources.get(action.source)
    except UnknownSource:
        return  # claimed only for configured sources; the source was just removed
    identifier = await _identifier(ctx, entry)
    request = DecisionRequest(
        op=op,
        external_id=action.external_id,
        actor=identifier,
        note=entry.note,
        idempotency_key=entry.idempotency_key,
        option_key=entry.option_key or op.value,
        option_label=entry.option_label or "",
        attempt=entry.attempts,
    )
    try:
        request = await _with_body(ctx, source, entry, request)
        try:
            if entry.reference is not None:
                submitted = await source.track(request, entry.reference)
            else:
                submitted = await source.submit(request)
        except ConflictError as conflict:
            await _reconcile(ctx, source, entry, action, identifier, conflict)
            return
    except InProgressError as e:
        await _later(ctx, entry, str(e)[:500])
        return
    except SourceError as e:
        await _failed_attempt(ctx, entry, e)
        return
    if isinstance(submitted, Accepted):
        await _follow(ctx, entry, submitted.reference)
        return
    assert isinstance(submitted, Landed)
    await settle(ctx, entry, submitted.upstream, note=submitted.note)
    log.info("%s of %s action %s delivered", op.value, source.name, action.external_id)


async def settle(ctx: DeliveryContext, entry: Outbox, upstream: UpstreamAction | None, note: str | None = None) -> None:
    """The decision landed: the action takes its outcome (or the state the upstream reports)."""
    assert entry.id is not None
    claim = _claim(ctx)
    entry_id = entry.id

    async def landed(session: AsyncSession) -> Action | None:
        now = ctx.clock()
        action = await queries.outbox_delivered(
            session,
            outbox_id=entry_id,
            upstream=upstream,
            outcome=TRANSITIONS[Op(entry.op)].outcome,
            now=now,
            claim=claim,
            note=note,
        )
        if action is not None:
            # Approved: watched from now, and shown so on the same card.
            await watch.set_up_now(session, action, now=now, metrics=ctx.metrics_on)
        return action

    action = await ctx.settles.run(landed)
    _counted(ctx, entry, action, "delivered")
    _announce(ctx, entry.action_id, claim)


async def _follow(ctx: DeliveryContext, entry: Outbox, reference: str) -> None:
    """Accepted, still running upstream: read it again later (the same reference, unless the
    upstream gave a new one), with backoff capped low enough that a person sees it land."""
    assert entry.id is not None
    tracked = entry.attempts if entry.reference == reference else 0
    ceiling = min(ctx.track_cap_seconds, ctx.track_base_seconds * (2 ** min(tracked, 16)))
    next_at = ctx.clock() + timedelta(seconds=ceiling / 2 + random.random() * ceiling / 2)
    async with ctx.db.write() as session:
        if entry.reference == reference:
            await queries.outbox_retry_later(
                session, outbox_id=entry.id, error="in progress upstream", next_attempt_at=next_at
            )
        else:
            await queries.outbox_accepted(session, outbox_id=entry.id, reference=reference, next_attempt_at=next_at)


async def _later(ctx: DeliveryContext, entry: Outbox, message: str) -> None:
    """The upstream is busy with the action: no attempt used up, try again after a while."""
    assert entry.id is not None
    next_at = ctx.clock() + ctx.retry.delay(min(entry.attempts, 3))
    async with ctx.db.write() as session:
        await queries.outbox_retry_later(
            session, outbox_id=entry.id, error=message, next_attempt_at=next_at, count=False
        )


async def _reconcile(
    ctx: DeliveryContext,
    source: ActionSource,
    entry: Outbox,
    action: Action,
    identifier: str,
    conflict: ConflictError,
) -> None:
    """409: read the action's real state. If it is where our decision leads (an earlier
    attempt of ours landed but its answer was lost), the decision is delivered; otherwise
    the upstream's state wins and the person who decided is told."""
    assert entry.id is not None
    op = Op(entry.op)
    try:
        upstream = await source.get_action(action.external_id)
    except SourceError as e:
        await _failed_attempt(ctx, entry, e)
        return
    # A source's own named option lands back where it was decided: no state read tells ours.
    ours = (
        op is not Op.OTHER
        and upstream.status is TRANSITIONS[op].outcome
        and (op is Op.ROLLBACK or upstream.decided_by in (None, identifier))
    )
    claim = _claim(ctx)
    async with ctx.db.write() as session:
        if ours:
            settled = await queries.outbox_delivered(
                session,
                outbox_id=entry.id,
                upstream=upstream,
                outcome=TRANSITIONS[op].outcome,
                now=ctx.clock(),
                claim=claim,
            )
        else:
            settled = await queries.outbox_conflict(
                session, outbox_id=entry.id, upstream=upstream, now=ctx.clock(), claim=claim
            )
    _counted(ctx, entry, settled, "delivered" if ours else "conflict")
    _announce(ctx, entry.action_id, claim)
    if not ours:
        log.info(
            "%s of %s refused upstream (%s); adopted %s", op.value, action.external_id, conflict, upstream.status.value
        )
        await ctx.notifier.conflict(entry, upstream.status, op)


async def _failed_attempt(ctx: DeliveryContext, entry: Outbox, error: SourceError) -> None:
    assert entry.id is not None
    message = str(error)[:500]
    attempt = entry.attempts + 1
    # Once the upstream accepted the decision, it is followed for as long as it runs: a
    # read that fails on the way is tried again, never given up.
    if error.retryable and (attempt < ctx.retry.max_attempts or entry.reference is not None):
        next_at = ctx.clock() + ctx.retry.delay(entry.attempts)
        log.warning(
            "%s for action %s failed (attempt %d), retrying at %s: %s",
            entry.op,
            entry.action_id,
            attempt,
            next_at.isoformat(),
            message,
        )
        async with ctx.db.write() as session:
            await queries.outbox_retry_later(session, outbox_id=entry.id, error=message, next_attempt_at=next_at)
        return
    log.error("%s for action %s failed for good after %d attempt(s): %s", entry.op, entry.action_id, attempt, message)
    claim = _claim(ctx)
    async with ctx.db.write() as session:
        failed = await queries.outbox_failed(session, outbox_id=entry.id, error=message, now=ctx.clock(), claim=claim)
    _counted(ctx, entry, failed, "failed")
    _announce(ctx, entry.action_id, claim)
    await ctx.notifier.failed(entry, Op(entry.op), message)
