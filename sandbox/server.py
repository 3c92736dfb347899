"""The sandbox's page and what it does: a channel as Slack shows it, driven by the bot's own
Block Kit, where every click, submission and command reaches the bot exactly as Slack's
would (a signed request to ``/slack/events``).

The page (``static/``: HTML, JS and CSS, no build step) reads ``GET /sandbox/state`` (held
until something changes, at most ``POLL_SECONDS``) and sends what a person does:

- ``POST /sandbox/click``: a button or overflow entry on a message, an ephemeral message,
  the App Home or a modal (Slack's ``block_actions``);
- ``POST /sandbox/submit`` and ``/sandbox/close``: a modal (``view_submission``; the bot's
  answer, such as ``response_action: errors``, is what the modal then shows);
- ``POST /sandbox/command``: the message box; ``/signoff ...`` is the slash command;
- ``POST /sandbox/home``: the App Home tab opened (``app_home_opened``);
- ``POST /sandbox/propose``: a new action proposed through Signoff's own Actions API;
- ``POST /sandbox/metrics``: a metric's value, which the rollback watch reads from
  ``GET /sandbox/metric`` (the ``METRICS_URL`` contract of ``sources/metrics.py``).

What the bot sends back arrives at the local Slack Web API (``slack_api.LocalSlack``) and the
response URLs it hands out; the page shows that.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from api.client import SignoffApiError, SignoffClient
from sandbox import slack_shapes as shapes
from sandbox import workspace
from sandbox.slack_api import LocalSlack, Message
from sandbox.slack_requests import SlackRequester, event_body, payload_form, slash_command_body

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 20.0
SAVE_SECONDS: Final = 1.0
KEEP_HANDLES: Final = 1000  # triggers and response URLs remembered (the newest)
MAX_BODY: Final = 64 * 1024
STATIC_FILES: Final = {"app.js": "text/javascript", "style.css": "text/css"}
# Metric values the rollback watch reads until a visitor sets others (slugs as core/rules.py makes them).
DEFAULT_METRICS: Final = {
    "blended_roas": 2.1,
    "meta_search_trial_conversion_rate": 0.72,
    "campaign_trial_conversion_rate": 0.58,
}
SLASH_COMMAND: Final = "/signoff"


Action = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # what a person did -> what the page is told
WebHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """What the page sent cannot be acted on; the message says why."""


@dataclass
class _Responder:
    """Who a response URL answers, and for which message (a card, or an ephemeral one)."""

    user: str
    channel: str
    ephemeral: str | None = None  # the ephemeral message's id (its message_ts)


@dataclass
class _Modals:
    """One person's open modals, the newest last, and the errors the bot answered for each."""

    stack: list[str] = field(default_factory=list)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)


def _user_json(user_id: str) -> dict[str, Any]:
    p = workspace.person(user_id)
    handle = p.email.split("@")[0] if p is not None else user_id.lower()
    return {"id": user_id, "username": handle, "name": handle, "team_id": shapes.TEAM_ID}


class Sandbox:
    """The page's server side, over the local Slack (see the module docstring)."""

    def __init__(self, slack: LocalSlack, http: aiohttp.ClientSession, *, channel: str = workspace.CHANNEL) -> None:
        self.slack = slack
        self.http = http
        self.channel = channel
        self.events_url: str | None = None  # the bot's /slack/events, once it runs
        self.api: SignoffClient | None = None  # the requester's client of Signoff's own Actions API
        self.types: list[dict[str, Any]] = []
        self.metrics: dict[str, tuple[float, datetime]] = {
            k: (v, datetime.now(timezone.utc)) for k, v in DEFAULT_METRICS.items()
        }
        self._responders: dict[str, _Responder] = {}
        self._triggers: dict[str, str] = {}  # trigger_id -> the user it was handed to
        self._modals: dict[str, _Modals] = {}
        self._views_seen = 0
        self._ids = itertools.count(1)
        slack.response_listener = self._on_response
        for p in workspace.PEOPLE:
            slack.add_user(p.user_id, email=p.email, name=p.name, real_name=p.real_name)

    # ---- kept across restarts ----------------------------------------------------------

    def load(self, path: Path) -> None:
        """The channel as an earlier run left it (the bot's store knows where its cards are)."""
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("the sandbox's channel in %s could not be read (%s); it starts empty", path, e)
            return
        if isinstance(saved, dict) and isinstance(saved.get("messages"), list):
            self.slack.import_messages(saved["messages"])

    def save(self, path: Path) -> None:
        """Written whole to a new file, then renamed over the old: never half a file."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"messages": self.slack.export_messages()}), encoding="utf-8")
        os.replace(tmp, path)

    async def keep(self, path: Path, every: float = SAVE_SECONDS) -> None:
        """Save the channel whenever it changed, at most every ``every`` seconds (and at the end)."""
        saved = self.slack.version
        try:
            while True:
                await asyncio.sleep(every)
                if self.slack.version != saved:
                    saved = self.slack.version
                    self._save_or_warn(path)
        finally:
            self._save_or_warn(path)

    def _save_or_warn(self, path: Path) -> None:
        try:
            self.save(path)
        except OSError as e:  # the page goes on; the next change tries again
            log.warning("the sandbox's channel could not be saved to %s (%s)", path, e.strerror)

    def connect(self, *, events_url: str, api: SignoffClient) -> None:
        """The bot is up: where Slack's requests go, and its Actions API."""
        self.events_url = events_url
        self.api = api

    # ---- routes ------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)
        app.router.add_get("/sandbox", self._page)
        app.router.add_get("/sandbox/static/{name}", self._static)
        app.router.add_get("/sandbox/state", self._state)
        app.router.add_get("/sandbox/metric", self._metric)
        people = (
            ("click", self.click),
            ("submit", self.submit),
            ("close", self.close),
            ("command", self.command),
            ("home", self.open_home),
        )
        for name, handler in people:
            app.router.add_post(f"/sandbox/{name}", self._json_handler(handler, as_person=True))
        for name, handler in (("propose", self.propose), ("metrics", self.set_metric)):
            app.router.add_post(f"/sandbox/{name}", self._json_handler(handler, as_person=False))

    async def _root(self, _request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/sandbox")

    async def _page(self, _request: web.Request) -> web.StreamResponse:
        text = resources.files("sandbox").joinpath("static/index.html").read_text(encoding="utf-8")
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise web.HTTPNotFound()
        text = resources.files("sandbox").joinpath(f"static/{name}").read_text(encoding="utf-8")
        return web.Response(text=text, content_type=kind, headers={"Cache-Control": "no-store"})

    def _json_handler(self, fn: Action, *, as_person: bool) -> WebHandler:
        """A JSON body in, ``{"ok": true, ...}`` out; a request it cannot act on is a 400 saying
        why. ``as_person``: the body names who acts (one of the picker's people)."""

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.content_type != "application/json":
                # JSON only: another site's page cannot send that to this one without asking first
                # (a CORS preflight, which is not answered), so it cannot click for a visitor.
                return web.json_response(
                    {"ok": False, "error": "send JSON (Content-Type: application/json)"}, status=415
                )
            try:
                raw = await request.content.read(MAX_BODY + 1)
                if len(raw) > MAX_BODY:
                    raise BadRequest("the request is too large")
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("the request must be a JSON object")
                if as_person and workspace.person(str(body.get("user"))) is None:
                    raise BadRequest("pick a person to act as")
                answer = await fn(body)
            except (BadRequest, ValueError) as e:
                return web.json_response({"ok": False, "error": str(e)}, status=400)
            return web.json_response({"ok": True, **answer})

        return handle

    # ---- what the page shows -----------------------------------------------------------

    async def _state(self, request: web.Request) -> web.StreamResponse:
        try:
            since = int(request.query.get("since", "-1"))
        except ValueError:
            since = -1
        version = await self.slack.changed_since(since, POLL_SECONDS) if since >= 0 else self.slack.version
        user = request.query.get("user", "")
        if workspace.person(user) is None:
            user = workspace.APPROVER.user_id  # the page acts as the approver until told otherwise
        return web.json_response(self.state(user, version))

    def state(self, user: str, version: int | None = None) -> dict[str, Any]:
        self._adopt_views()
        messages = self.slack.messages_in(self.channel)
        top = [m for m in messages if m.thread_ts in (None, m.ts)]
        replies: dict[str, list[Message]] = {}
        for m in messages:
            if m.thread_ts not in (None, m.ts):
                replies.setdefault(str(m.thread_ts), []).append(m)
        modals = self._modals.get(user)
        modal = None
        if modals is not None and modals.stack:
            view_id = modals.stack[-1]
            view = self.slack.open_views.get(view_id)
            if view is not None:
                modal = {"view_id": view_id, "view": view, "errors": modals.errors.get(view_id, {})}
        dm = self.slack.dm_channel(user)
        return {
            "version": self.slack.version if version is None else version,
            "user": user,
            "people": [
                {"id": p.user_id, "name": p.name, "real_name": p.real_name, "part": p.part} for p in workspace.PEOPLE
            ],
            "bot": {"id": self.slack.bot_user_id, "name": "Signoff"},
            "channel": {"id": self.channel, "name": workspace.CHANNEL_NAME},
            "messages": [self._message(m, replies.get(m.ts, [])) for m in top],
            "ephemerals": [
                {
                    "id": e["message_ts"],
                    "text": e.get("text") or "",
                    "blocks": e.get("blocks") or [],
                    "thread_ts": e.get("thread_ts"),
                }
                for e in self.slack.ephemerals
                if e.get("user") == user and e.get("channel") in (self.channel, dm)
            ],
            "direct": [self._message(m, []) for m in self.slack.messages_in(dm)],
            "modal": modal,
            "home": self._home(user),
            "metrics": [{"metric": k, "value": v} for k, (v, _at) in sorted(self.metrics.items())],
            "types": self.types,
        }

    def _message(self, m: Message, replies: list[Message]) -> dict[str, Any]:
        return {
            "ts": m.ts,
            "user": m.user,
            "bot": bool(m.bot_id),
            "text": m.text or "",
            "blocks": m.blocks,
            "edited": m.edited_ts is not None,
            "replies": [self._message(r, []) for r in replies],
        }

    def _home(self, user: str) -> dict[str, Any] | None:
        published = [v for v in self.slack.views if v["method"] == "views.publish" and v["user_id"] == user]
        if not published:
            return None
        return self.slack.open_views.get(published[-1]["view_id"])

    def _adopt_views(self) -> None:
        """Modals the bot opened or pushed with a trigger handed to someone: theirs now."""
        for record in self.slack.views[self._views_seen :]:
            user = self._triggers.get(str(record.get("trigger_id")))
            if record["method"] in ("views.open", "views.push") and user is not None:
                modals = self._modals.setdefault(user, _Modals())
                if record["method"] == "views.open":
                    modals.stack.clear()
                modals.stack.append(record["view_id"])
        self._views_seen = len(self.slack.views)

    # ---- what a person does ------------------------------------------------------------

    def _trigger(self, user: str) -> str:
        trigger = f"{next(self._ids)}.{int(time.time())}.sandbox{uuid.uuid4().hex[:8]}"
        self._triggers[trigger] = user
        _forget_oldest(self._triggers)
        return trigger

    def _responder(self, user: str, channel: str, *, ephemeral: str | None = None, ts: str | None = None) -> str:
        name = f"sb{uuid.uuid4().hex[:16]}"
        self._responders[name] = _Responder(user, channel, ephemeral)
        _forget_oldest(self._responders)
        return self.slack.response_url(name, channel=channel if ts else None, ts=ts)

    async def click(self, body: dict[str, Any]) -> dict[str, Any]:
        user = str(body["user"])
        where = body.get("where")
        element = self._element(body)
        payload = shapes.block_actions(user_id=user)
        payload["user"] = _user_json(user)
        payload["trigger_id"] = self._trigger(user)
        payload["actions"] = [element]
        if where in ("message", "ephemeral"):
            channel = str(body.get("channel") or self.channel)
            payload["channel"] = {"id": channel, "name": workspace.CHANNEL_NAME}
            if where == "message":
                message = self.slack.messages.get((channel, str(body.get("ts"))))
                if message is None:
                    raise BadRequest("that message is gone")
                payload["container"] = {
                    "type": "message",
                    "message_ts": message.ts,
                    "channel_id": channel,
                    "is_ephemeral": False,
                }
                payload["message"] = message.to_api(team=self.slack.team_id)
                payload["response_url"] = self._responder(user, channel, ts=message.ts)
            else:
                found = self._ephemeral(str(body.get("ephemeral")))
                payload["container"] = {
                    "type": "message",
                    "message_ts": found["message_ts"],
                    "channel_id": channel,
                    "is_ephemeral": True,
                }
                payload.pop("message", None)
                payload["response_url"] = self._responder(user, channel, ephemeral=found["message_ts"])
        elif where in ("home", "modal"):
            view_id = str(body.get("view_id"))
            view = self.slack.open_views.get(view_id)
            if view is None:
                raise BadRequest("that view is gone")
            payload["container"] = {"type": "view", "view_id": view_id}
            payload["view"] = self._with_state(view, body.get("values"))
            for key in ("channel", "message", "response_url"):
                payload.pop(key, None)
        else:
            raise BadRequest("where must be message, ephemeral, home or modal")
        await self._send_interactive(user, payload)
        return {}

    def _element(self, body: dict[str, Any]) -> dict[str, Any]:
        element = body.get("element")
        if not isinstance(element, dict) or not isinstance(element.get("action_id"), str):
            raise BadRequest("element must be the Block Kit element clicked")
        out = {k: copy.deepcopy(v) for k, v in element.items() if k in ("type", "action_id", "text", "value", "style")}
        out["block_id"] = str(body.get("block_id") or "")
        out["action_ts"] = f"{time.time():.6f}"
        selected = body.get("selected_option")
        if isinstance(selected, dict):
            out["selected_option"] = copy.deepcopy(selected)
        return out

    def _ephemeral(self, ephemeral_id: str) -> dict[str, Any]:
        for e in self.slack.ephemerals:
            if e["message_ts"] == ephemeral_id:
                return e
        raise BadRequest("that message is gone")

    @staticmethod
    def _with_state(view: dict[str, Any], values: Any) -> dict[str, Any]:
        """The view as Slack sends it back: with ``state.values`` of what was typed or picked."""
        out = copy.deepcopy(view)
        state: dict[str, dict[str, Any]] = {}
        for block in out.get("blocks") or []:
            if block.get("type") != "input" or not isinstance(block.get("element"), dict):
                continue
            element = block["element"]
            block_id, action_id = str(block.get("block_id")), str(element.get("action_id"))
            given = values.get(block_id, {}).get(action_id) if isinstance(values, dict) else None
            kind = element.get("type")
            if kind in ("static_select", "radio_buttons"):
                option = next(
                    (o for o in element.get("options") or [] if isinstance(given, str) and o.get("value") == given),
                    None,
                )
                state.setdefault(block_id, {})[action_id] = {"type": kind, "selected_option": option}
            elif kind == "checkboxes":
                picked = given if isinstance(given, list) else []
                state.setdefault(block_id, {})[action_id] = {
                    "type": kind,
                    "selected_options": [o for o in element.get("options") or [] if o.get("value") in picked],
                }
            else:
                text = given if isinstance(given, str) and given != "" else None
                state.setdefault(block_id, {})[action_id] = {"type": kind or "plain_text_input", "value": text}
        out["state"] = {"values": state}
        return out

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        user = str(body["user"])
        view_id = str(body.get("view_id"))
        modals = self._modals.get(user)
        view = self.slack.open_views.get(view_id)
        if modals is None or view_id not in modals.stack or view is None:
            raise BadRequest("that modal is not open")
        payload = shapes.view_submission(user_id=user)
        payload["user"] = _user_json(user)
        payload["trigger_id"] = self._trigger(user)
        payload["view"] = self._with_state(view, body.get("values"))
        status, text = await self._post(user, payload_form(payload))
        answer = _json_or_none(text) if status == 200 else None
        action = answer.get("response_action") if isinstance(answer, dict) else None
        if status != 200:
            modals.errors[view_id] = {"": f"Signoff answered HTTP {status}; try again"}
            return {"closed": False}
        if action == "errors":
            errors = answer.get("errors") if isinstance(answer, dict) else None
            modals.errors[view_id] = {str(k): str(v) for k, v in (errors or {}).items()}
            self.slack.touch()
            return {"closed": False, "errors": modals.errors[view_id]}
        modals.errors.pop(view_id, None)
        if action == "update" and isinstance(answer, dict) and isinstance(answer.get("view"), dict):
            self.slack.open_views[view_id] = {**view, **answer["view"], "id": view_id}
        elif action == "push" and isinstance(answer, dict) and isinstance(answer.get("view"), dict):
            pushed = f"V{uuid.uuid4().hex[:10].upper()}"
            self.slack.open_views[pushed] = {**answer["view"], "id": pushed, "state": {"values": {}}}
            modals.stack.append(pushed)
        elif action == "clear":
            modals.stack.clear()
        else:
            modals.stack.remove(view_id)
        self.slack.touch()
        return {"closed": view_id not in modals.stack}

    async def close(self, body: dict[str, Any]) -> dict[str, Any]:
        modals = self._modals.get(str(body["user"]))
        view_id = str(body.get("view_id"))
        if modals is not None and view_id in modals.stack:
            modals.stack.remove(view_id)
            modals.errors.pop(view_id, None)
            self.slack.touch()
        return {}

    async def command(self, body: dict[str, Any]) -> dict[str, Any]:
        user = str(body["user"])
        text = str(body.get("text") or "").strip()
        if not text:
            raise BadRequest("type a message, or /signoff help")
        if not text.startswith("/"):
            # A person's message: shown in the channel (Signoff does not read messages).
            self.slack.post_as(user, self.channel, text)
            return {}
        command, _, rest = text.partition(" ")
        if command != SLASH_COMMAND:
            self._ephemeral_for(user, f"{command} is not a valid command here. Try {SLASH_COMMAND} help.")
            return {}
        form = slash_command_body(
            user_id=user,
            command=SLASH_COMMAND,
            text=rest.strip(),
            channel=self.channel,
            response_url=self._responder(user, self.channel),
            trigger_id=self._trigger(user),
        )
        status, answer = await self._post(user, form)
        if status == 200 and answer.strip():
            reply = _json_or_none(answer)
            if isinstance(reply, dict):
                self._on_reply(user, reply)
            else:
                self._ephemeral_for(user, answer)
        return {}

    async def open_home(self, body: dict[str, Any]) -> dict[str, Any]:
        user = str(body["user"])
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": self.slack.dm_channel(user),
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        home = self._home(user)
        if home is not None:
            event["view"] = copy.deepcopy(home)
        await self._post(user, event_body(event))
        return {}

    async def propose(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.api is None:
            raise BadRequest("Signoff is still starting")
        action_type = str(body.get("action_type") or "")
        fields: dict[str, Any] = {}
        for name in ("title", "rationale"):
            if str(body.get(name) or "").strip():
                fields[name] = str(body[name]).strip()
        payload_text = str(body.get("payload") or "").strip()
        if payload_text:
            try:
                fields["payload"] = json.loads(payload_text)
            except ValueError:
                return {
                    "created": False,
                    "field": "payload",
                    "message": 'payload: not JSON (an object such as {"amount": "$120"})',
                }
        target_id = str(body.get("target_id") or "").strip()
        if target_id:
            fields["target"] = {"type": str(body.get("target_type") or "object").strip() or "object", "id": target_id}
        conditions = [c.strip() for c in str(body.get("rollback_conditions") or "").splitlines() if c.strip()]
        if conditions:
            fields["rollback_conditions"] = conditions
        try:
            created = await self.api.submit(action_type, **fields)
        except SignoffApiError as e:
            return {"created": False, "field": e.field, "message": e.message, "code": e.code}
        return {"created": True, "action": created}

    async def set_metric(self, body: dict[str, Any]) -> dict[str, Any]:
        metric = str(body.get("metric") or "").strip()
        value = body.get("value")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if (
            not metric
            or len(metric) > 64
            or not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise BadRequest("a metric's name and a number")
        self.metrics[metric] = (float(value), datetime.now(timezone.utc))
        self.slack.touch()
        return {}

    async def _metric(self, request: web.Request) -> web.StreamResponse:
        """``METRICS_URL``: the value a visitor set (or the default), observed when they set it."""
        metric = request.query.get("metric", "")
        found = self.metrics.get(metric)
        if found is None:
            return web.json_response({"error": "no such metric"}, status=404)
        value, at = found
        return web.json_response({"metric": metric, "value": value, "observed_at": at.isoformat()})

    # ---- to the bot, and back --------------------------------------------------------------

    async def _send_interactive(self, user: str, payload: dict[str, Any]) -> None:
        status, text = await self._post(user, payload_form(payload))
        if status == 200 and text.strip():
            reply = _json_or_none(text)
            if isinstance(reply, dict) and (reply.get("text") or reply.get("blocks")):
                self._on_reply(user, reply)

    async def _post(self, user: str, body: str) -> tuple[int, str]:
        """A signed request to the bot, as Slack sends it; its status and body."""
        if self.events_url is None:
            raise BadRequest("Signoff is still starting")
        requester = SlackRequester(self.events_url, workspace.SIGNING_SECRET, self.http)
        try:
            status, text, _headers = await requester.post(body)
        except (aiohttp.ClientError, TimeoutError) as e:
            self._ephemeral_for(user, f"Signoff did not answer ({type(e).__name__}); Slack would say the app failed.")
            return 0, ""
        if status != 200:
            self._ephemeral_for(user, f"Signoff answered HTTP {status}; Slack would say the app failed.")
        return status, text

    def _on_reply(self, user: str, reply: dict[str, Any]) -> None:
        if reply.get("response_type") == "in_channel":
            self.slack.post_as(self.slack.bot_user_id, self.channel, str(reply.get("text") or ""), reply.get("blocks"))
        else:
            self._ephemeral_for(user, str(reply.get("text") or ""), reply.get("blocks"))

    def _ephemeral_for(self, user: str, text: str, blocks: Any = None) -> None:
        self.slack.ephemerals.append(
            {
                "channel": self.channel,
                "user": user,
                "text": text,
                "blocks": copy.deepcopy(blocks) if isinstance(blocks, list) else [],
                "thread_ts": None,
                "message_ts": f"{time.time():.6f}{next(self._ids)}",
            }
        )
        self.slack.touch()

    def _on_response(self, name: str, body: dict[str, Any]) -> None:
        """A body the bot POSTed to a response URL (the local Slack has acted on a card's)."""
        responder = self._responders.get(name)
        if responder is None or not isinstance(body, dict):
            return
        replace, delete = _truthy(body.get("replace_original")), _truthy(body.get("delete_original"))
        if responder.ephemeral is not None and (replace or delete):
            for i, e in enumerate(self.slack.ephemerals):
                if e["message_ts"] == responder.ephemeral:
                    if delete:
                        del self.slack.ephemerals[i]
                    else:
                        e["text"] = body.get("text") or ""
                        e["blocks"] = copy.deepcopy(body.get("blocks") or [])
                    break
        elif not (replace or delete):
            self._on_reply(responder.user, body)


def _forget_oldest(found: dict[str, Any], keep: int = KEEP_HANDLES) -> None:
    """Triggers and response URLs expire in Slack (3 s and 30 min); here the oldest give way."""
    while len(found) > keep:
        del found[next(iter(found))]


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))
