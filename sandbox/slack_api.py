"""A local Slack Web API: a real aiohttp server on a loopback port. The tests' fake Slack and
the sandbox's Slack are this one server (the sandbox adds its page's routes with ``routes``).

The bot under test points slack_sdk's ``AsyncWebClient`` at it with
``base_url=fake.api_url``; Web API methods then arrive as ``POST`` (or, for
the methods slack_sdk sends as ``GET``, ``GET``) ``/api/<method>`` with a
form-encoded, JSON or query-string payload and the token in the
``Authorization: Bearer`` header.

The fake answers with the shapes Slack answers with, keeps the state a test
wants to look at (messages, ephemerals, views, bodies POSTed to response
URLs) and holds the bot to the real API: every call is checked against
the table of Web API methods in ``slack_methods.py`` (the method exists, its
required arguments are given; that table is checked against Slack's OpenAPI
spec by ``tests/test_slack_published.py``), for the kind
of token the method takes, and against the basic Block Kit limits. Problems
are recorded in ``fake.violations`` and answered the way Slack answers them, so a test can
end with ``assert fake.violations == []``.

Socket Mode: ``apps.connections.open`` (called with the app-level token,
``fake.app_token``) answers a ``ws://`` URL on this server. A client that
connects gets Slack's ``hello``; the test then sends envelopes with
``await fake.socket_send(type, payload)`` and reads the app's acks with
``await fake.socket_ack(envelope_id)``. Acks are held to what Slack takes
(a JSON object naming an envelope that was sent, once, with an object
``payload`` if any); ``fake.socket_disconnect()`` asks the app to reconnect
as Slack does before it recycles a connection.

Usage::

    async with LocalSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        ...
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import WSCloseCode, WSMsgType, web

from sandbox import slack_shapes
from sandbox.slack_methods import EXTRA_REQUIRED, known_required_params
from sandbox.waiting import describe, eventually

__all__ = ["Call", "LocalSlack", "Message", "SocketConnection", "known_required_params"]

# Parameters whose value is JSON: decoded when they arrive as a string
# (form-encoded bodies always carry them as strings).
JSON_PARAMS = ("blocks", "attachments", "metadata", "view")

# Methods that change nothing anyone sees (no wake-up for the sandbox's page).
_READS = frozenset(
    {
        "auth.test",
        "chat.getPermalink",
        "conversations.history",
        "conversations.replies",
        "users.info",
        "users.lookupByEmail",
        "usergroups.users.list",
        "apps.connections.open",
    }
)

# Methods that take the app-level token (xapp-…) instead of the bot token.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

# Socket Mode
SOCKET_PATH = "/socket"
SOCKET_ENVELOPE_TYPES = ("interactive", "slash_commands", "events_api")
SOCKET_ACK_DEADLINE_SECONDS = 3.0  # Slack treats an envelope not acked by then as failed
SOCKET_HOST = "applink-fake-0"  # what debug_info.host names

# A required parameter that today's Slack accepts under another name.
REQUIRED_ALTERNATIVES: dict[str, str] = {"trigger_id": "interactivity_pointer"}

# Block Kit limits (https://api.slack.com/reference/block-kit).
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_URL = 3000
MAX_ACTION_ID = 255
MAX_BLOCK_ID = 255
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_VIEW_TITLE = 24
MAX_VIEW_BUTTON = 24
MAX_PRIVATE_METADATA = 3000
MAX_CALLBACK_ID = 255
MAX_MESSAGE_TEXT = 40000

APP_ID = slack_shapes.APP_ID  # the api_app_id the request builders carry


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _ts_key(ts: Any) -> Decimal:
    return Decimal(str(ts))


def _missing(value: Any) -> bool:
    return value is None or value == ""


@dataclass
class Call:
    """One Web API call as the fake received it."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    http_method: str = "POST"
    content_type: str = ""
    status: int | None = None  # HTTP status the fake answered with
    response: Any = None  # the JSON body answered (None for a non-JSON failure)

    @property
    def ok(self) -> bool:
        return isinstance(self.response, dict) and self.response.get("ok") is True


@dataclass
class Message:
    """A message as it currently stands in a channel."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] | None = None
    thread_ts: str | None = None
    user: str = ""
    bot_id: str = ""
    reply_broadcast: bool = False
    edited_ts: str | None = None
    previous: list[dict[str, Any]] = field(default_factory=list)  # versions before each chat.update

    def to_api(self, *, team: str, include_metadata: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "bot_id": self.bot_id,
            "app_id": APP_ID,
            "text": self.text or "",
            "ts": self.ts,
            "team": team,
            "blocks": copy.deepcopy(self.blocks),
        }
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if self.edited_ts is not None:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        if include_metadata and self.metadata is not None:
            out["metadata"] = copy.deepcopy(self.metadata)
        return out


@dataclass
class SocketConnection:
    """One Socket Mode websocket as the fake holds it."""

    id: int
    ticket: str
    ws: web.WebSocketResponse = field(repr=False)
    opened_at: float
    closed_at: float | None = None
    closed_by: str | None = None  # "app" or "fake": which side started closing it
    close_code: int | None = None  # the code the close handshake ended with (the app's echo when the fake closed)
    received: list[Any] = field(default_factory=list)  # what the app sent, decoded where JSON
    sent: list[dict[str, Any]] = field(default_factory=list)  # what the fake sent

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


class SlackError(Exception):
    """Raised by a method handler: answered ``{"ok": false, "error": ...}``."""

    def __init__(
        self,
        error: str,
        *,
        violation: str | None = None,
        messages: list[str] | None = None,
        status: int = 200,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.violation = violation
        self.messages = messages or []
        self.status = status


@dataclass
class _Failure:
    error: str | None
    status: int
    times: int
    retry_after: int | None


Handler = Callable[[dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]


class LocalSlack:
    """A fake Slack Web API server; see the module docstring."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
        keep_calls: int | None = None,
    ) -> None:
        """``keep_calls``: remember only the newest so many calls and response URL posts (a
        sandbox that runs for days); None keeps them all, for a test to look at."""
        self.bot_token = bot_token
        self.keep_calls = keep_calls
        self.app_token = app_token
        auth = slack_shapes.auth_test_answer()
        self.auth_test_response: dict[str, Any] = copy.deepcopy(auth)
        self.team_id: str = auth["team_id"]
        self.bot_user_id: str = auth["user_id"]
        self.bot_id: str = auth["bot_id"]
        self.workspace_url: str = auth["url"]

        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.violations: list[str] = []

        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.open_views: dict[str, dict[str, Any]] = {}  # view id -> view as Slack holds it

        # Socket Mode
        self.socket_connections: list[SocketConnection] = []  # every connection, oldest first
        self.socket_envelopes: list[dict[str, Any]] = []  # every envelope sent, as sent
        self.socket_acks: dict[str, dict[str, Any]] = {}  # envelope_id -> the app's ack, as received
        self.socket_ack_seconds: dict[str, float] = {}  # envelope_id -> seconds from send to ack
        self._socket_tickets: set[str] = set()  # issued by apps.connections.open, not used yet
        self._envelope_sent_at: dict[str, float] = {}
        self._ack_waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._socket_counter = itertools.count(1)

        self._failures: dict[str, deque[_Failure]] = {}
        self._response_targets: dict[str, tuple[str, str] | None] = {}
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        # Bumped on every change a person could see; ``changed_since`` waits for the next.
        self.version = 0
        self._changed = asyncio.Event()
        # Told of every body POSTed to a response URL (name, body), after the fake acted on it.
        self.response_listener: Callable[[str, dict[str, Any]], None] | None = None
        self._handlers: dict[str, Handler] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "usergroups.users.list": self._usergroups_users_list,
            "apps.connections.open": self._apps_connections_open,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, port: int = 0, routes: Callable[[web.Application], None] | None = None) -> str:
        """Serve on 127.0.0.1 at ``port`` (0: a free one); ``routes`` adds more to the same app
        (the sandbox's page). An OSError says the port cannot be had."""
        if self._runner is not None:
            raise RuntimeError("LocalSlack already started")
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{name}", self._handle_response_url)
        app.router.add_get(SOCKET_PATH, self._handle_socket)
        if routes is not None:
            routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        host, bound = runner.addresses[0][:2]
        self._url = f"http://{host}:{bound}"
        return self._url

    def touch(self) -> None:
        """Something someone could see changed (a message, a view, an answer): wake the watchers."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed_since(self, version: int, timeout: float) -> int:
        """The version, once it is past ``version`` or ``timeout`` seconds have passed."""
        if self.version <= version:
            waiter = self._changed
            try:
                await asyncio.wait_for(waiter.wait(), timeout)
            except TimeoutError:
                pass
        return self.version

    async def stop(self) -> None:
        self.touch()  # whoever waits for a change is answered now, not after the shutdown's grace
        runner, self._runner = self._runner, None
        # Close Socket Mode connections first (a close handshake, as a server going away
        # does), so no websocket handler is left for the runner to cancel.
        for conn in self.socket_connections:
            if conn.open:
                await self._socket_close(conn, b"server stopping")
        for waiter in self._ack_waiters.values():
            if not waiter.done():
                waiter.cancel()
        self._ack_waiters.clear()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> LocalSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("LocalSlack not started: await fake.start() first")
        return self._url

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # ------------------------------------------------------------------ test set-up

    def add_user(
        self,
        user_id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        tz: str = "UTC",
        real_name: str | None = None,
        is_bot: bool = False,
        deleted: bool = False,
    ) -> None:
        """Make ``user_id`` known to users.info (and users.lookupByEmail when it has an email)."""
        name = name or f"user.{user_id.lower()}"
        real_name = real_name or name
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {tz!r}") from e
        offset = zone.utcoffset(datetime.now(timezone.utc))
        profile: dict[str, Any] = {
            "real_name": real_name,
            "display_name": name,
            "real_name_normalized": real_name,
            "display_name_normalized": name,
            "team": self.team_id,
        }
        if email is not None:
            profile["email"] = email
        self.users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": deleted,
            "real_name": real_name,
            "tz": tz,
            "tz_label": tz,
            "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": profile,
        }

    def add_usergroup(self, group_id: str, user_ids: list[str]) -> None:
        self.usergroups[group_id] = list(user_ids)

    def fail_next(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int = 200,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail.

        - status 429: HTTP 429, ``Retry-After`` (default 1) and ``{"ok": false, "error": "ratelimited"}``;
        - status >= 500 without ``error``: that status with an HTML body, as a load balancer answers;
        - otherwise: that status with ``{"ok": false, "error": error or "fatal_error"}``.

        ``method`` may also be ``"response_url"``: the next POSTs to response URLs are
        answered ``status`` (404 when left at 200) with ``error`` as plain text, e.g.
        ``fail_next("response_url", error="expired_url", status=404)``.
        Failures queue up in the order they are declared.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        self._failures.setdefault(method, deque()).append(_Failure(error, status, times, retry_after))

    def on(self, method: str, handler: Handler) -> None:
        """Answer ``method`` with ``handler(params)`` (a dict, or an awaitable of one).

        Lets a test add or override a method; the method-table and token checks still apply.
        Raise :class:`SlackError` from the handler to answer an error.
        """
        self._handlers[method] = handler

    def response_url(self, name: str, *, channel: str | None = None, ts: str | None = None) -> str:
        """A response URL on this server; JSON POSTed to it lands in ``responses``.

        With ``channel`` and ``ts`` it acts for that message as Slack's do:
        ``replace_original`` replaces it in ``messages``, ``delete_original`` removes it.
        """
        target = (self._resolve_channel(channel), ts) if channel and ts else None
        self._response_targets[name] = target
        return f"{self.url}/response/{name}"

    def export_messages(self) -> list[dict[str, Any]]:
        """Every message as it stands (for the sandbox to keep across restarts)."""
        return [
            {
                "channel": m.channel,
                "ts": m.ts,
                "text": m.text,
                "blocks": m.blocks,
                "metadata": m.metadata,
                "thread_ts": m.thread_ts,
                "user": m.user,
                "bot_id": m.bot_id,
                "reply_broadcast": m.reply_broadcast,
                "edited_ts": m.edited_ts,
            }
            for m in self.messages.values()
        ]

    def import_messages(self, saved: list[dict[str, Any]]) -> None:
        """Messages kept from an earlier run; new timestamps continue after theirs."""
        for item in saved:
            message = Message(
                channel=str(item["channel"]),
                ts=str(item["ts"]),
                text=item.get("text"),
                blocks=list(item.get("blocks") or []),
                metadata=item.get("metadata"),
                thread_ts=item.get("thread_ts"),
                user=str(item.get("user") or ""),
                bot_id=str(item.get("bot_id") or ""),
                reply_broadcast=bool(item.get("reply_broadcast")),
                edited_ts=item.get("edited_ts"),
            )
            self.messages[(message.channel, message.ts)] = message
        stamps = [_ts_key(k[1]) for k in self.messages] + [
            _ts_key(m.edited_ts) for m in self.messages.values() if m.edited_ts
        ]
        if stamps:
            last = int((max(stamps) - 1_700_000_000) * 1_000_000) // 100
            self._ts_counter = itertools.count(last + 1)
        self.touch()

    def post_as(self, user: str, channel: str, text: str, blocks: Any = None) -> Message:
        """A message someone (a person, or the bot answering in the channel) posts without the
        Web API: what the sandbox's message box and in-channel command answers put there."""
        channel = self._resolve_channel(channel)
        ts = self._next_ts()
        message = Message(
            channel=channel,
            ts=ts,
            text=text,
            blocks=copy.deepcopy(blocks) if isinstance(blocks, list) else [],
            user=user,
            bot_id=self.bot_id if user == self.bot_user_id else "",
        )
        self.messages[(channel, ts)] = message
        self.touch()
        return message

    def dm_channel(self, user_id: str) -> str:
        """The id of the bot's DM channel with ``user_id`` (where posting to a user id lands)."""
        return self._resolve_channel(user_id)

    # ------------------------------------------------------------------ inspection

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def messages_in(self, channel: str) -> list[Message]:
        """The channel's messages, oldest first (thread replies included)."""
        channel = self._resolve_channel(channel)
        found = [m for (ch, _), m in self.messages.items() if ch == channel]
        return sorted(found, key=lambda m: _ts_key(m.ts))

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 5.0,
        *,
        interval: float = 0.02,
        message: str | None = None,
    ) -> Any:
        """Poll ``predicate`` (sync or async) until it returns something truthy; return that.

        An exception raised by the predicate counts as "not yet" (so
        ``lambda: fake.messages[key]`` works); on timeout an AssertionError says
        what was awaited, the predicate's last error and the latest calls.
        """
        return await eventually(
            predicate,
            timeout=timeout,
            interval=interval,
            what=f"LocalSlack.wait_for: {message or describe(predicate)}",
            on_timeout=self._calls_report,
        )

    def _calls_report(self) -> str:
        """What the bot called last, for a wait that timed out."""
        recent = self.calls[-10:]
        lines = [f"  Web API calls so far: {len(self.calls)}; last {len(recent)}:"]
        for c in recent:
            error = c.response.get("error") if isinstance(c.response, dict) else None
            lines.append(f"    {c.method} -> {c.status}{' ' + error if error else ''}")
        if self.responses:
            lines.append(f"  response_url posts: {[r['name'] for r in self.responses]}")
        if self.violations:
            lines.append(f"  violations: {self.violations}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ Socket Mode

    @property
    def socket_connected(self) -> bool:
        """True while the app holds a Socket Mode connection (one it was sent ``hello`` on)."""
        return self._current_socket() is not None

    async def wait_socket(self, timeout: float = 5.0) -> SocketConnection:
        """Wait until the app holds a Socket Mode connection; return the newest one."""
        return await self.wait_for(self._current_socket, timeout=timeout, message="a Socket Mode connection")

    async def socket_send(self, envelope_type: str, payload: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Send ``payload`` to the app in an envelope of ``envelope_type`` over the newest
        connection, as Slack does; return the envelope_id (for :meth:`socket_ack`).

        ``envelope_type`` is ``interactive`` (payload: the JSON of a block_actions or
        view_submission body), ``slash_commands`` (the command's form fields as a dict) or
        ``events_api`` (an event_callback body). As in Slack's envelopes, events carry
        ``retry_attempt``/``retry_reason`` and do not accept a response payload; the others
        accept one (and carry the retry fields only for a retry).
        """
        if envelope_type not in SOCKET_ENVELOPE_TYPES:
            raise ValueError(f"envelope_type must be one of {SOCKET_ENVELOPE_TYPES}, not {envelope_type!r}")
        if not isinstance(payload, dict):
            raise TypeError("payload must be a dict (the request body as JSON, not its form encoding)")
        if retry_attempt < 0:
            raise ValueError("retry_attempt must be >= 0")
        conn = self._current_socket()
        if conn is None:
            raise AssertionError("LocalSlack.socket_send: the app holds no Socket Mode connection")
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": copy.deepcopy(payload),
            "type": envelope_type,
            "accepts_response_payload": envelope_type != "events_api",
        }
        if envelope_type == "events_api" or retry_attempt:
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = "timeout" if retry_attempt else ""
        self._ack_waiters[envelope_id] = asyncio.get_running_loop().create_future()
        self._envelope_sent_at[envelope_id] = time.monotonic()
        self.socket_envelopes.append(envelope)
        await self._socket_write(conn, envelope)
        return envelope_id

    async def socket_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Wait for the app's ack of ``envelope_id`` and return it as received:
        ``{"envelope_id": ..., "payload": {...}}``, ``payload`` absent when the app sent none."""
        if envelope_id in self.socket_acks:
            return copy.deepcopy(self.socket_acks[envelope_id])
        waiter = self._ack_waiters.get(envelope_id)
        if waiter is None:
            raise KeyError(f"no envelope {envelope_id!r} was sent by socket_send")
        try:
            ack = await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise AssertionError(self._socket_timeout_message(envelope_id, timeout)) from None
        return copy.deepcopy(ack)

    async def socket_disconnect(self, reason: str = "warning", timeout: float = 5.0) -> SocketConnection:
        """Tell the app its connection goes away (Slack's ``disconnect`` message, sent before a
        server is recycled), wait until the app has a new connection and return it. The old
        one is closed if the app did not close it itself."""
        old = self._current_socket()
        if old is None:
            raise AssertionError("LocalSlack.socket_disconnect: the app holds no Socket Mode connection")
        await self._socket_write(old, {"type": "disconnect", "reason": reason, "debug_info": {"host": SOCKET_HOST}})
        new = await self.wait_for(
            lambda: (c := self._current_socket()) is not None and c.id > old.id and c,
            timeout=timeout,
            message="a new Socket Mode connection after the disconnect message",
        )
        if old.open:
            await self._socket_close(old, b"disconnected")
        return new

    async def _socket_close(self, conn: SocketConnection, message: bytes) -> None:
        conn.closed_by = conn.closed_by or "fake"
        await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=message)

    def _current_socket(self) -> SocketConnection | None:
        for conn in reversed(self.socket_connections):
            if conn.open and conn.sent:  # sent: the hello went out
                return conn
        return None

    async def _socket_write(self, conn: SocketConnection, message: dict[str, Any]) -> None:
        conn.sent.append(message)
        await conn.ws.send_str(json.dumps(message))

    def _on_socket_text(self, conn: SocketConnection, data: str) -> None:
        try:
            message: Any = json.loads(data)
        except json.JSONDecodeError:
            conn.received.append(data)
            self.violations.append(f"socket mode: the app sent a message that is not JSON: {data[:200]!r}")
            return
        conn.received.append(message)
        if not isinstance(message, dict):
            self.violations.append(f"socket mode: the app sent JSON that is not an object: {data[:200]!r}")
            return
        envelope_id = message.get("envelope_id")
        if not isinstance(envelope_id, str) or not envelope_id:
            self.violations.append(f"socket mode: the app sent a message without an envelope_id: {data[:200]!r}")
            return
        if envelope_id not in self._envelope_sent_at:
            self.violations.append(f"socket mode: ack for an envelope never sent: {envelope_id}")
            return
        if envelope_id in self.socket_acks:
            self.violations.append(f"socket mode: envelope {envelope_id} acked more than once")
            return
        if "payload" in message and not isinstance(message["payload"], dict):
            self.violations.append(f"socket mode: ack of {envelope_id} has a payload that is not an object")
        self.socket_acks[envelope_id] = message
        self.socket_ack_seconds[envelope_id] = time.monotonic() - self._envelope_sent_at[envelope_id]
        waiter = self._ack_waiters.get(envelope_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    def _socket_timeout_message(self, envelope_id: str, timeout: float) -> str:
        envelope = next((e for e in self.socket_envelopes if e["envelope_id"] == envelope_id), {})
        lines = [f"LocalSlack.socket_ack: no ack of {envelope.get('type')} envelope {envelope_id} after {timeout:g}s"]
        for conn in self.socket_connections:
            state = "open" if conn.open else f"closed ({conn.close_code})"
            lines.append(f"  connection {conn.id}: {state}; received {len(conn.received)} message(s)")
            lines.extend(f"    {str(m)[:200]}" for m in conn.received[-5:])
        if self.violations:
            lines.append(f"  violations: {self.violations}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        call = Call(
            method=method,
            params={},
            headers=dict(request.headers),
            http_method=request.method,
            content_type=request.content_type,
        )
        self.calls.append(call)
        if self.keep_calls is not None and len(self.calls) > self.keep_calls:
            del self.calls[: len(self.calls) - self.keep_calls]

        try:
            params, form_token = await self._read_params(request, method)
        except SlackError as e:
            return self._answer_error(call, e)
        call.params = params

        if known_required_params(method) is None:
            self.violations.append(f"{method}: no such Web API method (sandbox/slack_methods.py)")
            return self._answer(call, {"ok": False, "error": "unknown_method", "req_method": method})

        failure = self._take_failure(method)
        if failure is not None:
            return self._answer_failure(call, failure)

        token_error = self._token_error(method, request, form_token)
        if token_error == "invalid_auth":
            return self._answer(call, slack_shapes.error_answer("invalid_auth"))
        if token_error is not None:
            return self._answer(call, {"ok": False, "error": token_error})

        missing = self._missing_required(method, params)
        if missing:
            messages = [f"[ERROR] missing required field: {name}" for name in missing]
            self.violations.append(f"{method}: missing required parameter(s) {', '.join(missing)}")
            return self._answer(
                call,
                {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": messages}},
            )

        handler = self._handlers.get(method)
        if handler is None:
            self.violations.append(f"{method}: a Web API method LocalSlack does not implement (use fake.on())")
            return self._answer(call, {"ok": False, "error": "unknown_method", "req_method": method})

        try:
            result = handler(params)
            if inspect.isawaitable(result):
                result = await result
        except SlackError as e:
            return self._answer_error(call, e)
        body = dict(result)
        body.setdefault("ok", True)
        return self._answer(call, body)

    async def _read_params(self, request: web.Request, method: str) -> tuple[dict[str, Any], str | None]:
        params: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw:
            text = raw.decode("utf-8")
            if request.content_type == "application/json":
                try:
                    body = json.loads(text)
                except json.JSONDecodeError as e:
                    raise SlackError("invalid_json", violation=f"{method}: body is not JSON") from e
                if not isinstance(body, dict):
                    raise SlackError("json_not_object", violation=f"{method}: JSON body is not an object")
                params.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", ""):
                params.update(parse_qsl(text, keep_blank_values=True))
            else:
                raise SlackError(
                    "invalid_post_type", violation=f"{method}: unsupported content type {request.content_type!r}"
                )
        form_token = params.pop("token", None)
        for name in JSON_PARAMS:
            value = params.get(name)
            if isinstance(value, str) and value != "":
                try:
                    params[name] = json.loads(value)
                except json.JSONDecodeError as e:
                    error = "invalid_blocks_format" if name == "blocks" else "invalid_arguments"
                    raise SlackError(error, violation=f"{method}: {name} is not valid JSON") from e
        return params, form_token

    def _token_error(self, method: str, request: web.Request, form_token: Any) -> str | None:
        """None when the call carries the token ``method`` takes; else Slack's error.

        Methods in ``APP_TOKEN_METHODS`` take the app-level token, all others the bot token;
        the other one of the two is answered ``not_allowed_token_type`` (a violation: the
        bot sent the wrong kind of token), anything else ``invalid_auth``.
        """
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else form_token
        if method in APP_TOKEN_METHODS:
            expected, other, kinds = self.app_token, self.bot_token, ("app-level", "bot")
        else:
            expected, other, kinds = self.bot_token, self.app_token, ("bot", "app-level")
        if token == expected:
            return None
        if token == other:
            self.violations.append(f"{method}: called with the {kinds[1]} token; it takes the {kinds[0]} token")
            return "not_allowed_token_type"
        return "invalid_auth"

    def _missing_required(self, method: str, params: dict[str, Any]) -> list[str]:
        required = list(known_required_params(method) or ()) + list(EXTRA_REQUIRED.get(method, ()))
        missing = []
        for name in dict.fromkeys(required):
            if not _missing(params.get(name)):
                continue
            alternative = REQUIRED_ALTERNATIVES.get(name)
            if alternative and not _missing(params.get(alternative)):
                continue
            missing.append(name)
        return missing

    def _take_failure(self, key: str) -> _Failure | None:
        queue = self._failures.get(key)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.popleft()
        return failure

    def _answer(
        self, call: Call, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        call.status = status
        call.response = body
        if body.get("ok") is True and call.method not in _READS:
            self.touch()
        return web.json_response(body, status=status, headers=headers)

    def _answer_error(self, call: Call, e: SlackError) -> web.Response:
        if e.violation:
            self.violations.append(e.violation)
        body: dict[str, Any] = {"ok": False, "error": e.error}
        if e.messages:
            body["response_metadata"] = {"messages": e.messages}
        return self._answer(call, body, status=e.status)

    def _answer_failure(self, call: Call, failure: _Failure) -> web.Response:
        if failure.status == 429:
            limited = {"Retry-After": str(failure.retry_after if failure.retry_after is not None else 1)}
            return self._answer(call, {"ok": False, "error": failure.error or "ratelimited"}, 429, limited)
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
        if failure.status >= 500 and failure.error is None:
            call.status = failure.status
            call.response = None
            return web.Response(
                status=failure.status,
                text=f"<html><body><h1>{failure.status} Service Unavailable</h1></body></html>",
                content_type="text/html",
                headers=headers,
            )
        return self._answer(call, {"ok": False, "error": failure.error or "fatal_error"}, failure.status, headers)

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        """The Socket Mode websocket at the URL apps.connections.open gave out."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._socket_tickets:
            # Slack refuses the upgrade for an unknown or already used URL.
            return web.Response(status=401, text="invalid_ticket")
        self._socket_tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)  # autoping: answer the SDK's pings
        await ws.prepare(request)
        conn = SocketConnection(id=next(self._socket_counter), ticket=ticket, ws=ws, opened_at=time.monotonic())
        self.socket_connections.append(conn)
        try:
            hello = {
                "type": "hello",
                "num_connections": sum(1 for c in self.socket_connections if c.open),
                "debug_info": {"host": SOCKET_HOST, "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
            await self._socket_write(conn, hello)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_socket_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    conn.received.append(msg.data)
                    self.violations.append("socket mode: the app sent a binary message; Slack takes JSON text")
        finally:
            conn.closed_by = conn.closed_by or "app"
            conn.closed_at = time.monotonic()
            conn.close_code = ws.close_code
        return ws

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = (await request.read()).decode("utf-8")
        try:
            body: Any = json.loads(raw)
        except json.JSONDecodeError:
            body = raw
        self.responses.append({"name": name, "body": body, "headers": dict(request.headers)})
        if self.keep_calls is not None and len(self.responses) > self.keep_calls:
            del self.responses[: len(self.responses) - self.keep_calls]

        failure = self._take_failure("response_url")
        if failure is not None:
            return web.Response(status=failure.status if failure.status != 200 else 404, text=failure.error or "")
        if not isinstance(body, dict):
            self.violations.append(f"response_url {name}: body is not a JSON object")
            return web.Response(status=400, text="invalid_payload")
        if "blocks" in body:
            problems = check_blocks(body["blocks"], max_blocks=MAX_MESSAGE_BLOCKS)
            if problems:
                self.violations.extend(f"response_url {name}: {p}" for p in problems)
                return web.Response(status=400, text="invalid_blocks")

        target = self._response_targets.get(name)
        if target is not None and target in self.messages:
            if _truthy(body.get("delete_original")):
                del self.messages[target]
            elif _truthy(body.get("replace_original")):
                self._apply_update(self.messages[target], body)
        if self.response_listener is not None:
            self.response_listener(name, body)
        self.touch()
        return web.Response(text="ok")

    # ------------------------------------------------------------------ helpers for the methods

    def _next_ts(self) -> str:
        n = next(self._ts_counter) * 100
        return f"{1_700_000_000 + n // 1_000_000}.{n % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):08d}FAKE"

    @staticmethod
    def _resolve_channel(channel: Any) -> str:
        # Posting to a user id lands in the bot's DM with that user; Slack answers with the D... id.
        channel = str(channel)
        if channel[:1] in ("U", "W") and len(channel) > 1:
            return "D" + channel[1:]
        return channel

    def _check_message_payload(self, method: str, params: dict[str, Any], *, for_update: bool = False) -> None:
        text, blocks, attachments = params.get("text"), params.get("blocks"), params.get("attachments")
        if _missing(text) and not blocks and not attachments:
            if not (for_update and ("blocks" in params or "metadata" in params)):
                raise SlackError("no_text", violation=f"{method}: none of text, blocks or attachments given")
        if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_too_long", violation=f"{method}: text longer than {MAX_MESSAGE_TEXT}")
        if "blocks" in params:
            problems = check_blocks(blocks, max_blocks=MAX_MESSAGE_BLOCKS)
            if problems:
                raise SlackError(
                    "invalid_blocks",
                    violation=f"{method}: " + "; ".join(problems),
                    messages=[f"[ERROR] {p}" for p in problems],
                )
        if "metadata" in params:
            problems = check_metadata(params["metadata"])
            if problems:
                raise SlackError(
                    "invalid_metadata_format",
                    violation=f"{method}: " + "; ".join(problems),
                    messages=[f"[ERROR] {p}" for p in problems],
                )

    def _message_or_error(self, channel: str, ts: Any) -> Message:
        message = self.messages.get((channel, str(ts)))
        if message is None:
            raise SlackError("message_not_found")
        return message

    @staticmethod
    def _apply_update(message: Message, params: dict[str, Any]) -> None:
        message.previous.append(
            {"text": message.text, "blocks": copy.deepcopy(message.blocks), "metadata": copy.deepcopy(message.metadata)}
        )
        if "text" in params:
            message.text = params["text"]
        if "blocks" in params:
            message.blocks = copy.deepcopy(params["blocks"]) or []
        if "metadata" in params:
            message.metadata = copy.deepcopy(params["metadata"])

    # ------------------------------------------------------------------ methods

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(self.auth_test_response)

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = str(uuid.uuid4())
        self._socket_tickets.add(ticket)
        base = "ws://" + self.url.removeprefix("http://")
        return {"url": f"{base}{SOCKET_PATH}?ticket={ticket}&app_id={APP_ID}"}

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_message_payload("chat.postMessage", params)
        channel = self._resolve_channel(params["channel"])
        thread_ts = params.get("thread_ts")
        ts = self._next_ts()
        message = Message(
            channel=channel,
            ts=ts,
            text=params.get("text"),
            blocks=copy.deepcopy(params.get("blocks") or []),
            metadata=copy.deepcopy(params.get("metadata")),
            thread_ts=str(thread_ts) if not _missing(thread_ts) else None,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            reply_broadcast=_truthy(params.get("reply_broadcast")),
        )
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": message.to_api(team=self.team_id)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_message_payload("chat.update", params, for_update=True)
        channel = self._resolve_channel(params["channel"])
        message = self._message_or_error(channel, params["ts"])
        self._apply_update(message, params)
        message.edited_ts = self._next_ts()
        out = message.to_api(team=self.team_id)
        return {"channel": channel, "ts": message.ts, "text": message.text or "", "message": out}

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_message_payload("chat.postEphemeral", params)
        channel = self._resolve_channel(params["channel"])
        ts = self._next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": params["user"],
                "text": params.get("text"),
                "blocks": copy.deepcopy(params.get("blocks")) or [],
                "thread_ts": params.get("thread_ts"),
                "message_ts": ts,
            }
        )
        return {"message_ts": ts}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(params["channel"])
        message = self._message_or_error(channel, params["message_ts"])
        base = self.workspace_url.rstrip("/")
        permalink = f"{base}/archives/{channel}/p{message.ts.replace('.', '')}"
        if message.thread_ts and message.thread_ts != message.ts:
            permalink += f"?thread_ts={message.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": permalink}

    def _history_page(
        self, params: dict[str, Any], candidates: list[Message], channel_messages: list[Message], *, newest_first: bool
    ) -> dict[str, Any]:
        def bound(name: str) -> Decimal | None:
            value = params.get(name)
            if _missing(value):
                return None
            try:
                return _ts_key(value)
            except InvalidOperation as e:
                raise SlackError(f"invalid_ts_{name}") from e

        oldest, latest = bound("oldest"), bound("latest")
        inclusive = _truthy(params.get("inclusive"))
        selected = []
        for m in candidates:
            key = _ts_key(m.ts)
            if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
                continue
            if latest is not None and (key > latest or (key == latest and not inclusive)):
                continue
            selected.append(m)
        selected.sort(key=lambda m: _ts_key(m.ts), reverse=newest_first)

        try:
            limit = int(params.get("limit") or 100)
            offset = int(str(params.get("cursor") or "offset:0").removeprefix("offset:"))
        except ValueError as e:
            raise SlackError("invalid_cursor") from e
        limit = max(1, min(limit, 999))
        page = selected[offset : offset + limit]
        has_more = offset + limit < len(selected)
        include_metadata = _truthy(params.get("include_all_metadata"))
        out_messages = []
        for m in page:
            out = m.to_api(team=self.team_id, include_metadata=include_metadata)
            replies = [r for r in channel_messages if r.thread_ts == m.ts and r.ts != m.ts]
            if replies:
                out["thread_ts"] = m.ts
                out["reply_count"] = len(replies)
                out["latest_reply"] = max((r.ts for r in replies), key=_ts_key)
            out_messages.append(out)
        return {
            "messages": out_messages,
            "has_more": has_more,
            "response_metadata": {"next_cursor": f"offset:{offset + limit}" if has_more else ""},
        }

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel_messages = self.messages_in(params["channel"])
        # history lists top-level messages (and replies also sent to the channel), newest first
        top_level = [m for m in channel_messages if m.thread_ts in (None, m.ts) or m.reply_broadcast]
        page = self._history_page(params, top_level, channel_messages, newest_first=True)
        page.update({"pin_count": 0, "channel_actions_ts": None, "channel_actions_count": 0})
        return page

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(params["channel"])
        ts = str(params["ts"])
        if (channel, ts) not in self.messages:
            raise SlackError("thread_not_found")
        channel_messages = self.messages_in(channel)
        thread = [m for m in channel_messages if m.ts == ts or m.thread_ts == ts]
        return self._history_page(params, thread, channel_messages, newest_first=False)

    # views

    def _check_view(self, method: str, view: Any, *, expected_type: str | None = None) -> None:
        problems = check_view(view, expected_type=expected_type)
        if problems:
            blocks_problem = any(p.startswith("blocks") for p in problems)
            raise SlackError(
                "invalid_blocks" if blocks_problem else "invalid_arguments",
                violation=f"{method}: " + "; ".join(problems),
                messages=[f"[ERROR] {p}" for p in problems],
            )

    def _store_view(
        self,
        view: dict[str, Any],
        view_id: str,
        *,
        root_view_id: str | None = None,
        previous_view_id: str | None = None,
    ) -> dict[str, Any]:
        full = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type"),
            "blocks": copy.deepcopy(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{next(self._id_counter):08d}",
            "title": copy.deepcopy(view.get("title")),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": copy.deepcopy(view.get("close")),
            "submit": copy.deepcopy(view.get("submit")),
            "previous_view_id": previous_view_id,
            "root_view_id": root_view_id or view_id,
            "app_id": APP_ID,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self.open_views[view_id] = full
        return copy.deepcopy(full)

    def _record_view(self, method: str, params: dict[str, Any], view_id: str) -> None:
        self.views.append(
            {
                "method": method,
                "view": copy.deepcopy(params.get("view")),
                "trigger_id": params.get("trigger_id") or params.get("interactivity_pointer"),
                "view_id": view_id,
                "external_id": (params.get("view") or {}).get("external_id") or params.get("external_id"),
                "user_id": params.get("user_id"),
                "hash": params.get("hash"),
            }
        )

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_view("views.open", params["view"], expected_type="modal")
        view_id = self._next_id("V")
        self._record_view("views.open", params, view_id)
        return {"view": self._store_view(params["view"], view_id)}

    def _views_push(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_view("views.push", params["view"], expected_type="modal")
        view_id = self._next_id("V")
        self._record_view("views.push", params, view_id)
        return {"view": self._store_view(params["view"], view_id)}

    def _views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view_id, external_id = params.get("view_id"), params.get("external_id")
        if _missing(view_id) and _missing(external_id):
            raise SlackError(
                "invalid_arguments",
                violation="views.update: neither view_id nor external_id given",
                messages=["[ERROR] either view_id or external_id is required"],
            )
        if _missing(view_id):
            matches = [v for v in self.open_views.values() if v.get("external_id") == external_id]
            if not matches:
                raise SlackError("not_found")
            view_id = matches[0]["id"]
        current = self.open_views.get(str(view_id))
        self._check_view("views.update", params["view"], expected_type=current["type"] if current else None)
        if current is not None and not _missing(params.get("hash")) and params["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        self._record_view("views.update", params, str(view_id))
        root = current["root_view_id"] if current else None
        previous = current["previous_view_id"] if current else None
        return {"view": self._store_view(params["view"], str(view_id), root_view_id=root, previous_view_id=previous)}

    def _views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_view("views.publish", params["view"], expected_type="home")
        user_id = str(params["user_id"])
        existing = [v for v in self.views if v["method"] == "views.publish" and v["user_id"] == user_id]
        view_id = existing[-1]["view_id"] if existing else self._next_id("V")
        current = self.open_views.get(view_id)
        if current is not None and not _missing(params.get("hash")) and params["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        self._record_view("views.publish", params, view_id)
        return {"view": self._store_view(params["view"], view_id)}

    # users

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params["user"]))
        if user is None:
            raise SlackError("user_not_found")
        out = copy.deepcopy(user)
        if _truthy(params.get("include_locale")):
            out["locale"] = "en-US"
        return {"user": out}

    def _users_lookup_by_email(self, params: dict[str, Any]) -> dict[str, Any]:
        email = str(params["email"]).lower()
        for user in self.users.values():
            if str(user["profile"].get("email", "")).lower() == email:
                return {"user": copy.deepcopy(user)}
        raise SlackError("users_not_found")

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        members = self.usergroups.get(str(params["usergroup"]))
        if members is None:
            raise SlackError("no_such_subteam")
        return {"users": list(members)}


# ---------------------------------------------------------------------- Block Kit checks


def _text_value(obj: Any) -> str | None:
    if isinstance(obj, dict):
        value = obj.get("text")
        return value if isinstance(value, str) else None
    return None


def _check_len(problems: list[str], where: str, value: Any, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        problems.append(f"{where}: {len(value)} characters, more than {limit}")


def check_blocks(blocks: Any, *, max_blocks: int) -> list[str]:
    """Block Kit problems Slack would refuse ``blocks`` for (empty list when fine)."""
    if not isinstance(blocks, list):
        return [f"blocks: expected a list, got {type(blocks).__name__}"]
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"blocks: {len(blocks)} blocks, more than {max_blocks}")
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"{where}: a block must be an object with a type")
            continue
        _walk_block_kit(block, where, problems)
    return problems


def _walk_block_kit(node: Any, where: str, problems: list[str]) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk_block_kit(item, f"{where}[{i}]", problems)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    _check_len(problems, f"{where}.action_id", node.get("action_id"), MAX_ACTION_ID)
    _check_len(problems, f"{where}.block_id", node.get("block_id"), MAX_BLOCK_ID)
    if kind in ("plain_text", "mrkdwn"):
        text = node.get("text")
        if not isinstance(text, str) or text == "":
            problems.append(f"{where}.text: a {kind} text object needs a non-empty text")
    elif kind == "section":
        text, fields = node.get("text"), node.get("fields")
        if text is None and not fields:
            problems.append(f"{where}: a section needs text or fields")
        if text is not None and not isinstance(text, dict):
            problems.append(f"{where}.text: must be a text object")
        _check_len(problems, f"{where}.text", _text_value(text), MAX_SECTION_TEXT)
        if isinstance(fields, list):
            if len(fields) > MAX_SECTION_FIELDS:
                problems.append(f"{where}.fields: {len(fields)} fields, more than {MAX_SECTION_FIELDS}")
            for j, f in enumerate(fields):
                _check_len(problems, f"{where}.fields[{j}]", _text_value(f), MAX_FIELD_TEXT)
    elif kind == "header":
        text = node.get("text")
        if not isinstance(text, dict) or text.get("type") != "plain_text":
            problems.append(f"{where}.text: a header needs a plain_text text object")
        _check_len(problems, f"{where}.text", _text_value(text), MAX_HEADER_TEXT)
    elif kind == "button":
        text = node.get("text")
        if not isinstance(text, dict) or text.get("type") != "plain_text":
            problems.append(f"{where}.text: a button needs a plain_text text object")
        _check_len(problems, f"{where}.text", _text_value(text), MAX_BUTTON_TEXT)
        _check_len(problems, f"{where}.value", node.get("value"), MAX_BUTTON_VALUE)
        _check_len(problems, f"{where}.url", node.get("url"), MAX_BUTTON_URL)
    elif kind == "actions":
        elements = node.get("elements")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.elements: an actions block needs elements")
        elif len(elements) > MAX_ACTIONS_ELEMENTS:
            problems.append(f"{where}.elements: {len(elements)} elements, more than {MAX_ACTIONS_ELEMENTS}")
    elif kind == "context":
        elements = node.get("elements")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.elements: a context block needs elements")
        elif len(elements) > MAX_CONTEXT_ELEMENTS:
            problems.append(f"{where}.elements: {len(elements)} elements, more than {MAX_CONTEXT_ELEMENTS}")
    elif kind == "input":
        if not isinstance(node.get("label"), dict):
            problems.append(f"{where}.label: an input block needs a label")
        if not isinstance(node.get("element"), dict):
            problems.append(f"{where}.element: an input block needs an element")
    for key, value in node.items():
        if isinstance(value, (dict, list)):
            _walk_block_kit(value, f"{where}.{key}", problems)


def check_view(view: Any, *, expected_type: str | None = None) -> list[str]:
    """Problems Slack would refuse a view for; block problems start with ``blocks``."""
    if not isinstance(view, dict):
        return [f"view: expected an object, got {type(view).__name__}"]
    problems: list[str] = []
    kind = view.get("type")
    if kind not in ("modal", "home"):
        problems.append(f"view.type: must be modal or home, got {kind!r}")
    elif expected_type is not None and kind != expected_type:
        problems.append(f"view.type: this method takes a {expected_type} view, got {kind!r}")
    if kind == "modal":
        title = view.get("title")
        if not isinstance(title, dict) or title.get("type") != "plain_text" or not _text_value(title):
            problems.append("view.title: a modal needs a plain_text title")
        _check_len(problems, "view.title", _text_value(title), MAX_VIEW_TITLE)
        for key in ("submit", "close"):
            _check_len(problems, f"view.{key}", _text_value(view.get(key)), MAX_VIEW_BUTTON)
        has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or [])
        if has_input and view.get("submit") is None:
            problems.append("view.submit: a modal with input blocks needs a submit button")
    _check_len(problems, "view.private_metadata", view.get("private_metadata"), MAX_PRIVATE_METADATA)
    _check_len(problems, "view.callback_id", view.get("callback_id"), MAX_CALLBACK_ID)
    _check_len(problems, "view.external_id", view.get("external_id"), MAX_CALLBACK_ID)
    if "blocks" not in view:
        problems.append("blocks: a view needs blocks")
    else:
        problems.extend(check_blocks(view["blocks"], max_blocks=MAX_VIEW_BLOCKS))
    return problems


def check_metadata(metadata: Any) -> list[str]:
    """Problems with message metadata: it must be {"event_type": str, "event_payload": object}."""
    if not isinstance(metadata, dict):
        return [f"metadata: expected an object, got {type(metadata).__name__}"]
    problems = []
    if not isinstance(metadata.get("event_type"), str) or not metadata.get("event_type"):
        problems.append("metadata.event_type: required, a non-empty string")
    if not isinstance(metadata.get("event_payload"), dict):
        problems.append("metadata.event_payload: required, an object")
    return problems
