"""Ingest: the one way an action enters the store, whether a poll found it or its source
pushed it (``POST /intake/<source>``), and the poll that keeps stored actions in step with
the sources that can be listed.

``ingest`` is idempotent: one stored action (and one card) per source and upstream id,
whatever arrives twice, or at once on several replicas (the store's unique key decides).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import Clock, utc_now
from core.lifecycle import in_flight_from
from core.metrics import Metrics
from core.registry import SourceRegistry, UnknownSource
from policy import Policy
from sources.base import IN_FLIGHT, NotFoundError, PollingSource, SourceError, Status, UpstreamAction, is_push
from store import queries
from store.db import Database

log = logging.getLogger(__name__)


@dataclass
class IngestContext:
    db: Database
    sources: SourceRegistry
    channel: str  # where cards go unless a route says otherwise
    policy: Policy = field(default_factory=Policy)
    on_change: Callable[[], None] = lambda: None  # new or changed actions: cards, notices, watch
    clock: Clock = utc_now
    page_size: int = 100
    digest_threshold: int = 10  # more new actions than this for one channel in one poll: a digest
    metrics: Metrics = field(default_factory=Metrics)  # poll cycles: duration, pages, new actions


@dataclass
class _Cycle:
    """What one poll cycle of one source did, for its metrics."""

    pages: int = 0
    new: int = 0


@dataclass(frozen=True)
class Ingested:
    action_id: int
    created: bool  # False: it was known already (nothing new stored, no second card)


async def ingest(ctx: IngestContext, *, source: str, upstream: UpstreamAction, digest: int | None = None) -> Ingested:
    """Store a newly seen action with its card (or listed in ``digest``), or find the one
    stored already and take the upstream's word for its state."""
    async with ctx.db.write() as session:
        ingested, changed = await ingest_in(session, ctx, source=source, upstream=upstream, digest=digest)
    if changed:
        ctx.on_change()
    return ingested


async def ingest_in(
    session: AsyncSession,
    ctx: IngestContext,
    *,
    source: str,
    upstream: UpstreamAction,
    digest: int | None = None,
) -> tuple[Ingested, bool]:
    """``ingest`` in the caller's transaction (a source whose own write must commit with the
    action and its card: Signoff's API stores the client's request in the same one). Returns
    what was stored and whether anything changed; the caller calls ``ctx.on_change()`` once
    it committed, if so."""
    channel = ctx.policy.channel_for(upstream.type, upstream.risk, ctx.channel, source=source)
    stored = await queries.insert_action(
        session,
        source=source,
        upstream=upstream,
        channel=channel,
        now=ctx.clock(),
        digest_id=digest,
    )
    if stored is not None:
        assert stored.id is not None
        log.info("new %s action %s stored (id %s)", source, upstream.external_id, stored.id)
        return Ingested(stored.id, True), True
    known = await queries.known_actions(session, source=source, external_ids=[upstream.external_id])
    action_id, _status = known[upstream.external_id]
    changed = await queries.adopt_upstream(
        session,
        action_id=action_id,
        upstream=upstream,
        now=ctx.clock(),
        in_flight_from=in_flight_from,
    )
    return Ingested(action_id, False), changed


async def track(ctx: IngestContext, *, source: str, ids: Sequence[str]) -> tuple[Ingested, UpstreamAction]:
    """Take an action of a source that pushes its actions, named by a person rather than
    pushed (``/signoff track flowdash <workflow_id> <task_id>``): read it from the source as
    its intake would, and store it through the same ``ingest``. An action known already keeps
    what its intake told (title, fields): only its state and options are refreshed.

    Raises ``UnknownSource`` (no such source, or one that is not pushed), ``IntakeError``
    (ids it cannot take) and ``SourceError`` (the upstream's)."""
    pushed = ctx.sources.entry(source).source
    body_for = getattr(pushed, "track_body", None)
    if not is_push(pushed) or not callable(body_for):
        raise UnknownSource(source)
    upstream = await pushed.intake(body_for(tuple(ids)))
    async with ctx.db.read() as session:
        known = await queries.known_actions(session, source=source, external_ids=[upstream.external_id])
    if upstream.external_id in known:
        upstream = replace(upstream, detailed=False)
    return await ingest(ctx, source=source, upstream=upstream), upstream


async def poll(ctx: IngestContext) -> None:
    """One poll cycle over every source that can be listed. A source's failure ends its own
    cycle with a warning (the next retries) and leaves the others alone."""
    changed = False
    for source in ctx.sources.polling():
        cycle, started, failed = _Cycle(), time.monotonic(), True
        try:
            changed |= await _poll(ctx, source, cycle)
            failed = False
        except SourceError as e:
            log.warning("poll of %s failed, retrying next cycle: %s", source.name, e)
        finally:
            ctx.metrics.poll_cycle(
                source.name, seconds=time.monotonic() - started, pages=cycle.pages, new=cycle.new, failed=failed
            )
    if changed:
        ctx.on_change()


async def _poll(ctx: IngestContext, source: PollingSource, cycle: _Cycle) -> bool:
    watched = frozenset(source.listed_statuses()) | IN_FLIGHT
    listed_open: set[int] = set()  # stored ids, held here as open, that the upstream listed
    new: list[str] = []
    moved: list[tuple[int, UpstreamAction, datetime]] = []
    for status in source.listed_statuses():
        offset = 0
        while True:
            observed_at = ctx.clock()
            page = await source.list_actions(status=status, limit=ctx.page_size, offset=offset)
            cycle.pages += 1
            async with ctx.db.read() as session:
                known = await queries.known_actions(
                    session, source=source.name, external_ids=[a.external_id for a in page.actions]
                )
            for item in page.actions:
                if item.external_id not in known:
                    if item.status is Status.READY:
                        new.append(item.external_id)
                    continue
                action_id, held_as = known[item.external_id]
                if Status(held_as) in watched:
                    listed_open.add(action_id)
                if held_as != item.status.value:
                    moved.append((action_id, item, observed_at))
            offset += len(page.actions)
            if not page.actions or offset >= page.total:
                break
    async with ctx.db.read() as session:
        held_open = await queries.count_in_status(session, source=source.name, statuses=watched)

    changed = await _discover_all(ctx, source, new, cycle)
    for action_id, item, observed_at in moved:
        async with ctx.db.write() as session:
            changed |= await queries.adopt_upstream(
                session,
                action_id=action_id,
                upstream=item,
                now=ctx.clock(),
                observed_at=observed_at,
                in_flight_from=in_flight_from,
            )
    if held_open != len(listed_open):
        changed |= await _sync_unlisted(ctx, source, watched, listed_open)
    return changed


async def _sync_unlisted(
    ctx: IngestContext, source: PollingSource, watched: frozenset[Status], listed: set[int]
) -> bool:
    """Held as open here but listed under none of the open statuses: it moved upstream to a
    state we cannot list (rejected, rolled back, ...). Read each to learn which. Only runs
    when the counts say some are missing, and reads the store a page at a time."""
    changed, after = False, 0
    while True:
        async with ctx.db.read() as session:
            held = await queries.actions_in_status(session, source=source.name, statuses=watched, after_id=after)
        for action_id, external_id in held:
            if action_id in listed:
                continue
            observed_at = ctx.clock()
            try:
                upstream = await source.get_action(external_id)
            except NotFoundError:
                log.warning("%s action %s is gone upstream", source.name, external_id)
                continue
            async with ctx.db.write() as session:
                changed |= await queries.adopt_upstream(
                    session,
                    action_id=action_id,
                    upstream=upstream,
                    now=ctx.clock(),
                    observed_at=observed_at,
                    in_flight_from=in_flight_from,
                )
        if len(held) < 1000:
            return changed
        after = held[-1][0]


async def _discover_all(ctx: IngestContext, source: PollingSource, new: list[str], cycle: _Cycle) -> bool:
    """Read and store each new action, one at a time (nothing held but the ids). When this
    poll found more than ``digest_threshold`` of them, a flood, they are listed in one digest
    per channel (made when its first action is stored) instead of getting a card each."""
    flood = len(new) > ctx.digest_threshold
    if flood:
        log.info("%d new %s actions: digests instead of a card each", len(new), source.name)
    digests: dict[str, int] = {}
    changed = False
    for external_id in new:
        try:
            detail = await source.get_action(external_id)
        except SourceError as e:
            log.warning("could not read %s action %s, retrying next cycle: %s", source.name, external_id, e)
            continue
        if detail.status is not Status.READY:
            continue
        channel = ctx.policy.channel_for(detail.type, detail.risk, ctx.channel, source=source.name)
        async with ctx.db.write() as session:
            digest = None
            if flood and channel not in digests:
                digest = await queries.create_digest(session, channel=channel, now=ctx.clock())
            stored = await queries.insert_action(
                session,
                source=source.name,
                upstream=detail,
                channel=channel,
                now=ctx.clock(),
                digest_id=digest.id if digest is not None else digests.get(channel),
            )
            if digest is not None:
                if stored is None:
                    await session.delete(digest)  # another poller stored it first: no empty digest
                else:
                    digests[channel] = digest.id or 0
        if stored is not None:
            log.info("new %s action %s stored (id %s)", source.name, external_id, stored.id)
            cycle.new += 1
            changed = True
    return changed
