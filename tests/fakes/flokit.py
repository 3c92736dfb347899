"""A fake FloKit Actions API (seed 000), served over real loopback HTTP for tests.

Built from the document only: GET /v1/actions, GET /v1/actions/{id} and POST
/v1/actions/{id}/approve|reject|rollback, Bearer auth, FloKit's error bodies. Tests drive it
through :meth:`FakeFloKit.add_action`, :meth:`FakeFloKit.set_status`, the fault injection of
:meth:`FakeFloKit.fail_next` and :meth:`FakeFloKit.set_delay`, and read back every request it
saw (:attr:`FakeFloKit.requests`, :meth:`FakeFloKit.calls`).

Where the document is silent, the fake chooses (and tests should not lean on it): an unknown
id is checked before the body, notes and reasons go to :attr:`FakeFloKit.audit` rather than
onto the action, and ``status=rejected`` is accepted as a list filter.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from sandbox.seeds import FLOKIT_ACTIONS
from tests.fakes.server import LoopbackServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_API_KEY: Final = "test-flokit-key"
LIST_FIELDS: Final = (
    "id",
    "type",
    "status",
    "title",
    "rationale",
    "expected_impact",
    "created_at",
    "approved_at",
    "approved_by",
)
LIST_FILTERS: Final = frozenset({"draft", "ready", "approved", "running", "rolled_back", "rejected"})
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
_EPOCH: Final = datetime(2024, 3, 15, 6, 0, tzinfo=timezone.utc)

# Realistic content, from the document's two examples: the sandbox's (sandbox/seeds.py). This
# fake's creative pause has signals, guardrails (one failed) and rollback conditions of its own.
_TEMPLATES: Final[dict[str, dict[str, Any]]] = {
    "budget_shift": FLOKIT_ACTIONS["budget_shift"],
    "creative_pause": {
        **FLOKIT_ACTIONS["creative_pause"],
        "data_signals": [
            {"label": "TK_VID_042 impressions (8 days)", "value": "1.2M"},
            {"label": "TK_VID_042 CTR change since launch", "value": "-61%"},
            {"label": "TK_VID_042 trial conversion", "value": "0.48"},
        ],
        "guardrail_checks": [
            {"check": "minimum_impressions", "passed": True, "detail": "1.2M impressions served"},
            {"check": "campaign_floor", "passed": False, "detail": "0.48 vs. 0.65 floor"},
        ],
        "rollback_conditions": ["If campaign trial conversion rate falls below 0.60 within 7 days"],
    },
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # percent-decoded
    raw_path: str  # as sent, without the query
    query: dict[str, str]
    json: Any  # the parsed body, or None when empty or not JSON
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


@dataclass
class _Fault:
    path_suffix: str
    status: int
    times: int
    body: bytes
    content_type: str
    delay: float
    after_effect: bool


class FakeFloKit(LoopbackServer):
    """FloKit's Actions API on 127.0.0.1 and a free port. ``await start()`` before use."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self._other_keys: set[str] = set()
        self.url = ""
        self.actions: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        # Every decision the fake accepted: {"action_id", "event", "by", "note", "at"}.
        self.audit: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._delay = 0.0
        self._seq = 0

    # ---- lifecycle ----

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v1/actions", self._list)
        app.router.add_get("/v1/actions/{id}", self._detail)
        app.router.add_post("/v1/actions/{id}/approve", self._approve)
        app.router.add_post("/v1/actions/{id}/reject", self._reject)
        app.router.add_post("/v1/actions/{id}/rollback", self._rollback)
        return app

    # ---- test controls ----

    def add_action(
        self,
        id: str | None = None,
        *,
        status: str = "ready",
        type: str = "budget_shift",
        title: str | None = None,
        rationale: str | None = None,
        expected_impact: dict[str, Any] | None = None,
        data_signals: list[dict[str, Any]] | None = None,
        guardrail_checks: list[dict[str, Any]] | None = None,
        rollback_conditions: list[str] | None = None,
        created_at: str | None = None,
        approved_at: str | None = None,
        approved_by: str | None = None,
    ) -> dict[str, Any]:
        """Store a full action; None takes the document's example content for ``type``.

        Ids default to ``act_01hx4j7k9m0000000001``, ... and ``created_at`` to one minute
        apart from 2024-03-15T06:00:00Z, so insertion order is list order. Returns a copy.
        """
        self._seq += 1
        action_id = id if id is not None else f"act_01hx4j7k9m{self._seq:010d}"
        if action_id in self.actions:
            raise ValueError(f"duplicate action id {action_id!r}")
        template = copy.deepcopy(_TEMPLATES.get(type, _TEMPLATES["budget_shift"]))

        def pick(value: Any, key: str) -> Any:
            return copy.deepcopy(value) if value is not None else template[key]

        action = {
            "id": action_id,
            "type": type,
            "status": status,
            "title": pick(title, "title"),
            "rationale": pick(rationale, "rationale"),
            "expected_impact": pick(expected_impact, "expected_impact"),
            "created_at": created_at or _iso(_EPOCH + timedelta(minutes=self._seq)),
            "approved_at": approved_at,
            "approved_by": approved_by,
            "data_signals": pick(data_signals, "data_signals"),
            "guardrail_checks": pick(guardrail_checks, "guardrail_checks"),
            "rollback_conditions": pick(rollback_conditions, "rollback_conditions"),
        }
        self.actions[action_id] = action
        return copy.deepcopy(action)

    def set_status(self, id: str, status: str, **fields: Any) -> None:
        """Change an action upstream, as FloKit's own UI or its executor would.

        Moving to ``approved`` fills ``approved_at`` (now) and ``approved_by`` when neither
        the action nor ``fields`` has them.
        """
        action = self.actions[id]
        action["status"] = status
        if status == "approved":
            if action.get("approved_at") is None and "approved_at" not in fields:
                action["approved_at"] = _iso(datetime.now(timezone.utc))
            if action.get("approved_by") is None and "approved_by" not in fields:
                action["approved_by"] = "someone@flokit-ui.example"
        action.update(fields)

    def calls(self, method: str | None = None, path_suffix: str | None = None) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_suffix is None or r.path.endswith(path_suffix))
        ]

    def fail_next(
        self,
        path_suffix: str,
        *,
        status: int = 503,
        times: int = 1,
        body: str | bytes | None = None,
        content_type: str = "application/json",
        delay: float = 0.0,
        after_effect: bool = False,
    ) -> None:
        """Answer the next ``times`` requests whose path ends with ``path_suffix`` with a fault.

        ``after_effect`` applies the real request first (its answer is dropped); ``delay``
        waits before the fault is answered; ``status=0`` resets the connection instead.
        """
        if body is None:
            phrase = HTTPStatus(status).phrase if status else "reset"
            body = json.dumps({"error": phrase.lower().replace(" ", "_"), "message": phrase})
        self._faults.append(
            _Fault(
                path_suffix=path_suffix,
                status=status,
                times=times,
                body=body.encode() if isinstance(body, str) else body,
                content_type=content_type,
                delay=delay,
                after_effect=after_effect,
            )
        )

    def accept_key(self, key: str) -> None:
        """Also accept ``key``: clients given keys of their own (bot replicas, say) can then be
        told apart by the ``Authorization`` header of what they sent (:meth:`sent_by`)."""
        self._other_keys.add(key)

    @staticmethod
    def sent_by(request: Recorded) -> str:
        """The API key a recorded request carried (empty when it had none)."""
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    def clear_faults(self) -> None:
        """Forget every fault not yet used up."""
        self._faults.clear()

    def set_delay(self, seconds: float) -> None:
        """Wait this long before handling every request (the work is still done afterwards,
        even if the client has given up: a slow upstream)."""
        self._delay = seconds

    # ---- plumbing ----

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                raw_path=request.raw_path.split("?", 1)[0],
                query=dict(request.query),
                json=parsed,
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
            )
        )
        fault = self._take_fault(request.path)
        await self._wait(self._delay)
        if fault is None:
            return await self._handle(request, handler)
        if fault.after_effect:
            await self._handle(request, handler)
        await self._wait(fault.delay)
        if fault.status == 0:
            self._reset(request)
        return web.Response(
            status=fault.status or 500,
            body=fault.body,
            headers={"Content-Type": fault.content_type},
        )

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Authorization") not in {f"Bearer {k}" for k in (self.api_key, *self._other_keys)}:
            return _error(401, "unauthorized", "Missing or invalid API key")
        try:
            return await handler(request)
        except web.HTTPException as exc:  # unknown route, wrong method
            return _error(exc.status, HTTPStatus(exc.status).phrase.lower().replace(" ", "_"), exc.reason)

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if path.endswith(fault.path_suffix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _find(self, request: web.Request) -> dict[str, Any] | None:
        return self.actions.get(request.match_info["id"])

    @staticmethod
    def _not_found(request: web.Request) -> web.Response:
        return _error(404, "not_found", f"Action '{request.match_info['id']}' not found")

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any] | web.Response:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return _error(400, "invalid_request", "Request body is not valid JSON")
        if not isinstance(data, dict):
            return _error(400, "invalid_request", "Request body must be a JSON object")
        return data

    # ---- endpoints ----

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        status = query.get("status")
        if status is not None and status not in LIST_FILTERS:
            return _error(400, "invalid_request", f"Unknown status '{status}'")
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
            offset = int(query.get("offset", 0))
        except ValueError:
            return _error(400, "invalid_request", "limit and offset must be integers")
        if limit < 1 or offset < 0:
            return _error(400, "invalid_request", "limit must be >= 1 and offset >= 0")
        limit = min(limit, MAX_LIMIT)
        matching = sorted(
            (a for a in self.actions.values() if status is None or a.get("status") == status),
            key=lambda a: (str(a.get("created_at") or ""), str(a.get("id"))),
        )
        page = [
            {k: copy.deepcopy(a[k]) for k in LIST_FIELDS if k in a}
            for a in matching[offset : offset + limit]
        ]
        return web.json_response({"actions": page, "total": len(matching), "limit": limit, "offset": offset})

    async def _detail(self, request: web.Request) -> web.Response:
        action = self._find(request)
        if action is None:
            return self._not_found(request)
        return web.json_response({"action": action})

    async def _decision(
        self, request: web.Request, by_field: str, text_field: str
    ) -> tuple[dict[str, Any], str, str | None] | web.Response:
        """The action and the validated body of an approve or reject request (or the error)."""
        action = self._find(request)
        if action is None:
            return self._not_found(request)
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        by, text = body.get(by_field), body.get(text_field)
        if not isinstance(by, str) or not by:
            return _error(400, "invalid_request", f"{by_field} is required")
        if text is not None and not isinstance(text, str):
            return _error(400, "invalid_request", f"{text_field} must be a string")
        return action, by, text

    async def _approve(self, request: web.Request) -> web.Response:
        checked = await self._decision(request, "approved_by", "note")
        if isinstance(checked, web.Response):
            return checked
        action, approved_by, note = checked
        if action["status"] != "ready":
            return self._conflict(action, "approved")
        now = _iso(datetime.now(timezone.utc))
        action.update(status="approved", approved_at=now, approved_by=approved_by)
        self._record(action, "approved", approved_by, note, now)
        answer = {"id": action["id"], "status": "approved", "approved_at": now, "approved_by": approved_by}
        return web.json_response({"status": "ok", "action": answer})

    async def _reject(self, request: web.Request) -> web.Response:
        checked = await self._decision(request, "rejected_by", "reason")
        if isinstance(checked, web.Response):
            return checked
        action, rejected_by, reason = checked
        if action["status"] != "ready":
            return self._conflict(action, "rejected")
        action["status"] = "rejected"
        self._record(action, "rejected", rejected_by, reason, _iso(datetime.now(timezone.utc)))
        return web.json_response({"status": "ok", "action": {"id": action["id"], "status": "rejected"}})

    async def _rollback(self, request: web.Request) -> web.Response:
        action = self._find(request)
        if action is None:
            return self._not_found(request)
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        if action["status"] not in ("approved", "running"):
            return self._conflict(action, "rolled back")
        action["status"] = "rolled_back"
        self._record(action, "rolled_back", None, None, _iso(datetime.now(timezone.utc)))
        return web.json_response({"status": "ok", "action": {"id": action["id"], "status": "rolled_back"}})

    @staticmethod
    def _conflict(action: dict[str, Any], verb: str) -> web.Response:
        return _error(409, "conflict", f"Action is in '{action['status']}' status and cannot be {verb}")

    def _record(self, action: dict[str, Any], event: str, by: str | None, note: str | None, at: str) -> None:
        self.audit.append({"action_id": action["id"], "event": event, "by": by, "note": note, "at": at})
