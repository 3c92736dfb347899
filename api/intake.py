"""``POST /intake/<source>``: a source (or whoever submits to it) tells Signoff about an
action, for sources that cannot be listed (Flowdash, Fieldkit).

The source's own module reads the body and the upstream (``PushSource.intake``); this
adapter authenticates, bounds and answers; the core's ``ingest`` stores it once:

- 202 ``{"id": <Signoff's id>, "status": ..., "created": true}`` for a new action; 200 with
  the same id for one already known (a repeat never makes a second card); where the source
  names the action's options, also ``options`` (their labels) and ``carded`` (false, with a
  ``message``, when it offers nothing to decide: stored, but no card is posted until it does);
- 401 for a missing or wrong token (compared in constant time), 404 for a source that is
  not configured or takes no intake, 413 over the size limit, 400 for a body that is not a
  JSON object, 422 naming the bad field, 502/503 when the upstream could not be read.

Errors are ``{"code": "...", "message": "...", "field": ...}``; nothing from the body is
echoed back unescaped, and no token is ever logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core import logs
from core.ingest import IngestContext, ingest
from core.metrics import Metrics
from core.registry import SourceRegistry, UnknownSource
from sources.base import IntakeError, PermanentError, SourceError, TransientError, is_push

log = logging.getLogger(__name__)

MAX_INTAKE_BYTES = 64 * 1024
RETRY_AFTER_SECONDS = 30
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a caller's X-Request-Id, taken as is only in this shape

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# How a request was answered, for the metrics: an error's code, or created/known (a typed
# key where aiohttp has them, 3.12+).
ANSWER: Any = web.ResponseKey("signoff_answer", str) if hasattr(web, "ResponseKey") else "signoff_answer"


def error(status: int, code: str, message: str, *, field: str | None = None, **headers: str) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = web.json_response(body, status=status, headers=headers or None)
    response[ANSWER] = code
    return response


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def intake_handler(ctx: IngestContext, sources: SourceRegistry, metrics: Metrics | None = None) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("source", "")
        known = name in sources.names  # a path a client sent is a label only when it names a source
        given = request.headers.get("X-Request-Id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else logs.new_request_id()
        with logs.bind(request_id=request_id, source=name if known else None):
            response = await respond(request, name)
        response.headers["X-Request-Id"] = request_id
        if metrics is not None:
            metrics.intake(name if known else "unknown", str(response.get(ANSWER, response.status)))
        return response

    async def respond(request: web.Request, name: str) -> web.Response:
        try:
            entry = sources.entry(name)
        except UnknownSource:
            return error(404, "unknown_source", "no such intake: that source is not configured here")
        if not is_push(entry.source) or not entry.intake_token:
            return error(404, "unknown_source", "no such intake: that source is not configured here")
        given = _token(request)
        if given is None or not hmac.compare_digest(given.encode(), entry.intake_token.encode()):
            return error(401, "unauthorized", "missing or wrong intake token (Authorization: Bearer <token>)")
        if request.content_length is not None and request.content_length > MAX_INTAKE_BYTES:
            return error(413, "too_large", f"the body is over {MAX_INTAKE_BYTES // 1024} KiB")
        raw = await request.content.read(MAX_INTAKE_BYTES + 1)
        if len(raw) > MAX_INTAKE_BYTES:
            return error(413, "too_large", f"the body is over {MAX_INTAKE_BYTES // 1024} KiB")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return error(400, "invalid_json", "the body is not JSON")
        if not isinstance(body, dict):
            return error(400, "invalid_body", "the body must be a JSON object")
        try:
            upstream = await entry.source.intake(body)
        except IntakeError as e:
            return error(422, "invalid_field", e.message, field=e.field)
        except TransientError as e:
            log.warning("intake for %s: the upstream could not be read: %s", name, e)
            return error(
                503,
                "upstream_unavailable",
                f"{name} could not be read just now; try again",
                **{"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except PermanentError as e:
            return error(502, "upstream_refused", f"{name} refused the read: {str(e)[:300]}")
        except SourceError as e:  # a conflict on a read: the upstream's word is unclear
            return error(502, "upstream_error", f"{name} answered unexpectedly: {str(e)[:300]}")
        stored = await ingest(ctx, source=name, upstream=upstream)
        answer: dict[str, Any] = {
            "id": stored.action_id,
            "source": name,
            "external_id": upstream.external_id,
            "status": upstream.status.value,
            "created": stored.created,
        }
        if upstream.options is not None:
            answer["options"] = [o.label for o in upstream.options]
            answer["carded"] = bool(upstream.options)
            if not upstream.options:
                answer["message"] = "stored, but not carded: the action offers nothing to decide now"
        response = web.json_response(answer, status=202 if stored.created else 200)
        response[ANSWER] = "created" if stored.created else "known"
        return response

    return handle


def add_routes(
    app: web.Application, ctx: IngestContext, sources: SourceRegistry, metrics: Metrics | None = None
) -> None:
    app.router.add_post("/intake/{source}", intake_handler(ctx, sources, metrics))
