"""The Slack-facing jobs, as plain async functions; ``app.py`` only wires them to the scheduler.

- ``sync_cards``: the store onto Slack: post each new card once, re-render changed ones.
- ``post_notices``: the messages owed in cards' threads (state changes, tripped rules), once each.
- ``sync_digests``: a flood of new actions listed in one message per channel.
- ``SlackNotifier``: tells the person who decided when the upstream refused it or it failed.

The poll and the delivery of decisions are the core's (``core.ingest``, ``core.deliver``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import ids, render, render_notices
from bot.cards import load_card
from core.clock import Clock, utc_now
from core.deliver import QUEUED, RetryPolicy
from core.events import Changed, Foreground, LiveTasks
from core.registry import SourceRegistry
from policy import Policy
from sources.base import Op, Status
from store import hot, queries
from store.db import Database, Grouped
from store.models import Action, Card, CardState, Digest, Notice, Outbox

__all__ = [
    "CardUpdater",
    "JobContext",
    "Pacer",
    "RetryPolicy",
    "SlackNotifier",
    "post_notices",
    "sync_cards",
    "sync_digests",
]

log = logging.getLogger(__name__)


class Pacer:
    """At most one message per ``interval`` seconds to each channel, from this process:
    Slack allows about one per second per channel, and a flood should not meet its 429s."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, channel: str) -> None:
        if self.interval <= 0:
            return
        loop = asyncio.get_running_loop()
        async with self._locks.setdefault(channel, asyncio.Lock()):
            delay = self._next.get(channel, 0.0) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next[channel] = loop.time() + self.interval


@dataclass
class JobContext:
    db: Database
    sources: SourceRegistry  # what each action's source can do, for its card's buttons
    slack: AsyncWebClient
    kick_cards: Callable[[], None] = lambda: None
    clock: Clock = utc_now
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    card_batch: int = 5
    # How long a claimed item is this worker's. If the worker dies, another takes the item
    # over after this: one Slack call with its 429 waits.
    card_lease: timedelta = timedelta(seconds=60)
    notice_lease: timedelta = timedelta(seconds=60)
    notice_batch: int = 5
    policy: Policy = field(default_factory=Policy)
    pacer: Pacer = field(default_factory=lambda: Pacer(0.0))


class SlackNotifier:
    """Tells the person who decided, ephemerally where they decided, what became of it;
    best effort (the card carries the same news)."""

    def __init__(self, slack: AsyncWebClient) -> None:
        self._slack = slack

    async def conflict(self, entry: Outbox, status: Status, op: Op) -> None:
        await self._tell(entry, render.conflict_text(status, op))

    async def failed(self, entry: Outbox, op: Op, message: str) -> None:
        await self._tell(entry, render.failed_text(op, message))

    async def _tell(self, entry: Outbox, text: str) -> None:
        if not entry.notify_channel or entry.actor[:1] not in ("U", "W"):
            return
        try:
            await self._slack.chat_postEphemeral(channel=entry.notify_channel, user=entry.actor, text=text)
        except SlackApiError as e:
            log.warning("could not tell %s: %s", entry.actor, e.response.get("error"))


# ---- cards ------------------------------------------------------------------------------


async def sync_cards(ctx: JobContext) -> int:
    """Post pending cards (and digests) once and re-render changed ones; returns how many
    were handled."""
    handled = await sync_digests(ctx)
    while True:
        async with ctx.db.write() as session:
            claimed = await queries.claim_cards(session, now=ctx.clock(), lease=ctx.card_lease, limit=ctx.card_batch)
            # A card already "posting" was claimed before by a worker that may have posted it.
            recovering = {card.id for card, _ in claimed if card.state == CardState.POSTING.value}
            for card, _action in claimed:
                if card.state == CardState.PENDING.value:
                    await queries.mark_card_posting(session, card_id=card.id or 0)
        for card, action in claimed:
            await _sync_card(ctx, card, action, recovering=card.id in recovering)
        handled += len(claimed)
        if len(claimed) < ctx.card_batch:
            return handled


async def _sync_card(ctx: JobContext, card: Card, action: Action, *, recovering: bool) -> None:
    assert card.id is not None and action.id is not None
    if card.state == CardState.DIGESTED.value and card.digest_id is not None:
        async with ctx.db.write() as session:
            await queries.digested_card_shown(
                session, card_id=card.id, digest_id=card.digest_id, version=action.version
            )
        return

    async def load(reads: hot.Reads) -> tuple[render.CardView, Sequence[Notice]]:
        assert action.id is not None
        view = await load_card(reads, action=action, caps=ctx.sources.capabilities(action.source), policy=ctx.policy)
        # Only a watched action can have a trip alert, only an escalated card an escalated copy.
        live = (
            await reads.posted_notices(action_id=action.id, kinds=render_notices.LIVE_KINDS)
            if action.watch_started_at is not None or card.escalated_at is not None
            else ()
        )
        return view, live

    view, live = await ctx.db.hot.read(load)
    blocks = render.card_blocks(view)
    text = render.card_text(view)
    try:
        if card.ts is None:
            ts = await _find_posted(ctx, card, action.id) if recovering else None
            if ts is None:
                await ctx.pacer.wait(card.channel)
                response = await ctx.slack.chat_postMessage(
                    channel=card.channel,
                    text=text,
                    blocks=blocks,
                    metadata=render.card_metadata(view),
                    unfurl_links=False,
                    unfurl_media=False,
                )
                ts = str(response["ts"])
            async with ctx.db.write() as session:
                await queries.card_posted(session, card_id=card.id, ts=ts, version=action.version, now=ctx.clock())
        else:
            await ctx.slack.chat_update(channel=card.channel, ts=card.ts, text=text, blocks=blocks)
            async with ctx.db.write() as session:
                await queries.card_rendered(session, card_id=card.id, version=action.version)
        for notice in live:
            await _refresh_notice(ctx, notice, card, action, view)
    except SlackApiError as e:
        error = str(e.response.get("error") or e)
        next_at = ctx.clock() + ctx.retry.delay(card.attempts)
        log.warning(
            "card %s for action %s: Slack said %s; retrying at %s", card.id, action.id, error, next_at.isoformat()
        )
        async with ctx.db.write() as session:
            await queries.card_failed(session, card_id=card.id, error=error, next_attempt_at=next_at)


async def _find_posted(ctx: JobContext, card: Card, action_id: int) -> str | None:
    """Look for a card already posted for this action, by the metadata every card carries."""
    return await _find_in_channel(ctx, card.channel, ids.CARD_EVENT_TYPE, "action_id", action_id)


# ---- notices ----------------------------------------------------------------------------

# Slack errors that no retry will fix: the notice is given up (the card still shows the state).
_NOTICE_FATAL = frozenset({"channel_not_found", "is_archived", "not_in_channel", "thread_not_found", "msg_too_long"})


async def post_notices(ctx: JobContext) -> int:
    """Post the notices owed in cards' threads, oldest first; returns how many were handled."""
    handled = 0
    while True:
        async with ctx.db.write() as session:
            claimed = await queries.claim_notices(
                session, now=ctx.clock(), lease=ctx.notice_lease, limit=ctx.notice_batch
            )
        for notice, card, thread_ts in claimed:
            await _post_notice(ctx, notice, card, thread_ts)
        handled += len(claimed)
        if len(claimed) < ctx.notice_batch:
            return handled


async def _post_notice(ctx: JobContext, notice: Notice, card: Card, thread: str) -> None:
    assert notice.id is not None

    async def load(reads: hot.Reads) -> tuple[Action | None, render.CardView | None]:
        action = await reads.action(action_id=notice.action_id)
        if action is None or not (notice.channel or notice.kind in render_notices.LIVE_KINDS):
            return action, None
        return action, await load_card(
            reads, action=action, caps=ctx.sources.capabilities(action.source), policy=ctx.policy
        )

    action, card_view = await ctx.db.hot.read(load)
    assert action is not None
    sent = await _send_notice(ctx, notice, card, thread, action, card_view)
    async with ctx.db.write() as session:
        await _record_notice(ctx, session, notice, sent)


async def _send_notice(
    ctx: JobContext, notice: Notice, card: Card, thread: str, action: Action, card_view: render.CardView | None
) -> str | SlackApiError:
    """Post one notice: its ts, or Slack's refusal."""
    assert notice.id is not None
    # An escalation goes to the top of another channel; everything else into the card's thread.
    channel, thread_ts = (notice.channel, None) if notice.channel else (card.channel, thread)
    view = _notice_view(notice, action)
    try:
        # Claimed before (state "posting") by a worker that may have posted it: look first.
        ts = await _find_notice(ctx, channel, thread_ts, notice.id) if notice.attempts > 1 else None
        if ts is None:
            await ctx.pacer.wait(channel)
            response = await ctx.slack.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                reply_broadcast=notice.broadcast and thread_ts is not None,
                text=render_notices.notice_text(view),
                blocks=render_notices.notice_blocks(view, card_view),
                metadata=render_notices.notice_metadata(view),
                unfurl_links=False,
                unfurl_media=False,
            )
            ts = str(response["ts"])
        return ts
    except SlackApiError as e:
        return e


async def _record_notice(ctx: JobContext, session: AsyncSession, notice: Notice, sent: str | SlackApiError) -> None:
    """Write back how posting a notice went: posted, retried later, or given up."""
    assert notice.id is not None
    if isinstance(sent, str):
        await queries.notice_posted(session, notice_id=notice.id, ts=sent, now=ctx.clock())
        return
    error = str(sent.response.get("error") or sent)
    if error in _NOTICE_FATAL or notice.attempts >= ctx.retry.max_attempts:
        log.error("notice %s for action %s given up: Slack said %s", notice.id, notice.action_id, error)
        await queries.notice_failed(session, notice_id=notice.id, error=error)
        return
    next_at = ctx.clock() + ctx.retry.delay(notice.attempts - 1)
    log.warning(
        "notice %s for action %s: Slack said %s; retrying at %s",
        notice.id,
        notice.action_id,
        error,
        next_at.isoformat(),
    )
    await queries.notice_retry_later(session, notice_id=notice.id, error=error, next_attempt_at=next_at)


def _notice_view(notice: Notice, action: Action) -> render_notices.NoticeView:
    assert notice.id is not None
    return render_notices.NoticeView(
        notice_id=notice.id,
        action_id=notice.action_id,
        kind=notice.kind,
        payload=dict(notice.payload or {}),
        source=action.source,
        title=action.title,
    )


async def _refresh_notice(ctx: JobContext, notice: Notice, card: Card, action: Action, view: render.CardView) -> None:
    """Re-render a posted notice with buttons (a tripped rule's alert, an escalated copy of
    the card) as the card changes. Best effort: the card is the record, and a click on a
    stale button is refused by the service anyway."""
    assert notice.id is not None and notice.ts is not None
    shown = _notice_view(notice, action)
    try:
        await ctx.slack.chat_update(
            channel=notice.channel or card.channel,
            ts=notice.ts,
            text=render_notices.notice_text(shown),
            blocks=render_notices.notice_blocks(shown, view),
        )
    except SlackApiError as e:
        log.warning("notice %s for action %s not re-rendered: %s", notice.id, action.id, e.response.get("error"))


async def _find_notice(ctx: JobContext, channel: str, thread_ts: str | None, notice_id: int) -> str | None:
    """A notice already posted (in the thread, or the channel), found by the metadata it carries."""
    return await _find_in_channel(ctx, channel, ids.NOTICE_EVENT_TYPE, "notice_id", notice_id, thread_ts=thread_ts)


# ---- live updates -------------------------------------------------------------------------


@dataclass
class _Pending:
    """Changes to one card waiting for their pass."""

    notice_ids: set[int]
    due: float  # loop time
    urgent: bool  # something landed: shown at once, whatever else is under way
    since: float  # loop time of the first change
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class CardUpdater:
    """Re-renders the cards of actions changed in this process, and posts the notices those
    changes owed, at once: one read and one write per card, whatever changed meanwhile.

    Changes to one card are coalesced into one pass. A change that landed is shown within
    ``urgent_seconds``; one that usually has another right behind it (a decision in flight,
    about to land upstream) waits up to ``patient_seconds`` for it, counted from when this
    process's upstream call started (``started``; a burst of decisions queues here first), so
    that a decision that lands quickly is rendered once, landed, and one that takes longer is
    shown in flight meanwhile (never later than ``hold_seconds`` after it was recorded). Passes of one card never overlap. Only work the change claimed for this process
    (``queries.Claim``) is done here; anything that cannot be (the card not posted yet, Slack
    refusing) goes back to the sweeps."""

    def __init__(
        self,
        ctx: JobContext,
        *,
        urgent_seconds: float = 0.05,
        patient_seconds: float = 1.5,
        kick_sweeps: Callable[[], None] = lambda: None,
        foreground: Foreground | None = None,
        at_once: int = 4,
        started: Callable[[int], float | None] = lambda _action_id: None,
        hold_seconds: float = 10.0,
    ) -> None:
        self._ctx = ctx
        self._foreground = foreground or Foreground()
        self._limit = asyncio.Semaphore(at_once)  # passes under way at once (each holds a connection a while)
        self._urgent = urgent_seconds
        self._patient = patient_seconds
        self._kick_sweeps = kick_sweeps
        self._started = started  # Deliverer.started: where this process's delivery of an action is
        self._hold = hold_seconds
        self._pending: dict[int, _Pending] = {}  # action id -> what waits for its next pass
        self._busy: dict[int, asyncio.Task[None]] = {}  # action id -> its pass under way
        self._tasks = LiveTasks()
        # Passes ending together share one write (group commit).
        self._writes = Grouped(ctx.db.hot.writing)  # statements only: on the driver's connection

    def changed(self, changes: Sequence[Changed]) -> None:
        loop = asyncio.get_running_loop()
        for change in changes:
            due = loop.time() + (self._urgent if change.urgent else self._patient)
            pending = self._pending.get(change.action_id)
            if pending is not None:
                pending.notice_ids.update(change.notice_ids)
                pending.urgent = pending.urgent or change.urgent
                if due < pending.due:
                    pending.due = due
                    pending.wake.set()
                continue
            pending = self._pending[change.action_id] = _Pending(
                set(change.notice_ids), due, change.urgent, loop.time()
            )
            self._tasks.spawn(self._run(change.action_id, pending))

    def carrying(self, action_id: int) -> None:
        """The action's delivery here started (the ``carrying`` event): a render held
        while it waited its turn is due again ``patient_seconds`` from now."""
        pending = self._pending.get(action_id)
        if pending is not None and not pending.urgent:
            pending.due = min(pending.due, asyncio.get_running_loop().time())
            pending.wake.set()

    def released(self, action_id: int) -> None:
        """The action's delivery here ended (the ``released`` event): a render held for
        it is due now. A decision left for a retry later is shown in flight at once."""
        pending = self._pending.get(action_id)
        if pending is not None and not pending.urgent:
            pending.due = min(pending.due, asyncio.get_running_loop().time())
            pending.wake.set()

    async def drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        for pending in self._pending.values():  # no waiting for what could follow: now
            pending.due = loop.time()
            pending.wake.set()
        await self._tasks.drain(timeout)

    def cancel(self) -> None:
        self._tasks.cancel()

    async def _run(self, action_id: int, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while (delay := pending.due - loop.time()) > 0:
                pending.wake.clear()
                try:
                    await asyncio.wait_for(pending.wake.wait(), delay)
                except TimeoutError:
                    pass
            later = None if pending.urgent else self._held_until(action_id, pending.since)
            if later is None:
                break
            pending.due = later
        previous = self._busy.get(action_id)
        if previous is not None:
            await asyncio.wait({previous})  # changes meanwhile still join this pass
        if self._pending.get(action_id) is pending:
            del self._pending[action_id]
        this = asyncio.current_task()
        assert this is not None
        self._busy[action_id] = this
        try:
            await self._foreground.idle()  # the clicks people wait on first
            await self._update(action_id, sorted(pending.notice_ids))
        except (TimeoutError, SQLAlchemyError, OSError, aiohttp.ClientError, SlackClientError) as e:
            # The store or Slack could not be reached: the leases end and the sweeps retry.
            log.warning("card of action %s not updated now (%s); the card sync will", action_id, type(e).__name__)
        finally:
            if self._busy.get(action_id) is this:
                del self._busy[action_id]

    def _held_until(self, action_id: int, since: float) -> float | None:
        """How long more a decision in flight waits before it is shown so: its upstream call
        gets ``patient_seconds`` from when it started, not from when it was recorded (a burst
        of decisions queued here is not a burst of "in flight" renders), but no change waits
        past ``hold_seconds``. None: render now."""
        started = self._started(action_id)
        now = asyncio.get_running_loop().time()
        if started is None or now >= since + self._hold:
            return None
        # Queued: until its delivery starts (``carrying`` wakes it) or the hold ends.
        until = since + self._hold if started == QUEUED else min(since + self._hold, started + self._patient)
        return until if until > now else None

    async def _update(self, action_id: int, notice_ids: list[int]) -> None:
        """One pass: read what the card shows (sharing a read with other passes due now),
        render it and its notices to Slack (at most ``at_once`` passes talk to Slack at once),
        then write back what was shown (sharing a write with other passes ending now)."""
        ctx = self._ctx
        loaded = await ctx.db.hot.read(lambda reads: self._load(reads, action_id, notice_ids))
        if loaded is None:
            # Not posted yet (or listed in a digest): the sweeps post it, then its notices.
            await self._writes.run(lambda session: _release(session, action_id, notice_ids))
            self._kick_sweeps()
            return
        card, action, view, live, notices = loaded
        assert card.id is not None and card.ts is not None
        card_id, ts = card.id, card.ts
        async with self._limit:
            try:
                await ctx.slack.chat_update(
                    channel=card.channel, ts=ts, text=render.card_text(view), blocks=render.card_blocks(view)
                )
            except SlackApiError as e:
                error = str(e.response.get("error") or e)
                log.warning("card %s for action %s: Slack said %s; the card sync retries", card_id, action_id, error)
                retry_at = ctx.clock() + ctx.retry.delay(card.attempts)

                async def failed(session: AsyncSession) -> None:
                    await queries.card_failed(session, card_id=card_id, error=error, next_attempt_at=retry_at)
                    await queries.release_claim(session, card_id=None, notice_ids=notice_ids)

                await self._writes.run(failed)
                self._kick_sweeps()
                return
            for notice in live:
                await _refresh_notice(ctx, notice, card, action, view)
            sent = [(n, await _send_notice(ctx, n, card, ts, action, view)) for n in notices]

        async def rendered(session: AsyncSession) -> bool:
            newer = await queries.card_rendered(
                session, card_id=card_id, version=action.version, keep_lease_if_newer=True
            )
            for notice, result in sent:
                await _record_notice(ctx, session, notice, result)
            return newer

        newer = await self._writes.run(rendered)
        if newer and action_id not in self._pending:
            # Changed again while this pass rendered, by a change that told no one here (the
            # lease kept the sweeps away): one more pass.
            self.changed([Changed(action_id)])

    async def _load(self, reads: hot.Reads, action_id: int, notice_ids: list[int]) -> _Loaded | None:
        ctx = self._ctx
        shown = await reads.card_shown(action_id=action_id)
        if shown is None:
            return None
        card, action, latest = shown
        if card.ts is None or card.state != CardState.POSTED.value:
            return None
        caps = ctx.sources.capabilities(action.source)
        view = await load_card(reads, action=action, caps=caps, policy=ctx.policy, latest=latest)
        live = (
            await reads.posted_notices(action_id=action_id, kinds=render_notices.LIVE_KINDS)
            if action.watch_started_at is not None or card.escalated_at is not None
            else ()
        )
        notices = await reads.notices_by_id(notice_ids=notice_ids)
        return card, action, view, live, notices


_Loaded = tuple[Card, Action, render.CardView, Sequence[Notice], Sequence[Notice]]


async def _release(session: AsyncSession, action_id: int, notice_ids: list[int]) -> None:
    card = await queries.card_for_action(session, action_id=action_id)
    await queries.release_claim(session, card_id=card.id if card else None, notice_ids=notice_ids)


# ---- digests ----------------------------------------------------------------------------


async def sync_digests(ctx: JobContext) -> int:
    """Post each digest once (found again by its metadata after a crash mid-post) and
    re-render it when an action it lists changes."""
    async with ctx.db.write() as session:
        claimed = await queries.claim_digests(session, now=ctx.clock(), lease=ctx.card_lease, limit=ctx.card_batch)
    for digest in claimed:
        await _sync_digest(ctx, digest)
    return len(claimed)


async def _sync_digest(ctx: JobContext, digest: Digest) -> None:
    assert digest.id is not None
    async with ctx.db.read() as session:
        actions = await queries.digest_items(session, digest_id=digest.id)
    items = [render.DigestItem(a.id or 0, a.title, a.type, Status(a.status)) for a in actions]
    source = actions[0].source if actions else ""  # one poll of one source made the digest
    blocks, text = render.digest_blocks(items, source), render.digest_text(items, source)
    try:
        if digest.ts is None:
            ts = None
            if digest.attempts > 1:
                ts = await _find_in_channel(ctx, digest.channel, ids.DIGEST_EVENT_TYPE, "digest_id", digest.id)
            if ts is None:
                await ctx.pacer.wait(digest.channel)
                response = await ctx.slack.chat_postMessage(
                    channel=digest.channel,
                    text=text,
                    blocks=blocks,
                    metadata=render.digest_metadata(digest.id),
                    unfurl_links=False,
                    unfurl_media=False,
                )
                ts = str(response["ts"])
            async with ctx.db.write() as session:
                await queries.digest_posted(session, digest_id=digest.id, ts=ts)
        else:
            await ctx.slack.chat_update(channel=digest.channel, ts=digest.ts, text=text, blocks=blocks)
            async with ctx.db.write() as session:
                await queries.digest_rendered(session, digest_id=digest.id)
    except SlackApiError as e:
        error = str(e.response.get("error") or e)
        next_at = ctx.clock() + ctx.retry.delay(digest.attempts)
        log.warning("digest %s: Slack said %s; retrying at %s", digest.id, error, next_at.isoformat())
        async with ctx.db.write() as session:
            await queries.digest_failed(session, digest_id=digest.id, error=error, next_attempt_at=next_at)
    ctx.kick_cards()  # notices waiting for the digest's thread


async def _find_in_channel(
    ctx: JobContext, channel: str, event_type: str, key: str, value: int, *, thread_ts: str | None = None
) -> str | None:
    """The ts of a message Signoff posted (in the channel, or in one thread) whose metadata
    says ``event_type`` with ``key`` = ``value``: how a post whose answer was lost is found
    again instead of posted twice. Looks through the latest 2000 messages."""
    cursor = None
    for _ in range(10):
        if thread_ts is not None:
            response = await ctx.slack.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=200, cursor=cursor
            )
        else:
            response = await ctx.slack.conversations_history(
                channel=channel, include_all_metadata=True, limit=200, cursor=cursor
            )
        for message in response.get("messages") or []:
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == event_type and (metadata.get("event_payload") or {}).get(key) == value:
                return str(message["ts"])
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return None
    return None
