"""The sandbox's workspace: its channel, its people and the secrets its two sides share.

Nothing here is a credential: the sandbox's Slack and the bot run in one process on loopback,
and these values only let the one talk to the other as Slack and a Slack app would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CHANNEL: Final = "C0SANDBOX"
CHANNEL_NAME: Final = "approvals"
SIGNING_SECRET: Final = "sandbox-signing-secret"
BOT_TOKEN: Final = "xoxb-sandbox-token"
# Signoff's own Actions API: the agents that propose the example actions (service keys), and
# the sandbox's page, which proposes for the requester.
AGENT_KEY: Final = "sandbox-agent-key-0001"
AGENT: Final = "example-agent"


@dataclass(frozen=True)
class Person:
    user_id: str
    name: str  # the display name: mentions and the people picker show it
    real_name: str
    email: str
    part: str  # "approver", "not an approver" or "requester", as the people picker labels them


APPROVER: Final = Person("U0SBADA", "Ada Lovelace", "Ada Lovelace", "ada@example.com", "approver")
OUTSIDER: Final = Person("U0SBOSCAR", "Oscar Outsider", "Oscar Outsider", "oscar@example.com", "not an approver")
# The requester proposes through the page's form; her API client is named by her Slack user ID,
# which is how Signoff knows she may not approve what she asked for herself.
REQUESTER: Final = Person("U0SBRITA", "Rita Requester", "Rita Requester", "rita@example.com", "requester")
PEOPLE: Final = (APPROVER, OUTSIDER, REQUESTER)
REQUESTER_KEY: Final = "sandbox-requester-key-0001"


def person(user_id: str) -> Person | None:
    return next((p for p in PEOPLE if p.user_id == user_id), None)


def api_keys() -> str:
    """``API_KEYS`` for the sandbox's bot: the example agent and the requester (service)."""
    return f"{AGENT}:service:{AGENT_KEY},{REQUESTER.user_id}:service:{REQUESTER_KEY}"
