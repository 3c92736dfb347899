"""Fieldkit's Agent Actions API (seed 002) as a push :class:`~sources.base.ActionSource`.

The only module that knows Fieldkit's words. Fieldkit's API has no list call: whoever submits
an action tells Signoff its id (``POST /intake/fieldkit``), and Signoff reads the action
(``GET /api/v1/actions/{id}``) and the type catalog (``GET /api/v1/actions/types``) itself;
nothing in the pushed body is trusted beyond the id.

Decisions go to ``POST /api/v1/actions/{id}/decide`` with ``{"decision", "reason"}``, an
``Idempotency-Key`` stable for the decision, and the same body byte for byte on every attempt
(built once by :meth:`FieldkitSource.request_body`, stored with the decision by the core). The
endpoint has no field for who decided, so the reason names the person.

Errors: every failure leaves as a :class:`~sources.base.SourceError`:

- ``409 IDEMPOTENCY_IN_PROGRESS``: ``InProgressError`` (tried again later, no attempt used up);
- ``409 IDEMPOTENCY_CONFLICT``: a bug on our side (same key, another body): ``PermanentError``,
  logged with the key;
- any other 409 (the action moved): ``ConflictError``, reconciled by reading the action;
- timeouts, resets, 5xx, 408, 429: ``TransientError`` (retried with the same key and body, so
  Fieldkit replays what it did); 404: ``NotFoundError``; other 4xx: ``PermanentError``.

Messages are short, carry at most Fieldkit's own ``code`` and ``message``, never the API key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from yarl import URL

from sources import http
from sources.base import (
    BadResponseError,
    Capabilities,
    ConflictError,
    DecisionRequest,
    Detail,
    InProgressError,
    IntakeError,
    Landed,
    NotFoundError,
    Op,
    PermanentError,
    SourceError,
    Status,
    TransientError,
    UpstreamAction,
)

log = logging.getLogger(__name__)

_MAX_MESSAGE: Final = 200
_MAX_ID: Final = 255
_MAX_VALUE: Final = 300  # one payload value, one precondition, on the card
_MAX_LINES: Final = 1500  # a payload or preconditions field as a whole
_MAX_NOTE: Final = 1000

# Fieldkit's lifecycle words, onto Signoff's (shared/design/lifecycle.md).
_STATUSES: Final[dict[str, Status]] = {
    "needs_approval": Status.READY,
    "pending": Status.APPROVED,  # approved, queued to run
    "running": Status.RUNNING,
    "succeeded": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "rejected": Status.REJECTED,
}
_DECISIONS: Final = {Op.APPROVE: "APPROVE", Op.REJECT: "REJECT"}


def status_from_fieldkit(word: object, *, what: str = "Fieldkit") -> Status:
    """Fieldkit's status word as a lifecycle state; an unknown word is a ``BadResponseError``."""
    if isinstance(word, str) and word.strip().lower() in _STATUSES:
        return _STATUSES[word.strip().lower()]
    raise BadResponseError(f"{what}: unknown status {str(word)[:40]!r}")


@dataclass(frozen=True)
class ActionType:
    """One entry of Fieldkit's type catalog."""

    action_type: str
    summary: str
    risk: str | None


def parse_catalog(data: object) -> dict[str, ActionType]:
    """The catalog answer as ``action_type -> ActionType``. The document names the fields of
    each entry, not the envelope: a bare list, or an object holding the list (``types``,
    ``action_types``, ``items`` or ``data``), are both taken."""
    items: object = data
    if isinstance(data, dict):
        items = next(
            (data[k] for k in ("types", "action_types", "items", "data") if isinstance(data.get(k), list)), None
        )
    if not isinstance(items, list):
        raise BadResponseError("GET /api/v1/actions/types: expected a list of action types")
    catalog: dict[str, ActionType] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("action_type"), str) or not item["action_type"]:
            continue  # one odd entry does not hide the rest
        risk = item.get("risk")
        risk = risk.strip().lower()[:32] if isinstance(risk, str) and risk.strip() else None
        summary = item.get("summary")
        catalog[item["action_type"]] = ActionType(
            item["action_type"], summary.strip() if isinstance(summary, str) else "", risk
        )
    return catalog


def _timestamp(value: object, what: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadResponseError(f"{what}: expected an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise BadResponseError(f"{what}: not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _readable(value: object, limit: int = _MAX_VALUE) -> str:
    """One value for a person: text as is, anything else as compact JSON; cut to ``limit``."""
    if isinstance(value, str):
        text = value
    elif value is None:
        text = "null"
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(mapping: dict[str, Any]) -> str:
    """``key: value`` per line, each value cut, the whole cut at a line with the rest counted."""
    lines = [f"{_readable(k, 80)}: {_readable(v)}" for k, v in mapping.items()]
    out: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if used + len(line) + 1 > _MAX_LINES - 30:
            out.append(f"…and {len(lines) - i} more")
            break
        out.append(line)
        used += len(line) + 1
    return "\n".join(out)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def parse_action(data: object, catalog: dict[str, ActionType], *, what: str = "Fieldkit action") -> UpstreamAction:
    """One Fieldkit action (GET /api/v1/actions/{id}) as an :class:`UpstreamAction`, with its
    type's summary and risk from the catalog."""
    if isinstance(data, dict) and isinstance(data.get("action"), dict) and "status" not in data:
        data = data["action"]  # tolerate an enveloped answer
    if not isinstance(data, dict):
        raise BadResponseError(f"{what}: expected an object")
    external_id = data.get("action_id") or data.get("id")
    if not isinstance(external_id, str) or not external_id:
        raise BadResponseError(f"{what}: no action_id")
    word = data.get("status")
    status = status_from_fieldkit(word, what=what)
    raw_type = data.get("action_type")
    action_type = raw_type if isinstance(raw_type, str) else ""
    known = catalog.get(action_type)
    details: list[Detail] = []

    def add(label: str, value: object) -> None:
        if value not in (None, "", {}, []):
            details.append(Detail(label, _as_text(value)))

    add("Scope", data.get("scope"))
    add("Mode", data.get("mode"))
    target = data.get("target")
    if isinstance(target, dict):
        add(
            "Target", " ".join(_readable(target.get(k), 120) for k in ("type", "id") if target.get(k) not in (None, ""))
        )
    elif target not in (None, ""):
        add("Target", _readable(target))
    add("Payload", data.get("payload"))
    add("Preconditions", data.get("preconditions"))
    add("Correlation ID", data.get("correlation_id"))
    # The execution ledger, once there is one.
    started = _timestamp(data.get("started_at"), f"{what}: started_at")
    completed = _timestamp(data.get("completed_at"), f"{what}: completed_at")
    attempts = data.get("attempts")
    ledger = []
    if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts > 0:
        ledger.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
    if started is not None:
        ledger.append(f"started {_when(started)}")
    if completed is not None:
        ledger.append(f"completed {_when(completed)}")
    if ledger:
        details.append(Detail("Execution", ", ".join(ledger)))
    add("Result", data.get("result"))
    add("Error", data.get("error"))
    risk = known.risk if known is not None else None
    if known is None and action_type:
        log.warning("Fieldkit action type %r is not in the catalog: carded without a risk", action_type[:80])
    requested_by = data.get("requested_by")
    return UpstreamAction(
        external_id=external_id,
        status=status,
        upstream_status=str(word),
        type=action_type,
        title=(known.summary if known is not None and known.summary else action_type.replace("_", " ").capitalize())
        or "Fieldkit action",
        created_at=_timestamp(data.get("created_at"), f"{what}: created_at"),
        requested_by=requested_by if isinstance(requested_by, str) and requested_by else None,
        risk=risk,
        details=tuple(details),
        detailed=True,
        raw=data,
    )


def _as_text(value: object) -> str:
    if isinstance(value, dict):
        return _lines(value)
    if isinstance(value, list):
        return _lines({str(i): v for i, v in enumerate(value)})
    return _readable(value)


def decision_reason(request: DecisionRequest) -> str:
    """ "Approved by Ada Lovelace <ada@example.com> in Slack: <note>": Fieldkit's decide has no
    field for who decided, so the reason names them."""
    verb = "Approved" if request.op is Op.APPROVE else "Rejected"
    email = request.actor if "@" in request.actor else ""
    name = " ".join((request.actor_name or "").split())
    if name and email:
        person = f"{name} <{email}>"
    elif email:
        person = f"<{email}>"
    elif name:
        person = f"{name} ({request.actor})"
    else:
        person = request.actor
    note = " ".join((request.note or "").split())[:_MAX_NOTE]
    return f"{verb} by {person} in Slack" + (f": {note}" if note else "")


# ---- the client ----------------------------------------------------------------------------


class FieldkitSource:
    """Fieldkit's Agent Actions API. Holds its configuration and a cache of the type catalog."""

    name = "fieldkit"
    capabilities = Capabilities(ops=frozenset({Op.APPROVE, Op.REJECT}), idempotency_keys=True)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        catalog_ttl: float = 300.0,
        catalog_min_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._base = URL(base_url)
        self._api_key = api_key
        self._headers = {"X-API-Key": api_key, "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._catalog: dict[str, ActionType] | None = None
        self._catalog_at = 0.0
        self._catalog_ttl = catalog_ttl
        self._catalog_min_interval = catalog_min_interval
        self._catalog_lock = asyncio.Lock()
        self._clock = clock

    def __repr__(self) -> str:
        return f"FieldkitSource(base_url={str(self._base)!r})"

    # ---- reading ----

    async def intake(self, body: dict[str, Any]) -> UpstreamAction:
        """``{"action_id": "..."}``: the action, read from Fieldkit (nothing else in the body
        is used)."""
        action_id = body.get("action_id")
        if not isinstance(action_id, str) or not action_id.strip():
            raise IntakeError("action_id", "required: the Fieldkit action's id, a non-empty string")
        if len(action_id) > _MAX_ID or any(c.isspace() or ord(c) < 32 for c in action_id):
            raise IntakeError(
                "action_id", f"must be at most {_MAX_ID} characters, without spaces or control characters"
            )
        return await self.get_action(action_id)

    async def get_action(self, external_id: str) -> UpstreamAction:
        path = _action_path(external_id)
        where = f"GET {path}"
        data = _json(await self._call("GET", path), where)
        wrapped = data.get("action")
        inner: dict[str, Any] = wrapped if isinstance(wrapped, dict) and "status" not in data else data
        action_type = inner.get("action_type")
        catalog = await self.catalog(needs=action_type if isinstance(action_type, str) else None)
        action = parse_action(data, catalog, what=where)
        if action.external_id != external_id:
            raise BadResponseError(f"{where}: answered for another action")
        return action

    async def catalog(self, *, needs: str | None = None) -> dict[str, ActionType]:
        """The type catalog, cached: read again when it is older than ``catalog_ttl``, or when
        ``needs`` names a type it lacks (at most once every ``catalog_min_interval``). A stale
        catalog is used when a refresh fails; with none at all, the failure is raised."""
        now = self._clock()
        if self._catalog is not None and not self._catalog_due(now, needs):
            return self._catalog
        async with self._catalog_lock:
            now = self._clock()
            if self._catalog is not None and not self._catalog_due(now, needs):
                return self._catalog
            try:
                fresh = parse_catalog(
                    _json_any(await self._call("GET", "/api/v1/actions/types"), "GET /api/v1/actions/types")
                )
            except SourceError as e:
                if self._catalog is None:
                    raise
                log.warning("Fieldkit's type catalog could not be refreshed, using the cached one: %s", e)
                self._catalog_at = now  # not again at once
                return self._catalog
            self._catalog, self._catalog_at = fresh, now
            return fresh

    def _catalog_due(self, now: float, needs: str | None) -> bool:
        age = now - self._catalog_at
        if age >= self._catalog_ttl:
            return True
        return (
            bool(needs)
            and self._catalog is not None
            and needs not in self._catalog
            and age >= self._catalog_min_interval
        )

    # ---- deciding ----

    def request_body(self, request: DecisionRequest) -> str:
        """The decide body for this decision, built once (the core stores it and hands it back
        as ``request.body`` on every attempt, so a retry is byte for byte the same)."""
        decision = _DECISIONS.get(request.op)
        if decision is None:
            raise PermanentError(f"Fieldkit cannot {request.op.value}")
        return json.dumps(
            {"decision": decision, "reason": decision_reason(request)}, ensure_ascii=False, separators=(",", ":")
        )

    async def submit(self, request: DecisionRequest) -> Landed:
        """POST the decision with its idempotency key. A replayed answer (an earlier attempt's
        answer was lost) is a delivered decision like any other. Lands with the action's new
        status (from the answer, else read)."""
        body = request.body if request.body is not None else self.request_body(request)
        path = f"{_action_path(request.external_id)}/decide"
        where = f"POST {path}"
        raw, headers = await self._call_with_headers(
            "POST", path, body=body.encode("utf-8"), idempotency_key=request.idempotency_key
        )
        if headers.get("X-Idempotent-Replay", "").strip().lower() == "true":
            log.info(
                "Fieldkit replayed the decision on %s (key %s): delivered earlier",
                request.external_id,
                request.idempotency_key,
            )
        upstream = self._answered(raw, request.external_id, where)
        if upstream is None:
            upstream = await self.get_action(request.external_id)
        if upstream.status is Status.READY:
            raise BadResponseError(f"{where}: the action still needs approval after the decision")
        return Landed(upstream)

    async def track(self, request: DecisionRequest, reference: str) -> Landed:
        """Fieldkit gives no references to follow; where one is held anyway, read the action."""
        return Landed(await self.get_action(request.external_id))

    def _answered(self, raw: bytes, external_id: str, where: str) -> UpstreamAction | None:
        """The action's new status from a decide answer, where it says one (status only; the
        rest is read by the tracking of open actions)."""
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if isinstance(data, dict) and isinstance(data.get("action"), dict) and "status" not in data:
            data = data["action"]
        if not isinstance(data, dict) or "status" not in data:
            return None
        answered_id = data.get("action_id") or data.get("id") or external_id
        if answered_id != external_id:
            raise BadResponseError(f"{where}: answered for another action")
        status = status_from_fieldkit(data.get("status"), what=where)
        return UpstreamAction(
            external_id=external_id,
            status=status,
            upstream_status=str(data["status"]),
            type="",
            title="",
            detailed=False,
            raw=data,
        )

    # ---- HTTP ----

    async def _call(self, method: str, path: str) -> bytes:
        body, _headers = await self._call_with_headers(method, path)
        return body

    async def _call_with_headers(
        self, method: str, path: str, *, body: bytes | None = None, idempotency_key: str | None = None
    ) -> tuple[bytes, Any]:
        where = f"{method} {path}"
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        answer = await http.send(
            self._session,
            method,
            http.url_for(self._base, path),
            who="Fieldkit",
            where=where,
            headers=headers,
            timeout=self._timeout,
            data=body,
        )
        log.debug("Fieldkit %s -> %s", where, answer.status)
        if answer.ok:
            return answer.body, answer.headers
        raise self._error(answer.status, answer.body, where, idempotency_key)

    def _error(self, status: int, body: bytes, where: str, key: str | None) -> SourceError:
        code, said = self._upstream_error(body)
        message = f"Fieldkit {where}: HTTP {status}" + (f" {code}" if code else "") + (f": {said}" if said else "")
        if status == 409 and code == "IDEMPOTENCY_IN_PROGRESS":
            return InProgressError(message, status=status)
        if status == 409 and code == "IDEMPOTENCY_CONFLICT":
            # Same key, another body: never expected (the body is built once and stored).
            log.error("Fieldkit refused idempotency key %s as reused with another body (%s)", key, where)
            return PermanentError(f"{message} (idempotency key {key})", status=status)
        if status == 409:
            return ConflictError(message, status=status)
        if status == 404:
            return NotFoundError(message, status=status)
        if status in (401, 403):
            return PermanentError(
                f"{message} (FIELDKIT_API_KEY must be an admin service-account key to decide)", status=status
            )
        if status >= 500 or status in (408, 429):
            return TransientError(message, status=status)
        if 400 <= status < 500:
            return PermanentError(message, status=status)
        return BadResponseError(message, status=status)

    def _upstream_error(self, body: bytes) -> tuple[str, str]:
        """Fieldkit's ``code`` and ``message`` from an error body (flat, or under ``error`` or
        ``detail``): short, the key redacted."""
        try:
            data = json.loads(body)
        except ValueError:
            return "", ""
        if isinstance(data, dict):
            for nested in ("error", "detail"):
                if isinstance(data.get(nested), dict):
                    data = data[nested]
                    break
        if not isinstance(data, dict):
            return "", ""
        code = data.get("code")
        said = (
            data.get("message")
            or (data.get("error") if isinstance(data.get("error"), str) else None)
            or (data.get("detail") if isinstance(data.get("detail"), str) else None)
        )
        code = code[:64] if isinstance(code, str) else ""
        said = said if isinstance(said, str) else ""
        if self._api_key:
            said = said.replace(self._api_key, "[redacted]")
        return code, said[:_MAX_MESSAGE]


def _action_path(external_id: str) -> str:
    return f"/api/v1/actions/{quote(external_id, safe='')}"


def _json_any(body: bytes, where: str) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadResponseError(f"{where}: answer is not JSON") from exc


def _json(body: bytes, where: str) -> dict[str, Any]:
    data = _json_any(body, where)
    if not isinstance(data, dict):
        raise BadResponseError(f"{where}: answer is not a JSON object")
    return data
