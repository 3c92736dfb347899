"""``signoff-mcp``: Signoff's MCP server over stdio, for an MCP client to start as a command.

Configured by ``SIGNOFF_URL`` (where Signoff is) and ``SIGNOFF_API_KEY`` (a key of its Actions
API, ``API_KEYS``) alone. A missing or malformed one, or a key Signoff refuses, stops it at once
with one line on stderr (exit code 2); a Signoff it cannot reach yet is only a warning (each
tool call then says so). stdout carries the protocol and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Final

import aiohttp
from mcp.server.stdio import stdio_server
from pydantic import ValidationError

from api.client import SignoffApiError, SignoffClient
from settings import McpSettings
from signoff_mcp.tools import build_server

PROG: Final = "signoff-mcp"
CHECK_SECONDS: Final = 10.0
log = logging.getLogger("signoff_mcp")
USAGE: Final = """usage: signoff-mcp

Signoff's MCP server over stdio, for an MCP client to start. Its tools ask a person in Slack to
approve an action (list_action_types, request_approval, get_approval, report_status).

  SIGNOFF_URL      Signoff's address, e.g. https://signoff.example.com
  SIGNOFF_API_KEY  a key of Signoff's Actions API (one of its API_KEYS)"""


class ConfigError(Exception):
    """A setting Signoff refuses: said in one line, exit code 2."""


def describe(error: ValidationError) -> str:
    """The bad settings in one line, named as they are set, never echoing the key."""
    parts = []
    for e in error.errors():
        name = "_".join(str(p) for p in e["loc"]).upper()
        msg = "is required but not set" if e["type"] == "missing" else e["msg"].removeprefix("Value error, ")
        parts.append(f"{name} {msg}")
    return "; ".join(parts) + " (signoff-mcp needs SIGNOFF_URL and SIGNOFF_API_KEY)"


async def check(api: SignoffClient, url: str) -> None:
    """Ask Signoff once whether it takes the key: refused is a ConfigError, unreachable a warning."""
    try:
        await asyncio.wait_for(api.types(), CHECK_SECONDS)
    except SignoffApiError as e:
        if e.status == 401:
            raise ConfigError(f"SIGNOFF_API_KEY was refused by Signoff at {url} (401)") from e
        if e.status == 404:
            raise ConfigError(
                f"Signoff at {url} has no Actions API (404): is SIGNOFF_URL Signoff's address, with API_KEYS set there?"
            ) from e
        log.warning("%s: Signoff at %s answered %s %s; starting anyway", PROG, url, e.status, e.code)
    except (aiohttp.ClientError, TimeoutError) as e:
        log.warning("%s: Signoff at %s is not reachable yet (%s); starting anyway", PROG, url, type(e).__name__)


async def serve(settings: McpSettings) -> None:
    url = settings.signoff_url
    async with SignoffClient(url, settings.signoff_api_key.get_secret_value()) as api:
        await check(api, url)
        server = build_server(lambda _ctx: api)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if args:
        print(f"{PROG}: takes no arguments (set SIGNOFF_URL and SIGNOFF_API_KEY)", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    try:
        settings = McpSettings()  # type: ignore[call-arg]
    except ValidationError as e:
        print(f"{PROG}: {describe(e)}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
