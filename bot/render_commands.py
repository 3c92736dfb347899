"""Pure renderers for the ``/signoff`` command's ephemeral answers: usage, lists, audit trails,
stats, decisions and every error.

Nothing here does I/O. As in ``bot.render``, everything that came from an Actions API and
everything a person typed (including the command text itself) is escaped and cut, every
mrkdwn object is ``verbatim``, and an answer stays within Slack's limits (50 blocks, 3000
characters per text) whatever the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from slack_sdk.models.blocks import Block, ContextBlock, DividerBlock, SectionBlock

from bot.commands import COMMAND, MAX_NOTE, PAGE_SIZE, SUBCOMMANDS, WINDOWS, Invalid, Problem
from bot.render import (
    _ITEM_LABEL,
    _NOTE_IN_LINE,
    _OP_NOUN,
    _OP_PAST,
    _STATUS_BADGES,
    _STATUS_WORDS,
    MAX_BLOCKS,
    MAX_TEXT,
    CardView,
    DecisionView,
    _fit_lines,
    _mrkdwn,
    _one_line,
    _op,
    _section,
    already_decided_text,
    card_blocks,
    card_text,
    clip,
    esc_clip,
    escape,
    slack_date,
    source_name,
    who,
)
from core.lifecycle import TRANSITIONS
from sources.base import IN_FLIGHT, Op, Status

_ERROR_IN_LINE = 500
_TITLE_IN_LIST = 200
_TITLE_IN_LINE = 80
_GIVEN = 100  # how much of what someone typed an error echoes
_MAX_LINE_SECTIONS = 20  # an audit trail beyond this many sections shows its newest entries


@dataclass(frozen=True)
class Reply:
    """One ephemeral answer: the notification text and the blocks shown."""

    text: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class ActionLine:
    """One action in a list, or the action an answer is about."""

    action_id: int
    source: str
    external_id: str
    title: str
    status: Status
    created_at: datetime | None = None
    link: str | None = None  # the card's permalink, once posted


@dataclass(frozen=True)
class ListView:
    status: Status
    page: int
    pages: int
    total: int
    items: Sequence[ActionLine]


@dataclass(frozen=True)
class AuditLine:
    """One audit-trail entry, with the action it belongs to."""

    action_id: int
    source: str
    title: str
    event: str
    op: str | None
    actor: str
    note: str | None
    to_status: str | None
    at: datetime


@dataclass(frozen=True)
class StatsView:
    days: int
    by_person: Mapping[str, Mapping[str, int]]  # actor -> op -> confirmed decisions
    median: timedelta | None  # first seen -> first confirmed approval or rejection
    timed: int  # how many actions the median is over
    sampled: bool = False  # the window held more actions than were read for the median


# ---- small pieces ------------------------------------------------------------------------------

USAGE: dict[str, str] = {  # plain text
    "help": f"{COMMAND} help",
    "list": f"{COMMAND} list [status] [page]",
    "show": f"{COMMAND} show <id>",
    "approve": f"{COMMAND} approve <id> [note]",
    "reject": f"{COMMAND} reject <id> <reason>",
    "rollback": f"{COMMAND} rollback <id> [note]",
    "retry": f"{COMMAND} retry <id>",
    "history": f"{COMMAND} history [<id>]",
    "stats": f"{COMMAND} stats [7d|30d]",
    "track": f"{COMMAND} track <source> <ids>",
}
_DOES: dict[str, str] = {
    "help": "this help",
    "list": "actions by status (default `ready`), newest first, with links to their cards",
    "show": "an action's full card, with its buttons",
    "approve": "approve, with an optional note for the audit trail",
    "reject": "reject; a reason is required",
    "rollback": "roll back an approved or running action",
    "retry": "send a decision whose upstream call failed again",
    "history": "an action's audit trail, or the latest decisions",
    "stats": "decisions by person and type, median time to decision, rollbacks",
    "track": "take an action its source cannot list, e.g. `/signoff track flowdash &lt;workflow_id&gt; &lt;task_id&gt;`",
}
_ID_HINT = (
    "`&lt;id&gt;` is the number `/signoff list` shows (`12`), or the action's id in its source "
    "(`act_01hx…`, or with the source: `flokit:act_01hx…`)."
)
_STATUS_TITLES = {status: f"Actions {words}" for status, words in _STATUS_WORDS.items()}
_STATUS_TITLES[Status.READY] = "Actions awaiting a decision"
_STATUS_TITLES[Status.DRAFT] = "Draft actions"


def _given(text: str | None) -> str:
    """Something a person typed, safe inside a code span."""
    return esc_clip(_one_line(text).replace("`", "'"), _GIVEN) or " "


def _code(text: str) -> str:
    return f"`{text}`"


def _usage(sub: str) -> str:
    """How a subcommand is typed, as a code span (mrkdwn: its ``<id>`` escaped)."""
    return _code(escape(USAGE.get(sub, f"{COMMAND} help")))


def _title(title: str, limit: int) -> str:
    return esc_clip(_one_line(title), limit) or "Untitled action"


def action_label(action: ActionLine, limit: int = _TITLE_IN_LIST) -> str:
    """ "`#12` *Title*" (mrkdwn)."""
    return f"`#{action.action_id}` *{_title(action.title, limit)}*"


def _link(url: str | None, label: str) -> str:
    if not url:
        return "_card not posted yet_"
    return f"<{escape(url)}|{label}>"


def _text_reply(text: str) -> Reply:
    """An answer of one section; ``text`` is mrkdwn already escaped."""
    text = clip(text, MAX_TEXT)
    return Reply(text, [_section(text)])


def _context(text: str) -> ContextBlock:
    return ContextBlock(elements=[_mrkdwn(clip(text, MAX_TEXT))])


def _badge(status: Status) -> str:
    return _STATUS_BADGES.get(status, status.value)


def _words(status: Status) -> str:
    return _STATUS_WORDS.get(status, status.value.replace("_", " "))


def statuses_text() -> str:
    return ", ".join(_code(s.value) for s in Status)


def duration(delta: timedelta) -> str:
    """ "45s", "12m", "2h 05m", "3d 4h"."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _pack(lines: Sequence[str], *, max_sections: int, dropped_word: str) -> list[SectionBlock]:
    """``lines`` in order, in as few sections as fit; when they do not all fit, the last ones
    (the newest) are kept and a first line says how many were left out."""
    sections: list[list[str]] = [[]]
    sizes = [0]
    kept = 0
    for line in reversed(lines):
        line = clip(line, MAX_TEXT)
        if sizes[-1] + len(line) + 1 > MAX_TEXT - 80:  # room for the "left out" line
            if len(sections) == max_sections:
                break
            sections.append([])
            sizes.append(0)
        sections[-1].append(line)
        sizes[-1] += len(line) + 1
        kept += 1
    left_out = len(lines) - kept
    texts = ["\n".join(reversed(chunk)) for chunk in reversed(sections) if chunk]
    if left_out and texts:
        texts[0] = f"_…{left_out} {dropped_word} not shown_\n{texts[0]}"
    return [_section(t) for t in texts]


# ---- help and errors -----------------------------------------------------------------------


def help_reply(lead: str | None = None) -> Reply:
    """Usage; ``lead`` (mrkdwn, escaped) goes first, e.g. what was wrong."""
    lines = [f"{_usage(s)} — {_DOES[s]}" for s in SUBCOMMANDS]
    blocks: list[Block] = []
    if lead:
        blocks.append(_section(lead))
    blocks += [
        _section("*Signoff from the keyboard.* Answers are only shown to you.\n" + "\n".join(lines)),
        _context(f"{_ID_HINT}\nStatuses: {statuses_text()}."),
    ]
    text = lead or f"Signoff: {COMMAND} list, show, approve, reject, rollback, retry, history, stats, track"
    return Reply(clip(text, MAX_TEXT), blocks)


def invalid_reply(invalid: Invalid) -> Reply:
    """What was wrong with the command, and how to say it."""
    sub = invalid.subcommand or ""
    usage = _usage(sub)
    given = _given(invalid.given)
    match invalid.problem:
        case Problem.UNKNOWN_SUBCOMMAND:
            lead = f"❓ Signoff doesn't know {_code(f'{COMMAND} {given}')}."
            if invalid.suggestion:
                lead += f" Did you mean {_code(f'{COMMAND} {invalid.suggestion}')}?"
            return help_reply(lead)
        case Problem.MISSING_ID:
            text = f"Which action? Usage: {usage}. `{COMMAND} list` shows the ids.\n{_ID_HINT}"
        case Problem.BAD_ID:
            text = f"{_code(given)} isn't an action id. {_ID_HINT}"
        case Problem.MISSING_REASON:
            text = f"A reason is required to reject: {_code(f'{COMMAND} reject {given} &lt;reason&gt;')}. Nothing was recorded."
        case Problem.NOTE_TOO_LONG:
            text = f"A note can be at most {MAX_NOTE} characters (yours has {given}). Nothing was recorded."
        case Problem.BAD_STATUS:
            text = f"{_code(given)} isn't a status. Try one of: {statuses_text()}."
        case Problem.BAD_PAGE:
            text = f"{_code(given)} isn't a page number. Usage: {usage}, e.g. {_code(f'{COMMAND} list ready 2')}."
        case Problem.BAD_WINDOW:
            windows = " or ".join(_code(f"{COMMAND} stats {w}") for w in WINDOWS)
            text = f"{_code(given)} isn't a period Signoff counts over: use {windows}."
        case _:
            text = f"Signoff didn't expect {_code(given)} there. Usage: {usage}."
    return _text_reply(text)


def refused_reply(text: str) -> Reply:
    """A refusal from ``bot.listeners.common.refusal_text`` (already safe mrkdwn)."""
    return _text_reply(text)


def unknown_action_reply(ref: str) -> Reply:
    return _text_reply(
        f"Signoff doesn't know an action {_code(_given(ref))}. "
        f"`{COMMAND} list` shows the actions awaiting a decision and their ids "
        f"(`{COMMAND} list approved` and so on for the others)."
    )


def ambiguous_action_reply(ref: str, sources: Sequence[str]) -> Reply:
    names = ", ".join(source_name(s) for s in sources)
    example = _code(f"{escape(sources[0])}:{_given(ref)}") if sources else "`source:id`"
    return _text_reply(f"{_code(_given(ref))} is an id in several sources ({names}). Add the source, e.g. {example}.")


def failure_reply() -> Reply:
    return _text_reply("Signoff couldn't answer that just now, and nothing was recorded. Please try again in a moment.")


def store_unavailable_reply() -> Reply:
    return _text_reply(
        "Signoff couldn't read its database just now, so nothing was changed. Please try again in a moment."
    )


# ---- list ----------------------------------------------------------------------------------


def _list_item(item: ActionLine) -> SectionBlock:
    facts = [_badge(item.status), f"{source_name(item.source)} {_code(esc_clip(item.external_id, _ITEM_LABEL))}"]
    if item.created_at is not None:
        facts.append(f"proposed {slack_date(item.created_at)}")
    facts.append(_link(item.link, "Open card"))
    return _section(f"{action_label(item)}\n" + " · ".join(facts))


def list_reply(view: ListView) -> Reply:
    title = _STATUS_TITLES.get(view.status) or f"Actions {_words(view.status)}"
    status = view.status.value
    if view.total == 0:
        text = f"No actions are {_words(view.status)} right now (status {_code(status)})."
        return Reply(text, [_section(text), _context(f"Other statuses: {statuses_text()}.")])
    if view.page > view.pages:
        text = (
            f"There is no page {view.page}: {view.total} {_plural(view.total, 'action')} {_words(view.status)} "
            f"fill {view.pages} {_plural(view.pages, 'page')}. Try {_code(f'{COMMAND} list {status}')}."
        )
        return _text_reply(text)
    head = f"*{title}* ({_code(status)}) — {view.total}, newest first"
    blocks: list[Block] = [_section(head)]
    blocks += [_list_item(item) for item in view.items[:PAGE_SIZE]]
    footer = f"Page {view.page} of {view.pages}"
    if view.page < view.pages:
        footer += f" — {_code(f'{COMMAND} list {status} {view.page + 1}')} for more"
    footer += f" · {_code(f'{COMMAND} show &lt;id&gt;')} for the full card"
    blocks.append(_context(footer))
    return Reply(f"{title}: {view.total}, page {view.page} of {view.pages}", blocks[:MAX_BLOCKS])


def _plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


# ---- show ----------------------------------------------------------------------------------


def show_reply(card: CardView, link: str | None) -> Reply:
    """The card itself, buttons and all, with where the real one is."""
    where = f"Only you can see this copy of `#{card.action_id}` · {_link(link, 'Open the card in its channel')}"
    blocks = card_blocks(card)[: MAX_BLOCKS - 1] + [_context(where)]
    return Reply(card_text(card), blocks)


# ---- decisions -----------------------------------------------------------------------------


_RECORDED_MARKS = {Op.APPROVE: "✅", Op.REJECT: "🚫", Op.ROLLBACK: "↩️"}


def decided_reply(action: ActionLine, op: Op) -> Reply:
    """The decision is durable; the outbox carries it upstream."""
    return _text_reply(
        f"{_RECORDED_MARKS[op]} Your {_OP_NOUN[op]} of {action_label(action)} is recorded. "
        f"{source_name(action.source)} is being told, and the card will update."
    )


def retried_reply(action: ActionLine, op: Op | None) -> Reply:
    what = f"The {_OP_NOUN[op]}" if op else "The decision"
    return _text_reply(f"🔁 {what} of {action_label(action)} is being sent to {source_name(action.source)} again.")


def not_possible_reply(action: ActionLine, op: Op, decision: DecisionView | None) -> Reply:
    """The action's state does not allow ``op``: someone decided first, or it never could."""
    status = action.status
    if status in IN_FLIGHT or _led_to(decision, status):
        return _text_reply(f"{action_label(action)}: {already_decided_text(decision, status)}")
    allowed = " or ".join(_words(s) for s in sorted(TRANSITIONS[op].allowed_from, key=list(Status).index))
    return _text_reply(
        f"{action_label(action)} is {_words(status)}, so it can't be {_OP_PAST[op]} "
        f"(only actions {allowed} can). Nothing was recorded."
    )


def _led_to(decision: DecisionView | None, status: Status) -> bool:
    """Whether ``decision`` is a person's (or Signoff's) decision that put the action in ``status``."""
    if decision is None or decision.actor == "upstream" or decision.event not in ("requested", "retried", "confirmed"):
        return False
    op = _op(decision.op)
    return op is not None and status in (TRANSITIONS[op].in_flight, TRANSITIONS[op].outcome)


def not_retryable_reply(action: ActionLine) -> Reply:
    return _text_reply(
        f"{action_label(action)} has no failed upstream call to retry (it is {_words(action.status)}). "
        "Nothing was recorded."
    )


def unsupported_reply(action: ActionLine | None, op: Op) -> Reply:
    where = source_name(action.source) if action else "This action's source"
    return _text_reply(f"{where} can't {op.value.replace('rollback', 'roll back')} actions, so nothing was recorded.")


# ---- history -------------------------------------------------------------------------------


def audit_phrase(line: AuditLine) -> str:
    """What one audit entry says, in mrkdwn (untrusted parts escaped)."""
    op = _op(line.op)
    noun = _OP_NOUN[op] if op else "decision"
    source = source_name(line.source)
    by = who(line.actor, line.source)
    to = _status(line.to_status)
    badge = _badge(to) if to else esc_clip(line.to_status or "a new state", 40)
    note = _one_line(line.note)
    with_note = f" — {esc_clip(note, _NOTE_IN_LINE)}" if note else ""
    match line.event:
        case "discovered":
            return f"📥 Found in {source} ({badge})"
        case "requested":
            if line.actor == "signoff":
                return f"🤖 Signoff asked for a {noun} automatically{with_note}"
            return f"🖊 {by} asked for the {noun}{with_note}"
        case "retried":
            return f"🔁 {by} retried the {noun}"
        case "confirmed":
            return f"{badge}: {source} confirmed the {noun} by {by}{with_note}"
        case "conflict":
            return f"⚠️ {source} refused the {noun}: it shows {badge}"
        case "failed":
            error = f": {esc_clip(note, _ERROR_IN_LINE)}" if note else ""
            return f"💥 The {noun} failed{error}"
        case "upstream":
            decided = f" by {esc_clip(note, _ITEM_LABEL)}" if note else ""
            return f"🔄 {badge} in {source}{decided}"
    return f"{esc_clip(line.event, 40)}{with_note}"


def _status(value: str | None) -> Status | None:
    try:
        return Status(value) if value is not None else None
    except ValueError:
        return None


def history_reply(action: ActionLine, lines: Sequence[AuditLine]) -> Reply:
    """One action's audit trail, oldest first."""
    head = f"*History of* {action_label(action, 150)} — now {_badge(action.status)}"
    entries = [f"{slack_date(line.at)} · {audit_phrase(line)}" for line in lines]
    if not entries:
        entries = ["_Nothing recorded yet._"]
    blocks: list[Block] = [_section(head), DividerBlock()]
    blocks += _pack(entries, max_sections=_MAX_LINE_SECTIONS, dropped_word="earlier entries")
    blocks.append(
        _context(f"{_link(action.link, 'Open the card')} · `{COMMAND} show {action.action_id}` for the card here")
    )
    count = "1 entry" if len(lines) == 1 else f"{len(lines)} entries"
    return Reply(f"History of #{action.action_id}: {count}", blocks[:MAX_BLOCKS])


def latest_reply(lines: Sequence[AuditLine]) -> Reply:
    """The latest audit entries across actions, newest first."""
    if not lines:
        return _text_reply("Nothing has been decided yet.")
    entries = [
        f"{slack_date(line.at)} · `#{line.action_id}` {_title(line.title, _TITLE_IN_LINE)} · {audit_phrase(line)}"
        for line in lines
    ]
    newest = "the newest entry" if len(lines) == 1 else f"the {len(lines)} newest entries"
    blocks: list[Block] = [_section(f"*Latest decisions* — {newest} of the audit trail")]
    blocks += _pack(entries, max_sections=_MAX_LINE_SECTIONS, dropped_word="older entries")
    blocks.append(_context(f"`{COMMAND} history &lt;id&gt;` for one action's whole trail"))
    return Reply(f"Latest decisions: {newest}", blocks[:MAX_BLOCKS])


# ---- stats ---------------------------------------------------------------------------------


def _ops_text(counts: Mapping[str, int]) -> str:
    parts = []
    for op in Op:
        n = counts.get(op.value, 0)
        if n:
            parts.append(f"{n} {_OP_PAST[op]}")
    return " · ".join(parts)


def _person(actor: str) -> str:
    if actor == "signoff":
        return "Signoff (automatic)"
    return who(actor)


def stats_reply(view: StatsView) -> Reply:
    by_person = sorted(view.by_person.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    totals: dict[str, int] = {}
    for _actor, counts in by_person:
        for op, n in counts.items():
            totals[op] = totals.get(op, 0) + n
    total = sum(totals.values())
    head = f"*Decisions in the last {view.days} days* — {total} confirmed"
    if total == 0:
        text = f"No decisions were confirmed in the last {view.days} days."
        return Reply(text, [_section(text)])
    people = [f"• {_person(actor)} — {sum(counts.values())}: {_ops_text(counts)}" for actor, counts in by_person]
    rollbacks = totals.get(Op.ROLLBACK.value, 0)
    automatic = view.by_person.get("signoff", {}).get(Op.ROLLBACK.value, 0)
    if view.median is None:
        median = "no approvals or rejections confirmed"
    else:
        median = (
            f"{duration(view.median)} from first seen to approved or rejected, over {view.timed} "
            f"{_plural(view.timed, 'action')}" + (" (the most recent ones)" if view.sampled else "")
        )
    blocks: list[Block] = [
        _section(head),
        _section(f"*By type*\n{_ops_text(totals)}"),
        _section(f"*Median time to decision*\n{median}"),
        _section(f"*Rollbacks*\n{rollbacks} ({automatic} automatic)"),
        _section(_fit_lines("*By person*", people, MAX_TEXT)),
        _context(f"Confirmed by the Actions API. `{COMMAND} stats 7d` or `{COMMAND} stats 30d`."),
    ]
    return Reply(f"Decisions in the last {view.days} days: {total}", blocks)


def tracked_reply(source: str, external_id: str, action_id: int, *, created: bool, carded: bool) -> Reply:
    """What ``/signoff track`` did (ids escaped)."""
    what = f"{source_name(source)} {_code(escape(external_id))}"
    if not carded:
        return _text_reply(
            f"Stored {what} as `#{action_id}`, but it offers nothing to decide now, so no card was posted."
        )
    if created:
        return _text_reply(f"Tracking {what} as `#{action_id}`: its card is on its way to the channel.")
    return _text_reply(f"{what} is already tracked as `#{action_id}`; its card shows what it offers now.")


def track_failed_reply(source: str, problem: str) -> Reply:
    """``/signoff track`` could not take the action (``problem`` is escaped here)."""
    return _text_reply(
        f"Signoff couldn't track that in {source_name(source)}: {esc_clip(problem, 500)}. Nothing was stored."
    )
