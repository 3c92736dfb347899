"""The App Home tab, rendered: pure, like ``bot.render`` (whose escaping, text helpers and
button styles it reuses). ``home_view`` turns a ``HomeView`` into a ``View`` of type "home".

A Home has three parts: the ready actions the viewer may decide (newest first, with Approve
and Reject; one they requested themselves is listed without buttons), their own recent
decisions with where each action is now, and the approved or running actions under rollback
watch with each rule's state. Each part is capped and says how many more there are, so any
store stays within Block Kit's 100 blocks for a Home and its text limits. Untrusted text is
escaped and cut as on the cards.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
)
from slack_sdk.models.views import View

from bot import render
from bot.render import (
    MAX_TEXT,
    WatchView,
    esc_clip,
    guardrail_summary,
    slack_date,
    source_name,
    watch_state,
)
from sources.base import Op, Option, Status

MAX_HOME_BLOCKS = 100
# How many items each part shows at most: 2 blocks per ready item, 1 per watched action,
# one block for all the decisions; with the headings this stays near 60 blocks.
READY_SHOWN = 20
DECISIONS_SHOWN = 10
WATCHED_SHOWN = 10

_TITLE = 300  # of a title in a list line
_LINE = 400  # of a note or condition in a list line
_CHANNEL = re.compile(r"[CG][A-Z0-9]{2,30}")


class Access(enum.Enum):
    """What the viewer may do, as ``ApproverCheck`` said when the Home was built."""

    APPROVER = "approver"
    NOT_APPROVER = "not_approver"
    UNKNOWN = "unknown"  # the approvers list could not be checked just now


@dataclass(frozen=True)
class ReadyItem:
    action_id: int  # the store's id; button values carry str(action_id)
    version: int
    source: str
    external_id: str
    type: str
    title: str
    created_at: datetime | None
    expected_impact: dict[str, Any] | None
    guardrail_checks: tuple[Any, ...]
    own: bool = False  # the viewer requested it: listed, never with buttons
    others: bool = False  # its route names other approvers than the viewer: listed, no buttons
    risk: str | None = None
    options: tuple[Option, ...] = ()  # the decisions it offers, as its card shows them


@dataclass(frozen=True)
class DecisionItem:
    decision_id: int
    action_id: int
    op: str | None
    note: str | None
    at: datetime
    title: str
    source: str
    status: Status  # where the action is now


@dataclass(frozen=True)
class WatchLine:
    condition: str
    watch: WatchView


@dataclass(frozen=True)
class WatchedItem:
    action_id: int
    version: int
    source: str
    title: str
    status: Status
    watches: tuple[WatchLine, ...]


@dataclass(frozen=True)
class HomeView:
    user_id: str
    access: Access
    channel: str  # where the cards are
    ready: tuple[ReadyItem, ...]
    ready_total: int
    decisions: tuple[DecisionItem, ...]
    watched: tuple[WatchedItem, ...]
    watched_total: int


# ---- pieces ----------------------------------------------------------------------------


def _channel(channel: str) -> str:
    return f"<#{channel}>" if _CHANNEL.fullmatch(channel or "") else "the approvals channel"


def _title(title: str) -> str:
    return esc_clip(" ".join((title or "").split()) or "Untitled action", _TITLE)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _context(text: str) -> ContextBlock:
    return ContextBlock(elements=[render._mrkdwn(render.clip(text, MAX_TEXT))])


def _more(shown: int, total: int, what: str, channel: str) -> ContextBlock | None:
    if total <= shown:
        return None
    return _context(f"…and {total - shown} more {what} — see {_channel(channel)}.")


def _access_block(home: HomeView) -> Block:
    where = _channel(home.channel)
    if home.access is Access.APPROVER:
        text = f"You're an approver: decide on the actions below here, or on their cards in {where}."
    elif home.access is Access.UNKNOWN:
        text = (
            "⚠️ Signoff couldn't verify the approvers list just now, so no buttons are shown. "
            "Open this tab again in a moment."
        )
    else:
        waiting = _plural(home.ready_total, "action is", "actions are")
        text = (
            "🔒 You're not on the approvers list, so there is nothing here for you to decide "
            f"({waiting} awaiting a decision in {where}). Ask the person who set up Signoff "
            "to add you if you should be able to decide."
        )
    return render._section(text)


def _impact(impact: dict[str, Any] | None) -> str:
    if not isinstance(impact, dict) or impact.get("metric") in (None, ""):
        return ""
    words = [esc_clip(impact["metric"], 100)]
    if impact.get("direction") not in (None, ""):
        words.insert(0, render._direction(impact["direction"]))
    if impact.get("magnitude") not in (None, ""):
        words.append(f"by {esc_clip(render._number(impact['magnitude']), 50)}")
    return " ".join(words)


def _ready_text(item: ReadyItem) -> str:
    lines = [f"*{_title(item.title)}*"]
    facts = [f for f in (_impact(item.expected_impact), esc_clip(item.type, 100)) if f]
    if facts:
        lines.append(" · ".join(facts))
    origin = f"{source_name(item.source)} · {esc_clip(item.external_id, 100)}"
    if item.created_at is not None:
        origin += f" · proposed {slack_date(item.created_at)}"
    lines.append(origin)
    lines.append(f"Guardrail checks: {guardrail_summary(list(item.guardrail_checks))}")
    if item.own:
        lines.append("👤 _You requested this, so someone else has to decide on it._")
    elif item.others:
        lines.append("👥 _Its route names other approvers, so they decide on it._")
    return "\n".join(lines)


def _buttons(home: HomeView, item: ReadyItem) -> ActionsBlock | None:
    if home.access is not Access.APPROVER or item.own or item.others:
        return None
    # As the card shows them (labels, styles, action ids), but for a rollback (never ready).
    elements = render.option_buttons([o for o in item.options if o.kind is not Op.ROLLBACK], str(item.action_id))
    return ActionsBlock(elements=elements) if elements else None


def _ready_blocks(home: HomeView) -> list[Block]:
    if home.access is Access.NOT_APPROVER:
        return []
    heading = "Awaiting your decision" if home.access is Access.APPROVER else "Awaiting a decision"
    blocks: list[Block] = [render._section(f"*{heading}* · {home.ready_total}")]
    shown = home.ready[:READY_SHOWN]
    if not shown:
        blocks.append(_context("Nothing is waiting for a decision."))
    for item in shown:
        blocks.append(render._section(_ready_text(item)))
        buttons = _buttons(home, item)
        if buttons is not None:
            blocks.append(buttons)
    more = _more(len(shown), home.ready_total, "awaiting a decision", home.channel)
    if more is not None:
        blocks.append(more)
    return blocks


def _decision_line(item: DecisionItem) -> str:
    op = render._op(item.op)
    verb = render._OP_PAST[op].capitalize() if op is not None else "Decided"
    line = f"• *{verb}* {_title(item.title)} · {slack_date(item.at)}"
    note = " ".join((item.note or "").split())
    if note:
        line += f" — {esc_clip(note, _LINE)}"
    return line + f"\n      now {render._STATUS_BADGES.get(item.status, esc_clip(item.status, 32))}"


def _decisions_block(home: HomeView) -> Block:
    shown = home.decisions[:DECISIONS_SHOWN]
    if not shown:
        return render._section("*Your recent decisions*\n_None yet._")
    lines = [_decision_line(d) for d in shown]
    return render._section(render._fit_lines("*Your recent decisions*", lines, MAX_TEXT))


def _watched_text(item: WatchedItem) -> str:
    badge = render._STATUS_BADGES.get(item.status, esc_clip(item.status, 32))
    head = f"*{_title(item.title)}* · {badge}"
    ordered = sorted(item.watches, key=lambda w: (not (w.watch.active and w.watch.tripped), not w.watch.active))
    lines = [f"• {esc_clip(' '.join(w.condition.split()), _LINE)} — {watch_state(w.watch)}" for w in ordered]
    return render._fit_lines(head, lines, MAX_TEXT)


def _watched_blocks(home: HomeView) -> list[Block]:
    blocks: list[Block] = [render._section(f"*Under rollback watch* · {home.watched_total}")]
    shown = home.watched[:WATCHED_SHOWN]
    if not shown:
        blocks.append(_context("No approved or running action is being watched."))
    blocks.extend(render._section(_watched_text(item)) for item in shown)
    more = _more(len(shown), home.watched_total, "under watch", home.channel)
    if more is not None:
        blocks.append(more)
    return blocks


# ---- the view --------------------------------------------------------------------------


def home_blocks(home: HomeView) -> list[Block]:
    blocks: list[Block] = [
        HeaderBlock(text=render._plain("Signoff", render.MAX_HEADER)),
        _access_block(home),
    ]
    ready = _ready_blocks(home)
    if ready:
        blocks.extend([DividerBlock(), *ready])
    blocks.extend([DividerBlock(), _decisions_block(home), DividerBlock(), *_watched_blocks(home)])
    return blocks[:MAX_HOME_BLOCKS]


def home_view(home: HomeView) -> View:
    """The Home tab for one viewer."""
    return View(type="home", blocks=home_blocks(home))
