"""A small typed client for Signoff's own Actions API (and Fieldkit's, which it is shaped like).

    async with SignoffClient("https://signoff.example.com", api_key) as api:
        action = await api.submit("restart_service", target={"type": "service", "id": "web"})
        action = await api.wait_for_decision(action["action_id"])
        if action["status"] == "pending":
            await api.report(action["action_id"], "running")
            ...
            await api.report(action["action_id"], "succeeded", result={"ok": True})

Every write carries an ``Idempotency-Key`` (a new one per call unless given): pass your own
to retry a write safely. A refusal raises :class:`SignoffApiError` with the API's code,
message and field.
"""

from __future__ import annotations

import asyncio
import uuid
from types import TracebackType
from typing import Any, NotRequired, TypedDict

import aiohttp

OPEN_STATUSES = frozenset({"needs_approval"})


class Decision(TypedDict):
    decision: str  # APPROVE or REJECT
    decided_by: str
    decided_by_name: str | None
    decided_at: str
    reason: str | None
    option: NotRequired[str]  # the key of the action's own option picked, where it has options


class ApiAction(TypedDict, total=False):
    action_id: str
    action_type: str
    status: str
    requires_approval: bool
    risk: str | None
    title: str | None
    rationale: str | None
    requested_by: str
    expires_at: str | None
    target: dict[str, Any] | None
    payload: dict[str, Any]
    decision: Decision | None
    attempts: int
    started_at: str | None
    completed_at: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: str
    updated_at: str
    expected_impact: dict[str, Any] | None
    data_signals: list[dict[str, str]]
    guardrail_checks: list[dict[str, Any]]
    rollback_conditions: list[str]
    options: list[dict[str, str]]


class SignoffApiError(Exception):
    """A refusal: the HTTP status, the API's code, message and field, and ``Retry-After`` (seconds) when sent."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after = retry_after


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class SignoffClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 75.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"X-API-Key": api_key, "Accept": "application/json"}
        self._session = session
        self._own = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"SignoffClient({self._base!r})"

    async def __aenter__(self) -> SignoffClient:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        return (await self._request(method, path, body=body, key=key, params=params))[0]

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[Any, bool]:
        """The answer's JSON, and whether it replays an earlier write with the same key."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own = True
        headers = dict(self._headers)
        if method != "GET":
            headers["Idempotency-Key"] = key or str(uuid.uuid4())
        async with self._session.request(
            method,
            self._base + path,
            json=body,
            headers=headers,
            params=params,
            timeout=self._timeout,
        ) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:  # not JSON: not the API answering (a proxy's error page, say)
                raise SignoffApiError(
                    r.status,
                    "NOT_JSON",
                    f"{method} {path} was answered {r.status} without JSON; is this Signoff's address?",
                ) from None
            if r.status >= 400:
                d = data if isinstance(data, dict) else {}
                raise SignoffApiError(
                    r.status,
                    str(d.get("code", "")),
                    str(d.get("message", "")),
                    d.get("field"),
                    retry_after=_seconds(r.headers.get("Retry-After")),
                )
            return data, r.headers.get("X-Idempotent-Replay") == "true"

    async def types(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/api/v1/actions/types"))["types"])

    async def submit(self, action_type: str, *, idempotency_key: str | None = None, **fields: Any) -> ApiAction:
        """POST /api/v1/actions: ``target``, ``payload``, ``title``, ``callback_url``, ..."""
        result: ApiAction = await self._call(
            "POST", "/api/v1/actions", body={"action_type": action_type, **fields}, key=idempotency_key
        )
        return result

    async def submit_once(self, action_type: str, *, idempotency_key: str, **fields: Any) -> tuple[ApiAction, bool]:
        """:meth:`submit` with the caller's key; also says whether the answer is a replay (the
        action an earlier request with this key and body created, as it was then)."""
        data, replayed = await self._request(
            "POST",
            "/api/v1/actions",
            body={"action_type": action_type, **fields},
            key=idempotency_key,
        )
        action: ApiAction = data
        return action, replayed

    async def get(self, action_id: str, *, wait: int | None = None) -> ApiAction:
        params = {"wait": str(wait)} if wait is not None else None
        result: ApiAction = await self._call("GET", f"/api/v1/actions/{action_id}", params=params)
        return result

    async def wait_for_decision(self, action_id: str, *, timeout: float | None = None, poll: int = 30) -> ApiAction:
        """GET with ``?wait`` in a loop until a person decided (or it expired)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = poll if deadline is None else max(0, min(poll, int(deadline - loop.time())))
            action = await self.get(action_id, wait=left)
            if action["status"] not in OPEN_STATUSES or (deadline is not None and loop.time() >= deadline):
                return action

    async def decide(
        self,
        action_id: str,
        decision: str,
        reason: str | None = None,
        *,
        confirmation: str | None = None,
        idempotency_key: str | None = None,
    ) -> ApiAction:
        """An admin's decision. Where the route needs several approvers, an approval short of
        the last answers with the status still ``needs_approval`` and ``approvals``."""
        body: dict[str, Any] = {"decision": decision, "reason": reason}
        if confirmation is not None:
            body["confirmation"] = confirmation
        result: ApiAction = await self._call(
            "POST", f"/api/v1/actions/{action_id}/decide", body=body, key=idempotency_key
        )
        return result

    async def report(
        self,
        action_id: str,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        idempotency_key: str | None = None,
    ) -> ApiAction:
        body: dict[str, Any] = {"status": status}
        if result is not None:
            body["result"] = result
        if error is not None:
            body["error"] = error
        answer: ApiAction = await self._call(
            "POST", f"/api/v1/actions/{action_id}/status", body=body, key=idempotency_key
        )
        return answer
