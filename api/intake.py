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
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core.ingest import IngestContext, ingest
from core.registry import SourceRegistry, UnknownSource
from sources.base import IntakeError, PermanentError, SourceError, TransientError, is_push

log = logging.getLogger(__name__)

MAX_INTAKE_BYTES = 64 * 1024
RETRY_AFTER_SECONDS = 30

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, *, field: str | None = None, **headers: str) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status, headers=headers or None)


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def intake_handler(ctx: IngestContext, sources: SourceRegistry) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("source", "")
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
                503, "upstream_unavailable", f"{name} could not be read just now; try again",
                **{"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except PermanentError as e:
            return error(502, "upstream_refused", f"{name} refused the read: {str(e)[:300]}")
        except SourceError as e:  # a conflict on a read: the upstream's word is unclear
            return error(502, "upstream_error", f"{name} answered unexpectedly: {str(e)[:300]}")
        stored = await ingest(ctx, source=name, upstream=upstream)
        answer: dict[str, Any] = {
            "id": stored.action_id, "source": name, "external_id": upstream.external_id,
            "status": upstream.status.value, "created": stored.created,
        }
        if upstream.options is not None:
            answer["options"] = [o.label for o in upstream.options]
            answer["carded"] = bool(upstream.options)
            if not upstream.options:
                answer["message"] = "stored, but not carded: the action offers nothing to decide now"
        return web.json_response(answer, status=202 if stored.created else 200)

    return handle


def add_routes(app: web.Application, ctx: IngestContext, sources: SourceRegistry) -> None:
    app.router.add_post("/intake/{source}", intake_handler(ctx, sources))
