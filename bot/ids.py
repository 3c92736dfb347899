"""Every Block Kit action_id, callback_id and block_id Signoff uses, in one place."""

from __future__ import annotations

from typing import Final

# Buttons on a card. The button's value is the store's action id (an int, as text); the
# listener checks it against the card the click came from, so an edited value is refused.
APPROVE: Final = "signoff.approve"
REJECT: Final = "signoff.reject"
ROLLBACK: Final = "signoff.rollback"
RETRY: Final = "signoff.retry"
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
