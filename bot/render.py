"""Pure Block Kit renderers for Signoff's cards, modals and ephemeral replies.

Nothing here does I/O. Every function takes plain values (``CardView``, ``DecisionView``,
``Status``, ``Op``) and returns slack_sdk models or strings.

Everything that came from an Actions API (titles, rationales, signals, guardrails, errors,
"approved_by") and everything a person typed (notes, reasons) is untrusted:

* in ``mrkdwn`` it is escaped (``&``, ``<``, ``>``), so ``<!channel>`` or ``<@U…>`` cannot
  ping anyone, and every mrkdwn object is sent with ``verbatim=True`` so Slack does not
  auto-parse bare mentions or channel names either;
* it is cut with "…" so that any input stays within Block Kit's limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    OverflowMenuElement,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.blocks import (
    Option as OverflowOption,
)
from slack_sdk.models.metadata import Metadata
from slack_sdk.models.views import View

from bot import ids
from core import rules
from core.lifecycle import any_decision_from
from sources.base import IN_FLIGHT, Op, Option, Status

# ---- Block Kit limits ------------------------------------------------------------------

MAX_BLOCKS = 50
MAX_TEXT = 3000  # section text, plain text, context element, message text
MAX_FIELD = 2000  # each section field
MAX_HEADER = 150
MAX_BUTTON = 75
MAX_CONFIRM_TEXT = 300
MAX_MODAL_TITLE = 24
MAX_INPUT = 1000  # what we let people type into a note or reason

# How much of one untrusted item a list line may take, so one long item cannot crowd out
# the rest; and how much of a note or error a one-line status may carry.
_ITEM_LABEL = 200
_ITEM_DETAIL = 400
_NOTE_IN_LINE = 500
_ERROR_IN_LINE = 1000

# ---- the inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionView:
    """One audit-trail entry worth showing."""

    event: str  # "requested" | "retried" | "confirmed" | "conflict" | "failed" | "upstream"
    op: str | None  # "approve" | "reject" | "rollback" | None
    actor: str  # Slack user id (U…/W…), or "upstream", or "signoff"
    note: str | None
    at: datetime  # aware UTC
    to_status: str | None
    option: str | None = None  # the option's label, as the source names it


@dataclass(frozen=True)
class CardView:
    """Everything a card shows about one action."""

    action_id: int  # the store's id; button values carry str(action_id)
    source: str  # "flokit"
    external_id: str
    type: str
    title: str
    rationale: str
    status: Status
    expected_impact: dict | None  # {"metric", "direction", "magnitude"}, any may be missing
    data_signals: list[dict]  # [{"label", "value"}]
    guardrail_checks: list[dict]  # [{"check", "passed", "detail"}]
    rollback_conditions: list[str]
    created_at: datetime | None
    options: tuple[Option, ...]  # the decisions the action offers now (the core decides which)
    decision: DecisionView | None  # the latest decision to show
    decided_by_upstream: str | None  # "approved_by" as the upstream reports it
    last_error: str | None  # set when the last upstream call failed for good
    retry_available: bool  # a failed call can be retried
    watches: tuple[WatchView, ...] = ()  # the rollback watch, once the action is approved
    approvals: tuple[str, ...] = ()  # approvals so far, where several are needed
    approvals_needed: int = 1  # distinct approvers the action's route requires
    confirm_required: bool = False  # Approve needs a typed confirmation (failed guardrails)
    details: tuple[tuple[str, str], ...] = ()  # the source's own labelled facts, shown as given (escaped)
    url: str | None = None  # where to see the action upstream
    running: bool = False  # the upstream accepted the decision in flight and runs it (an execution)
    risk: str | None = None  # where the source rates its actions (low / medium / high); high stands out


@dataclass(frozen=True)
class WatchView:
    """How the watch of one rollback condition stands."""

    position: int  # index into CardView.rollback_conditions
    reading: str  # store.models.Reading: pending | ok | missing | stale | error | no_provider
    detail: str | None
    tripped: bool
    baseline: float | None
    active: bool
    ended: str | None  # "window_over", "action rolled_back", ...


# ---- words -----------------------------------------------------------------------------

_SOURCE_NAMES = {"flokit": "FloKit", "fieldkit": "Fieldkit", "flowdash": "Flowdash"}

_STATUS_WORDS = {
    Status.DRAFT: "a draft",
    Status.READY: "awaiting a decision",
    Status.APPROVED: "approved",
    Status.RUNNING: "running",
    Status.SUCCEEDED: "succeeded",
    Status.FAILED: "failed",
    Status.REJECTED: "rejected",
    Status.ROLLED_BACK: "rolled back",
    Status.APPROVING: "being approved",
    Status.REJECTING: "being rejected",
    Status.ROLLING_BACK: "being rolled back",
    Status.DECIDING: "being sent upstream",
    Status.EXPIRED: "expired without a decision",
}

_STATUS_BADGES = {
    Status.DRAFT: "📝 Draft",
    Status.READY: "🟡 Awaiting decision",
    Status.APPROVED: "✅ Approved",
    Status.RUNNING: "▶️ Running",
    Status.SUCCEEDED: "🏁 Succeeded",
    Status.FAILED: "💥 Failed",
    Status.REJECTED: "🚫 Rejected",
    Status.ROLLED_BACK: "↩️ Rolled back",
    Status.APPROVING: "⏳ Approving…",
    Status.REJECTING: "⏳ Rejecting…",
    Status.ROLLING_BACK: "⏳ Rolling back…",
    Status.DECIDING: "⏳ Sending…",
    Status.EXPIRED: "⌛ Expired: no decision in time",
}

_TEXT_PREFIXES = {
    Status.DRAFT: "Draft action",
    Status.READY: "Action awaiting approval",
    Status.APPROVED: "Action approved",
    Status.RUNNING: "Action running",
    Status.SUCCEEDED: "Action succeeded",
    Status.FAILED: "Action failed",
    Status.REJECTED: "Action rejected",
    Status.ROLLED_BACK: "Action rolled back",
    Status.APPROVING: "Approving action",
    Status.REJECTING: "Rejecting action",
    Status.ROLLING_BACK: "Rolling back action",
    Status.DECIDING: "Deciding action",
    Status.EXPIRED: "Action expired",
}

# The op whose outcome a status is: who approved a running action, who rolled it back...
_DECIDED_BY_OP = {
    Status.APPROVED: Op.APPROVE,
    Status.RUNNING: Op.APPROVE,
    Status.SUCCEEDED: Op.APPROVE,
    Status.REJECTED: Op.REJECT,
    Status.ROLLED_BACK: Op.ROLLBACK,
}

_OP_PAST = {Op.APPROVE: "approved", Op.REJECT: "rejected", Op.ROLLBACK: "rolled back", Op.OTHER: "decided"}
_OP_NOUN = {Op.APPROVE: "approval", Op.REJECT: "rejection", Op.ROLLBACK: "rollback", Op.OTHER: "decision"}

# Each kind's button: its action_id and style. A source's own named option ("Escalate")
# has an action_id of its own (ids.option_action_id), carrying the source's key for it.
_BUTTON_KINDS: dict[Op, tuple[str, str | None]] = {
    Op.APPROVE: (ids.APPROVE, "primary"),
    Op.REJECT: (ids.REJECT, "danger"),
    Op.ROLLBACK: (ids.ROLLBACK, "danger"),
}
# At most this many options as buttons; beyond it, the first MAX_BUTTONS - 1 as buttons and
# the rest (up to MAX_OVERFLOW) in one overflow menu (Slack's takes 2 to 5 options).
MAX_BUTTONS = 5
MAX_OVERFLOW = 5
MAX_OVERFLOW_VALUE = 150

_SLACK_USER = re.compile(r"[UW][A-Z0-9]{1,20}")

# ---- text helpers ----------------------------------------------------------------------


def escape(text: Any) -> str:
    """Escape untrusted text for mrkdwn: nothing in it can become a mention or a link."""
    return _text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, ending in "…" when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def esc_clip(text: Any, limit: int) -> str:
    """Escape, then cut to ``limit`` characters without splitting an ``&…;`` entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: max(limit - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _one_line(value: Any) -> str:
    return " ".join(_text(value).split())


def _mrkdwn(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text, verbatim=True)


def _plain(text: str, limit: int = MAX_TEXT) -> PlainTextObject:
    return PlainTextObject(text=clip(_text(text), limit) or " ", emoji=True)


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=_mrkdwn(clip(text, MAX_TEXT)))


def slack_date(at: datetime) -> str:
    """A date Slack shows in each reader's own time zone, with a UTC fallback."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    utc = at.astimezone(timezone.utc)
    fallback = utc.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(utc.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def who(actor: str, source: str = "") -> str:
    """A Slack mention for a real user id; anything else as escaped text."""
    if _SLACK_USER.fullmatch(actor or ""):
        return f"<@{actor}>"
    if actor == "signoff":
        return "Signoff"
    if actor == "upstream":
        return source_name(source) if source else "the upstream"
    return esc_clip(actor, _ITEM_LABEL)


def source_name(source: str) -> str:
    return _SOURCE_NAMES.get(source, esc_clip(source, 40) or "the upstream")


def _op(op: Op | str | None) -> Op | None:
    try:
        return Op(op) if op is not None else None
    except ValueError:
        return None


def _fit_lines(head: str, lines: Sequence[str], limit: int) -> str:
    """``head`` plus as many ``lines`` as fit in ``limit``, then "…and N more"."""
    out = head
    for i, line in enumerate(lines):
        left_after = len(lines) - i - 1
        room_for_more = len(f"\n…and {left_after} more") if left_after else 0
        candidate = f"{out}\n{line}" if out else line
        if len(candidate) + room_for_more > limit:
            return f"{out}\n…and {len(lines) - i} more"
        out = candidate
    return out


# ---- card pieces -----------------------------------------------------------------------


def _impact_fields(impact: dict | None) -> list[str]:
    if not isinstance(impact, dict):
        return []
    fields = []
    metric = impact.get("metric")
    if metric not in (None, ""):
        fields.append(f"*Metric*\n{esc_clip(metric, _ITEM_DETAIL)}")
    direction = impact.get("direction")
    if direction not in (None, ""):
        fields.append(f"*Direction*\n{_direction(direction)}")
    magnitude = impact.get("magnitude")
    if magnitude not in (None, ""):
        fields.append(f"*Magnitude*\n{esc_clip(_number(magnitude), _ITEM_DETAIL)}")
    return fields


def _direction(direction: Any) -> str:
    word = _text(direction).strip().lower()
    if word in ("increase", "up", "higher", "raise"):
        return "↑ increase"
    if word in ("decrease", "down", "lower", "reduce"):
        return "↓ decrease"
    return esc_clip(direction, _ITEM_DETAIL)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _text(value)


_RISK_BADGES = {"low": "🟢 Low", "medium": "🟠 Medium", "high": "🔴 *High*"}


def _risk(risk: str | None) -> str:
    word = _one_line(risk).lower()
    return _RISK_BADGES.get(word, esc_clip(word, 40))


def _high_risk_block(card: CardView) -> SectionBlock | None:
    """A high-risk action says so above everything else on its card."""
    if _one_line(card.risk).lower() != "high":
        return None
    return _section("🔴 *High risk* — read what it changes before you decide.")


def _facts_block(card: CardView) -> SectionBlock:
    fields = _impact_fields(card.expected_impact)
    if card.risk:
        fields.append(f"*Risk*\n{_risk(card.risk)}")
    if card.type:
        fields.append(f"*Type*\n{esc_clip(card.type, _ITEM_DETAIL)}")
    if card.created_at is not None:
        fields.append(f"*Created*\n{slack_date(card.created_at)}")
    where = esc_clip(card.external_id, _ITEM_DETAIL)
    if card.url and _LINKABLE.fullmatch(card.url):
        where = f"<{card.url}|{where}>"
    fields.append(f"*Source*\n{source_name(card.source)} · {where}")
    return SectionBlock(fields=[_mrkdwn(clip(f, MAX_FIELD)) for f in fields[:10]])


# A link Slack may show: http(s), no characters that would end or re-open mrkdwn's <…|…>.
_LINKABLE = re.compile(r"https?://[^\s<>|]{1,2000}")
MAX_DETAILS = 10  # a section takes ten fields


def _details_block(details: Sequence[tuple[str, str]]) -> SectionBlock | None:
    """The source's own facts, one field each; long values cut, the rest counted."""
    if not details:
        return None
    shown = list(details[:MAX_DETAILS])
    if len(details) > MAX_DETAILS:
        shown[-1] = ("More", f"{len(details) - MAX_DETAILS + 1} more fields upstream")
    return SectionBlock(
        fields=[
            _mrkdwn(
                clip(
                    f"*{esc_clip(_one_line(label), _ITEM_LABEL) or '—'}*\n{esc_clip(value, MAX_FIELD - 250)}", MAX_FIELD
                )
            )
            for label, value in shown
        ]
    )


def _signal_line(signal: Any) -> str:
    if isinstance(signal, dict):
        label, value = signal.get("label"), signal.get("value")
    else:
        label, value = signal, None
    line = f"• {esc_clip(_one_line(label) or 'Signal', _ITEM_LABEL)}"
    if value not in (None, ""):
        line += f": *{esc_clip(_one_line(value), _ITEM_LABEL)}*"
    return line


def _signals_block(signals: Sequence[Any]) -> SectionBlock | None:
    if not signals:
        return None
    lines = [_signal_line(s) for s in signals]
    return _section(_fit_lines("*Data signals*", lines, MAX_TEXT))


def _passed(check: Any) -> bool | None:
    passed = check.get("passed") if isinstance(check, dict) else None
    return passed if isinstance(passed, bool) else None


def _guardrail_line(check: Any) -> str:
    if isinstance(check, dict):
        name, detail = check.get("check"), check.get("detail")
    else:
        name, detail = check, None
    mark = {True: "✅", False: "❌", None: "❔"}[_passed(check)]
    line = f"{mark} {esc_clip(_one_line(name) or 'Check', _ITEM_LABEL)}"
    if detail not in (None, ""):
        line += f" — {esc_clip(_one_line(detail), _ITEM_DETAIL)}"
    return line


def guardrail_summary(checks: Sequence[Any]) -> str:
    """E.g. "❌ 2 of 5 failed" or "✅ all 3 passed" (mrkdwn, no untrusted text)."""
    if not checks:
        return "none reported"
    results = [_passed(c) for c in checks]
    failed = results.count(False)
    unknown = results.count(None)
    parts = []
    if failed:
        parts.append(f"❌ *{failed} of {len(checks)} failed*")
    if unknown:
        parts.append(f"❔ {unknown} of {len(checks)} without a result")
    if not parts:
        return f"✅ all {len(checks)} passed"
    return ", ".join(parts)


def _guardrails_block(checks: Sequence[Any]) -> SectionBlock:
    head = f"*Guardrail checks:* {guardrail_summary(checks)}"
    # Failed and unreported checks first, so they are never the ones cut off.
    ordered = sorted(checks, key=lambda c: {False: 0, None: 1, True: 2}[_passed(c)])
    return _section(_fit_lines(head, [_guardrail_line(c) for c in ordered], MAX_TEXT))


_READINGS = {
    "pending": "⏳ not checked yet",
    "ok": "✅ within limit",
    "missing": "⚠️ no data",
    "stale": "⚠️ stale data",
    "error": "⚠️ cannot read the metric",
    "no_provider": "⚠️ not watched: no metrics source configured",
}


def watch_state(watch: WatchView) -> str:
    """A rule's watch in a few words: tripped, within limit, no data..."""
    if not watch.active:
        if watch.ended == "window_over":
            return "⏹ window over, no longer watched"
        return "⏹ no longer watched"
    if watch.tripped:
        state = "🚨 *tripped*"
    else:
        state = _READINGS.get(watch.reading, esc_clip(watch.reading, 40))
        if watch.reading in ("missing", "stale", "error") and watch.detail:
            state += f": {esc_clip(_one_line(watch.detail), _ITEM_DETAIL)}"
    if watch.baseline is not None:
        state += f" · baseline {_number(round(watch.baseline, 6))}"
    return state


def rule_line(condition: Any, watch: WatchView | None = None) -> str:
    """One rollback condition, with the rule it was read as (or "checked by a person")."""
    text = _one_line(condition)
    parsed = rules.parse_condition(text)
    line = f"• {esc_clip(text, _ITEM_DETAIL)}\n"
    if isinstance(parsed, rules.Unparsed):
        return line + f"      👤 _checked by a person_ ({esc_clip(parsed.reason, _ITEM_LABEL)})"
    line += f"      `{esc_clip(parsed.describe(), _ITEM_DETAIL)}`"
    if watch is not None:
        line += f" — {watch_state(watch)}"
    return line


def _conditions_block(conditions: Sequence[Any], watches: Sequence[WatchView] = ()) -> SectionBlock | None:
    if not conditions:
        return None
    by_position = {w.position: w for w in watches}
    lines = [rule_line(c, by_position.get(i)) for i, c in enumerate(conditions)]
    return _section(_fit_lines("*Rollback conditions*", lines, MAX_TEXT))


def _decided_phrase(decision: DecisionView, source: str = "") -> str:
    """ " by <@U1> at <date> — note" for a decision made in Slack (or by Signoff)."""
    phrase = f" by {who(decision.actor, source)} at {slack_date(decision.at)}"
    note = _one_line(decision.note)
    if note:
        phrase += f" — {esc_clip(note, _NOTE_IN_LINE)}"
    return phrase


def _by_phrase(card: CardView, op: Op) -> str:
    """Who made the decision this status is the outcome of, when we know."""
    d = card.decision
    from_upstream = d is not None and (d.event == "upstream" or d.actor == "upstream")
    if d is not None and not from_upstream and _op(d.op) == op:
        return _decided_phrase(d, card.source)
    if op in (Op.APPROVE, Op.REJECT) and card.decided_by_upstream:
        by = esc_clip(_one_line(card.decided_by_upstream), _ITEM_LABEL)
        return f" in {source_name(card.source)} by {by}"
    if from_upstream:
        return f" in {source_name(card.source)}"
    return ""


def status_line(card: CardView) -> str:
    """The card's one-line state, in mrkdwn."""
    status, d = card.status, card.decision
    badge = _STATUS_BADGES[status]
    if status is Status.READY and card.approvals_needed > 1:
        line = f"{badge} — {len(card.approvals)} of {card.approvals_needed} approvals"
        if card.approvals:
            line += ": " + ", ".join(who(a, card.source) for a in card.approvals)
        return line
    if status in IN_FLIGHT:
        if card.running and d is not None and d.event in ("requested", "retried"):
            label = esc_clip(_one_line(d.option) or _OP_NOUN.get(_op(d.op) or Op.OTHER, "decision"), _ITEM_LABEL)
            return f"⏳ Running '{label}' in {source_name(card.source)}, started by {who(d.actor, card.source)}"
        if status is Status.DECIDING and d is not None and d.option:
            badge = f"⏳ {esc_clip(_one_line(d.option), _ITEM_LABEL)}…"
        if d is not None and d.event in ("requested", "retried"):
            return f"{badge} requested by {who(d.actor, card.source)}"
        return badge
    if d is not None and d.event == "conflict":
        return f"⚠️ Conflict: someone else decided upstream; now {badge}"
    if d is not None and d.event == "confirmed" and _op(d.op) is Op.OTHER:
        return f"{badge} — {esc_clip(_one_line(d.option) or 'decided', _ITEM_LABEL)}{_decided_phrase(d, card.source)}"
    op = _DECIDED_BY_OP.get(status)
    if op is None:
        return badge
    by = _by_phrase(card, op)
    if not by:
        return badge
    if status in (Status.RUNNING, Status.SUCCEEDED):
        return f"{badge} — approved{by}"
    return f"{badge}{by}"


def _failed_op(card: CardView) -> Op | None:
    return _op(card.decision.op) if card.decision is not None else None


def failure_line(op: Op | str | None, error: Any) -> str:
    """ "⚠️ Approval failed: <error>" (mrkdwn; the error is escaped and cut)."""
    known = _op(op)
    what = _OP_NOUN[known].capitalize() if known else "The last request"
    return f"⚠️ *{what} failed:* {esc_clip(_one_line(error) or 'unknown error', _ERROR_IN_LINE)}"


def _offered(card: CardView) -> tuple[Option, ...]:
    return () if card.status in IN_FLIGHT else card.options


def _option_confirm(option: Option, source: str) -> ConfirmObject:
    """Slack's own "are you sure?" before a source's own named option runs at once."""
    label = esc_clip(_one_line(option.label), 60)
    return ConfirmObject(
        title=clip(f"Run '{_one_line(option.label)}'?", 100),
        text=_mrkdwn(clip(f"This asks {source_name(source)} to run *{label}* on this task now.", MAX_CONFIRM_TEXT)),
        confirm="Run",
        deny="Cancel",
    )


def option_buttons(
    options: Sequence[Option],
    value: str,
    *,
    rollback_confirm: ConfirmObject | None = None,
    source: str = "",
) -> list[ButtonElement | OverflowMenuElement]:
    """One button per option, in order: the usual three kinds with their own action ids and
    styles, a source's own named options (and a second one of a kind) by their key; a named
    option of kind other behind a confirmation. More than ``MAX_BUTTONS`` options: the first
    ``MAX_BUTTONS - 1`` as buttons, the rest in an overflow menu."""
    buttons: list[ButtonElement | OverflowMenuElement] = []
    seen: set[str] = set()
    as_buttons = list(options) if len(options) <= MAX_BUTTONS else list(options[: MAX_BUTTONS - 1])
    for option in as_buttons:
        action_id, style = _BUTTON_KINDS.get(option.kind, (ids.option_action_id(option.key), None))
        if action_id in seen:  # two options of one kind: the second by its own key
            action_id, style = ids.option_action_id(option.key, option.kind), None
        if action_id in seen:
            continue
        seen.add(action_id)
        confirm = rollback_confirm if option.kind is Op.ROLLBACK else None
        if option.kind is Op.OTHER:
            confirm = _option_confirm(option, source)
        buttons.append(
            ButtonElement(
                text=_plain(option.label, MAX_BUTTON), action_id=action_id, value=value, style=style, confirm=confirm
            )
        )
    rest = [
        (o, v)
        for o in options[len(as_buttons) :]
        if len(v := ids.overflow_value(value, o.kind.value, o.key)) <= MAX_OVERFLOW_VALUE
    ][:MAX_OVERFLOW]
    if len(rest) >= 2:
        others = [o for o, _ in rest if o.kind is Op.OTHER]
        confirm = None
        if others:
            confirm = ConfirmObject(
                title="Run this action?",
                text=_mrkdwn(
                    clip(
                        f"This asks {source_name(source)} to run the chosen action on this task now.", MAX_CONFIRM_TEXT
                    )
                ),
                confirm="Run",
                deny="Cancel",
            )
        buttons.append(
            OverflowMenuElement(
                action_id=ids.OVERFLOW,
                options=[OverflowOption(text=_plain(o.label, MAX_BUTTON), value=v) for o, v in rest],
                confirm=confirm,
            )
        )
    return buttons


def _retry_offered(card: CardView) -> bool:
    """Retry only where some decision can still be made (never in flight or at the end)."""
    if not (card.last_error and card.retry_available) or card.status in IN_FLIGHT:
        return False
    return any_decision_from(card.status)


def _rollback_confirm(card: CardView) -> ConfirmObject:
    title = esc_clip(_one_line(card.title), 200)
    text = clip(f"*{title}*\nThis asks {source_name(card.source)} to undo it.", MAX_CONFIRM_TEXT)
    return ConfirmObject(
        title="Roll back this action?",
        text=_mrkdwn(text),
        confirm="Roll back",
        deny="Cancel",
        style="danger",
    )


def _buttons(card: CardView) -> list[ButtonElement | OverflowMenuElement]:
    value = str(card.action_id)
    buttons = option_buttons(_offered(card), value, rollback_confirm=_rollback_confirm(card), source=card.source)
    if _retry_offered(card):
        failed = _failed_op(card)
        label = f"Retry {_OP_NOUN[failed]}" if failed else "Retry"
        buttons.append(ButtonElement(text=_plain(label, MAX_BUTTON), action_id=ids.RETRY, value=value))
    return buttons


# ---- cards -----------------------------------------------------------------------------


def card_blocks(card: CardView) -> list[Block]:
    """The card for one action: what it is, why, the evidence, its state and its buttons."""
    blocks: list[Block | None] = [
        HeaderBlock(text=_plain(_one_line(card.title) or "Untitled action", MAX_HEADER)),
        _high_risk_block(card),
        _section(esc_clip(card.rationale.strip(), MAX_TEXT) if card.rationale.strip() else "_No rationale given._"),
        _facts_block(card),
        _details_block(card.details),
        _signals_block(card.data_signals or []),
        _guardrails_block(card.guardrail_checks or []),
        _conditions_block(card.rollback_conditions or [], card.watches),
        DividerBlock(),
        ContextBlock(elements=[_mrkdwn(clip(status_line(card), MAX_TEXT))]),
    ]
    if card.last_error and card.status not in IN_FLIGHT:
        line = failure_line(_failed_op(card), card.last_error)
        if _retry_offered(card):
            line += "\nUse *Retry* to send it again."
        blocks.append(_section(line))
    buttons = _buttons(card)
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    return [b for b in blocks if b is not None][:MAX_BLOCKS]


def card_text(card: CardView) -> str:
    """Notification fallback text, e.g. "Action awaiting approval: <title>"."""
    prefix = _TEXT_PREFIXES[card.status]
    title = esc_clip(_one_line(card.title) or "untitled", MAX_TEXT - len(prefix) - 2)
    return f"{prefix}: {title}"


def card_metadata(card: CardView) -> Metadata:
    """Message metadata that lets a card be found in its channel again."""
    return Metadata(
        event_type=ids.CARD_EVENT_TYPE,
        event_payload={"action_id": card.action_id, "source": card.source, "external_id": card.external_id},
    )


# ---- modals ----------------------------------------------------------------------------


def _summary_block(card: CardView) -> SectionBlock:
    lines = [f"*{esc_clip(_one_line(card.title) or 'Untitled action', 300)}*"]
    impact = card.expected_impact if isinstance(card.expected_impact, dict) else {}
    if impact.get("metric") not in (None, ""):
        words = [esc_clip(impact["metric"], _ITEM_LABEL)]
        if impact.get("direction") not in (None, ""):
            words.insert(0, _direction(impact["direction"]))
        if impact.get("magnitude") not in (None, ""):
            words.append(f"by {esc_clip(_number(impact['magnitude']), _ITEM_LABEL)}")
        lines.append("Expected impact: " + " ".join(words))
    if card.rationale.strip():
        lines.append(esc_clip(_one_line(card.rationale), 600))
    lines.append(f"Guardrail checks: {guardrail_summary(card.guardrail_checks or [])}")
    return _section("\n".join(lines))


def _failed_guardrails_block(card: CardView) -> SectionBlock | None:
    failed = [c for c in card.guardrail_checks or [] if _passed(c) is False]
    if not failed:
        return None
    head = f"⚠️ *{len(failed)} of {len(card.guardrail_checks)} guardrail checks failed.* Read them before you approve:"
    return _section(_fit_lines(head, [_guardrail_line(c) for c in failed], MAX_TEXT))


def _text_input(block_id: str, action_id: str, label: str, *, optional: bool, placeholder: str) -> InputBlock:
    return InputBlock(
        block_id=block_id,
        label=_plain(label),
        optional=optional,
        element=PlainTextInputElement(
            action_id=action_id,
            multiline=True,
            min_length=None if optional else 1,
            max_length=MAX_INPUT,
            placeholder=_plain(placeholder, 150),
        ),
    )


def _modal(callback_id: str, title: str, submit: str, private_metadata: str, blocks: Iterable[Block | None]) -> View:
    if len(private_metadata) > 3000:
        raise ValueError("private_metadata exceeds Slack's 3000 characters")
    return View(
        type="modal",
        callback_id=callback_id,
        title=_plain(title, MAX_MODAL_TITLE),
        submit=_plain(submit, MAX_MODAL_TITLE),
        close=_plain("Cancel", MAX_MODAL_TITLE),
        private_metadata=private_metadata,
        blocks=[b for b in blocks if b is not None],
    )


def approve_modal(card: CardView, private_metadata: str) -> View:
    """Confirm an approval, with an optional note for the audit trail."""
    return _modal(
        ids.APPROVE_VIEW,
        "Approve action",
        "Approve",
        private_metadata,
        [
            _failed_guardrails_block(card),
            _summary_block(card),
            _section(
                f"This needs {card.approvals_needed} different approvers; yours is approval {len(card.approvals) + 1}."
            )
            if card.approvals_needed > 1
            else None,
            _text_input(
                ids.CONFIRM_BLOCK,
                ids.CONFIRM_INPUT,
                "Type APPROVE to approve despite failed guardrails",
                optional=False,
                placeholder="APPROVE",
            )
            if card.confirm_required
            else None,
            _text_input(
                ids.NOTE_BLOCK,
                ids.NOTE_INPUT,
                "Note (optional)",
                optional=True,
                placeholder="Anything the audit trail should record",
            ),
        ],
    )


def reject_modal(card: CardView, private_metadata: str) -> View:
    """Reject with a required reason."""
    return _modal(
        ids.REJECT_VIEW,
        "Reject action",
        "Reject",
        private_metadata,
        [
            _summary_block(card),
            _text_input(
                ids.REASON_BLOCK,
                ids.REASON_INPUT,
                "Reason",
                optional=False,
                placeholder="Why this action should not go ahead",
            ),
        ],
    )


# ---- ephemeral replies -----------------------------------------------------------------


def not_allowed_text(contacts: Sequence[str] = ()) -> str:
    """The clicker is not an approver. ``contacts``: Slack user ids who can add people."""
    ask = " or ".join(who(c) for c in contacts if _SLACK_USER.fullmatch(c or "")) or (
        "the person who set up Signoff for this channel"
    )
    return (
        "🔒 You're not on the approvers list for this channel, so nothing was recorded. "
        f"Ask {ask} to add you if you should be able to decide on these actions."
    )


def already_decided_text(decision: DecisionView | None, status: Status) -> str:
    """Someone got there first; the click was not recorded."""
    suffix = " — nothing was recorded for you."
    if decision is not None and status in IN_FLIGHT:
        by = f"requested by {who(decision.actor)} at {slack_date(decision.at)}"
        return f"This action is already {_STATUS_WORDS[status]} ({by}){suffix}"
    op = _op(decision.op) if decision is not None else None
    if decision is not None and op is not None and decision.actor != "upstream":
        return f"Already {_OP_PAST[op]} by {who(decision.actor)} at {slack_date(decision.at)}{suffix}"
    return f"This action is already {_STATUS_WORDS[status]}{suffix}"


def info_modal(text: str) -> View:
    """A modal that only says something (the answer to a click from the App Home)."""
    return View(
        type="modal",
        callback_id=ids.INFO_VIEW,
        title=_plain("Signoff", MAX_MODAL_TITLE),
        close=_plain("Close", MAX_MODAL_TITLE),
        blocks=[_section(clip(text, MAX_TEXT))],
    )


def endorsed_text(approvals: int, needed: int) -> str:
    left = needed - approvals
    return f"Your approval is recorded ({approvals} of {needed}). It goes ahead once {left} more approver(s) approve."


def already_endorsed_text(approvals: int, needed: int) -> str:
    return (
        f"You have already approved this one ({approvals} of {needed}); the same person twice does not count. "
        "It needs another approver."
    )


def confirmation_required_text(*, in_modal: bool = False) -> str:
    if in_modal:
        return "A guardrail check failed: type APPROVE here to approve anyway."
    return (
        "A guardrail check failed, so approving needs a typed confirmation: use Approve on the card and type APPROVE."
    )


def stale_card_text() -> str:
    return (
        "This card was out of date, so nothing was recorded. "
        "It now shows the action's current state — take another look and try again if you still need to."
    )


def conflict_text(status: Status, op: Op | str | None) -> str:
    """The upstream refused the decision (409); its real state was adopted."""
    known = _op(op)
    what = f"your {_OP_NOUN[known]}" if known else "your decision"
    if status is Status.READY:  # still awaiting a decision: what was picked is no longer offered
        return (
            f"Nothing ran: the upstream no longer offers what you picked ({what}). "
            "The card now shows what it offers now."
        )
    return (
        f"The upstream refused {what}: the action was already {_STATUS_WORDS[status]}. "
        "The card now shows its current state."
    )


def failed_text(op: Op | str | None, error: Any) -> str:
    return f"{failure_line(op, error)}\nThe card shows the error; use *Retry* there if it is offered."


def unknown_action_text() -> str:
    return "Signoff doesn't know this action (it may have been removed). Nothing was recorded."


def check_failed_text() -> str:
    return "Signoff couldn't verify the approvers list just now, so nothing was recorded. Please try again in a moment."


def self_approval_text() -> str:
    return "🔒 This action was requested by you, so someone else has to decide on it. Nothing was recorded."


def store_unavailable_text() -> str:
    return (
        "Signoff couldn't record your decision just now (its database did not answer), so nothing "
        "was changed. Please try again in a moment."
    )


# ---- digests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestItem:
    action_id: int
    title: str
    type: str
    status: Status


DIGEST_ITEMS_SHOWN = 45  # with a header, an intro and a footer: within 50 blocks


def digest_blocks(items: Sequence[DigestItem], source: str) -> list[Block]:
    """One message for a flood of new actions: each with its state and an Open button."""
    waiting = sum(1 for i in items if i.status is Status.READY)
    blocks: list[Block] = [
        HeaderBlock(text=_plain(f"{len(items)} new actions from {source_name(source)}", MAX_HEADER)),
        ContextBlock(
            elements=[
                _mrkdwn(
                    f"{waiting} awaiting a decision. Listed here instead of one card each; *Open* shows an action's full card."
                )
            ]
        ),
    ]
    for item in items[:DIGEST_ITEMS_SHOWN]:
        title = esc_clip(_one_line(item.title) or "Untitled action", _ITEM_DETAIL)
        kind = f" · {esc_clip(item.type, 80)}" if item.type else ""
        blocks.append(
            SectionBlock(
                text=_mrkdwn(clip(f"*{title}*{kind}\n{_STATUS_BADGES[item.status]}", MAX_TEXT)),
                accessory=ButtonElement(
                    text=_plain("Open", MAX_BUTTON), action_id=ids.OPEN_CARD, value=str(item.action_id)
                ),
            )
        )
    if len(items) > DIGEST_ITEMS_SHOWN:
        blocks.append(
            ContextBlock(
                elements=[_mrkdwn(f"…and {len(items) - DIGEST_ITEMS_SHOWN} more: `/signoff list` shows them all.")]
            )
        )
    return blocks[:MAX_BLOCKS]


def digest_text(items: Sequence[DigestItem], source: str) -> str:
    return f"{len(items)} new actions from {source_name(source)} to review"


def digest_metadata(digest_id: int) -> Metadata:
    return Metadata(event_type=ids.DIGEST_EVENT_TYPE, event_payload={"digest_id": digest_id})
