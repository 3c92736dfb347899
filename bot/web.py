"""The HTTP door for Slack: ``POST /slack/events``.

Before Bolt sees a request it must be signed by Slack (401 otherwise), parse (400), and have
the shape Slack gives each kind of request (400 with the reason): Bolt itself would answer a
500 for some malformed but signed bodies, and a bad request must never look like our fault.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from core import logs
from core.events import Foreground
from core.metrics import Metrics
from store.db import TALLY, Transactions

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def shape_problem(body: dict[str, Any]) -> str | None:
    """What is missing from a parsed Slack request, or None if it has the shape we rely on."""
    kind = body.get("type")
    if "ssl_check" in body:
        return None
    if "command" in body:  # slash commands are flat forms
        return None if isinstance(body.get("user_id"), str) else "slash command without user_id"
    if not isinstance(kind, str):
        return "request without a type"
    if kind in ("block_actions", "view_submission", "view_closed", "shortcut", "message_action"):
        user = body.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return f"{kind} without user.id"
    if kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not all(isinstance(a, dict) for a in actions):
            return "block_actions without actions"
    if kind in ("view_submission", "view_closed"):
        view = body.get("view")
        if (
            not isinstance(view, dict)
            or not isinstance(view.get("type"), str)
            or not isinstance(view.get("callback_id"), str)
        ):
            return f"{kind} without a view"
    if kind == "event_callback" and not isinstance(body.get("event"), dict):
        return "event_callback without an event"
    return None


@dataclass
class AckPaths:
    """How many store transactions each kind of Slack request opened before it was answered
    (the ack path), for the benchmark and the tests to read."""

    requests: Counter[str] = field(default_factory=Counter)
    transactions: Counter[str] = field(default_factory=Counter)
    most: dict[str, int] = field(default_factory=dict)
    writes: Counter[str] = field(default_factory=Counter)  # of those transactions, the writes

    def add(self, kind: str, transactions: int, writes: int = 0) -> None:
        self.requests[kind] += 1
        self.transactions[kind] += transactions
        self.writes[kind] += writes
        self.most[kind] = max(self.most.get(kind, 0), transactions)

    def describe(self) -> str:
        return ", ".join(
            f"{k}: {self.transactions[k] / n:.2f} avg, {self.most[k]} most over {n}"
            for k, n in sorted(self.requests.items())
        )


def _kind(body: dict[str, Any]) -> str:
    if "command" in body:
        return "slash_command"
    return str(body.get("type") or "other")


def _user(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    found = user.get("id") if isinstance(user, dict) else body.get("user_id")
    return found if isinstance(found, str) else None


def slack_events(
    bolt: AsyncApp,
    signing_secret: str,
    ack_paths: AckPaths | None = None,
    metrics: Metrics | None = None,
    foreground: Foreground | None = None,
) -> Handler:
    verifier = SignatureVerifier(signing_secret)
    foreground = foreground or Foreground()

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (timestamp.isdigit() and signature) or not verifier.is_valid(raw, timestamp, signature):
            return _refuse(401, "invalid or missing Slack signature")
        try:
            bolt_request = await to_bolt_request(request)
        except (ValueError, UnicodeDecodeError):
            return _refuse(400, "malformed request body")
        if not isinstance(bolt_request.body, dict):
            return _refuse(400, "malformed request body")
        problem = shape_problem(bolt_request.body)
        if problem is not None:
            return _refuse(400, problem)
        tally = Transactions()
        token = TALLY.set(tally)  # the listener's task inherits it: what it opens is counted
        try:
            # Each line logged for this request (and by the work it starts) carries its id and user;
            # a person waits on this answer: background work gives way.
            with logs.bind(request_id=logs.new_request_id(), slack_user=_user(bolt_request.body)), foreground.busy():
                response = await bolt.async_dispatch(bolt_request)
        finally:
            TALLY.reset(token)
        kind = _kind(bolt_request.body)
        if ack_paths is not None:
            ack_paths.add(kind, tally.total, tally.writes)  # as of the answer: the ack path
        answered = await to_aiohttp_response(response)
        if metrics is not None:
            metrics.ack(kind, time.monotonic() - started)
        return answered

    return handle


class TimedSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler, timing each envelope from its arrival to its ack (as
    ``slack_events`` times each HTTP request) and naming it in the log lines it causes."""

    def __init__(self, app: AsyncApp, app_token: str, metrics: Metrics | None = None) -> None:
        super().__init__(app, app_token)
        self._metrics = metrics

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]  # as Bolt's own
        started = time.monotonic()
        payload = req.payload if isinstance(req.payload, dict) else {}
        with logs.bind(request_id=logs.new_request_id(), slack_user=_user(payload)):
            await super().handle(client, req)
        if self._metrics is not None:
            self._metrics.ack(_kind(payload), time.monotonic() - started)
