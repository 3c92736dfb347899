"""Pure renderers for the messages Signoff posts in a card's thread: status changes, tripped
rollback conditions, recoveries and windows that ended.

A notice's ``payload`` is what ``store.queries``/``core.watch`` recorded when it was owed
(plain JSON values); everything in it that came from outside is escaped and cut as on cards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, ContextBlock, DividerBlock
from slack_sdk.models.metadata import Metadata

from bot import ids
from bot.render import (
    _ERROR_IN_LINE,
    _ITEM_DETAIL,
    _NOTE_IN_LINE,
    _OP_NOUN,
    _STATUS_BADGES,
    MAX_BLOCKS,
    MAX_BUTTON,
    MAX_CONFIRM_TEXT,
    MAX_TEXT,
    CardView,
    _mrkdwn,
    _number,
    _one_line,
    _op,
    _plain,
    _section,
    card_blocks,
    clip,
    esc_clip,
    source_name,
    status_line,
    who,
)
from sources.base import Op, Status

_MENTION = re.compile(r"<@[UW][A-Z0-9]{1,20}>|<!subteam\^S[A-Z0-9]{1,20}>")
_ID = re.compile(r"[CG][A-Z0-9]{1,20}")


@dataclass(frozen=True)
class NoticeView:
    notice_id: int
    action_id: int
    kind: str  # "status" | "trip" | "recovered" | "window_over"
    payload: dict[str, Any]
    source: str
    title: str


def _status(value: Any) -> Status | None:
    try:
        return Status(value)
    except ValueError:
        return None


def _note(note: Any) -> str:
    text = _one_line(note)
    return f" — {esc_clip(text, _NOTE_IN_LINE)}" if text else ""


def _value(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(round(float(value), 6))
    return "unknown"


def status_notice_text(payload: dict[str, Any], source: str) -> str:
    """One line for a state change that landed, in mrkdwn."""
    event, op = payload.get("event"), _op(payload.get("op"))
    to = _status(payload.get("to_status"))
    badge = _STATUS_BADGES.get(to, esc_clip(payload.get("to_status"), 40)) if to else "a new state"
    actor = str(payload.get("actor") or "")
    if event == "confirmed":
        if actor == "signoff" and op is Op.ROLLBACK:
            return f"{badge} automatically by Signoff{_note(payload.get('note'))}"
        return f"{badge} by {who(actor, source)}{_note(payload.get('note'))} (confirmed by {source_name(source)})"
    if event == "expired":
        return f"{badge}{_note(payload.get('note'))}. The buttons are gone; decide in {source_name(source)} if still needed."
    if event == "conflict":
        what = _OP_NOUN[op] if op else "decision"
        return f"⚠️ {source_name(source)} refused the {what}: it shows {badge}"
    if event == "failed":
        what = _OP_NOUN[op].capitalize() if op else "The last request"
        error = esc_clip(_one_line(payload.get("error") or payload.get("note")) or "unknown error", _ERROR_IN_LINE)
        return f"⚠️ {what} failed: {error}. Use *Retry* on the card to send it again."
    by = _one_line(payload.get("note"))
    by_phrase = f" by {esc_clip(by, _ITEM_DETAIL)}" if by else ""
    return f"{badge} — seen in {source_name(source)}{by_phrase}"


def trip_text(payload: dict[str, Any]) -> str:
    rule = esc_clip(_one_line(payload.get("rule")), _ITEM_DETAIL)
    lines = [f"🚨 *Rollback condition tripped:* `{rule}`"]
    observed = f"Observed *{_value(payload.get('value'))}*"
    if payload.get("baseline") is not None:
        observed += f", value at execution {_value(payload.get('baseline'))}"
    detail = _one_line(payload.get("detail"))
    lines.append(observed + (f" ({esc_clip(detail, _ITEM_DETAIL)})" if detail else ""))
    condition = _one_line(payload.get("condition"))
    if condition:
        lines.append(f"_Condition:_ {esc_clip(condition, _ITEM_DETAIL)}")
    approver = payload.get("approver")
    if payload.get("rollback_queued"):
        lines.append("↩️ Auto-rollback is on for this action type: Signoff is rolling it back now.")
    elif payload.get("auto_rollback"):
        lines.append("Auto-rollback is on, but the action could not be rolled back from its current state.")
    else:
        lines.append("Roll it back with the button below if it should not keep running.")
    if approver:
        lines.append(f"Approved by {who(str(approver))}.")
    return "\n".join(lines)


def _waited(payload: dict[str, Any]) -> str:
    hours = payload.get("hours")
    if not isinstance(hours, (int, float)) or isinstance(hours, bool):
        return "a while"
    return f"{_number(round(float(hours), 1))}h" if hours < 48 else f"{_number(round(float(hours) / 24, 1))} days"


def _mentions(payload: dict[str, Any]) -> str:
    # Built by Signoff from configured IDs (never from upstream text): safe to send as mentions.
    found = [m for m in payload.get("mentions") or [] if isinstance(m, str) and _MENTION.fullmatch(m)]
    return " ".join(found) if found else "Approvers"


def reminder_text(payload: dict[str, Any]) -> str:
    lines = [f"⏰ {_mentions(payload)}: this action has waited {_waited(payload)} for a decision."]
    by_hand = [esc_clip(_one_line(c), _ITEM_DETAIL) for c in payload.get("by_hand") or []]
    if by_hand:
        lines.append("Once it runs, these rollback conditions must be checked by a person:")
        lines.extend(f"• {c}" for c in by_hand[:10])
    return "\n".join(lines)


def escalation_text(payload: dict[str, Any]) -> str:
    where = ""
    channel = payload.get("card_channel")
    if isinstance(channel, str) and _ID.fullmatch(channel):
        where = f" in <#{channel}>"
    return f"📣 *Escalated:* waiting {_waited(payload)} for a decision{where}. {_mentions(payload)}"


def notice_text(view: NoticeView) -> str:
    """The notice in mrkdwn (also the notification text)."""
    p = view.payload
    match view.kind:
        case "status":
            text = status_notice_text(p, view.source)
        case "trip":
            text = trip_text(p)
        case "recovered":
            text = (
                f"✅ Back within limit: `{esc_clip(_one_line(p.get('rule')), _ITEM_DETAIL)}` "
                f"(now {_value(p.get('value'))}). Watching for another trip."
            )
        case "reminder":
            text = reminder_text(p)
        case "escalation":
            text = escalation_text(p)
        case "window_over":
            rule = esc_clip(_one_line(p.get("rule")), _ITEM_DETAIL)
            if p.get("trips"):
                text = f"⏹ Window over for `{rule}` (it tripped {p.get('trips')} time(s)); no longer watched."
            else:
                text = f"⏹ Window over: `{rule}` never tripped; no longer watched."
        case _:
            text = esc_clip(_one_line(p.get("text")) or view.kind, MAX_TEXT)
    return clip(text, MAX_TEXT)


def _rollback_button(view: NoticeView) -> ButtonElement:
    title = esc_clip(_one_line(view.title), 200)
    confirm = ConfirmObject(
        title="Roll back this action?",
        text=_mrkdwn(clip(f"*{title}*\nThis asks {source_name(view.source)} to undo it.", MAX_CONFIRM_TEXT)),
        confirm="Roll back",
        deny="Cancel",
        style="danger",
    )
    return ButtonElement(
        text=_plain("Roll back", MAX_BUTTON),
        action_id=ids.ROLLBACK,
        value=str(view.action_id),
        style="danger",
        confirm=confirm,
    )


# Notices that carry buttons: re-rendered with the card, so they never offer a stale decision.
LIVE_KINDS = frozenset({"trip", "escalation"})


def notice_blocks(view: NoticeView, card: CardView | None = None) -> list[Block]:
    """The notice; an escalation carries the whole card (with its buttons) below its line.
    A trip offers Rollback while the action (as ``card`` shows it now, when given) allows it."""
    blocks: list[Block] = [_section(notice_text(view))]
    if view.kind == "escalation" and card is not None:
        return (blocks + [DividerBlock()] + card_blocks(card))[:MAX_BLOCKS]
    if view.kind == "trip" and not view.payload.get("rollback_queued"):
        if card is None or any(o.kind is Op.ROLLBACK for o in card.options):
            blocks.append(ActionsBlock(elements=[_rollback_button(view)]))
        else:
            blocks.append(ContextBlock(elements=[_mrkdwn(clip(f"Now: {status_line(card)}", MAX_TEXT))]))
    return blocks


def notice_metadata(view: NoticeView) -> Metadata:
    """Lets a posted notice be found in its thread again."""
    return Metadata(event_type=ids.NOTICE_EVENT_TYPE, event_payload={"notice_id": view.notice_id})
