"""Scheduled work as plain async functions; ``app.py`` only wires them to the scheduler.

- ``poll``: the source's actions into the store (new ones, and status changes seen upstream).
- ``deliver_outbox``: queued decisions to the source, with backoff, reconciling on 409.
- ``sync_cards``: the store onto Slack: post each new card once, re-render changed ones.
- ``post_notices``: the messages owed in cards' threads (state changes, tripped rules), once each.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import ids, render, render_notices
from bot.auth import ApproverCheck
from bot.service import Clock, load_card, utc_now
from policy import Policy
from sources.base import (
    IN_FLIGHT,
    TRANSITIONS,
    ActionSource,
    ConflictError,
    DecisionRequest,
    NotFoundError,
    Op,
    SourceError,
    Status,
    UpstreamAction,
)
from store import queries
from store.db import Database
from store.models import Action, Card, CardState, Digest, Notice, Outbox

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
    source: ActionSource
    slack: AsyncWebClient
    people: ApproverCheck
    channel: str
    kick_cards: Callable[[], None] = lambda: None
    clock: Clock = utc_now
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    page_size: int = 100
    # Claim only what one worker finishes well within its lease: one round of concurrent
    # deliveries, a few cards posted one after another.
    deliveries_at_once: int = 8
    card_batch: int = 5
    # How long a claimed item is this worker's. If the worker dies, another takes the item
    # over after this. An outbox lease must outlast one upstream call (app.py derives it from
    # FLOKIT_TIMEOUT_SECONDS); a card lease, one Slack call with its 429 waits.
    outbox_lease: timedelta = timedelta(seconds=35)
    card_lease: timedelta = timedelta(seconds=60)
    notice_lease: timedelta = timedelta(seconds=60)
    notice_batch: int = 5
    policy: Policy = field(default_factory=Policy)  # routes pick each new action's channel
    digest_threshold: int = 10  # more new actions than this for one channel in one poll: a digest
    pacer: Pacer = field(default_factory=lambda: Pacer(0.0))


# ---- poll -------------------------------------------------------------------------------


async def poll(ctx: JobContext) -> None:
    """One poll cycle. An upstream failure ends the cycle with a warning; the next retries."""
    try:
        changed = await _poll(ctx)
    except SourceError as e:
        log.warning("poll of %s failed, retrying next cycle: %s", ctx.source.name, e)
        return
    if changed:
        ctx.kick_cards()


async def _poll(ctx: JobContext) -> bool:
    source = ctx.source
    watched = frozenset(source.listed_statuses()) | IN_FLIGHT
    listed_open: set[int] = set()  # stored ids, held here as open, that the upstream listed
    new: list[str] = []
    moved: list[tuple[int, UpstreamAction, datetime]] = []
    for status in source.listed_statuses():
        offset = 0
        while True:
            observed_at = ctx.clock()
            page = await source.list_actions(status=status, limit=ctx.page_size, offset=offset)
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

    changed = await _discover_all(ctx, new)
    for action_id, item, observed_at in moved:
        async with ctx.db.write() as session:
            changed |= await queries.adopt_upstream(
                session, action_id=action_id, upstream=item, now=ctx.clock(), observed_at=observed_at
            )
    if held_open != len(listed_open):
        changed |= await _sync_unlisted(ctx, watched, listed_open)
    return changed


async def _sync_unlisted(ctx: JobContext, watched: frozenset[Status], listed: set[int]) -> bool:
    """Held as open here but listed under none of the open statuses: it moved upstream to a
    state we cannot list (rejected, rolled back, ...). Read each to learn which. Only runs
    when the counts say some are missing, and reads the store a page at a time."""
    source, changed, after = ctx.source, False, 0
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
                    session, action_id=action_id, upstream=upstream, now=ctx.clock(), observed_at=observed_at
                )
        if len(held) < 1000:
            return changed
        after = held[-1][0]


async def _discover_all(ctx: JobContext, new: list[str]) -> bool:
    """Read and store each new action, one at a time (nothing held but the ids). When this
    poll found more than ``digest_threshold`` of them, a flood, they are listed in one digest
    per channel (made when its first action is stored) instead of getting a card each."""
    flood = len(new) > ctx.digest_threshold
    if flood:
        log.info("%d new %s actions: digests instead of a card each", len(new), ctx.source.name)
    digests: dict[str, int] = {}
    changed = False
    for external_id in new:
        try:
            detail = await ctx.source.get_action(external_id)
        except SourceError as e:
            log.warning("could not read %s action %s, retrying next cycle: %s", ctx.source.name, external_id, e)
            continue
        if detail.status is not Status.READY:
            continue
        channel = ctx.policy.channel_for(detail.type, detail.risk, ctx.channel)
        async with ctx.db.write() as session:
            digest = None
            if flood and channel not in digests:
                digest = await queries.create_digest(session, channel=channel, now=ctx.clock())
            stored = await queries.insert_action(
                session, source=ctx.source.name, upstream=detail, channel=channel, now=ctx.clock(),
                digest_id=digest.id if digest is not None else digests.get(channel),
            )
            if digest is not None:
                if stored is None:
                    await session.delete(digest)  # another poller stored it first: no empty digest
                else:
                    digests[channel] = digest.id or 0
        if stored is not None:
            log.info("new %s action %s stored (id %s)", ctx.source.name, external_id, stored.id)
            changed = True
    return changed


# ---- outbox -----------------------------------------------------------------------------


async def deliver_outbox(ctx: JobContext) -> int:
    """Deliver every due outbox entry, a few at a time; returns how many were attempted.
    Each entry is its own action's only one in flight (the compare-and-set saw to that)."""
    attempted = 0
    limit = asyncio.Semaphore(ctx.deliveries_at_once)

    async def deliver(entry: Outbox) -> None:
        async with limit:
            await _deliver(ctx, entry)

    while True:
        async with ctx.db.write() as session:
            entries = await queries.claim_outbox(session, now=ctx.clock(), lease=ctx.outbox_lease, limit=ctx.deliveries_at_once)
        await asyncio.gather(*(deliver(entry) for entry in entries))
        attempted += len(entries)
        if len(entries) < ctx.deliveries_at_once:
            return attempted


async def _identifier(ctx: JobContext, entry: Outbox) -> str:
    """What the upstream records as the decider: the Slack user's email, else their ID.
    Resolved once and stored, so every retry sends the same request."""
    if entry.actor_identifier:
        return entry.actor_identifier
    identifier = entry.actor
    if entry.actor[:1] in ("U", "W"):
        identifier = await ctx.people.email(entry.actor) or entry.actor
    async with ctx.db.write() as session:
        await queries.set_outbox_identifier(session, outbox_id=entry.id or 0, identifier=identifier)
    return identifier


async def _deliver(ctx: JobContext, entry: Outbox) -> None:
    assert entry.id is not None
    op = Op(entry.op)
    async with ctx.db.read() as session:
        action = await queries.get_action(session, action_id=entry.action_id)
    assert action is not None
    identifier = await _identifier(ctx, entry)
    request = DecisionRequest(
        op=op, external_id=action.external_id, actor=identifier, note=entry.note,
        idempotency_key=entry.idempotency_key,
    )
    try:
        try:
            upstream = await ctx.source.send(request)
        except ConflictError as conflict:
            await _reconcile(ctx, entry, action, identifier, conflict)
            return
    except SourceError as e:
        await _failed_attempt(ctx, entry, e)
        return
    async with ctx.db.write() as session:
        await queries.outbox_delivered(session, outbox_id=entry.id, upstream=upstream, now=ctx.clock())
    log.info("%s of %s action %s delivered", op.value, ctx.source.name, action.external_id)
    ctx.kick_cards()


async def _reconcile(ctx: JobContext, entry: Outbox, action: Action, identifier: str, conflict: ConflictError) -> None:
    """409: read the action's real state. If it is where our decision leads (an earlier
    attempt of ours landed but its answer was lost), the decision is delivered; otherwise
    the upstream's state wins and the clicker is told."""
    assert entry.id is not None
    op = Op(entry.op)
    upstream = await ctx.source.get_action(action.external_id)
    ours = upstream.status is TRANSITIONS[op].outcome and (
        op is Op.ROLLBACK or upstream.decided_by in (None, identifier)
    )
    async with ctx.db.write() as session:
        if ours:
            await queries.outbox_delivered(session, outbox_id=entry.id, upstream=upstream, now=ctx.clock())
        else:
            await queries.outbox_conflict(session, outbox_id=entry.id, upstream=upstream, now=ctx.clock())
    ctx.kick_cards()
    if not ours:
        log.info("%s of %s refused upstream (%s); adopted %s", op.value, action.external_id, conflict, upstream.status.value)
        await _notify(ctx, entry, render.conflict_text(upstream.status, op))


async def _failed_attempt(ctx: JobContext, entry: Outbox, error: SourceError) -> None:
    assert entry.id is not None
    message = str(error)[:500]
    attempt = entry.attempts + 1
    if error.retryable and attempt < ctx.retry.max_attempts:
        next_at = ctx.clock() + ctx.retry.delay(entry.attempts)
        log.warning("%s for action %s failed (attempt %d), retrying at %s: %s",
                    entry.op, entry.action_id, attempt, next_at.isoformat(), message)
        async with ctx.db.write() as session:
            await queries.outbox_retry_later(session, outbox_id=entry.id, error=message, next_attempt_at=next_at)
        return
    log.error("%s for action %s failed for good after %d attempt(s): %s", entry.op, entry.action_id, attempt, message)
    async with ctx.db.write() as session:
        await queries.outbox_failed(session, outbox_id=entry.id, error=message, now=ctx.clock())
    ctx.kick_cards()
    await _notify(ctx, entry, render.failed_text(Op(entry.op), message))


async def _notify(ctx: JobContext, entry: Outbox, text: str) -> None:
    """Tell the person who decided; best effort (the card carries the same news)."""
    if not entry.notify_channel or entry.actor[:1] not in ("U", "W"):
        return
    try:
        await ctx.slack.chat_postEphemeral(channel=entry.notify_channel, user=entry.actor, text=text)
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
            await queries.digested_card_shown(session, card_id=card.id, digest_id=card.digest_id, version=action.version)
        return
    async with ctx.db.read() as session:
        view = await load_card(session, action=action, caps=ctx.source.capabilities, policy=ctx.policy)
        # Only a watched action can have a trip alert, only an escalated card an escalated copy.
        live = (
            await queries.posted_notices(session, action_id=action.id, kinds=render_notices.LIVE_KINDS)
            if action.watch_started_at is not None or card.escalated_at is not None else ()
        )
    blocks = render.card_blocks(view)
    text = render.card_text(view)
    try:
        if card.ts is None:
            ts = await _find_posted(ctx, card, action.id) if recovering else None
            if ts is None:
                await ctx.pacer.wait(card.channel)
                response = await ctx.slack.chat_postMessage(
                    channel=card.channel, text=text, blocks=blocks, metadata=render.card_metadata(view),
                    unfurl_links=False, unfurl_media=False,
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
        log.warning("card %s for action %s: Slack said %s; retrying at %s", card.id, action.id, error, next_at.isoformat())
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
            claimed = await queries.claim_notices(session, now=ctx.clock(), lease=ctx.notice_lease, limit=ctx.notice_batch)
        for notice, card, thread_ts in claimed:
            await _post_notice(ctx, notice, card, thread_ts)
        handled += len(claimed)
        if len(claimed) < ctx.notice_batch:
            return handled


async def _post_notice(ctx: JobContext, notice: Notice, card: Card, thread: str) -> None:
    assert notice.id is not None
    async with ctx.db.read() as session:
        action = await queries.get_action(session, action_id=notice.action_id)
        assert action is not None
        card_view = (
            await load_card(session, action=action, caps=ctx.source.capabilities, policy=ctx.policy)
            if notice.channel else None
        )
    # An escalation goes to the top of another channel; everything else into the card's thread.
    channel, thread_ts = (notice.channel, None) if notice.channel else (card.channel, thread)
    view = _notice_view(notice, action)
    try:
        # Claimed before (state "posting") by a worker that may have posted it: look first.
        ts = await _find_notice(ctx, channel, thread_ts, notice.id) if notice.attempts > 1 else None
        if ts is None:
            await ctx.pacer.wait(channel)
            response = await ctx.slack.chat_postMessage(
                channel=channel, thread_ts=thread_ts, reply_broadcast=notice.broadcast and thread_ts is not None,
                text=render_notices.notice_text(view), blocks=render_notices.notice_blocks(view, card_view),
                metadata=render_notices.notice_metadata(view), unfurl_links=False, unfurl_media=False,
            )
            ts = str(response["ts"])
        async with ctx.db.write() as session:
            await queries.notice_posted(session, notice_id=notice.id, ts=ts, now=ctx.clock())
    except SlackApiError as e:
        error = str(e.response.get("error") or e)
        async with ctx.db.write() as session:
            if error in _NOTICE_FATAL or notice.attempts >= ctx.retry.max_attempts:
                log.error("notice %s for action %s given up: Slack said %s", notice.id, notice.action_id, error)
                await queries.notice_failed(session, notice_id=notice.id, error=error)
                return
            next_at = ctx.clock() + ctx.retry.delay(notice.attempts - 1)
            log.warning("notice %s for action %s: Slack said %s; retrying at %s", notice.id, notice.action_id,
                        error, next_at.isoformat())
            await queries.notice_retry_later(session, notice_id=notice.id, error=error, next_attempt_at=next_at)


def _notice_view(notice: Notice, action: Action) -> render_notices.NoticeView:
    assert notice.id is not None
    return render_notices.NoticeView(
        notice_id=notice.id, action_id=notice.action_id, kind=notice.kind, payload=dict(notice.payload or {}),
        source=action.source, title=action.title,
    )


async def _refresh_notice(ctx: JobContext, notice: Notice, card: Card, action: Action, view: render.CardView) -> None:
    """Re-render a posted notice with buttons (a tripped rule's alert, an escalated copy of
    the card) as the card changes. Best effort: the card is the record, and a click on a
    stale button is refused by the service anyway."""
    assert notice.id is not None and notice.ts is not None
    shown = _notice_view(notice, action)
    try:
        await ctx.slack.chat_update(
            channel=notice.channel or card.channel, ts=notice.ts, text=render_notices.notice_text(shown),
            blocks=render_notices.notice_blocks(shown, view),
        )
    except SlackApiError as e:
        log.warning("notice %s for action %s not re-rendered: %s", notice.id, action.id, e.response.get("error"))


async def _find_notice(ctx: JobContext, channel: str, thread_ts: str | None, notice_id: int) -> str | None:
    """A notice already posted (in the thread, or the channel), found by the metadata it carries."""
    return await _find_in_channel(ctx, channel, ids.NOTICE_EVENT_TYPE, "notice_id", notice_id, thread_ts=thread_ts)


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
    blocks, text = render.digest_blocks(items, ctx.source.name), render.digest_text(items, ctx.source.name)
    try:
        if digest.ts is None:
            ts = None
            if digest.attempts > 1:
                ts = await _find_in_channel(ctx, digest.channel, ids.DIGEST_EVENT_TYPE, "digest_id", digest.id)
            if ts is None:
                await ctx.pacer.wait(digest.channel)
                response = await ctx.slack.chat_postMessage(
                    channel=digest.channel, text=text, blocks=blocks, metadata=render.digest_metadata(digest.id),
                    unfurl_links=False, unfurl_media=False,
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
