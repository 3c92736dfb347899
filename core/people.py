"""The directory of people: who may decide, their email, and whether an action names them
as its requester. Slack's directory (``bot.auth``) is one implementation; the agents' API and
the sandbox bring others."""

from __future__ import annotations

import enum
from typing import Protocol


class Approvers:
    """Who may decide: Slack user IDs, user-group IDs, or everyone (``*``)."""

    def __init__(self, entries: list[str]) -> None:
        self.everyone = "*" in entries
        self.users = frozenset(e for e in entries if e[:1] in ("U", "W"))
        self.groups = frozenset(e for e in entries if e.startswith("S"))

    def __repr__(self) -> str:
        if self.everyone:
            return "Approvers(*)"
        return f"Approvers(users={sorted(self.users)}, groups={sorted(self.groups)})"


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    UNKNOWN = "unknown"  # a group could not be resolved: fail closed, say so


def names_requester(requester: str | None, user_id: str, email: str | None) -> bool:
    """Whether an action's requester names this Slack user: by user ID, or by their email
    (case-insensitive; ``email`` is theirs, looked up only when the requester is one)."""
    requester = (requester or "").strip()
    if not requester:
        return False
    if requester == user_id:
        return True
    return "@" in requester and email is not None and email.casefold() == requester.casefold()


class ApproversFor(Protocol):
    """Who may decide an action: its route's approvers, else the default ones."""

    def __call__(self, action_type: str, risk: str | None, *, source: str | None = None) -> Approvers: ...


class Directory(Protocol):
    """Who people are, as the core asks it."""

    @property
    def default(self) -> Approvers:
        """Who may decide where no route names its own approvers."""
        ...

    async def check(self, user_id: str, approvers: Approvers | None = None) -> Verdict:
        """Whether the user is one of ``approvers`` (the default set when None)."""
        ...

    async def email(self, user_id: str) -> str | None:
        """The user's email, where the directory knows it."""
        ...

    def cached_email(self, user_id: str) -> tuple[bool, str | None]:
        """(known, email) from what the directory holds now, asking no one: known is False
        where only ``email`` could say."""
        ...

    async def name(self, user_id: str) -> str | None:
        """The user's name (as people know them), where the directory knows it."""
        ...
