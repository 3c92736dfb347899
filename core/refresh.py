"""Refresh: open actions of sources that cannot be listed, read again until they end.

A source that pushes its actions (``POST /intake/<source>``) pushes nothing back when they
move: approved elsewhere, running, succeeded or failed. So every stored action of such a source
that is still open (awaiting a decision, approved, running) is read again with ``get_action``,
and the upstream's state adopted (``queries.adopt_upstream``: the audit trail, a line in the
card's thread, the card re-rendered). Decisions in flight are the delivery's, and are not read.

Each action has its own schedule in the store (``refresh_at``), so replicas share the work
and a restart loses nothing: a read that finds nothing new doubles the wait (with jitter) up to
a cap, lower for an action that runs (its outcome is wanted soon) than for one awaiting a
decision (people decide in Slack; the read only notices decisions made elsewhere). A change,
or a decision landing, makes it due again at once.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from core.clock import Clock, utc_now
from core.lifecycle import in_flight_from
from core.registry import SourceRegistry
from sources.base import NotFoundError, SourceError, Status, is_polling
from store import queries
from store.db import Database

log = logging.getLogger(__name__)

# Open, and not a decision in flight (the delivery follows those).
OPEN = (Status.READY, Status.APPROVED, Status.RUNNING)
_ACTIVE = frozenset({Status.APPROVED, Status.RUNNING})


@dataclass
class RefreshContext:
    db: Database
    sources: SourceRegistry
    on_change: Callable[[], None] = lambda: None
    clock: Clock = utc_now
    base_seconds: float = 5.0
    active_cap_seconds: float = 60.0  # approved or running: its outcome is wanted soon
    idle_cap_seconds: float = 600.0  # awaiting a decision: only decisions made elsewhere
    lease: timedelta = timedelta(seconds=60)  # outlasts one read; the next try if this worker dies
    batch: int = 20

    def delay(self, status: Status, misses: int, rng: Callable[[], float] = random.random) -> timedelta:
        cap = self.active_cap_seconds if status in _ACTIVE else self.idle_cap_seconds
        ceiling = min(cap, self.base_seconds * (2 ** min(misses, 20)))
        return timedelta(seconds=ceiling / 2 + rng() * ceiling / 2)


def unlisted(sources: SourceRegistry) -> list[str]:
    """The configured sources that cannot be listed (their open actions are read one by one)."""
    return [s.name for s in sources if not is_polling(s)]


async def refresh(ctx: RefreshContext) -> int:
    """Read every due open action of the sources that cannot be listed, a batch at a time;
    returns how many were read."""
    names = unlisted(ctx.sources)
    if not names:
        return 0
    read = 0
    changed = False
    while True:
        async with ctx.db.write() as session:
            due = await queries.claim_refresh(
                session, sources=names, statuses=OPEN, now=ctx.clock(), lease=ctx.lease, limit=ctx.batch
            )
        for action_id, source_name, external_id, misses in due:
            changed |= await _refresh_one(ctx, action_id, source_name, external_id, misses)
        read += len(due)
        if len(due) < ctx.batch:
            break
    if changed:
        ctx.on_change()
    return read


async def _refresh_one(ctx: RefreshContext, action_id: int, source_name: str, external_id: str, misses: int) -> bool:
    source = ctx.sources.get(source_name)
    observed_at = ctx.clock()
    try:
        upstream = await source.get_action(external_id)
    except NotFoundError:
        log.warning("%s action %s is gone upstream; reading it again later", source_name, external_id)
        upstream = None
    except SourceError as e:
        log.warning("could not read %s action %s, trying again later: %s", source_name, external_id, e)
        upstream = None
    changed = False
    async with ctx.db.write() as session:
        if upstream is not None:
            changed = await queries.adopt_upstream(
                session,
                action_id=action_id,
                upstream=upstream,
                now=ctx.clock(),
                observed_at=observed_at,
                in_flight_from=in_flight_from,
            )
        action = await queries.get_action(session, action_id=action_id)
        if action is None:
            return changed
        misses = 0 if changed else misses + 1
        await queries.refreshed(
            session, action_id=action_id, next_at=ctx.clock() + ctx.delay(Status(action.status), misses), misses=misses
        )
    if changed:
        log.info(
            "%s action %s is now %s upstream", source_name, external_id, upstream.status.value if upstream else "?"
        )
    return changed
