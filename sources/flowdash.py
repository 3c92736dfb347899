"""Flowdash's Actions API (seed 001) as an :class:`~sources.base.ActionSource` and a push source.

The only module that knows Flowdash's words. Flowdash's API cannot list tasks or read one, so
a Flowdash automation tells Signoff about a task that waits on a person (``POST
/intake/flowdash``, read by :meth:`FlowdashSource.intake`); Signoff then reads the task's
available actions, and those are the card's options (``key`` = Flowdash's action id).

- An action's external id is ``"<workflow_id>/<task_id>"``.
- Options: actions named like approve (reject) are of kind APPROVE (REJECT); any other OTHER.
- A decision is an execution (``POST .../executions``): Pending → :class:`Accepted` with the
  execution id, followed with ``GET .../executions/<id>`` until Success (landed: approved,
  rejected, or, for another action, still ready with the actions Flowdash offers next) or
  Fail (a :class:`RequirementsError` with Flowdash's ``errors``).
- Before every execution the task's actions are read again: an action no longer offered is
  a :class:`ConflictError` (someone else acted; the core reads and adopts what is offered
  now). Flowdash takes no idempotency key, so on a re-send (``DecisionRequest.attempt > 0``:
  an earlier answer was lost) an action no longer offered is taken as landed ("landed;
  confirmation lost") and the execution is POSTed again only while it is still offered.
- Errors: a 422 is a :class:`RequirementsError` carrying Flowdash's messages word for word;
  401/403/other 4xx are permanent; 5xx, 408, 429, timeouts and resets are transient. No
  message ever carries the API key.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from yarl import URL

from sources import http
from sources.base import (
    Accepted,
    BadResponseError,
    Capabilities,
    ConflictError,
    DecisionRequest,
    Detail,
    IntakeError,
    Landed,
    NotFoundError,
    Op,
    Option,
    PermanentError,
    RequirementsError,
    SourceError,
    Status,
    Submitted,
    TransientError,
    UpstreamAction,
)

log = logging.getLogger(__name__)

NAME: Final = "flowdash"
TASK_TYPE: Final = "flowdash_task"
LOST_CONFIRMATION: Final = "landed; confirmation lost"
MAX_ID: Final = 100  # a workflow or task id, as the intake takes it
MAX_TITLE: Final = 500
MAX_FIELDS: Final = 50
MAX_FIELD_LABEL: Final = 200
MAX_FIELD_VALUE: Final = 2000
MAX_OPTIONS: Final = 20
_MAX_MESSAGE: Final = 300

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.~-]*")
_APPROVE_LIKE = re.compile(r"\b(approv\w*|accept\w*|sign[\s-]?off|confirm\w*)\b", re.IGNORECASE)
_REJECT_LIKE = re.compile(r"\b(reject\w*|declin\w*|deny|denied|refuse\w*)\b", re.IGNORECASE)


def option_kind(name: str) -> Op:
    """APPROVE or REJECT for an action named like one ("Approve", "Reject request"), else OTHER."""
    if _REJECT_LIKE.search(name):
        return Op.REJECT
    if _APPROVE_LIKE.search(name):
        return Op.APPROVE
    return Op.OTHER


def external_id(workflow_id: str, task_id: str) -> str:
    return f"{workflow_id}/{task_id}"


def split_external_id(value: str) -> tuple[str, str]:
    """(workflow id, task id) of an external id; ``NotFoundError`` for one that is not ours."""
    workflow_id, sep, task_id = value.partition("/")
    if not sep or not _ID.fullmatch(workflow_id) or not _ID.fullmatch(task_id):
        raise NotFoundError(f"Flowdash: {value[:80]!r} is not a <workflow_id>/<task_id>")
    return workflow_id, task_id


def _intake_id(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)  # an automation may send a numeric task id
    if not isinstance(value, str) or not value.strip():
        raise IntakeError(field, "required: a non-empty string")
    value = value.strip()
    if len(value) > MAX_ID or not _ID.fullmatch(value):
        raise IntakeError(field, f"must be at most {MAX_ID} letters, digits, '_', '-', '.' or '~'")
    return value


def _intake_text(body: dict[str, Any], field: str, limit: int) -> str:
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise IntakeError(field, "must be a string")
    return value.strip()[:limit]


def _field_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return ", ".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def parse_intake(body: dict[str, Any]) -> tuple[str, str, str, tuple[Detail, ...], str | None]:
    """(workflow id, task id, title, details, url) of an intake body; ``IntakeError`` naming
    the first bad field."""
    workflow_id = _intake_id(body, "workflow_id")
    task_id = _intake_id(body, "task_id")
    title = _intake_text(body, "title", MAX_TITLE)
    fields = body.get("fields")
    details: list[Detail] = []
    if fields is not None:
        if not isinstance(fields, dict):
            raise IntakeError("fields", "must be an object of field names to values")
        for label, value in list(fields.items())[:MAX_FIELDS]:
            details.append(Detail(str(label)[:MAX_FIELD_LABEL], _field_value(value)[:MAX_FIELD_VALUE]))
    url = body.get("url")
    if url is not None:
        if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s<>|]{1,2000}", url):
            raise IntakeError("url", "must be an http(s) URL")
    return workflow_id, task_id, title, tuple(details), url


class FlowdashSource:
    """Flowdash's Actions API. Holds no state besides its configuration; safe to share."""

    name = NAME
    capabilities = Capabilities(ops=frozenset({Op.APPROVE, Op.REJECT}), own_options=True)

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self._session = session
        self._base = URL(base_url)
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"FlowdashSource(base_url={str(self._base)!r})"

    # ---- reading ----

    def track_body(self, ids: tuple[str, ...]) -> dict[str, Any]:
        """``/signoff track flowdash <workflow_id> <task_id>`` as an intake body."""
        if len(ids) != 2:
            raise IntakeError("ids", "give the workflow id and the task id: track flowdash <workflow_id> <task_id>")
        return {"workflow_id": ids[0], "task_id": ids[1]}

    async def intake(self, body: dict[str, Any]) -> UpstreamAction:
        """The task an automation announces, with the actions Flowdash offers on it now."""
        workflow_id, task_id, title, details, url = parse_intake(body)
        options = await self.task_options(workflow_id, task_id)
        return UpstreamAction(
            external_id=external_id(workflow_id, task_id),
            status=Status.READY,
            upstream_status="waiting" if options else "no actions",
            type=TASK_TYPE,
            title=title or f"Flowdash task {task_id}",
            options=options,
            details=details,
            url=url,
            detailed=True,
            raw={"workflow_id": workflow_id, "task_id": task_id},
        )

    async def get_action(self, external_id: str) -> UpstreamAction:
        """What Flowdash can say about a task: the actions it offers now (no title or fields:
        the API has no task detail call, so those stay as the intake gave them)."""
        workflow_id, task_id = split_external_id(external_id)
        options = await self.task_options(workflow_id, task_id)
        return self._ready(external_id, options)

    async def task_options(self, workflow_id: str, task_id: str) -> tuple[Option, ...]:
        """``GET .../tasks/<id>/actions`` as options, in Flowdash's order."""
        path = f"{_workflow_path(workflow_id)}/tasks/{quote(task_id, safe='')}/actions"
        where = f"GET {path}"
        data = _json(await self._call("GET", path), where)
        if not isinstance(data, list):
            raise BadResponseError(f"Flowdash {where}: expected a list of actions")
        options: list[Option] = []
        seen: set[str] = set()
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise BadResponseError(f"Flowdash {where}: item {i} is not an object")
            action_id, name = item.get("id"), item.get("name")
            if not isinstance(action_id, str) or not action_id or not isinstance(name, str):
                raise BadResponseError(f"Flowdash {where}: item {i} lacks a string id and name")
            if action_id in seen:
                continue
            seen.add(action_id)
            label = " ".join(name.split()) or action_id
            options.append(Option(option_kind(label), label[:200], action_id[:200]))
        return tuple(options[:MAX_OPTIONS])

    # ---- deciding ----

    async def submit(self, request: DecisionRequest) -> Submitted:
        """Execute the chosen action, after checking Flowdash still offers it."""
        workflow_id, task_id = split_external_id(request.external_id)
        options = await self.task_options(workflow_id, task_id)
        if not any(o.key == request.option_key for o in options):
            if request.attempt > 0:
                # An earlier POST of ours may have run it and its answer was lost: Flowdash
                # offers it no more, so it is taken as landed rather than run twice.
                log.info(
                    "Flowdash %s: %r no longer offered after a lost answer; taken as landed",
                    request.external_id,
                    request.option_key,
                )
                return Landed(self._outcome(request, options), note=LOST_CONFIRMATION)
            now = ", ".join(o.label for o in options) or "nothing"
            raise ConflictError(
                f"Flowdash no longer offers '{request.option_label or request.option_key}' on this task "
                f"(now: {now[:200]})",
                status=409,
            )
        path = f"{_workflow_path(workflow_id)}/executions"
        where = f"POST {path}"
        payload = {"task_id": task_id, "action_id": request.option_key, "performed_by": request.actor}
        data = _json(await self._call("POST", path, json_body=payload), where)
        return await self._execution(request, data, where, reference=None)

    async def track(self, request: DecisionRequest, reference: str) -> Submitted:
        """Read the execution: still Pending (Accepted), Success (Landed), Fail (raises)."""
        workflow_id, _task_id = split_external_id(request.external_id)
        path = f"{_workflow_path(workflow_id)}/executions/{quote(reference, safe='')}"
        where = f"GET {path}"
        data = _json(await self._call("GET", path), where)
        return await self._execution(request, data, where, reference=reference)

    async def _execution(
        self, request: DecisionRequest, data: object, where: str, *, reference: str | None
    ) -> Submitted:
        if not isinstance(data, dict):
            raise BadResponseError(f"Flowdash {where}: answer is not a JSON object")
        status = data.get("status")
        execution_id = data.get("id")
        if reference is None:
            if not isinstance(execution_id, str) or not execution_id:
                raise BadResponseError(f"Flowdash {where}: answer lacks the execution id")
            reference = execution_id[:255]
        if status == "Pending":
            return Accepted(reference)
        if status == "Fail":
            raise RequirementsError(_errors(data) or ["the execution failed"], status=None)
        if status == "Success":
            workflow_id, task_id = split_external_id(request.external_id)
            # What the task offers next: a read that fails is tried again (the execution is
            # read again too, which is harmless).
            options = await self.task_options(workflow_id, task_id)
            return Landed(self._outcome(request, options))
        raise BadResponseError(f"Flowdash {where}: unknown execution status {str(status)[:40]!r}")

    def _outcome(self, request: DecisionRequest, options: tuple[Option, ...]) -> UpstreamAction:
        """The task after the chosen action ran: approved or rejected for those kinds; for
        any other, still awaiting a person with whatever Flowdash offers next."""
        status = {Op.APPROVE: Status.APPROVED, Op.REJECT: Status.REJECTED}.get(request.op, Status.READY)
        word = f"ran {request.option_label or request.option_key}"[:64]
        return UpstreamAction(
            external_id=request.external_id,
            status=status,
            upstream_status=word,
            type=TASK_TYPE,
            title="",
            options=options,
            decided_by=request.actor if status is not Status.READY else None,
        )

    def _ready(self, external_id: str, options: tuple[Option, ...]) -> UpstreamAction:
        return UpstreamAction(
            external_id=external_id,
            status=Status.READY,
            upstream_status="waiting" if options else "no actions",
            type=TASK_TYPE,
            title="",
            options=options,
        )

    # ---- HTTP ----

    async def _call(self, method: str, path: str, *, json_body: dict[str, Any] | None = None) -> bytes:
        where = f"{method} {path}"
        answer = await http.send(
            self._session,
            method,
            http.url_for(self._base, path),
            who="Flowdash",
            where=where,
            headers=self._headers,
            timeout=self._timeout,
            json=json_body,
        )
        log.debug("Flowdash %s -> %s", where, answer.status)
        if answer.ok:
            return answer.body
        raise self._error(answer.status, answer.body, where)

    def _error(self, status: int, body: bytes, where: str) -> SourceError:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        errors = [self._redact(e) for e in _errors(data)]
        if status == 422:
            return RequirementsError(errors or ["Flowdash refused: requirements not met"], status=status)
        said = "; ".join(errors) or self._redact(_message(data))
        message = f"Flowdash {where}: HTTP {status}" + (f": {said[:_MAX_MESSAGE]}" if said else "")
        if status in (401, 403):
            what = "the API key was refused" if status == 401 else "no permission for this action"
            return PermanentError(
                f"Flowdash {where}: HTTP {status} ({what}" + (f": {said[:_MAX_MESSAGE]})" if said else ")"),
                status=status,
            )
        if status == 404:
            return NotFoundError(message, status=status)
        if status == 409:
            return ConflictError(message, status=status)
        if status >= 500 or status in (408, 429):
            return TransientError(message, status=status)
        if 400 <= status < 500:
            return PermanentError(message, status=status)
        return BadResponseError(message, status=status)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def _workflow_path(workflow_id: str) -> str:
    return f"/api/v1/workflows/{quote(workflow_id, safe='')}"


def _json(body: bytes, where: str) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadResponseError(f"Flowdash {where}: answer is not JSON") from exc


def _errors(data: object) -> list[str]:
    """Flowdash's ``errors`` (strings, as written), from an answer body."""
    if not isinstance(data, dict):
        return []
    errors = data.get("errors")
    if isinstance(errors, str):
        errors = [errors]
    if not isinstance(errors, list):
        return []
    return [str(e)[:_MAX_MESSAGE] for e in errors if isinstance(e, (str, int, float)) and str(e).strip()][:20]


def _message(data: object) -> str:
    if isinstance(data, dict):
        said = data.get("message") or data.get("error")
        if isinstance(said, str):
            return said[:_MAX_MESSAGE]
    return ""
