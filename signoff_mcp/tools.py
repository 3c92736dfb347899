"""The MCP tools over Signoff's own Actions API, for a model to call.

Each tool is one or two calls of the API through its typed client (``api/client.py``), acting
as the caller's API key: nothing here decides anything or touches the store, so the API's own
rules (validation, idempotency, ownership, rate limits) hold for a model as for any client.
Results are the API's JSON as structured content, with a short text saying what it means and
what to do next. Every refusal is a tool error (``isError``) a model can act on, never a
protocol error or a crash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

import aiohttp
from jsonschema import Draft202012Validator
from mcp import types
from mcp.server import Server, ServerRequestContext

from api.client import ApiAction, SignoffApiError, SignoffClient
from api.openapi import document

NAME: Final = "signoff"
MAX_WAIT_SECONDS: Final = 50  # under the common MCP client's 60-second request timeout
REPORTABLE: Final = ("running", "succeeded", "failed", "rolled_back")
IN_PROGRESS_TRIES: Final = 3  # a request_approval whose first try is still being handled: wait this many times
CALL_SECONDS: Final = 20.0  # the most a call takes besides get_approval's wait; a slower Signoff is an error to retry

LIST_ACTION_TYPES: Final = "list_action_types"
REQUEST_APPROVAL: Final = "request_approval"
GET_APPROVAL: Final = "get_approval"
REPORT_STATUS: Final = "report_status"

INSTRUCTIONS: Final = (
    "Signoff asks a person in Slack to approve an action before you take it, and keeps the answer. "
    f"Call {LIST_ACTION_TYPES} to see what can be asked; {REQUEST_APPROVAL} to ask (it returns at once "
    f"with an action_id; keep working meanwhile); {GET_APPROVAL} with that action_id (and wait_seconds "
    f"up to {MAX_WAIT_SECONDS}) to pick the answer up, as often as needed. Act only once the status is "
    f"'pending' (approved), then {REPORT_STATUS} 'running' and 'succeeded' or 'failed'. Never act on "
    "'needs_approval', 'rejected' or 'expired'."
)

ClientFor = Callable[[ServerRequestContext[Any, Any]], SignoffClient]
"""The API client acting as the caller's key, for one request."""


class ToolFailure(Exception):
    """A refusal told to the model as a tool error (its message is the whole text)."""


# ---- schemas -------------------------------------------------------------------------------


def _local_refs(node: Any) -> Any:
    """The OpenAPI document's ``#/components/schemas/X`` references as ``#/$defs/X``."""
    if isinstance(node, dict):
        return {
            k: ("#/$defs/" + v.rsplit("/", 1)[-1] if k == "$ref" and isinstance(v, str) else _local_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_local_refs(v) for v in node]
    return node


def _output_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The API's own schemas (``GET /openapi.json``): an action, and the type catalog."""
    schemas = document()["components"]["schemas"]
    action = {**_local_refs(schemas["Action"]), "$defs": {"Decision": _local_refs(schemas["Decision"])}}
    catalog = {
        "type": "object",
        "required": ["types"],
        "properties": {"types": {"type": "array", "items": {"$ref": "#/$defs/ActionType"}}},
        "$defs": {"ActionType": _local_refs(schemas["ActionType"])},
    }
    return action, catalog


_ACTION_OUT, _CATALOG_OUT = _output_schemas()
_ACTION_ID: Final[dict[str, Any]] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "description": f"The action_id {REQUEST_APPROVAL} returned.",
}

_REQUEST_IN: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["action_type", "target", "payload", "title", "rationale"],
    "additionalProperties": False,
    "properties": {
        "action_type": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": f"One of the action types {LIST_ACTION_TYPES} returns, e.g. 'restart_service'.",
        },
        "target": {
            "type": "object",
            "required": ["type", "id"],
            "additionalProperties": False,
            "description": "The one thing the action changes; shown on the card.",
            "properties": {
                "type": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "What kind of thing it is, e.g. 'service', 'order', 'table'.",
                },
                "id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "description": "Which one: its identifier, e.g. 'web-1'.",
                },
            },
        },
        "payload": {
            "type": "object",
            "description": (
                "The action's parameters: exactly what you will do once approved, shown field by field on the "
                f"card. Must hold the type's required_fields ({LIST_ACTION_TYPES} gives them and an example_payload)."
            ),
        },
        "title": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "One line the person reads first, e.g. 'Restart web-1 to clear a memory leak'.",
        },
        "rationale": {
            "type": "string",
            "minLength": 1,
            "maxLength": 3000,
            "description": "Why this is needed now, what it risks and what happens if it is not done: the person decides on it.",
        },
        "idempotency_key": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": "^[\\x21-\\x7e]+$",
            "description": (
                "Optional. The same key returns the same action, never a second request to the person. Without "
                "one, the same arguments within 24 hours return the same action (so a retry is safe); to ask "
                "again for exactly the same thing, pass a new key."
            ),
        },
    },
}
_GET_IN: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["action_id"],
    "additionalProperties": False,
    "properties": {
        "action_id": _ACTION_ID,
        "wait_seconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_WAIT_SECONDS,
            "default": 0,
            "description": (
                f"While the action still awaits a person, wait up to this many seconds (at most {MAX_WAIT_SECONDS}) "
                "for the decision before answering. 0 answers at once."
            ),
        },
    },
}
_REPORT_IN: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["action_id", "status"],
    "additionalProperties": False,
    "properties": {
        "action_id": _ACTION_ID,
        "status": {
            "type": "string",
            "enum": list(REPORTABLE),
            "description": (
                "'running' when you start an approved action; then 'succeeded' or 'failed' when it is done; "
                "'rolled_back' once you have undone it (after a person asked for a rollback, or on your own)."
            ),
        },
        "result": {
            "type": "object",
            "description": "Optional: what came of it (ids, counts, links), shown to the people.",
        },
        "error": {"type": "string", "maxLength": 4000, "description": "Optional: what went wrong, for 'failed'."},
    },
}

TOOLS: Final = (
    types.Tool(
        name=LIST_ACTION_TYPES,
        title="List the kinds of action a person can approve",
        description=(
            "The action types Signoff's operators declared: for each, action_type, summary, risk, whether it needs "
            f"approval, its required_fields and an example_payload. Call this before {REQUEST_APPROVAL}."
        ),
        input_schema={"type": "object", "properties": {}, "additionalProperties": False},
        output_schema=_CATALOG_OUT,
        annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
    ),
    types.Tool(
        name=REQUEST_APPROVAL,
        title="Ask a person in Slack to approve an action",
        description=(
            "Posts the action to Slack as a card for a person to approve or reject, and returns at once with its "
            "action_id and status: 'needs_approval' (wait for the person), or 'pending' when the type needs no "
            f"approval (go ahead). Do not wait here: keep working, and pick the answer up with {GET_APPROVAL}. "
            "Retrying with the same arguments or idempotency_key returns the same action, never a second card."
        ),
        input_schema=_REQUEST_IN,
        output_schema=_ACTION_OUT,
        annotations=types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=True,
        ),
    ),
    types.Tool(
        name=GET_APPROVAL,
        title="Get the person's decision on an action",
        description=(
            "The action's status, who decided (decision.decided_by, decided_by_name), when, and their note or "
            "reason (decision.reason). Statuses: 'needs_approval' (not decided yet: do not act; ask again later), "
            "'pending' (approved: do it now), 'rejected' or 'expired' (do not do it), 'running', 'succeeded', "
            "'failed' (as reported), 'rollback_requested' (a person asked to undo it: undo it and report "
            f"'rolled_back'), 'rolled_back'. With wait_seconds (up to {MAX_WAIT_SECONDS}) it waits for a "
            "decision that has not come yet."
        ),
        input_schema=_GET_IN,
        output_schema=_ACTION_OUT,
        annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
    ),
    types.Tool(
        name=REPORT_STATUS,
        title="Report progress on an approved action",
        description=(
            "Tell Signoff (and the people in Slack, on the action's card and thread) how the approved action "
            "goes: 'running' when you start, then 'succeeded' (with a result) or 'failed' (with an error); "
            "'rolled_back' once undone. Only an approved ('pending') action can start running."
        ),
        input_schema=_REPORT_IN,
        output_schema=_ACTION_OUT,
        annotations=types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
)
_INPUTS: Final = {t.name: Draft202012Validator(t.input_schema) for t in TOOLS}


def argument_problems(tool: str, arguments: dict[str, Any]) -> list[str]:
    """What is wrong with a call's arguments, one line each, named by their path."""
    validator = _INPUTS[tool]
    problems: list[str] = []
    for e in sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in e.absolute_path)
        prefix = f"{where}." if where else ""
        if e.validator == "required" and isinstance(e.instance, dict):
            problems += [f"{prefix}{name}: required" for name in e.validator_value if name not in e.instance]
        elif e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = sorted(e.schema.get("properties", {}))
            for name in sorted(k for k in e.instance if k not in known):
                problems.append(f"{prefix}{name}: unknown argument (known: {', '.join(known) or 'none'})")
        else:
            problems.append(f"{where or 'arguments'}: {e.message[:300]}")
    return list(dict.fromkeys(problems))  # one error per missing property may each name them all


# ---- what a result says ----------------------------------------------------------------------


def _who(action: ApiAction) -> str:
    decision = action.get("decision")
    if decision is None:
        return "someone"
    by, name = decision.get("decided_by") or "someone", decision.get("decided_by_name")
    return f"{name} <{by}>" if name and name != by else str(by)


def _note(action: ApiAction) -> str:
    decision = action.get("decision")
    reason = decision.get("reason") if decision is not None else None
    return f' with the note "{reason}"' if reason else ""


def describe(action: ApiAction) -> str:
    """One or two sentences: the action, its status, who decided, and what to do next."""
    status = action.get("status", "")
    head = f"Action {action.get('action_id')} ({action.get('action_type')}) is {status}."
    if status == "needs_approval":
        nxt = (
            f"Waiting for a person to decide in Slack. Do not act yet: call {GET_APPROVAL} later "
            f"(wait_seconds up to {MAX_WAIT_SECONDS})."
        )
    elif status == "pending" and action.get("decision"):
        nxt = f"Approved by {_who(action)}{_note(action)}. Do it now, and {REPORT_STATUS} 'running', then 'succeeded' or 'failed'."
    elif status == "pending":
        nxt = f"It needs no approval: do it now, and {REPORT_STATUS} 'running', then 'succeeded' or 'failed'."
    elif status == "rejected":
        nxt = f"Rejected by {_who(action)}{_note(action)}. Do not do it."
    elif status == "expired":
        nxt = f"Nobody decided in time. Do not do it; if it is still needed, ask again with {REQUEST_APPROVAL}."
    elif status == "running":
        nxt = f"Report 'succeeded' or 'failed' with {REPORT_STATUS} when it is done."
    elif status == "rollback_requested":
        nxt = f"A person asked in Slack to roll it back: undo it, then {REPORT_STATUS} 'rolled_back'."
    elif status in ("succeeded", "failed", "rolled_back"):
        nxt = "Nothing more to do." if status != "succeeded" else "Done; a person may still ask for a rollback."
    else:
        nxt = ""
    return f"{head} {nxt}".strip()


def _result(action: ApiAction, text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=dict(action))


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def derived_key(arguments: dict[str, Any]) -> str:
    """An idempotency key from the request's own arguments: the same request, the same key."""
    fields = {k: arguments.get(k) for k in ("action_type", "target", "payload", "title", "rationale")}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "mcp-" + hashlib.sha256(canonical.encode()).hexdigest()


# ---- the tools ----------------------------------------------------------------------------------


async def list_action_types(api: SignoffClient, _args: dict[str, Any]) -> types.CallToolResult:
    catalog = await api.types()
    if not catalog:
        text = "No action types are declared in Signoff's catalog (signoff.toml): nothing can be asked yet."
    else:
        lines = [
            f"- {t.get('action_type')}: {t.get('summary')} (risk {t.get('risk') or 'unset'}"
            + ("" if t.get("approval_required_by_default", True) else ", no approval needed")
            + (f"; required: {', '.join(t.get('required_fields') or [])}" if t.get("required_fields") else "")
            + ")"
            for t in catalog
        ]
        text = f"{len(catalog)} action type(s):\n" + "\n".join(lines)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content={"types": catalog},
    )


async def _known_types(api: SignoffClient) -> dict[str, dict[str, Any]]:
    return {str(t.get("action_type")): t for t in await api.types()}


async def request_approval(api: SignoffClient, args: dict[str, Any]) -> types.CallToolResult:
    given = args.get("idempotency_key")
    key = given or derived_key(args)
    fields = {k: args[k] for k in ("target", "payload", "title", "rationale")}
    action_type = str(args["action_type"])
    action, replayed = await _submit(api, action_type, key, fields, given)
    if replayed:
        action = await api.get(action["action_id"])  # that action as it is now, not as it was then
        lead = "This request was made before (same idempotency key): here is that action, not a new one. "
    else:
        lead = "Asked in Slack. " if action.get("status") == "needs_approval" else ""
    return _result(action, f"{lead}{describe(action)} idempotency_key: {key}")


async def _submit(
    api: SignoffClient,
    action_type: str,
    key: str,
    fields: dict[str, Any],
    given: str | None,
) -> tuple[ApiAction, bool]:
    for attempt in range(1, IN_PROGRESS_TRIES + 1):
        try:
            return await api.submit_once(action_type, idempotency_key=key, **fields)
        except SignoffApiError as e:
            if e.code != "IDEMPOTENCY_IN_PROGRESS" or attempt == IN_PROGRESS_TRIES:
                raise await _submit_refusal(api, e, action_type, given) from e
            await asyncio.sleep(min(e.retry_after or 1.0, 2.0))  # the first call with this key is still at work
    raise AssertionError("unreachable")


async def _submit_refusal(api: SignoffClient, e: SignoffApiError, action_type: str, given: str | None) -> Exception:
    if e.code == "UNKNOWN_ACTION_TYPE":
        known = await _known_types(api)
        names = ", ".join(sorted(known)) or "none (the catalog is empty)"
        return ToolFailure(
            f"unknown action_type {action_type[:80]!r}; known: {names} ({LIST_ACTION_TYPES} describes each)"
        )
    if e.code == "MISSING_FIELD":
        known = (await _known_types(api)).get(action_type, {})
        example = json.dumps(known.get("example_payload") or {})
        where = "target" if (e.field or "").startswith("target.") else "payload"
        return ToolFailure(
            f"{e.field}: required by {action_type}; put it in {where}. Required fields: "
            f"{', '.join(known.get('required_fields') or [])}; example payload: {example}"
        )
    if e.code == "IDEMPOTENCY_CONFLICT":
        return ToolFailure(
            f"idempotency_key {given!r} was used before for a different request. To ask for something new, pass a "
            "new idempotency_key (or none); to get that earlier action, repeat its arguments exactly."
        )
    if e.code == "IDEMPOTENCY_IN_PROGRESS":
        return ToolFailure(f"the same request is still being handled; call {REQUEST_APPROVAL} again in a few seconds")
    return e


async def get_approval(api: SignoffClient, args: dict[str, Any]) -> types.CallToolResult:
    action_id = str(args["action_id"])
    wait = int(args.get("wait_seconds") or 0)
    action = await api.get(action_id)
    if wait > 0 and action.get("status") == "needs_approval":
        action = await api.get(action_id, wait=wait)  # the API holds it until the status changes
    text = describe(action)
    if wait > 0 and action.get("status") == "needs_approval":
        text = f"No decision within {wait} s. " + text
    return _result(action, text)


async def report_status(api: SignoffClient, args: dict[str, Any]) -> types.CallToolResult:
    action_id, status = str(args["action_id"]), str(args["status"])
    try:
        action = await api.report(action_id, status, result=args.get("result"), error=args.get("error"))
    except SignoffApiError as e:
        if e.code != "INVALID_TRANSITION":
            raise
        current = await api.get(action_id)
        now = current.get("status")
        if now == status:  # a retry of a report that landed: the same answer
            return _result(current, f"Already reported: {describe(current)}")
        hint = {
            "needs_approval": f"It has not been approved yet: wait for the decision with {GET_APPROVAL}; do not act.",
            "rejected": "It was rejected: do not do it.",
            "expired": "Nobody approved it in time: do not do it.",
        }.get(str(now), describe(current))
        raise ToolFailure(f"action {action_id} is {now}: it cannot become {status}. {hint}") from e
    return _result(action, f"Reported {status}. {describe(action)}")


Handler = Callable[[SignoffClient, dict[str, Any]], Awaitable[types.CallToolResult]]
HANDLERS: Final[dict[str, Handler]] = {
    LIST_ACTION_TYPES: list_action_types,
    REQUEST_APPROVAL: request_approval,
    GET_APPROVAL: get_approval,
    REPORT_STATUS: report_status,
}


def _refusal(e: SignoffApiError, args: dict[str, Any]) -> str:
    """The API's refusal, said so that a model can act on it."""
    if e.status == 401:
        return "Signoff refused the API key (missing or wrong): the MCP server's key must be one of Signoff's API_KEYS."
    if e.status == 403:
        return f"this API key may not do that ({e.message})"
    if e.status == 404 and e.code == "NOT_FOUND":
        return (
            f"no action {str(args.get('action_id', ''))[:80]!r} for this API key: use the action_id "
            f"{REQUEST_APPROVAL} returned"
        )
    if e.status == 429:
        wait = f" in {e.retry_after:.0f} s" if e.retry_after else " shortly"
        return f"Signoff's rate limit for this API key is reached; try again{wait}"
    if e.status >= 500 or e.code == "NOT_JSON":
        code = f" {e.code}" if e.code else ""
        return f"Signoff could not answer ({e.status}{code}: {e.message}); try again shortly"
    field = f" ({e.field})" if e.field and e.field not in e.message else ""
    return f"Signoff refused it: {e.message}{field}"


async def call(api: SignoffClient, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """One ``tools/call``: arguments checked against the tool's schema, then the tool; every
    refusal a tool error."""
    handler = HANDLERS.get(name)
    if handler is None:
        return _error(f"unknown tool {name[:80]!r}; the tools are: {', '.join(HANDLERS)}")
    problems = argument_problems(name, arguments)
    if problems:
        return _error(f"invalid arguments for {name}: " + "; ".join(problems[:10]))
    budget = CALL_SECONDS + ((arguments.get("wait_seconds") or 0) if name == GET_APPROVAL else 0)
    try:
        async with asyncio.timeout(budget):
            return await handler(api, arguments)
    except ToolFailure as e:
        return _error(str(e))
    except SignoffApiError as e:
        return _error(_refusal(e, arguments))
    except (aiohttp.ClientError, TimeoutError) as e:
        again = " (the same arguments return the same action, never a second one)" if name == REQUEST_APPROVAL else ""
        return _error(f"Signoff could not be reached ({type(e).__name__}); try again shortly{again}")


def server_version() -> str:
    try:
        return version("signoff")
    except PackageNotFoundError:
        return "0"


def build_server(client_for: ClientFor) -> Server[Any]:
    """The MCP server: its four tools, each call acting as the key ``client_for`` gives."""

    async def on_list_tools(
        _ctx: ServerRequestContext[Any, Any],
        _params: types.PaginatedRequestParams | None,
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=list(TOOLS))

    async def on_call_tool(
        ctx: ServerRequestContext[Any, Any],
        params: types.CallToolRequestParams,
    ) -> types.CallToolResult | types.InputRequiredResult:
        try:
            api = client_for(ctx)
        except ToolFailure as e:
            return _error(str(e))
        return await call(api, params.name, params.arguments or {})

    return Server(
        NAME,
        version=server_version(),
        title="Signoff",
        instructions=INSTRUCTIONS,
        description="Ask a person in Slack to approve an action, keep working, and pick the answer up later.",
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
