"""Every Block Kit action_id, callback_id and block_id Signoff uses, in one place."""

from __future__ import annotations

import re
from typing import Final

# Buttons on a card. The button's value is the store's action id (an int, as text); the
# listener checks it against the card the click came from, so an edited value is refused.
APPROVE: Final = "signoff.approve"
REJECT: Final = "signoff.reject"
ROLLBACK: Final = "signoff.rollback"
RETRY: Final = "signoff.retry"
# A source's own named option ("Escalate"): "signoff.option:<key>", or, for a second option
# of a kind that has its own button, "signoff.option:<kind>:<key>" (the key is the source's
# id for the option; the listener checks it against the options the action offers now).
OPTION_PREFIX: Final = "signoff.option:"
OPTION_PATTERN: Final = re.compile(r"^signoff\.option:")
_MAX_ACTION_ID = 255
# The overflow menu holding the options beyond a card's first buttons. Each entry's value is
# "<action id>|<kind>|<key>" (checked like a button's: against the card and what it offers).
OVERFLOW: Final = "signoff.overflow"
# On a digest (a flood of new actions listed in one message): show one action's card.
OPEN_CARD: Final = "signoff.open_card"

# Modals.
APPROVE_VIEW: Final = "signoff.approve_view"
REJECT_VIEW: Final = "signoff.reject_view"
INFO_VIEW: Final = "signoff.info_view"  # says something, takes nothing
NOTE_BLOCK: Final = "signoff.note"
NOTE_INPUT: Final = "signoff.note_input"
REASON_BLOCK: Final = "signoff.reason"
REASON_INPUT: Final = "signoff.reason_input"
CONFIRM_BLOCK: Final = "signoff.confirm"
CONFIRM_INPUT: Final = "signoff.confirm_input"

# Message metadata attached to every card, so a card can be found in the channel again.
CARD_EVENT_TYPE: Final = "signoff_card"
# Message metadata on every notice in a card's thread (status changes, tripped rules).
NOTICE_EVENT_TYPE: Final = "signoff_notice"
# Message metadata on every digest.
DIGEST_EVENT_TYPE: Final = "signoff_digest"


def option_action_id(key: str, kind: object | None = None) -> str:
    """The button action_id of a source's own option (at most Slack's 255 characters)."""
    kind_part = f"{getattr(kind, 'value', kind)}:" if kind is not None else ""
    return (OPTION_PREFIX + kind_part + key)[:_MAX_ACTION_ID]


def parse_option_action_id(action_id: str) -> tuple[str | None, str] | None:
    """(kind or None, key) from an option button's action_id; None if it is not one."""
    if not action_id.startswith(OPTION_PREFIX):
        return None
    rest = action_id[len(OPTION_PREFIX) :]
    kind, sep, key = rest.partition(":")
    if sep and kind in ("approve", "reject", "rollback", "other"):
        return kind, key
    return None, rest


def overflow_value(action_value: str, kind: str, key: str) -> str:
    """An overflow entry's value: the card's action id, the option's kind and its key."""
    return f"{action_value}|{kind}|{key}"


def parse_overflow_value(value: str) -> tuple[str, str, str] | None:
    """(action id text, kind, key) from an overflow entry's value; None if it is not one."""
    action_value, sep, rest = value.partition("|")
    kind, sep2, key = rest.partition("|")
    if not sep or not sep2 or kind not in ("approve", "reject", "rollback", "other"):
        return None
    return action_value, kind, key
