"""FloKit Actions API (seed 000) as an :class:`~sources.base.ActionSource`.

The only module that knows FloKit's words. It speaks to FloKit over an aiohttp session it is
given, parses every answer with pydantic models and hands back Signoff's own dataclasses.

Errors: every failure leaves as a :class:`~sources.base.SourceError` (aiohttp and pydantic
exceptions are chained as ``__cause__``, never raised themselves); messages are short, carry
at most FloKit's own ``message`` text, and never the API key. The client does not retry: the
outbox and the poll do.

A list answer with even one malformed item is refused as a whole (``BadResponseError``):
simple and predictable, and the poll tries the page again on its next round.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from yarl import URL

from sources import http
from sources.base import (
    BadResponseError,
    Capabilities,
    ConflictError,
    DecisionRequest,
    Guardrail,
    Impact,
    Landed,
    NotFoundError,
    Op,
    Page,
    PermanentError,
    Signal,
    SourceError,
    Status,
    TransientError,
    UpstreamAction,
)

log = logging.getLogger(__name__)

MAX_LIMIT: Final = 100
_MAX_MESSAGE: Final = 200

# FloKit's status words are Signoff's own lifecycle words, for the states FloKit has.
_STATUSES: Final[dict[str, Status]] = {
    s.value: s
    for s in (
        Status.DRAFT,
        Status.READY,
        Status.APPROVED,
        Status.RUNNING,
        Status.REJECTED,
        Status.ROLLED_BACK,
    )
}
# The document lists these as the only values of GET /v1/actions?status=.
_LISTABLE: Final = frozenset({Status.DRAFT, Status.READY, Status.APPROVED, Status.RUNNING, Status.ROLLED_BACK})


def status_from_flokit(word: str, *, what: str = "FloKit") -> Status:
    """FloKit's status word as a lifecycle state; an unknown word is a ``BadResponseError``."""
    try:
        return _STATUSES[word]
    except KeyError:
        raise BadResponseError(f"{what}: unknown status {word[:40]!r}") from None


def status_to_flokit(status: Status) -> str:
    """The ``status`` filter word for listing; ``ValueError`` for states FloKit cannot list."""
    if status not in _LISTABLE:
        raise ValueError(f"FloKit cannot list actions in status {status.value!r}")
    return status.value


# ---- wire models -------------------------------------------------------------------------


def _timestamp(value: object) -> datetime | None:
    """ISO 8601 text (or null) as an aware UTC datetime; a naive timestamp is taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 timestamp string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _null_as_empty(value: object) -> object:
    return "" if value is None else value


def _scalar_as_text(value: object) -> object:
    # A signal's value is text in the document ("2.31x", "16"); tolerate a bare number.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


_Timestamp = Annotated[datetime | None, BeforeValidator(_timestamp)]
_Text = Annotated[str, BeforeValidator(_null_as_empty)]


class _Wire(BaseModel):
    # strict: no "1" for 1, no 1 for "1", no 0 for False; unknown fields are ignored.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class _Impact(_Wire):
    metric: str
    direction: str
    magnitude: float | None = None


class _Signal(_Wire):
    label: str
    value: Annotated[str, BeforeValidator(_scalar_as_text)]


class _Guardrail(_Wire):
    check: str
    passed: bool
    detail: _Text = ""


class _Action(_Wire):
    """A list item, a full action, or the partial action of a decision's answer."""

    id: str = Field(min_length=1)
    status: str
    type: _Text = ""
    title: _Text = ""
    rationale: _Text = ""
    expected_impact: _Impact | None = None
    created_at: _Timestamp = None
    approved_at: _Timestamp = None
    approved_by: str | None = None
    # Not in FloKit's document: who proposed the action, where FloKit names them (an email or a
    # Slack user ID). Signoff refuses to let that person decide on their own action.
    requested_by: str | None = None
    # Not in FloKit's document either: a risk rating, where FloKit gives one.
    risk: _Text | None = None
    data_signals: list[_Signal] | None = None
    guardrail_checks: list[_Guardrail] | None = None
    rollback_conditions: list[str] | None = None


class _ListAnswer(_Wire):
    actions: list[dict[str, Any]]
    total: int = Field(ge=0)
    limit: int | None = None
    offset: int | None = None


class _DetailAnswer(_Wire):
    action: dict[str, Any]


class _DecisionAnswer(_Wire):
    status: str | None = None
    action: dict[str, Any] | None = None


_M = TypeVar("_M", bound=_Wire)


def _validate(model: type[_M], data: object, what: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadResponseError(f"{what}: unexpected shape at {loc}: {first['msg']}") from exc


def parse_action(data: object, *, detailed: bool, what: str = "FloKit action") -> UpstreamAction:
    """One FloKit action (a JSON object) as an :class:`UpstreamAction`; keeps it as ``raw``."""
    if not isinstance(data, dict):
        raise BadResponseError(f"{what}: expected an object")
    wire = _validate(_Action, data, what)
    impact = wire.expected_impact
    return UpstreamAction(
        external_id=wire.id,
        status=status_from_flokit(wire.status, what=what),
        upstream_status=wire.status,
        type=wire.type,
        title=wire.title,
        rationale=wire.rationale,
        expected_impact=Impact(impact.metric, impact.direction, impact.magnitude) if impact else None,
        data_signals=tuple(Signal(s.label, s.value) for s in wire.data_signals or ()),
        guardrail_checks=tuple(Guardrail(g.check, g.passed, g.detail) for g in wire.guardrail_checks or ()),
        rollback_conditions=tuple(wire.rollback_conditions or ()),
        created_at=wire.created_at,
        decided_at=wire.approved_at,
        decided_by=wire.approved_by,
        requested_by=wire.requested_by,
        risk=(wire.risk or "").strip()[:32] or None,
        detailed=detailed,
        raw=data,
    )


# ---- the client ----------------------------------------------------------------------------


class FloKitSource:
    """FloKit's Actions API. Holds no state besides its configuration; safe to share."""

    name = "flokit"
    capabilities = Capabilities(ops=frozenset({Op.APPROVE, Op.REJECT, Op.ROLLBACK}), idempotency_keys=False)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
    ) -> None:
        self._session = session
        self._base = URL(base_url)
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"FloKitSource(base_url={str(self._base)!r})"

    def listed_statuses(self) -> tuple[Status, ...]:
        return (Status.READY, Status.APPROVED, Status.RUNNING)

    async def list_actions(self, *, status: Status, limit: int, offset: int) -> Page:
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        limit = min(limit, MAX_LIMIT)
        params = {"status": status_to_flokit(status), "limit": str(limit), "offset": str(offset)}
        where = "GET /v1/actions"
        body = await self._call("GET", "/v1/actions", params=params)
        answer = _validate(_ListAnswer, _json_object(body, where), where)
        actions = tuple(
            parse_action(item, detailed=False, what=f"{where}: actions.{i}") for i, item in enumerate(answer.actions)
        )
        return Page(
            actions=actions,
            total=answer.total,
            limit=limit if answer.limit is None else answer.limit,
            offset=offset if answer.offset is None else answer.offset,
        )

    async def check_access(self) -> None:
        """One small read (one ready action), to learn at start whether FloKit takes the key.

        Raises what the read raises: a ``PermanentError`` with status 401/403 when the key is
        refused, a ``TransientError`` when FloKit cannot be reached or answers 5xx.
        """
        await self.list_actions(status=Status.READY, limit=1, offset=0)

    async def get_action(self, external_id: str) -> UpstreamAction:
        path = _action_path(external_id)
        where = f"GET {path}"
        body = await self._call("GET", path)
        answer = _validate(_DetailAnswer, _json_object(body, where), where)
        return parse_action(answer.action, detailed=True, what=f"{where}: action")

    async def submit(self, request: DecisionRequest) -> Landed:
        """POST the decision; FloKit acts on it at once. It honours no idempotency key, so
        none is sent (a 409 on a repeat is reconciled by reading the action).

        Lands with the partial action FloKit answers with (``detailed=False``; type and title
        empty), or with none when the answer carries no action.
        """
        return Landed(await self._send(request))

    async def track(self, request: DecisionRequest, reference: str) -> Landed:
        """FloKit gives no references to follow; where one is held anyway, read the action."""
        return Landed(await self.get_action(request.external_id))

    async def _send(self, request: DecisionRequest) -> UpstreamAction | None:
        payload: dict[str, str]
        if request.op is Op.APPROVE:
            payload = {"approved_by": request.actor}
            if request.note is not None:
                payload["note"] = request.note
        elif request.op is Op.REJECT:
            payload = {"rejected_by": request.actor}
            if request.note is not None:
                payload["reason"] = request.note
        elif request.op is Op.ROLLBACK:
            payload = {}
        else:  # FloKit's capabilities offer no other kind
            raise PermanentError(f"FloKit cannot {request.op.value}")
        path = f"{_action_path(request.external_id)}/{request.op.value}"
        where = f"POST {path}"
        body = await self._call("POST", path, json_body=payload)
        if not body.strip():
            return None
        answer = _validate(_DecisionAnswer, _json_object(body, where), where)
        if answer.status is not None and answer.status != "ok":
            raise BadResponseError(f"{where}: answered status {answer.status[:40]!r}, not 'ok'")
        if answer.action is None:
            return None
        action = parse_action(answer.action, detailed=False, what=f"{where}: action")
        if action.external_id != request.external_id:
            raise BadResponseError(f"{where}: answered for another action")
        return action

    # ---- HTTP ----

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> bytes:
        """One request; the body of a 2xx answer, or the matching SourceError."""
        where = f"{method} {path}"
        answer = await http.send(
            self._session,
            method,
            http.url_for(self._base, path),
            who="FloKit",
            where=where,
            headers=self._headers,
            timeout=self._timeout,
            params=params,
            json=json_body,
        )
        log.debug("FloKit %s -> %s", where, answer.status)
        if answer.ok:
            return answer.body
        raise self._error(answer.status, answer.body, where)

    def _error(self, status: int, body: bytes, where: str) -> SourceError:
        said = self._upstream_message(body)
        message = f"FloKit {where}: HTTP {status}" + (f": {said}" if said else "")
        if status == 409:
            return ConflictError(message, status=status)
        if status == 404:
            return NotFoundError(message, status=status)
        if status >= 500 or status in (408, 429):
            return TransientError(message, status=status)
        if 400 <= status < 500:
            return PermanentError(message, status=status)
        return BadResponseError(message, status=status)  # 1xx/3xx: not what the document says

    def _upstream_message(self, body: bytes) -> str:
        """FloKit's own ``message`` (or ``error``) from an error body: short, key redacted."""
        try:
            data = json.loads(body)
        except ValueError:
            return ""
        if not isinstance(data, dict):
            return ""
        said = data.get("message") or data.get("error")
        if not isinstance(said, str):
            return ""
        if self._api_key:
            said = said.replace(self._api_key, "[redacted]")
        return said[:_MAX_MESSAGE]


def _action_path(external_id: str) -> str:
    return f"/v1/actions/{quote(external_id, safe='')}"


def _json_object(body: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadResponseError(f"{where}: answer is not JSON") from exc
    if not isinstance(data, dict):
        raise BadResponseError(f"{where}: answer is not a JSON object")
    return data
