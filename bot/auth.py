"""Who may decide: checked on every decision path against ``APPROVERS``, never trusted from
a payload. User groups are resolved through ``usergroups.users.list`` and cached briefly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.people import Approvers, Verdict, names_requester  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


class ApproverCheck:
    def __init__(
        self,
        approvers: Approvers,
        client: AsyncWebClient,
        *,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._approvers = approvers
        self._client = client
        self._ttl = ttl_seconds
        self._clock = clock
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._emails: dict[str, tuple[float, tuple[str | None, str | None]]] = {}

    @property
    def default(self) -> Approvers:
        """``APPROVERS``: who may decide where no route names its own approvers."""
        return self._approvers

    async def check(self, user_id: str, approvers: Approvers | None = None) -> Verdict:
        """Whether the user may decide: against ``APPROVERS``, or the given set (a route's)."""
        approvers = approvers or self._approvers
        if approvers.everyone or user_id in approvers.users:
            return Verdict.ALLOWED
        unknown = False
        for group in sorted(approvers.groups):
            try:
                members = await self._members(group)
            except SlackApiError as e:
                log.warning("could not resolve user group %s: %s", group, e.response.get("error"))
                unknown = True
                continue
            if user_id in members:
                return Verdict.ALLOWED
        return Verdict.UNKNOWN if unknown else Verdict.DENIED

    async def email(self, user_id: str) -> str | None:
        """The user's email from ``users.info`` (scope users:read.email), cached like groups;
        None where Slack has none or cannot say."""
        profile = await self._profile(user_id)
        return profile[0] if profile else None

    async def name(self, user_id: str) -> str | None:
        """The user's real name (else display name) from ``users.info``, cached like the email."""
        profile = await self._profile(user_id)
        return profile[1] if profile else None

    async def _profile(self, user_id: str) -> tuple[str | None, str | None] | None:
        """(email, name) from one ``users.info``; None where Slack cannot say (not cached)."""
        cached = self._emails.get(user_id)
        if cached and self._clock() - cached[0] < self._ttl:
            return cached[1]
        try:
            response = await self._client.users_info(user=user_id)
        except SlackApiError as e:
            log.warning("users.info for %s failed: %s", user_id, e.response.get("error"))
            return None
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        email = profile.get("email") or None
        name = (
            profile.get("real_name") or user.get("real_name") or profile.get("display_name") or user.get("name") or None
        )
        self._emails[user_id] = (self._clock(), (email, name))
        return email, name

    def cached_email(self, user_id: str) -> tuple[bool, str | None]:
        cached = self._emails.get(user_id)
        if cached and self._clock() - cached[0] < self._ttl:
            return True, cached[1][0]
        return False, None

    async def _members(self, group: str) -> frozenset[str]:
        cached = self._groups.get(group)
        if cached and self._clock() - cached[0] < self._ttl:
            return cached[1]
        lock = self._locks.setdefault(group, asyncio.Lock())
        async with lock:
            cached = self._groups.get(group)
            if cached and self._clock() - cached[0] < self._ttl:
                return cached[1]
            response = await self._client.usergroups_users_list(usergroup=group)
            members = frozenset(response.get("users") or ())
            self._groups[group] = (self._clock(), members)
            return members
