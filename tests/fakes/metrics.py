"""A fake metrics endpoint (``METRICS_URL``), served over real loopback HTTP for tests.

Built from the contract in our issue only::

    GET {METRICS_URL}?metric=<slug>&action_id=<id>
    200 {"metric": "<slug>", "value": <number>, "observed_at": "<ISO 8601>"}
    404 when it has no such metric

Tests set values with :meth:`FakeMetrics.set` (for one action, or for every action), inject
faults with :meth:`FakeMetrics.fail_next`, :meth:`FakeMetrics.garbage_next`,
:meth:`FakeMetrics.set_delay` and :meth:`FakeMetrics.set_down`, and read back what it saw in
:attr:`FakeMetrics.requests` and :attr:`FakeMetrics.raw_queries`.

Where the contract is silent, the fake chooses (and tests should not lean on it): a value set
for the action beats one set for every action; a missing or repeated ``metric`` or
``action_id`` is a 400; with a ``token`` a request without ``Authorization: Bearer <token>``
is a 401; error bodies are ``{"error": "<word>"}``; a 3xx fault redirects to the same URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Final, NamedTuple

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.fakes.server import LoopbackServer

PATH: Final = "/v1/metrics"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    """Aware moments as UTC with "Z"; a naive one as it is (so tests can send naive stamps)."""
    if moment.tzinfo is None:
        return moment.isoformat()
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _error(status: int, word: str) -> web.Response:
    return web.json_response({"error": word}, status=status)


class Seen(NamedTuple):
    """One request as the fake received it: ``(metric, action_id, headers)``."""

    metric: str | None
    action_id: str | None
    headers: Mapping[str, str]  # case-insensitive


@dataclass
class _Value:
    value: float
    observed_at: datetime | str | None


@dataclass
class _Fault:
    status: int
    body: bytes
    content_type: str
    times: int
    chunked: bool = False


class FakeMetrics(LoopbackServer):
    """The metrics endpoint on 127.0.0.1 and a free port. ``await start()`` before use.

    ``clock`` (aware UTC "now") stamps values set without ``observed_at``, at request time.
    """

    def __init__(self, *, token: str | None = None, clock: Callable[[], datetime] = _now) -> None:
        super().__init__()
        self.token = token
        self.clock = clock
        self.requests: list[Seen] = []
        self.raw_queries: list[str] = []  # each request's query string, exactly as sent
        self._values: dict[tuple[str, str | None], _Value] = {}
        self._faults: list[_Fault] = []
        self._delay = 0.0
        self._down = False

    # ---- lifecycle ----

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PATH, self._serve)
        return app

    async def start(self, path: str = PATH) -> str:
        return await super().start(path)

    # ---- test controls ----

    def set(
        self,
        metric: str,
        value: float,
        *,
        action_id: str | None = None,
        observed_at: datetime | str | None = None,
    ) -> None:
        """The metric's value for one action, or for every action when ``action_id`` is None.

        ``observed_at`` is sent as given when a string; a datetime is sent as ISO 8601 ("Z"
        when aware, naive when naive); None is the clock's "now" at request time.
        """
        self._values[(metric, action_id)] = _Value(value, observed_at)

    def remove(self, metric: str, action_id: str | None = None) -> None:
        """Forget a value set by :meth:`set` (no error if there is none)."""
        self._values.pop((metric, action_id), None)

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` and ``{"error": "<phrase>"}``."""
        word = HTTPStatus(status).phrase.lower().replace(" ", "_")
        self._faults.append(_Fault(status, json.dumps({"error": word}).encode(), "application/json", times))

    def garbage_next(
        self,
        body: str | bytes,
        times: int = 1,
        content_type: str = "application/json",
        *,
        chunked: bool = False,
    ) -> None:
        """Answer the next ``times`` requests with a 200 carrying ``body`` as it is.

        ``chunked`` sends it in chunked transfer encoding, without a Content-Length.
        """
        raw = body.encode() if isinstance(body, str) else body
        self._faults.append(_Fault(200, raw, content_type, times, chunked))

    def set_delay(self, seconds: float) -> None:
        """Wait this long before answering every request (a slow endpoint)."""
        self._delay = seconds

    def set_down(self, down: bool = True) -> None:
        """Answer every request by resetting the connection, as a dead server would."""
        self._down = down

    # ---- plumbing ----

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        metrics, action_ids = request.query.getall("metric", []), request.query.getall("action_id", [])
        self.requests.append(
            Seen(
                metric=metrics[0] if metrics else None,
                action_id=action_ids[0] if action_ids else None,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            )
        )
        self.raw_queries.append(request.rel_url.raw_query_string)
        if self._down:
            self._reset(request)
            return web.Response(status=500)  # never reaches the client
        await self._wait(self._delay)
        fault = self._take_fault()
        if fault is not None:
            return await self._answer_fault(request, fault)
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "unauthorized")
        if len(metrics) != 1 or len(action_ids) != 1:
            return _error(400, "invalid_request")
        metric, action_id = metrics[0], action_ids[0]
        found = self._values.get((metric, action_id)) or self._values.get((metric, None))
        if found is None:
            return _error(404, "not_found")
        stamp = found.observed_at if found.observed_at is not None else self.clock()
        observed_at = stamp if isinstance(stamp, str) else _iso(stamp)
        return web.json_response({"metric": metric, "value": found.value, "observed_at": observed_at})

    @staticmethod
    async def _answer_fault(request: web.Request, fault: _Fault) -> web.StreamResponse:
        headers = {"Content-Type": fault.content_type}
        if 300 <= fault.status < 400:
            headers["Location"] = str(request.rel_url)
        if not fault.chunked:
            return web.Response(status=fault.status, body=fault.body, headers=headers)
        response = web.StreamResponse(status=fault.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(fault.body), 4096):
            await response.write(fault.body[start : start + 4096])
        await response.write_eof()
        return response

    def _take_fault(self) -> _Fault | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self._faults.pop(0)
        return fault

