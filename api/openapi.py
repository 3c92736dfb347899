"""The OpenAPI 3.1 document of Signoff's own Actions API (``GET /openapi.json``).

Its schemas are JSON Schema 2020-12 (as OpenAPI 3.1's are): the tests check real answers
against them."""

from __future__ import annotations

from typing import Any

from sources.signoff import API_STATUSES, REPORTS

_NULL_STR: dict[str, Any] = {"type": ["string", "null"]}
_OBJ_OR_NULL: dict[str, Any] = {"type": ["object", "null"]}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Bad request: not JSON, not an object, no Idempotency-Key, a bad parameter",
        401: "Missing or wrong API key",
        403: "The call needs an admin key (decide: SELF_APPROVAL, the client requested the action itself)",
        404: "No such action (or not this client's)",
        409: "Idempotency conflict or in progress, or a move the lifecycle does not allow",
        413: "The body is over 64 KiB",
        422: "A field is invalid, missing or unknown (named in `field`)",
        429: "Over the key's rate limit (see Retry-After)",
        503: "The store did not answer; nothing was recorded: try again",
    }
    return {str(c): _json(_ref("Error"), words[c]) for c in codes}


_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "Required on every write; the same key and body within 24 hours replays the first answer",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 255}}
_SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]

# What a card shows beyond Fieldkit's fields (FloKit's words), and the action's own buttons.
_IMPACT: dict[str, Any] = {
    "type": "object",
    "required": ["metric", "direction"],
    "additionalProperties": False,
    "properties": {
        "metric": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
        "direction": {"type": "string", "enum": ["increase", "decrease"]},
        "magnitude": {"type": ["number", "null"]},
    },
}
_SIGNAL: dict[str, Any] = {
    "type": "object",
    "required": ["label", "value"],
    "additionalProperties": False,
    "properties": {
        "label": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
        "value": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"},
    },
}
_GUARDRAIL: dict[str, Any] = {
    "type": "object",
    "required": ["check", "passed"],
    "additionalProperties": False,
    "properties": {
        "check": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
        "passed": {"type": "boolean"},
        "detail": {"type": ["string", "null"], "maxLength": 500},
    },
}
_OPTION: dict[str, Any] = {
    "type": "object",
    "required": ["key", "label", "decision"],
    "additionalProperties": False,
    "description": "a button of the action's own: an approve or a reject under its own label",
    "properties": {
        "key": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "\\S"},
        "label": {"type": "string", "minLength": 1, "maxLength": 75, "pattern": "\\S"},
        "decision": {"type": "string", "enum": ["APPROVE", "REJECT"]},
    },
}

_ACTION: dict[str, Any] = {
    "type": "object",
    "required": ["action_id", "action_type", "status", "requires_approval", "created_at", "updated_at", "attempts"],
    "properties": {
        "action_id": {"type": "string"},
        "event_id": _NULL_STR,
        "rule_id": {"type": "null"},
        "action_type": {"type": "string"},
        "schema_version": {"type": "integer"},
        "status": {"type": "string", "enum": list(API_STATUSES)},
        "requires_approval": {"type": "boolean"},
        "risk": _NULL_STR,
        "target": _OBJ_OR_NULL,
        "scope": _NULL_STR,
        "mode": _NULL_STR,
        "preconditions": _OBJ_OR_NULL,
        "payload": {"type": "object"},
        "correlation_id": _NULL_STR,
        "causation_id": _NULL_STR,
        "title": _NULL_STR,
        "rationale": _NULL_STR,
        "requested_by": {"type": "string", "description": "the client (API key) that submitted it"},
        "callback_url": _NULL_STR,
        "expires_at": _NULL_STR,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "decision": {"oneOf": [{"type": "null"}, _ref("Decision")]},
        "attempts": {"type": "integer", "minimum": 0},
        "started_at": _NULL_STR,
        "completed_at": _NULL_STR,
        "result": {},
        "error": _NULL_STR,
        "approvals": {
            "type": "object",
            "required": ["required", "received", "approved_by"],
            "description": (
                "Only in answers to decide, where the action's route needs several distinct approvers: how many, "
                "and who approved so far (API clients as api:<client>, Slack users by id)"
            ),
            "properties": {
                "required": {"type": "integer", "minimum": 2},
                "received": {"type": "integer", "minimum": 1},
                "approved_by": {"type": "array", "items": {"type": "string"}},
            },
        },
        "expected_impact": {"oneOf": [{"type": "null"}, _IMPACT]},
        "data_signals": {"type": "array", "items": _SIGNAL},
        "guardrail_checks": {"type": "array", "items": _GUARDRAIL},
        "rollback_conditions": {"type": "array", "items": {"type": "string"}},
        "options": {"type": "array", "items": _OPTION},
    },
}


def _submit_schema(action_types: list[str] | None) -> dict[str, Any]:
    action_type: dict[str, Any] = {"type": "string", "minLength": 1}
    if action_types:
        action_type["enum"] = sorted(action_types)
    return {
        "type": "object",
        "required": ["action_type"],
        "additionalProperties": False,
        "properties": {
            "action_type": action_type,
            "schema_version": {"type": "integer", "minimum": 1, "maximum": 1000},
            "target": {"type": "object", "properties": {"type": {"type": "string"}, "id": {"type": "string"}}},
            "scope": {"type": "string", "maxLength": 64},
            "mode": {"type": "string", "maxLength": 64},
            "preconditions": {"type": "object"},
            "payload": {"type": "object"},
            "correlation_id": {"type": "string", "maxLength": 255},
            "causation_id": {"type": "string", "maxLength": 255},
            "title": {"type": "string", "maxLength": 200},
            "rationale": {"type": "string", "maxLength": 3000},
            "callback_url": {
                "type": "string",
                "format": "uri",
                "maxLength": 2048,
                "description": "http(s); CALLBACK_ALLOWED_HOSTS may restrict the hosts",
            },
            "expires_in_seconds": {"type": "integer", "minimum": 1, "maximum": 30 * 86400},
            "expected_impact": _IMPACT,
            "data_signals": {"type": "array", "maxItems": 20, "items": _SIGNAL},
            "guardrail_checks": {"type": "array", "maxItems": 20, "items": _GUARDRAIL},
            "rollback_conditions": {
                "type": "array",
                "maxItems": 10,
                "items": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"},
                "description": "watched once approved, as FloKit's are (see README, Watching rollback conditions)",
            },
            "options": {
                "type": "array",
                "maxItems": 10,
                "items": _OPTION,
                "description": "the card's buttons instead of Approve and Reject; unique keys, at least one APPROVE",
            },
        },
        "description": "required_fields of the type (GET /api/v1/actions/types) must be given too",
    }


def document(action_types: list[str] | None = None) -> dict[str, Any]:
    """The document; ``action_types``: the catalog's, listed as the only ones submit takes."""
    submit = _submit_schema(action_types)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Signoff Actions API",
            "version": "1",
            "description": (
                "Ask a person in Slack to approve an action and wait for the answer. Shaped like Fieldkit's Agent "
                'Actions API. Callbacks are POSTed as {"event": "action.<status>", "action": <Action>}, signed '
                '`Signoff-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the client\'s key>`.'
            ),
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
                "ActionType": {
                    "type": "object",
                    "required": [
                        "action_type",
                        "summary",
                        "risk",
                        "approval_required_by_default",
                        "required_fields",
                        "example_payload",
                    ],
                    "properties": {
                        "action_type": {"type": "string"},
                        "summary": {"type": "string"},
                        "risk": _NULL_STR,
                        "approval_required_by_default": {"type": "boolean"},
                        "required_fields": {"type": "array", "items": {"type": "string"}},
                        "example_payload": {"type": "object"},
                    },
                },
                "Decision": {
                    "type": "object",
                    "required": ["decision", "decided_by", "decided_at"],
                    "properties": {
                        "decision": {"type": "string", "enum": ["APPROVE", "REJECT"]},
                        "decided_by": {"type": "string", "description": "the person's email, else their Slack user id"},
                        "decided_by_name": _NULL_STR,
                        "decided_at": {"type": "string", "format": "date-time"},
                        "reason": _NULL_STR,
                        "option": {
                            "type": "string",
                            "description": "the key of the action's own option picked, if it has options",
                        },
                    },
                },
                "Action": _ACTION,
                "SubmitRequest": submit,
                "DecideRequest": {
                    "type": "object",
                    "required": ["decision"],
                    "additionalProperties": False,
                    "properties": {
                        "decision": {"type": "string", "enum": ["APPROVE", "REJECT"]},
                        "reason": {"type": ["string", "null"], "maxLength": 3000},
                        "confirmation": {
                            "type": ["string", "null"],
                            "maxLength": 100,
                            "description": (
                                'The typed confirmation ("approve") an APPROVE needs where the action\'s route has '
                                "confirm_failed_guardrails and a guardrail check failed; else 422 naming it"
                            ),
                        },
                    },
                },
                "StatusRequest": {
                    "type": "object",
                    "required": ["status"],
                    "additionalProperties": False,
                    "properties": {
                        "status": {"type": "string", "enum": list(REPORTS)},
                        "result": _OBJ_OR_NULL,
                        "error": {"type": ["string", "null"], "maxLength": 4000},
                    },
                },
            },
        },
        "security": _SECURITY,
        "paths": {
            "/api/v1/actions/types": {
                "get": {
                    "operationId": "listActionTypes",
                    "summary": "The action type catalog",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["types"],
                                "properties": {"types": {"type": "array", "items": _ref("ActionType")}},
                            },
                            "The catalog",
                        ),
                        **_errors(401, 429),
                    },
                },
            },
            "/api/v1/actions": {
                "post": {
                    "operationId": "submitAction",
                    "summary": "Submit an action for approval",
                    "parameters": [_IDEMPOTENCY],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SubmitRequest")}},
                    },
                    "responses": {
                        "201": _json(_ref("Action"), "Submitted: needs_approval (carded in Slack) or pending"),
                        **_errors(400, 401, 409, 413, 422, 429),
                    },
                },
            },
            "/api/v1/actions/{id}": {
                "get": {
                    "operationId": "getAction",
                    "summary": "An action, its decision and execution ledger",
                    "parameters": [
                        _ID,
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "description": "Hold the request until the status changes or this many seconds pass",
                            "schema": {"type": "number", "minimum": 0, "maximum": 60},
                        },
                    ],
                    "responses": {"200": _json(_ref("Action"), "The action"), **_errors(400, 401, 404, 429)},
                },
            },
            "/api/v1/actions/{id}/decide": {
                "post": {
                    "operationId": "decideAction",
                    "summary": "Approve or reject (admin keys)",
                    "description": (
                        "The same rules as a click in Slack: where the action's route needs several distinct "
                        "approvers, an APPROVE is counted (202, status still needs_approval, `approvals` says how "
                        "many more) and the last one needed decides; the same key twice is 409 ALREADY_APPROVED. "
                        "Where the route asks for a typed confirmation of failed guardrails, `confirmation` must be "
                        '"approve" (422 naming it). A client cannot decide an action it submitted (403).'
                    ),
                    "parameters": [_ID, _IDEMPOTENCY],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("DecideRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("Action"), "Decided"),
                        "202": _json(
                            _ref("Action"),
                            "Recorded and still being applied; or one approval of several the route needs (see approvals)",
                        ),
                        **_errors(400, 401, 403, 404, 409, 413, 422, 429, 503),
                    },
                },
            },
            "/api/v1/actions/{id}/status": {
                "post": {
                    "operationId": "reportStatus",
                    "summary": "Report the execution's progress (the submitter)",
                    "parameters": [_ID, _IDEMPOTENCY],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("StatusRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("Action"), "Recorded"),
                        **_errors(400, 401, 404, 409, 413, 422, 429),
                    },
                },
            },
        },
    }
