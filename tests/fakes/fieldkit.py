"""A fake Fieldkit Agent Actions API (seed 002), served over real loopback HTTP for tests.

Built from the document: ``POST /api/v1/actions`` (submit), ``GET /api/v1/actions/{id}``
(with the execution ledger: attempts, started_at, completed_at, result, error), ``POST
/api/v1/actions/{id}/decide`` (admin-only, for actions in needs_approval) and ``GET
/api/v1/actions/types`` (the catalog), ``X-API-Key`` auth with roles, and idempotency:
service-account writes need an ``Idempotency-Key``; the same key and body replay the first
answer with ``X-Idempotent-Replay: true``; the same key with another body is ``409
IDEMPOTENCY_CONFLICT``; a matching request still running is ``409 IDEMPOTENCY_IN_PROGRESS``.

Tests drive it with :meth:`submit` (an agent submitting an action), :meth:`run`,
:meth:`succeed` and :meth:`fail` (the executor), :meth:`fail_next` (faults, optionally after
the request took effect: a lost answer), :meth:`set_decide_delay` (a slow decide, which holds
its key in progress), and read back :attr:`requests` and :attr:`decisions` (what took effect).

Where the document is silent, the fake chooses: the action is answered flat (not enveloped),
the catalog as ``{"types": [...]}``, errors as ``{"code", "message"}``, a decide on an action
not in needs_approval is ``409 INVALID_STATE``, and the decide answers the action.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.fakes.flokit import Recorded
from tests.fakes.server import LoopbackServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_KEY: Final = "test-fieldkit-admin-key"
SERVICE_KEY: Final = "test-fieldkit-service-key"

CATALOG: Final[list[dict[str, Any]]] = [
    {
        "action_type": "update_sales_order_status",
        "summary": "Update a sales order's status",
        "risk": "medium",
        "approval_required_by_default": True,
        "required_fields": ["target", "payload.status"],
        "example_payload": {"status": "in_production"},
    },
    {
        "action_type": "refund_payment",
        "summary": "Refund a customer payment",
        "risk": "high",
        "approval_required_by_default": True,
        "required_fields": ["target", "payload.amount"],
        "example_payload": {"amount": 120.0, "currency": "EUR"},
    },
    {
        "action_type": "reindex_inventory",
        "summary": "Reindex a warehouse's inventory",
        "risk": "low",
        "approval_required_by_default": False,
        "required_fields": ["target"],
        "example_payload": {},
    },
]


def _iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


@dataclass
class _Fault:
    path_suffix: str
    status: int
    times: int
    after_effect: bool
    delay: float
    code: str | None


@dataclass
class _Keyed:
    """One idempotency key: the body it came with and, once done, the answer to replay."""

    digest: str
    status: int | None = None
    body: bytes = b""


class FakeFieldkit(LoopbackServer):
    def __init__(self, *, admin_key: str = ADMIN_KEY, service_key: str = SERVICE_KEY) -> None:
        super().__init__()
        self.keys = {admin_key: "admin", service_key: "service"}
        self.types: list[dict[str, Any]] = copy.deepcopy(CATALOG)
        self.actions: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.decisions: list[dict[str, Any]] = []  # every decide that took effect
        self._keys: dict[tuple[str, str], _Keyed] = {}
        self._faults: list[_Fault] = []
        self._decide_delay = 0.0
        self._released = asyncio.Event()
        self._released.set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/api/v1/actions/types", self._types)
        app.router.add_post("/api/v1/actions", self._submit)
        app.router.add_get("/api/v1/actions/{id}", self._get)
        app.router.add_post("/api/v1/actions/{id}/decide", self._decide)
        return app

    # ---- test controls ----

    def submit(
        self, action_type: str = "update_sales_order_status", *, status: str | None = None,
        payload: dict[str, Any] | None = None, **fields: Any,
    ) -> str:
        """An agent submits an action (as POST /api/v1/actions would); returns its id."""
        known = next((t for t in self.types if t["action_type"] == action_type), None)
        needs = known is None or known.get("approval_required_by_default", True)
        action_id = str(uuid.uuid4())
        now = _iso()
        action = {
            "action_id": action_id,
            "event_id": str(uuid.uuid4()),
            "rule_id": None,
            "action_type": action_type,
            "schema_version": 1,
            "status": status or ("needs_approval" if needs else "pending"),
            "requires_approval": needs,
            "target": {"type": "sales_order", "id": "c3a1af57-2f5a-4e85-98b1-23b3501fa9d4"},
            "scope": "FULFILLMENT",
            "mode": "EXECUTE",
            "preconditions": {"expected_status": "ready"},
            "payload": payload if payload is not None else {"status": "in_production"},
            "correlation_id": "5df4f2e5-cc45-4e75-bf69-f056eae5b7c3",
            "causation_id": "98de5f35-4c21-4c1a-8d13-2d1b2b4c9e9d",
            "created_at": now,
            "updated_at": now,
            "attempts": 0,
            "started_at": None,
            "completed_at": None,
            "result": None,
            "error": None,
        }
        action.update(fields)
        self.actions[action_id] = action
        return action_id

    def run(self, action_id: str) -> None:
        """The executor picks an approved (pending) action up."""
        action = self.actions[action_id]
        assert action["status"] in ("pending", "running"), action["status"]
        action.update(status="running", attempts=action["attempts"] + 1, started_at=_iso(), updated_at=_iso())

    def succeed(self, action_id: str, result: Any) -> None:
        self.actions[action_id].update(status="succeeded", completed_at=_iso(), result=result, updated_at=_iso())

    def fail(self, action_id: str, error: Any) -> None:
        self.actions[action_id].update(status="failed", completed_at=_iso(), error=error, updated_at=_iso())

    def fail_next(
        self, path_suffix: str, *, status: int = 503, times: int = 1, after_effect: bool = False, delay: float = 0.0,
        code: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose path ends with ``path_suffix`` with
        ``status`` (0: reset the connection) and error ``code``. ``after_effect``: the request
        takes effect first, and its answer is lost."""
        self._faults.append(_Fault(path_suffix, status, times, after_effect, delay, code))

    def hold_decides(self) -> None:
        """Decides work until :meth:`release_decides`, holding their keys in progress."""
        self._released.clear()

    def release_decides(self) -> None:
        self._released.set()

    def set_decide_delay(self, seconds: float) -> None:
        """Each decide works this long before it answers, holding its key in progress."""
        self._decide_delay = seconds

    def calls(self, method: str | None = None, path_suffix: str | None = None) -> list[Recorded]:
        return [
            r for r in self.requests
            if (method is None or r.method == method.upper()) and (path_suffix is None or r.path.endswith(path_suffix))
        ]

    def decides(self, action_id: str | None = None) -> list[Recorded]:
        return [r for r in self.calls("POST", "/decide") if action_id is None or f"/{action_id}/" in r.path]

    # ---- plumbing ----

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        self.requests.append(Recorded(
            method=request.method, path=request.path, raw_path=request.raw_path.split("?", 1)[0],
            query=dict(request.query), json=parsed, headers=CIMultiDictProxy(CIMultiDict(request.headers)), body=body,
        ))
        fault = self._take_fault(request.path)
        if fault is None:
            return await self._handle(request, handler)
        if fault.after_effect:
            await self._handle(request, handler)
        await self._wait(fault.delay)
        if fault.status == 0:
            self._reset(request)
        phrase = HTTPStatus(fault.status).phrase if fault.status else "reset"
        return _error(fault.status or 500, fault.code or phrase.upper().replace(" ", "_"), phrase)

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if path.endswith(fault.path_suffix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("X-API-Key") not in self.keys:
            return _error(401, "UNAUTHORIZED", "Missing or invalid API key")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return _error(exc.status, HTTPStatus(exc.status).phrase.upper().replace(" ", "_"), exc.reason)

    def _role(self, request: web.Request) -> str:
        return self.keys[request.headers["X-API-Key"]]

    async def _idempotent(self, request: web.Request, work: Callable[[bytes], Awaitable[web.Response]]) -> web.Response:
        """Service-account writes: the key is required; replays, conflicts, in progress."""
        key = request.headers.get("Idempotency-Key")
        if not key:
            return _error(400, "IDEMPOTENCY_KEY_REQUIRED", "Service-account write requests require Idempotency-Key")
        body = await request.read()
        digest = hashlib.sha256(request.method.encode() + request.path.encode() + b"\n" + body).hexdigest()
        scope = (request.headers["X-API-Key"], key)
        seen = self._keys.get(scope)
        if seen is not None:
            if seen.digest != digest:
                return _error(409, "IDEMPOTENCY_CONFLICT", "Idempotency-Key reused with a different request body")
            if seen.status is None:
                return _error(409, "IDEMPOTENCY_IN_PROGRESS", "A request with this Idempotency-Key is still running")
            return web.Response(
                status=seen.status, body=seen.body, content_type="application/json",
                headers={"X-Idempotent-Replay": "true"},
            )
        seen = self._keys[scope] = _Keyed(digest)
        try:
            answer = await work(body)
        except BaseException:
            del self._keys[scope]
            raise
        if answer.status >= 500:
            del self._keys[scope]  # not kept: the client may try again
        else:
            seen.status, seen.body = answer.status, answer.body  # type: ignore[assignment]
        return answer

    # ---- endpoints ----

    async def _types(self, request: web.Request) -> web.Response:
        return web.json_response({"types": self.types})

    async def _get(self, request: web.Request) -> web.Response:
        action = self.actions.get(request.match_info["id"])
        if action is None:
            return _error(404, "NOT_FOUND", f"Action {request.match_info['id']} not found")
        return web.json_response(action)

    async def _submit(self, request: web.Request) -> web.Response:
        async def work(body: bytes) -> web.Response:
            data = json.loads(body or b"{}")
            action_id = self.submit(
                data.get("action_type", ""), payload=data.get("payload"),
                **{k: data[k] for k in ("target", "scope", "mode", "preconditions", "correlation_id") if k in data},
            )
            a = self.actions[action_id]
            return web.json_response({k: a[k] for k in (
                "action_id", "event_id", "rule_id", "action_type", "status", "requires_approval", "scope",
                "created_at", "updated_at")})

        return await self._idempotent(request, work)

    async def _decide(self, request: web.Request) -> web.Response:
        if self._role(request) != "admin":
            return _error(403, "FORBIDDEN", "decide is an admin-only endpoint")
        action_id = request.match_info["id"]

        async def work(body: bytes) -> web.Response:
            action = self.actions.get(action_id)
            if action is None:
                return _error(404, "NOT_FOUND", f"Action {action_id} not found")
            try:
                data = json.loads(body)
            except ValueError:
                return _error(400, "INVALID_REQUEST", "body is not JSON")
            if not isinstance(data, dict) or data.get("decision") not in ("APPROVE", "REJECT"):
                return _error(422, "VALIDATION_ERROR", "decision must be APPROVE or REJECT")
            if "reason" in data and not isinstance(data["reason"], str):
                return _error(422, "VALIDATION_ERROR", "reason must be a string")
            await self._wait(self._decide_delay)
            if not self._released.is_set():  # held: until released, or the server stops
                closing = asyncio.ensure_future(self._closing.wait())
                released = asyncio.ensure_future(self._released.wait())
                await asyncio.wait({closing, released}, return_when=asyncio.FIRST_COMPLETED)
                closing.cancel()
                released.cancel()
            if action["status"] != "needs_approval":
                return _error(409, "INVALID_STATE", f"Action is {action['status']}, not needs_approval")
            action.update(status="pending" if data["decision"] == "APPROVE" else "rejected", updated_at=_iso())
            self.decisions.append({"action_id": action_id, "decision": data["decision"], "reason": data.get("reason"),
                                   "key": request.headers.get("Idempotency-Key")})
            return web.json_response(action)

        return await self._idempotent(request, work)

    async def wait_decided(self, action_id: str, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(d["action_id"] == action_id for d in self.decisions):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{action_id} not decided within {timeout}s")
            await asyncio.sleep(0.02)
