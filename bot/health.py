"""Which part of Signoff is unhealthy because a credential stopped working, and saying so once.

A credential can be refused long after start (a token revoked, a key rotated). Each part is
tracked where its calls go through, not in every job: :class:`TrackedSlackClient` watches
every Web API answer, :class:`TrackedSource` every Actions API answer. A refusal marks the
part unhealthy (``/healthz`` then answers 503 naming it) and is logged once; the next answer
that is not a refusal marks it healthy again, logged once too. Meanwhile the jobs' own
per-retry lines about the same refusal are dropped by :class:`QuietWhileReported`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from core.metrics import Metrics
from sources.base import ActionSource, ConflictError, PermanentError, RequirementsError, SourceError

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


def result_class(error: BaseException | None) -> str:
    """The result class of an Actions API call, for its metrics: ok, conflict, requirements,
    permanent or transient (anything else that went wrong counts as transient)."""
    if error is None:
        return "ok"
    if isinstance(error, ConflictError):
        return "conflict"
    if isinstance(error, RequirementsError):
        return "requirements"
    if isinstance(error, PermanentError) or (isinstance(error, SourceError) and not error.retryable):
        return "permanent"
    return "transient"


def _method_of(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "unknown"


class CountedRateLimitRetries(AsyncRateLimitErrorRetryHandler):
    """Slack's 429 retry handler, counting each 429 and whether it was retried."""

    def __init__(self, metrics: Metrics, max_retry_count: int = 3) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._metrics = metrics

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        retry = await super().can_retry_async(state=state, request=request, response=response, error=error)
        if response is not None and response.status_code == 429:
            self._metrics.slack_429(_method_of(request.url), retried=retry)
        return retry


class TrackedSlackClient(AsyncWebClient):
    """``AsyncWebClient`` telling :class:`Health` whether Slack still takes the bot token,
    and counting every call by method and error (``ok`` when none)."""

    def __init__(self, *, health: Health, metrics: Metrics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.health = health
        self.metrics = metrics

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        started = time.monotonic()
        error = "ok"
        try:
            response = await super().api_call(api_method, **kwargs)
        except SlackApiError as e:
            error = (
                str(e.response.get("error") or f"http_{e.response.status_code}") if e.response is not None else "other"
            )
            code = slack_refusal(e)
            if code is not None:
                self.health.failing(SLACK, f"SLACK_BOT_TOKEN refused by Slack ({code})")
            else:
                self.health.healthy(SLACK)
            raise
        except Exception:
            error = "unreachable"  # no answer: a broken connection, a timeout
            raise
        finally:
            if self.metrics is not None:
                self.metrics.slack_call(api_method, error, time.monotonic() - started)
        self.health.healthy(SLACK)
        return response


class TrackedSource:
    """An :class:`ActionSource` telling :class:`Health` whether it still takes our key.

    Every call that reaches the source's API goes through ``_tracked``; everything else (its
    name, capabilities, what it can do) is the wrapped source's own, so the registry sees
    the same kind of source (listed or pushed) as without the wrapper."""

    _CALLS = frozenset({"list_actions", "get_action", "submit", "track", "intake", "check_access"})

    def __init__(
        self,
        source: ActionSource,
        health: Health,
        *,
        credential: str,
        display_name: str = "",
        metrics: Metrics | None = None,
    ) -> None:
        self._source = source
        self._metrics = metrics
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
            return await self._tracked(name, lambda: attribute(*args, **kwargs))

        return tracked

    async def _tracked(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        started = time.monotonic()
        failure: BaseException | None = None
        try:
            result = await self._health_tracked(call)
        except BaseException as e:
            failure = e
            raise
        finally:
            if self._metrics is not None and not isinstance(failure, asyncio.CancelledError):
                self._metrics.upstream_call(self.name, operation, result_class(failure), time.monotonic() - started)
        return result

    async def _health_tracked(self, call: Callable[[], Awaitable[_T]]) -> _T:
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
