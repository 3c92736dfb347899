"""What the ``/signoff`` command asks of the store, carried out for its listener.

Reading (find, list, history, stats) goes through ``store.reports`` and ``store.queries``.
Deciding goes through the one ``DecisionService`` the buttons use: the same authorization,
self-approval refusal, compare-and-set, audit entry and outbox, with no second implementation.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bot.cards import CardReader
from bot.commands import PAGE_SIZE, Ref
from bot.render import CardView
from bot.render_commands import ActionLine, AuditLine, ListView, StatsView
from core.clock import Clock, utc_now
from core.decide import DecisionService, Outcome, Result
from core.ingest import IngestContext, track
from core.registry import UnknownSource
from sources.base import IntakeError, Op, SourceError, Status
from store import queries, reports
from store.db import Database
from store.models import Action, Decision

MAX_TIMED = 10_000  # actions read for the median; the window's most recent ones
LATEST = 20  # entries "/signoff history" shows without an id

CardPlace = tuple[str, str]  # (channel, ts) of a posted card


@dataclass(frozen=True)
class Lookup:
    """The action a reference names; ``sources`` when it names one in several sources."""

    action: Action | None
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listing:
    view: ListView
    cards: dict[int, CardPlace] = field(default_factory=dict)  # action id -> its card


@dataclass(frozen=True)
class Shown:
    lookup: Lookup
    card: CardView | None = None
    place: CardPlace | None = None


@dataclass(frozen=True)
class Decided:
    lookup: Lookup
    outcome: Outcome | None = None  # None: no such action


@dataclass(frozen=True)
class Tracked:
    """What ``track`` stored, or why nothing was."""

    action_id: int | None = None
    external_id: str = ""
    created: bool = False
    carded: bool = True
    problem: str | None = None


@dataclass(frozen=True)
class Trail:
    lookup: Lookup
    lines: Sequence[AuditLine] = ()
    place: CardPlace | None = None


def action_line(action: Action, link: str | None = None) -> ActionLine:
    assert action.id is not None
    return ActionLine(
        action_id=action.id,
        source=action.source,
        external_id=action.external_id,
        title=action.title,
        status=Status(action.status),
        created_at=action.upstream_created_at,
        link=link,
    )


def audit_line(decision: Decision, *, source: str, title: str) -> AuditLine:
    assert decision.at is not None
    return AuditLine(
        action_id=decision.action_id,
        source=source,
        title=title,
        event=decision.event,
        op=decision.op,
        actor=decision.actor,
        note=decision.note,
        to_status=decision.to_status,
        at=decision.at,
    )


def median_time(times: Sequence[reports.DecisionTime]) -> timedelta | None:
    if not times:
        return None
    seconds = statistics.median((t.decided_at - t.first_seen_at).total_seconds() for t in times)
    return timedelta(seconds=round(seconds))


class CommandService:
    def __init__(
        self,
        *,
        db: Database,
        decisions: DecisionService,
        cards: CardReader,
        clock: Clock = utc_now,
        ingest: IngestContext | None = None,
    ) -> None:
        self._ingest = ingest
        self._db = db
        self._decisions = decisions
        self._cards = cards
        self._clock = clock

    async def authorize(self, user_id: str) -> Result | None:
        """The approvers check every decision passes; action details are for approvers only."""
        return await self._decisions.authorize_any(user_id)

    async def find(self, ref: Ref) -> Lookup:
        async with self._db.read() as session:
            found = await reports.find_actions(
                session,
                action_id=ref.number,
                source=ref.source,
                external_id=ref.external_id,
            )
        if len(found) > 1:
            return Lookup(None, tuple(sorted({a.source for a in found})))
        return Lookup(found[0] if found else None)

    async def list_actions(self, *, status: Status, page: int) -> Listing:
        async with self._db.read() as session:
            total = await reports.count_by_status(session, status=status.value)
            pages = max(1, -(-total // PAGE_SIZE))
            rows = []
            if page <= pages:
                rows = await reports.actions_by_status(
                    session,
                    status=status.value,
                    offset=(page - 1) * PAGE_SIZE,
                    limit=PAGE_SIZE,
                )
        items = [
            ActionLine(
                action_id=r.id,
                source=r.source,
                external_id=r.external_id,
                title=r.title,
                status=Status(r.status),
                created_at=r.created_at,
            )
            for r in rows
        ]
        cards = {r.id: (r.card_channel, r.card_ts) for r in rows if r.card_channel and r.card_ts}
        return Listing(ListView(status=status, page=page, pages=pages, total=total, items=items), cards)

    async def show(self, ref: Ref) -> Shown:
        lookup = await self.find(ref)
        if lookup.action is None or lookup.action.id is None:
            return Shown(lookup)
        card = await self._cards.card(lookup.action.id)
        return Shown(lookup, card, await self._place(lookup.action.id))

    async def decide(self, *, ref: Ref, op: Op, user_id: str, note: str | None, channel: str | None) -> Decided:
        lookup = await self.find(ref)
        if lookup.action is None or lookup.action.id is None:
            return Decided(lookup)
        outcome = await self._decisions.decide(
            action_id=lookup.action.id, op=op, user_id=user_id, note=note, channel=channel
        )
        return Decided(lookup, outcome)

    async def retry(self, *, ref: Ref, user_id: str) -> Decided:
        lookup = await self.find(ref)
        if lookup.action is None or lookup.action.id is None:
            return Decided(lookup)
        return Decided(lookup, await self._decisions.retry(action_id=lookup.action.id, user_id=user_id))

    async def track(self, *, source: str, ids: tuple[str, ...]) -> Tracked:
        """Take an action of a pushing source by its ids, through the core's intake path."""
        if self._ingest is None:
            return Tracked(problem="no source takes actions this way here")
        try:
            stored, upstream = await track(self._ingest, source=source, ids=ids)
        except UnknownSource:
            return Tracked(problem=f"no source {source!r} that takes actions this way is configured")
        except IntakeError as e:
            return Tracked(problem=e.message)
        except SourceError as e:
            return Tracked(problem=str(e)[:300])
        carded = upstream.options is None or bool(upstream.options)
        return Tracked(stored.action_id, upstream.external_id, created=stored.created, carded=carded)

    async def history(self, ref: Ref) -> Trail:
        lookup = await self.find(ref)
        action = lookup.action
        if action is None or action.id is None:
            return Trail(lookup)
        async with self._db.read() as session:
            trail = await queries.audit_trail(session, action_id=action.id)
            place = await reports.card_of(session, action_id=action.id)
        lines = [audit_line(d, source=action.source, title=action.title) for d in trail]
        return Trail(lookup, lines, place)

    async def latest(self) -> list[AuditLine]:
        async with self._db.read() as session:
            rows = await reports.latest_entries(session, limit=LATEST)
        return [audit_line(r.decision, source=r.source, title=r.title) for r in rows]

    async def stats(self, *, days: int) -> StatsView:
        since = self._clock() - timedelta(days=days)
        async with self._db.read() as session:
            counts = await reports.confirmed_counts(session, since=since)
            times = await reports.decision_times(session, since=since, limit=MAX_TIMED + 1)
        by_person: dict[str, dict[str, int]] = {}
        for c in counts:
            by_person.setdefault(c.actor, {})[c.op] = c.count
        sampled = len(times) > MAX_TIMED
        times = times[:MAX_TIMED]
        return StatsView(days=days, by_person=by_person, median=median_time(times), timed=len(times), sampled=sampled)

    async def _place(self, action_id: int) -> CardPlace | None:
        async with self._db.read() as session:
            return await reports.card_of(session, action_id=action_id)
