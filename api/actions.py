"""Signoff's own Actions API over HTTP (``/api/v1/actions...``), shaped like Fieldkit's.

Clients and roles come from ``API_KEYS``; a key arrives in ``X-API-Key`` (or as
``Authorization: Bearer``), is compared in constant time and never logged. Every request is
rate-limited per key (a token bucket in the store, shared by the replicas). Writes need an
``Idempotency-Key``: kept in the store 24 hours (so replicas and restarts agree), the same
key and body replays the first answer, another body is 409 ``IDEMPOTENCY_CONFLICT``, a
request still being handled 409 ``IDEMPOTENCY_IN_PROGRESS``; a write's change and the answer
its key replays commit together. Errors are ``{"code", "message"}`` with ``field`` where one
field is at fault; bad input never gives a 500.

The actions themselves are the ``signoff`` source's (``sources/signoff.py``): submitting one
stores it and cards it through the core's ``ingest``; a decision (in Slack, or by an admin
here) goes through the core's decision path, under the same rules (the route's two-person
rule, typed confirmation, no self-approval), and lands in ``api_actions`` at once; what the
submitter reports is adopted by the core as the upstream's word (card and thread follow).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.clock import Clock, utc_now
from core.decide import CONFIRMATION_WORD, DecisionService, Outcome, Result
from core.ingest import IngestContext, ingest_in
from core.metrics import Metrics
from policy import ActionTypeDecl
from settings import ApiKey
from sources import signoff
from sources.base import IN_FLIGHT, Op, Status
from store import queries
from store.db import Database
from store.models import Action, ApiAction, ApiCallback, ApiIdempotencyKey

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 64 * 1024
MAX_WAIT_SECONDS: Final = 60
IDEMPOTENCY_TTL: Final = timedelta(hours=24)
IDEMPOTENCY_LOCK: Final = timedelta(seconds=60)  # a request that died while handling one frees its key then
CALLBACK_FOR: Final = timedelta(days=1)
CALLBACK_TIMEOUT_SECONDS: Final = 10.0
BURST: Final = 60
MAX_EXPIRES_IN: Final = 30 * 86400
_KEY_CHARS = re.compile(r"^[\x21-\x7e]{1,255}$")
_SUBMIT_FIELDS: Final = {
    "action_type",
    "schema_version",
    "target",
    "scope",
    "mode",
    "preconditions",
    "payload",
    "correlation_id",
    "causation_id",
    "title",
    "rationale",
    "callback_url",
    "expires_in_seconds",
    # What a card shows beyond Fieldkit's fields (FloKit's words), and buttons of the action's own.
    "expected_impact",
    "data_signals",
    "guardrail_checks",
    "rollback_conditions",
    "options",
}
MAX_SIGNALS: Final = 20
MAX_CONDITIONS: Final = 10
MAX_OPTIONS: Final = 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return web.json_response(body, status=self.status, headers=self.headers or None)


def _approvals(outcome: Outcome) -> dict[str, Any]:
    """Where the route needs several distinct approvers: how many, and who approved so far."""
    return {"required": outcome.needed, "received": len(outcome.approvals), "approved_by": list(outcome.approvals)}


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "INVALID_FIELD", f"{field}: {message}", field=field)


@dataclass
class ApiContext:
    db: Database
    ingest: IngestContext
    keys: list[ApiKey]
    catalog: dict[str, ActionTypeDecl]
    decisions: DecisionService  # an admin's decide takes a click's path, under the same rules
    per_minute: int = 600
    allowed_hosts: tuple[str, ...] = ()
    clock: Clock = utc_now
    kick_callbacks: Callable[[], None] = lambda: None
    metrics: Metrics | None = None  # callback deliveries are counted by result

    def key_of(self, client: str) -> ApiKey | None:
        return next((k for k in self.keys if k.name == client), None)


# ---- auth, limits, idempotency -------------------------------------------------------------


def given_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer``."""
    key = headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def rate_limited(ctx: ApiContext, client: str) -> float:
    """Take one of the key's requests: 0 if it may go ahead, else the seconds until it may.
    The bucket (``per_minute`` a minute, bursts up to ``BURST``) is in the store, shared by
    every replica, and taken with one statement."""
    async with ctx.db.write() as session:
        return await queries.take_token(
            session,
            client=client,
            now=ctx.clock().timestamp(),
            per_second=ctx.per_minute / 60.0,
            burst=float(min(BURST, ctx.per_minute)),
        )


def find_client(keys: list[ApiKey], given: str | None) -> ApiKey | None:
    """The client whose key was given, or None; every key compared, in constant time each."""
    found: ApiKey | None = None
    if given is not None:
        for key in keys:
            if hmac.compare_digest(given.encode("utf-8", "replace"), key.key.get_secret_value().encode()):
                found = key
    return found


async def authenticate(ctx: ApiContext, request: web.Request, *, admin: bool = False) -> ApiKey:
    found = find_client(ctx.keys, given_key(request.headers))
    if found is None:
        raise ApiError(401, "UNAUTHORIZED", "missing or wrong API key (X-API-Key: <key>)")
    wait = await rate_limited(ctx, found.name)
    if wait > 0:
        raise ApiError(
            429,
            "RATE_LIMITED",
            f"over {ctx.per_minute} requests a minute for this key; try again shortly",
            **{"Retry-After": str(max(1, math.ceil(wait)))},
        )
    if admin and not found.admin:
        raise ApiError(403, "FORBIDDEN", "this call needs an admin key")
    return found


MAX_DEPTH: Final = 32


def _unfit(value: Any) -> str | None:
    """Why a parsed body cannot be taken (a NUL character, nested too deep), or None."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"the body is nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            if "\x00" in item:
                return "the body must not contain NUL characters"
        elif isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _read_json(request: web.Request) -> tuple[bytes, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, "TOO_LARGE", f"the body is over {MAX_BODY_BYTES // 1024} KiB")
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        chunk = await request.content.read(MAX_BODY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_BODY_BYTES:
        raise ApiError(413, "TOO_LARGE", f"the body is over {MAX_BODY_BYTES // 1024} KiB")
    raw = b"".join(chunks)
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "INVALID_JSON", "the body is not JSON (NaN and Infinity are not JSON either)") from None
    unfit = _unfit(body)
    if unfit is not None:
        raise ApiError(400, "INVALID_BODY", unfit)
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_BODY", "the body must be a JSON object")
    return raw, body


class Settle:
    """Stores a write's answer under its ``Idempotency-Key`` in the caller's transaction, so
    the change and the answer a retry replays commit together: killed at any point, the store
    has both or neither (and the key, still being handled, is taken over once its lock ends)."""

    def __init__(self, client: str, key: str, *, taken_over: bool = False) -> None:
        self.client, self.key, self.done = client, key, False
        # The key's first request died unanswered and this one took it over: what it finds
        # done may be that request's own doing.
        self.taken_over = taken_over

    async def __call__(self, session: AsyncSession, answer: web.Response) -> None:
        body = answer.body
        text = body.decode() if isinstance(body, bytes) else ""
        await session.exec(
            sa.update(ApiIdempotencyKey)
            .where(col(ApiIdempotencyKey.client) == self.client, col(ApiIdempotencyKey.key) == self.key)
            .values(status=answer.status, body=text, locked_until=None)
        )
        self.done = True


async def idempotent(
    ctx: ApiContext,
    client: ApiKey,
    request: web.Request,
    raw: bytes,
    work: Callable[[Settle], Awaitable[web.Response]],
) -> web.Response:
    """Run ``work`` once per (client, Idempotency-Key): replay, conflict, in progress.

    ``work`` stores its answer with ``settle`` in the transaction of its change; an answer it
    did not settle (a refusal, a change not in its own transaction) is stored after it."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        raise ApiError(
            400, "IDEMPOTENCY_KEY_REQUIRED", "write requests require an Idempotency-Key header", field="Idempotency-Key"
        )
    if not _KEY_CHARS.match(key):
        raise ApiError(
            400,
            "INVALID_IDEMPOTENCY_KEY",
            "Idempotency-Key must be 1-255 printable ASCII characters",
            field="Idempotency-Key",
        )
    digest = hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n" + raw).hexdigest()
    now = ctx.clock()
    taken_over = False
    for _ in range(3):
        try:
            async with ctx.db.write() as session:
                row = (
                    await session.exec(
                        select(ApiIdempotencyKey)
                        .where(ApiIdempotencyKey.client == client.name, ApiIdempotencyKey.key == key)
                        .with_for_update()
                    )
                ).first()
                if row is not None and row.created_at < now - IDEMPOTENCY_TTL:
                    await session.delete(row)
                    await session.flush()
                    row = None
                if row is None:
                    session.add(
                        ApiIdempotencyKey(
                            client=client.name,
                            key=key,
                            digest=digest,
                            created_at=now,
                            locked_until=now + IDEMPOTENCY_LOCK,
                        )
                    )
                    replay = None
                elif row.digest != digest:
                    raise ApiError(
                        409,
                        "IDEMPOTENCY_CONFLICT",
                        "Idempotency-Key reused with a different request",
                        field="Idempotency-Key",
                    )
                elif row.status is None:
                    if row.locked_until is not None and row.locked_until > now:
                        raise ApiError(
                            409,
                            "IDEMPOTENCY_IN_PROGRESS",
                            "a request with this Idempotency-Key is still being handled",
                            field="Idempotency-Key",
                            **{"Retry-After": "1"},
                        )
                    row.locked_until = now + IDEMPOTENCY_LOCK  # its first handler died: this one takes over
                    session.add(row)
                    replay = None
                    taken_over = True
                else:
                    replay = (row.status, row.body or "")
            break
        except IntegrityError:
            continue  # another replica stored the key first: read what it stored
    else:
        raise ApiError(409, "IDEMPOTENCY_IN_PROGRESS", "a request with this Idempotency-Key is still being handled")
    if replay is not None:
        return web.Response(
            status=replay[0],
            text=replay[1],
            content_type="application/json",
            headers={"X-Idempotent-Replay": "true"},
        )
    settle = Settle(client.name, key, taken_over=taken_over)
    answer: web.Response | None = None
    try:
        try:
            answer = await work(settle)
        except ApiError as e:
            answer = e.response()
        return answer
    finally:
        if answer is None or not settle.done:
            async with ctx.db.write() as session:
                # Not kept (as Stripe does): a failure on our side, and a request refused before it
                # started (a bad body): the client may send it again, fixed, with the same key.
                if answer is None or answer.status >= 500 or answer.status in (400, 413, 422):
                    await session.exec(
                        sa.delete(ApiIdempotencyKey).where(
                            col(ApiIdempotencyKey.client) == client.name, col(ApiIdempotencyKey.key) == key
                        )
                    )
                else:
                    await settle(session, answer)


def _decision_key(client: str, key: str, external_id: str) -> str:
    """The outbox key of the decision one decide request records (64 characters at most):
    the same for its retries, so a retry after a crash finds the decision it made."""
    digest = hashlib.sha256(f"{client}\n{key}\n{external_id}".encode()).hexdigest()
    return f"api-decide:{digest[:53]}"


# ---- validation ------------------------------------------------------------------------


def _opt_str(body: dict[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    if len(value) > limit:
        raise _invalid(name, f"must be at most {limit} characters")
    return value


def _opt_object(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(name, "must be an object")
    return value


def check_callback_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        raise _invalid("callback_url", "must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() or ord(c) < 32 for c in url):
        raise _invalid("callback_url", "must be an http(s) URL")
    if allowed_hosts and host not in allowed_hosts:
        raise _invalid("callback_url", f"the host {host} is not allowed here (CALLBACK_ALLOWED_HOSTS)")
    return url


def validate_submit(
    body: dict[str, Any], catalog: dict[str, ActionTypeDecl], allowed_hosts: tuple[str, ...]
) -> dict[str, Any]:
    unknown = sorted(k for k in body if k not in _SUBMIT_FIELDS)
    if unknown:
        raise _invalid(str(unknown[0]), "unknown field")
    action_type = body.get("action_type")
    if not isinstance(action_type, str) or not action_type:
        raise _invalid("action_type", "required: one of the types GET /api/v1/actions/types lists")
    known = catalog.get(action_type)
    if known is None:
        raise ApiError(
            422, "UNKNOWN_ACTION_TYPE", f"action_type: {action_type[:80]!r} is not in the catalog", field="action_type"
        )
    version = body.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 1000:
        raise _invalid("schema_version", "must be a positive integer")
    target = _opt_object(body, "target")
    if target is not None:
        for k in ("type", "id"):
            if k in target and not isinstance(target[k], (str, int)):
                raise _invalid(f"target.{k}", "must be a string")
    payload = _opt_object(body, "payload") or {}
    preconditions = _opt_object(body, "preconditions")
    out: dict[str, Any] = {
        "action_type": action_type,
        "schema_version": version,
        "target": target,
        "payload": payload,
        "preconditions": preconditions,
        "requires_approval": known.approval_required_by_default,
        "event_id": str(uuid.uuid4()),
    }
    for name, limit in (
        ("scope", 64),
        ("mode", 64),
        ("correlation_id", 255),
        ("causation_id", 255),
        ("title", 200),
        ("rationale", 3000),
    ):
        out[name] = _opt_str(body, name, limit)
    for required in known.required_fields:
        if not _present(body, payload, required):
            raise ApiError(422, "MISSING_FIELD", f"{required}: required by {action_type}", field=required)
    callback = _opt_str(body, "callback_url", 2048)
    out["callback_url"] = check_callback_url(callback, allowed_hosts) if callback is not None else None
    expires = body.get("expires_in_seconds")
    if expires is not None and (
        not isinstance(expires, int) or isinstance(expires, bool) or not 1 <= expires <= MAX_EXPIRES_IN
    ):
        raise _invalid("expires_in_seconds", f"must be a whole number of seconds from 1 to {MAX_EXPIRES_IN}")
    out["expires_in_seconds"] = expires
    out.update(_card_fields(body))
    return out


def _list_of(body: dict[str, Any], name: str, limit: int) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(name, "must be a list")
    if len(value) > limit:
        raise _invalid(name, f"at most {limit} entries")
    return value


def _text(item: Any, name: str, key: str, limit: int, *, required: bool = True) -> str | None:
    value = item.get(key) if isinstance(item, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise _invalid(f"{name}.{key}", f"must be a non-empty string of at most {limit} characters")
    return value


def _card_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The optional fields a card shows as FloKit's do (impact, signals, guardrails, rollback
    conditions the watch checks), and ``options``: the action's own buttons, each an approve or
    a reject under its own label."""
    out: dict[str, Any] = {}
    impact = _opt_object(body, "expected_impact")
    if impact is not None:
        magnitude = impact.get("magnitude")
        if magnitude is not None and (
            isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) or not math.isfinite(magnitude)
        ):
            raise _invalid("expected_impact.magnitude", "must be a number")
        direction = impact.get("direction")
        if direction not in ("increase", "decrease"):
            raise _invalid("expected_impact.direction", "must be increase or decrease")
        out["expected_impact"] = {
            "metric": _text(impact, "expected_impact", "metric", 200),
            "direction": direction,
            "magnitude": magnitude,
        }
    out["data_signals"] = [
        {
            "label": _text(item, f"data_signals[{i}]", "label", 200),
            "value": _text(item, f"data_signals[{i}]", "value", 500),
        }
        for i, item in enumerate(_list_of(body, "data_signals", MAX_SIGNALS))
    ]
    guardrails = []
    for i, item in enumerate(_list_of(body, "guardrail_checks", MAX_SIGNALS)):
        where = f"guardrail_checks[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("passed"), bool):
            raise _invalid(f"{where}.passed", "must be true or false")
        guardrails.append(
            {
                "check": _text(item, where, "check", 200),
                "passed": item["passed"],
                "detail": _text(item, where, "detail", 500, required=False) or "",
            }
        )
    out["guardrail_checks"] = guardrails
    conditions = _list_of(body, "rollback_conditions", MAX_CONDITIONS)
    for i, item in enumerate(conditions):
        if not isinstance(item, str) or not item.strip() or len(item) > 500:
            raise _invalid(f"rollback_conditions[{i}]", "must be a non-empty string of at most 500 characters")
    out["rollback_conditions"] = list(conditions)
    options: list[dict[str, Any]] = []
    for i, item in enumerate(_list_of(body, "options", MAX_OPTIONS)):
        where = f"options[{i}]"
        if not isinstance(item, dict) or item.get("decision") not in ("APPROVE", "REJECT"):
            raise _invalid(f"{where}.decision", "must be APPROVE or REJECT")
        key = _text(item, where, "key", 64)
        if any(o["key"] == key for o in options):
            raise _invalid(f"{where}.key", "is used twice")
        options.append({"key": key, "label": _text(item, where, "label", 75), "decision": item["decision"]})
    if options and not any(o["decision"] == "APPROVE" for o in options):
        raise _invalid("options", "needs at least one APPROVE option")
    out["options"] = options
    return out


def _present(body: dict[str, Any], payload: dict[str, Any], name: str) -> bool:
    """A required field: a dotted path in the body ("target.id"), else a payload field (or
    one of the body's own)."""
    if "." in name:
        node: Any = body
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return node not in (None, "")
    return payload.get(name) not in (None, "") or body.get(name) not in (None, "")


# ---- the endpoints -------------------------------------------------------------------------


def _guard(fn: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ApiError as e:
            return e.response()

    return handle


class ActionsApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def _view(self, row: ApiAction) -> dict[str, Any]:
        return signoff.view(row, self.ctx.catalog)

    async def _own(self, client: ApiKey, external_id: str) -> ApiAction:
        async with self.ctx.db.read() as session:
            row = await signoff.api_row(session, external_id) if len(external_id) <= 64 else None
        if row is None or (not client.admin and row.client != client.name):
            raise ApiError(404, "NOT_FOUND", "no such action", field="id")
        return row

    async def types(self, request: web.Request) -> web.StreamResponse:
        await authenticate(self.ctx, request)
        return web.json_response({"types": [t.to_json() for t in self.ctx.catalog.values()]})

    async def submit(self, request: web.Request) -> web.StreamResponse:
        client = await authenticate(self.ctx, request)
        raw, body = await _read_json(request)

        async def work(settle: Settle) -> web.Response:
            fields = validate_submit(body, self.ctx.catalog, self.ctx.allowed_hosts)
            now = self.ctx.clock()
            expires = fields.pop("expires_in_seconds")
            callback = fields.pop("callback_url")
            needs = bool(fields["requires_approval"])
            row = ApiAction(
                external_id=str(uuid.uuid4()),
                client=client.name,
                status="needs_approval" if needs else "pending",
                request=fields,
                callback_url=callback,
                expires_at=now + timedelta(seconds=expires) if expires is not None and needs else None,
                created_at=now,
                updated_at=now,
            )
            answer = web.json_response(self._view(row), status=201)
            # One transaction: the client's action, its action row and card (which the card
            # sweep posts), and the answer a retry with this key replays.
            async with self.ctx.db.write() as session:
                session.add(row)
                await session.flush()
                _ingested, changed = await ingest_in(
                    session,
                    self.ctx.ingest,
                    source=signoff.NAME,
                    upstream=signoff.upstream_of(row, self.ctx.catalog),
                )
                await settle(session, answer)
            if changed:
                self.ctx.ingest.on_change()
            return answer

        return await idempotent(self.ctx, client, request, raw, work)

    async def get(self, request: web.Request) -> web.StreamResponse:
        client = await authenticate(self.ctx, request)
        row = await self._own(client, request.match_info["id"])
        wait_text = request.query.get("wait")
        if wait_text is not None:
            try:
                wait = float(wait_text)
            except ValueError:
                wait = -1
            if not 0 <= wait <= MAX_WAIT_SECONDS:
                raise ApiError(400, "INVALID_PARAMETER", f"wait: seconds from 0 to {MAX_WAIT_SECONDS}", field="wait")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            status = row.status
            while loop.time() < deadline:
                await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
                async with self.ctx.db.read() as session:
                    fresh = await signoff.api_row(session, row.external_id)
                if fresh is not None:
                    row = fresh
                if row.status != status:
                    break
        return web.json_response(self._view(row))

    async def decide(self, request: web.Request) -> web.StreamResponse:
        client = await authenticate(self.ctx, request, admin=True)
        raw, body = await _read_json(request)

        async def work(settle: Settle) -> web.Response:
            decision = body.get("decision")
            if decision not in ("APPROVE", "REJECT"):
                raise _invalid("decision", "must be APPROVE or REJECT")
            reason = _opt_str(body, "reason", 3000)
            confirmation = _opt_str(body, "confirmation", 100)
            unknown = sorted(k for k in body if k not in ("decision", "reason", "confirmation"))
            if unknown:
                raise _invalid(str(unknown[0]), "unknown field")
            row = await self._own(client, request.match_info["id"])
            request_key = _decision_key(client.name, settle.key, row.external_id)
            if await self._decided_under(row.external_id, request_key):
                # This request's own decision, recorded by a handler that died before its answer
                # was stored: answered with the action as it is now, not as a second decision.
                return web.json_response(self._view(row))
            if row.status != "needs_approval":
                raise ApiError(
                    409, "INVALID_STATE", f"the action is {row.status}: it cannot be decided now", field="status"
                )
            op = Op.APPROVE if decision == "APPROVE" else Op.REJECT
            outcome = await self._record(
                row.external_id,
                op,
                client.name,
                (reason or "").strip() or None,
                confirmation,
                request_key,
                counted_is_ours=settle.taken_over,
            )
            if outcome.result in (Result.ENDORSED, Result.ALREADY_ENDORSED):
                # The route wants more distinct approvers: this one is counted, the action waits.
                answer = self._view(row)
                answer["approvals"] = _approvals(outcome)
                return web.json_response(answer, status=202)
            # Delivered at once in this process (the core's path, as a click's is).
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            fresh: ApiAction | None = None
            while loop.time() < deadline:
                async with self.ctx.db.read() as session:
                    fresh = await signoff.api_row(session, row.external_id)
                if fresh is not None and fresh.status != "needs_approval":
                    answer = self._view(fresh)
                    if outcome.needed > 1:
                        answer["approvals"] = _approvals(outcome)
                    return web.json_response(answer)
                await asyncio.sleep(0.05)
            return web.json_response(self._view(fresh or row), status=202)

        return await idempotent(self.ctx, client, request, raw, work)

    async def _decided_under(self, external_id: str, request_key: str) -> bool:
        async with self.ctx.db.read() as session:
            action = (
                await session.exec(
                    select(Action).where(Action.source == signoff.NAME, Action.external_id == external_id)
                )
            ).first()
            return (
                action is not None
                and action.id is not None
                and await queries.outbox_keyed(session, action_id=action.id, idempotency_key=request_key) is not None
            )

    async def _record(
        self,
        external_id: str,
        op: Op,
        client: str,
        note: str | None,
        confirmation: str | None,
        request_key: str,
        *,
        counted_is_ours: bool = False,
    ) -> Outcome:
        """The decision through the core's decision path, under the route's rules; refusals
        as the API's answers."""
        async with self.ctx.db.read() as session:
            action = (
                await session.exec(
                    select(Action).where(Action.source == signoff.NAME, Action.external_id == external_id)
                )
            ).first()
        if action is None or action.id is None:
            raise ApiError(409, "INVALID_STATE", "the action is not ready to be decided yet; try again", field="status")
        outcome = await self.ctx.decisions.decide_as_client(
            action_id=action.id,
            op=op,
            client=client,
            note=note,
            confirmation=confirmation,
            request_key=request_key,
        )
        match outcome.result:
            case Result.RECORDED | Result.ENDORSED:
                return outcome
            case Result.CONFIRMATION_REQUIRED:
                raise _invalid(
                    "confirmation",
                    "a guardrail check failed and this action's route asks for a typed confirmation: "
                    f'send "confirmation": "{CONFIRMATION_WORD}" to approve anyway',
                )
            case Result.ALREADY_ENDORSED if counted_is_ours:
                # A retry of a request that died unanswered: the approval counted may be its own,
                # and either way this key's approval is counted: answered as the first was.
                return outcome
            case Result.ALREADY_ENDORSED:
                raise ApiError(
                    409,
                    "ALREADY_APPROVED",
                    f"this key's approval is already counted ({len(outcome.approvals)} of {outcome.needed}); "
                    "another approver must approve",
                    field="decision",
                )
            case Result.SELF_APPROVAL:
                raise ApiError(
                    403, "SELF_APPROVAL", "this client requested the action: another approver must decide it"
                )
            case Result.STORE_UNAVAILABLE:
                raise ApiError(503, "UNAVAILABLE", "the store did not answer; nothing was recorded: try again")
            case _:
                raise ApiError(409, "INVALID_STATE", "the action was decided already", field="status")

    async def report(self, request: web.Request) -> web.StreamResponse:
        client = await authenticate(self.ctx, request)
        raw, body = await _read_json(request)

        async def work(settle: Settle) -> web.Response:
            status = body.get("status")
            if status not in signoff.REPORTS:
                raise _invalid("status", f"must be one of {', '.join(signoff.REPORTS)}")
            unknown = sorted(k for k in body if k not in ("status", "result", "error"))
            if unknown:
                raise _invalid(str(unknown[0]), "unknown field")
            result = body.get("result")
            if result is not None and not isinstance(result, dict):
                raise _invalid("result", "must be an object")
            error = _opt_str(body, "error", 4000)
            row = await self._own(client, request.match_info["id"])
            if not client.admin and row.client != client.name:
                raise ApiError(404, "NOT_FOUND", "no such action", field="id")
            # One transaction: the change the client sees, its callback, the card's action row
            # (the upstream's word, adopted) and the answer a retry with this key replays.
            async with self.ctx.db.write() as session:
                row = await signoff.api_row(session, row.external_id, lock=True) or row
                if row.status not in signoff.REPORTS[status]:
                    raise ApiError(
                        409,
                        "INVALID_TRANSITION",
                        f"the action is {row.status}: it cannot become {status}",
                        field="status",
                    )
                now = self.ctx.clock()
                if status == "running":
                    row.attempts += 1
                    row.started_at = row.started_at or now
                elif status in ("succeeded", "failed"):
                    row.attempts = max(row.attempts, 1)
                    row.started_at = row.started_at or now
                    row.completed_at = now
                if result is not None:
                    row.result = result
                if error is not None:
                    row.error = error
                row.status = status
                signoff.changed(session, row, now, self.ctx.catalog)
                _ingested, changed = await ingest_in(
                    session,
                    self.ctx.ingest,
                    source=signoff.NAME,
                    upstream=signoff.upstream_of(row, self.ctx.catalog),
                )
                answer = web.json_response(self._view(row))
                await settle(session, answer)
            self.ctx.kick_callbacks()
            if changed:
                self.ctx.ingest.on_change()
            return answer

        return await idempotent(self.ctx, client, request, raw, work)

    async def openapi(self, _request: web.Request) -> web.StreamResponse:
        from api.openapi import document

        return web.json_response(document(list(self.ctx.catalog)))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own answers under /api/ (no such route, a method it does not take) as JSON
    errors, like every other answer of the API."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if not request.path.startswith("/api/") or e.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "TOO_LARGE"}.get(e.status, "BAD_REQUEST")
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return web.json_response({"code": code, "message": e.reason}, status=e.status, headers=headers)


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    api = ActionsApi(ctx)
    app.router.add_get("/api/v1/actions/types", _guard(api.types))
    app.router.add_post("/api/v1/actions", _guard(api.submit))
    app.router.add_get("/api/v1/actions/{id}", _guard(api.get))
    app.router.add_post("/api/v1/actions/{id}/decide", _guard(api.decide))
    app.router.add_post("/api/v1/actions/{id}/status", _guard(api.report))
    app.router.add_get("/openapi.json", _guard(api.openapi))


# ---- jobs: expiry and callbacks ------------------------------------------------------------


async def expire(ctx: ApiContext) -> int:
    """Undecided actions past their ``expires_at``: expired here and on their card."""
    now = ctx.clock()
    async with ctx.db.read() as session:
        due = list(
            await session.exec(
                select(ApiAction.external_id)
                .where(
                    ApiAction.status == "needs_approval",
                    col(ApiAction.expires_at).is_not(None),
                    col(ApiAction.expires_at) <= now,
                )
                .limit(100)
            )
        )
    async with ctx.db.read() as session:
        # Expired by the policy's timings (EXPIRE_AFTER_SECONDS, a route's expire_after) on the card.
        due += list(
            await session.exec(
                select(ApiAction.external_id)
                .join(
                    Action,
                    sa.and_(col(Action.source) == signoff.NAME, col(Action.external_id) == col(ApiAction.external_id)),
                )
                .where(ApiAction.status == "needs_approval", Action.status == "expired")
                .limit(100)
            )
        )
    done = 0
    for external_id in due:
        async with ctx.db.write() as session:
            row = await signoff.api_row(session, external_id, lock=True)
            if row is None or row.status != "needs_approval":
                continue
            action = (
                await session.exec(
                    select(Action).where(Action.source == signoff.NAME, Action.external_id == external_id)
                )
            ).first()
            if action is not None and Status(action.status) in IN_FLIGHT:
                continue  # someone decided just now: the decision lands instead
            row.status = "expired"
            signoff.changed(session, row, now, ctx.catalog)
            if action is not None and action.id is not None:
                after = (row.expires_at or now) - row.created_at
                await queries.expire_action(session, action_id=action.id, after=after, now=now)
        done += 1
    if done:
        ctx.kick_callbacks()
        ctx.ingest.on_change()
    return done


def sign(body: str, key: str, at: int) -> str:
    digest = hmac.new(key.encode(), f"{at}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def backoff(attempts: int) -> timedelta:
    """After the ``attempts``-th failure: 10 s, 30 s, then doubling up to an hour."""
    if attempts <= 1:
        return timedelta(seconds=10)
    return timedelta(seconds=min(3600, 30 * 2 ** (attempts - 2)))


async def deliver_callbacks(ctx: ApiContext, http: aiohttp.ClientSession) -> int:
    """POST every due callback, once each (leased while it is sent); failures back off."""
    sent = 0
    while True:
        now = ctx.clock()
        async with ctx.db.write() as session:
            batch = await signoff.due_callbacks(
                session, now=now, lease=timedelta(seconds=CALLBACK_TIMEOUT_SECONDS + 5), limit=20
            )
            owners = {}
            for cb in batch:
                row = await session.get(ApiAction, cb.api_action_id)
                owners[cb.id] = row.client if row is not None else ""
        for cb in batch:
            await _send(ctx, http, cb, owners.get(cb.id, ""))
            sent += 1
        if len(batch) < 20:
            return sent


async def _send(ctx: ApiContext, http: aiohttp.ClientSession, cb: ApiCallback, client: str) -> None:
    key = ctx.key_of(client)
    error: str | None
    if key is None:
        error = "the client's key is no longer configured"
    else:
        at = int(ctx.clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "Signoff-Signature": sign(cb.body, key.key.get_secret_value(), at),
            "User-Agent": "Signoff-Callbacks/1",
        }
        try:
            async with http.post(
                cb.url,
                data=cb.body.encode(),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_SECONDS),
            ) as r:
                error = None if 200 <= r.status < 300 else f"answered {r.status}"
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            error = f"{type(e).__name__}: {str(e)[:200]}"
    now = ctx.clock()
    async with ctx.db.write() as session:
        stmt = sa.update(ApiCallback).where(col(ApiCallback.id) == cb.id)
        if error is None:
            await session.exec(
                stmt.values(state="delivered", delivered_at=now, attempts=cb.attempts + 1, last_error=None)
            )
            if ctx.metrics is not None:
                ctx.metrics.callback("delivered")
            return
        attempts = cb.attempts + 1
        nxt = now + backoff(attempts)
        gave_up = key is None or nxt > cb.created_at + CALLBACK_FOR
        await session.exec(
            stmt.values(
                state="failed" if gave_up else "pending",
                attempts=attempts,
                next_attempt_at=nxt,
                last_error=error[:500],
            )
        )
    if ctx.metrics is not None:
        ctx.metrics.callback("gave_up" if gave_up else "retried")
    log.warning("callback %s for action %s: %s%s", cb.id, cb.api_action_id, error, " (gave up)" if gave_up else "")
