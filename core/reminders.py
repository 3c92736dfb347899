"""Nothing waits forever unnoticed: a plain async job (``app.py`` schedules it every minute)
over the actions still awaiting a decision.

- After ``remind_after`` a reminder goes in the card's thread, mentioning the approvers and
  listing the rollback conditions that a person will have to check.
- After ``escalate_after`` the card is re-posted to the escalation channel, if one is set.
- After ``expire_after`` (off unless configured) the action expires: the card says so and
  loses its buttons; the upstream's word still wins if it moves the action later.

Timings come from the action's route in ``signoff.toml`` over the settings. Reminders and
escalations wait for quiet hours to end; each is claimed with a compare-and-set on the card,
so several replicas send it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from core import rules
from core.clock import Clock, QuietHours, utc_now
from core.people import Approvers, ApproversFor
from policy import Policy
from store import queries
from store.db import Database
from store.models import Action, Card

log = logging.getLogger(__name__)


@dataclass
class ReminderContext:
    db: Database
    policy: Policy
    approvers_for: ApproversFor  # an action's type and risk -> who may decide
    quiet: QuietHours | None = None
    clock: Clock = utc_now
    kick_notices: Callable[[], None] = lambda: None
    kick_cards: Callable[[], None] = lambda: None
    page: int = 200


def mentions(approvers: Approvers) -> list[str]:
    """How to ping the people who may decide (nobody in particular when everyone may)."""
    if approvers.everyone:
        return []
    return [f"<@{u}>" for u in sorted(approvers.users)] + [f"<!subteam^{g}>" for g in sorted(approvers.groups)]


def unparsed_conditions(action: Action) -> list[str]:
    return [
        str(c) for c in action.rollback_conditions or [] if isinstance(rules.parse_condition(str(c)), rules.Unparsed)
    ]


async def remind(ctx: ReminderContext) -> int:
    """One pass over undecided actions; returns how many reminders, escalations and
    expiries were made."""
    made, after = 0, 0
    while True:
        async with ctx.db.read() as session:
            rows = await queries.undecided(session, after_id=after, limit=ctx.page)
        now = ctx.clock()
        quiet = ctx.quiet is not None and ctx.quiet.contains(now)
        for card, action in rows:
            made += await _one(ctx, card, action, now, quiet=quiet)
        if len(rows) < ctx.page:
            break
        after = rows[-1][1].id or 0
    if made:
        ctx.kick_notices()
        ctx.kick_cards()
    return made


async def _one(ctx: ReminderContext, card: Card, action: Action, now: datetime, *, quiet: bool) -> int:
    assert card.id is not None and action.id is not None
    timings = ctx.policy.timings(action.type, action.risk, source=action.source)
    since = action.first_seen_at or now
    waited = now - since
    if timings.expire_after is not None and waited >= timings.expire_after:
        async with ctx.db.write() as session:
            expired = await queries.expire_action(session, action_id=action.id, after=timings.expire_after, now=now)
        if expired:
            log.info("action %s expired after %s without a decision", action.id, timings.expire_after)
        return int(expired)
    if quiet:
        return 0
    made = 0
    hours = round(waited.total_seconds() / 3600, 1)
    if timings.remind_after is not None and card.reminded_at is None and waited >= timings.remind_after:
        async with ctx.db.write() as session:
            if await queries.mark_reminded(session, card_id=card.id, now=now):
                await queries.add_notice(
                    session,
                    action_id=action.id,
                    key=f"remind:{action.id}",
                    kind="reminder",
                    now=now,
                    payload={
                        "hours": hours,
                        "mentions": mentions(ctx.approvers_for(action.type, action.risk, source=action.source)),
                        "by_hand": unparsed_conditions(action),
                    },
                )
                made += 1
    channel = timings.escalation_channel
    if (
        channel is not None
        and timings.escalate_after is not None
        and card.escalated_at is None
        and waited >= timings.escalate_after
    ):
        async with ctx.db.write() as session:
            if await queries.mark_reminded(session, card_id=card.id, now=now, escalation=True):
                await queries.add_notice(
                    session,
                    action_id=action.id,
                    key=f"escalate:{action.id}",
                    kind="escalation",
                    now=now,
                    channel=channel,
                    payload={
                        "hours": hours,
                        "card_channel": card.channel,
                        "card_ts": card.ts,
                        "mentions": mentions(ctx.approvers_for(action.type, action.risk, source=action.source)),
                    },
                )
                made += 1
    return made
