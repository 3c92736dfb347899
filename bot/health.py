"""Which part of Signoff is unhealthy because a credential stopped working, and saying so once.

A credential can be refused long after start (a token revoked, a key rotated). Each part is
tracked where its calls go through, not in every job: :class:`TrackedSlackClient` watches
every Web API answer, :class:`TrackedSource` every Actions API answer. A refusal marks the
part unhealthy (``/healthz`` then answers 503 naming it) and is logged once; the next answer
that is not a refusal marks it healthy again, logged once too. Meanwhile the jobs' own
per-retry lines about the same refusal are dropped by :class:`QuietWhileReported`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from sources.base import ActionSource, SourceError

log = logging.getLogger("signoff.health")

# Web API errors that mean the token itself is no good (not the call).
SLACK_AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"})
# HTTP statuses with which an Actions API refuses the key.
REFUSED_STATUSES = frozenset({401, 403})

SLACK = "slack"

_T = TypeVar("_T")


def slack_refusal(error: SlackApiError) -> str | None:
    """The Web API error code when it says the token is refused, else None."""
    code = error.response.get("error") if error.response is not None else None
    return code if code in SLACK_AUTH_ERRORS else None


def source_refused(error: SourceError) -> bool:
    return error.status in REFUSED_STATUSES


class Health:
    """The parts currently unhealthy, each with why; every change is logged once."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}

    @property
    def problems(self) -> dict[str, str]:
        return dict(self._problems)

    def failing(self, part: str, why: str) -> None:
        if self._problems.get(part) == why:
            return
        self._problems[part] = why
        log.error("%s is unhealthy: %s", part, why)

    def healthy(self, part: str) -> None:
        if self._problems.pop(part, None) is not None:
            log.info("%s is healthy again", part)

    def is_failing(self, part: str) -> bool:
        return part in self._problems


class TrackedSlackClient(AsyncWebClient):
    """``AsyncWebClient`` telling :class:`Health` whether Slack still takes the bot token."""

    def __init__(self, *, health: Health, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.health = health

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        try:
            response = await super().api_call(api_method, **kwargs)
        except SlackApiError as e:
            code = slack_refusal(e)
            if code is not None:
                self.health.failing(SLACK, f"SLACK_BOT_TOKEN refused by Slack ({code})")
            else:
                self.health.healthy(SLACK)
            raise
        self.health.healthy(SLACK)
        return response


class TrackedSource:
    """An :class:`ActionSource` telling :class:`Health` whether it still takes our key.

    Every call that reaches the source's API goes through ``_tracked``; everything else (its
    name, capabilities, what it can do) is the wrapped source's own, so the registry sees
    the same kind of source (listed or pushed) as without the wrapper."""

    _CALLS = frozenset({"list_actions", "get_action", "submit", "track", "intake", "check_access"})

    def __init__(self, source: ActionSource, health: Health, *, credential: str, display_name: str = "") -> None:
        self._source = source
        self._display = display_name or source.name
        self._health = health
        self._credential = credential
        self.name = source.name
        self.capabilities = source.capabilities

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._source, name)
        if name not in self._CALLS or not callable(attribute):
            return attribute

        async def tracked(*args: Any, **kwargs: Any) -> Any:
            return await self._tracked(lambda: attribute(*args, **kwargs))

        return tracked

    async def _tracked(self, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            result = await call()
        except SourceError as e:
            if source_refused(e):
                self._health.failing(self.name, f"{self._credential} refused by {self._display} (HTTP {e.status})")
            elif e.status is not None:  # it answered, so it took the key
                self._health.healthy(self.name)
            raise
        self._health.healthy(self.name)
        return result


class QuietWhileReported(logging.Filter):
    """Drops a log line about a refusal :class:`Health` has already reported (the jobs log
    each retry; the refusal itself is logged once per change, by Health)."""

    def __init__(self, health: Health) -> None:
        super().__init__()
        self._health = health

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        for arg in args:
            if isinstance(arg, str) and arg in SLACK_AUTH_ERRORS and self._health.is_failing(SLACK):
                return False
            if isinstance(arg, SlackApiError) and slack_refusal(arg) and self._health.is_failing(SLACK):
                return False
            if isinstance(arg, SourceError) and source_refused(arg) and self._health.problems:
                return False
        return True
