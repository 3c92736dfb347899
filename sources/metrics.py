"""Current metric values for the rollback watch, behind a small provider interface.

Signoff watches an approved action's rollback conditions ("If blended ROAS drops >15% within 7
days") and needs the metric's value now. Where that value comes from is a
:class:`MetricsProvider`; :class:`HttpMetrics` is the first one, a configurable endpoint
(``METRICS_URL``) with this contract::

    GET {METRICS_URL}?metric=<slug>&action_id=<id>
    200 {"metric": "<slug>", "value": <number>, "observed_at": "<ISO 8601>"}
    404 when it has no such metric (for this action)

Other providers (the action's own data signals as the Actions API refreshes them, values
pushed to Signoff) implement the same :class:`MetricsProvider` and raise the same errors.

Errors: every failure leaves as a :class:`MetricsError`; aiohttp exceptions are chained as
``__cause__``, never raised themselves. Messages are short, name the metric and the action,
and never carry the token, the endpoint's query string or the provider's error body.

* :class:`MetricNotFound`: 404.
* :class:`MetricsUnavailable`: refused or reset connections, timeouts, 408, 429 and 5xx.
* :class:`MetricsBadResponse`: a 2xx that is not the documented shape, any other status (a
  401/403/400 says the configuration is wrong; the status is in the message), and redirects,
  which are not followed (``METRICS_URL`` should name the endpoint itself, and a redirect
  would carry the token elsewhere).

The client does not retry: the watch job asks again on its next check.

What a 200 must hold (extra fields are ignored):

* a JSON object of at most 64 KiB;
* ``metric`` equal to the requested slug: an answer for another metric is not believed;
* ``value`` a finite JSON number (an int or a float; not a bool, not null, not NaN or
  Infinity). Strings are refused, numeric ones ("2.5") too: the contract says a number,
  and a provider sending text is one whose units or format we cannot be sure of;
* ``observed_at`` an ISO 8601 string as :meth:`datetime.fromisoformat` reads it ("Z" and
  offsets accepted); a naive timestamp is taken as UTC; more than five minutes in the future
  (clock skew allowance) is refused.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final, Protocol, runtime_checkable
from urllib.parse import quote, unquote_plus

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

MAX_BODY: Final = 64 * 1024
MAX_FUTURE: Final = timedelta(minutes=5)
_SHOWN: Final = 60  # characters of a slug, an id or an upstream word quoted in a message
_TRANSIENT_STATUSES: Final = frozenset({408, 429})


@dataclass(frozen=True)
class Observation:
    """One value of one metric, as the provider saw it at ``observed_at`` (aware, UTC)."""

    metric: str
    value: float
    observed_at: datetime


# ---- the one error family -------------------------------------------------------------


class MetricsError(Exception):
    """Any failure getting a metric's value. ``str()`` is a short reason without secrets.

    ``status`` is the HTTP status where there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MetricNotFound(MetricsError):
    """The provider has no such metric (for this action)."""


class MetricsUnavailable(MetricsError):
    """Refused or reset connection, timeout, 408, 429 or 5xx: ask again later."""


class MetricsBadResponse(MetricsError):
    """An answer that breaks the contract, or a status that says the configuration is wrong."""


# ---- the interface -------------------------------------------------------------------------


@runtime_checkable
class MetricsProvider(Protocol):
    """Where current metric values come from, as the rollback watch sees it."""

    name: str

    async def current(self, *, metric: str, action_id: str) -> Observation:
        """The metric's value now, for this action; raises only :class:`MetricsError`."""
        ...


# ---- the HTTP provider ---------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class HttpMetrics:
    """The ``METRICS_URL`` endpoint. Holds no state besides its configuration; safe to share.

    ``url`` is used as given: it may carry a path and a query string of its own, to which
    ``metric`` and ``action_id`` are added (replacing any parameters of those names).
    ``token``, when given, goes out as ``Authorization: Bearer <token>``. ``clock`` (aware
    UTC "now") is for tests of the future-timestamp check.
    """

    name = "http"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        base = URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("metrics url must be an absolute http(s) URL")
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        self._session = session
        self._base = base.with_fragment(None)
        self._token = token
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock

    def __repr__(self) -> str:
        # No token, and neither the URL's user info nor its query (either may hold a secret).
        shown = self._base.with_user(None).with_query(None)
        return f"HttpMetrics(url={str(shown)!r})"

    async def current(self, *, metric: str, action_id: str) -> Observation:
        where = f"metric {metric[:_SHOWN]!r} for action {action_id[:_SHOWN]!r}"
        status, body = await self._get(self._url_for(metric, action_id), where)
        if status == 404:
            raise MetricNotFound(f"{where}: not found", status=status)
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise MetricsUnavailable(f"{where}: HTTP {status}", status=status)
        if not 200 <= status < 300:
            raise MetricsBadResponse(f"{where}: HTTP {status}", status=status)
        return self._parse(body, metric=metric, where=where, status=status)

    # ---- HTTP ----

    def _url_for(self, metric: str, action_id: str) -> URL:
        """The base URL with its own query kept as sent, plus ours, every byte percent-encoded."""
        ours = {"metric": metric, "action_id": action_id}
        kept = [
            pair
            for pair in self._base.raw_query_string.split("&")
            if pair and unquote_plus(pair.split("=", 1)[0]) not in ours
        ]
        added = [f"{key}={quote(value, safe='')}" for key, value in ours.items()]
        query = "&".join(kept + added)
        return URL(str(self._base.with_query(None)) + "?" + query, encoded=True)

    async def _get(self, url: URL, where: str) -> tuple[int, bytes]:
        """The status, and the body of a 2xx answer (other bodies are neither read nor shown)."""
        try:
            async with self._session.get(
                url,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
                raise_for_status=False,
            ) as resp:
                status = resp.status
                body = await self._read(resp, where) if 200 <= status < 300 else b""
        except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
            raise MetricsUnavailable(f"{where}: timed out") from exc
        except aiohttp.InvalidURL as exc:
            raise MetricsBadResponse(f"{where}: invalid URL") from exc
        except aiohttp.ClientError as exc:
            raise MetricsUnavailable(f"{where}: {type(exc).__name__}") from exc
        log.debug("metrics %s -> %s", where, status)
        return status, body

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse, where: str) -> bytes:
        too_big = MetricsBadResponse(f"{where}: answer is larger than {MAX_BODY} bytes", status=resp.status)
        if resp.content_length is not None and resp.content_length > MAX_BODY:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(MAX_BODY + 1):
            size += len(chunk)
            if size > MAX_BODY:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    # ---- the answer ----

    def _parse(self, body: bytes, *, metric: str, where: str, status: int) -> Observation:
        def bad(reason: str) -> MetricsBadResponse:
            return MetricsBadResponse(f"{where}: {reason}", status=status)

        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise bad("answer is not JSON") from exc
        if not isinstance(data, dict):
            raise bad("answer is not a JSON object")

        answered = data.get("metric")
        if not isinstance(answered, str):
            raise bad("metric is missing or not a string")
        if answered != metric:
            raise bad(f"answered for another metric ({self._quoted(answered)})")

        raw_value = data.get("value")
        if isinstance(raw_value, bool) or not isinstance(raw_value, (int, float)):
            raise bad(f"value is not a number ({type(raw_value).__name__})")
        try:
            value = float(raw_value)
        except OverflowError as exc:
            raise bad("value is out of range") from exc
        if not math.isfinite(value):
            raise bad("value is not finite")

        raw_at = data.get("observed_at")
        if not isinstance(raw_at, str):
            raise bad("observed_at is missing or not a string")
        try:
            observed_at = datetime.fromisoformat(raw_at)
            if observed_at.tzinfo is None:
                observed_at = observed_at.replace(tzinfo=timezone.utc)
            observed_at = observed_at.astimezone(timezone.utc)
        except (ValueError, OverflowError):
            # Not chained: the parser's message quotes the provider's text unredacted.
            raise bad(f"observed_at is not ISO 8601 ({self._quoted(raw_at)})") from None
        if observed_at - self._clock() > MAX_FUTURE:
            raise bad("observed_at is in the future")

        return Observation(metric=metric, value=value, observed_at=observed_at)

    def _quoted(self, said: str) -> str:
        """The provider's own text for a message: short, and with the token redacted."""
        if self._token:
            said = said.replace(self._token, "[redacted]")
        return repr(said[:_SHOWN])
