"""``/mcp`` on the bot: the MCP server over streamable HTTP, for clients that connect by URL.

The key comes as ``Authorization: Bearer <key>`` (``X-API-Key`` works too), one of
``API_KEYS``; a missing or wrong one is 401 before the MCP server sees the request. Each tool
call then acts as that key: it calls the Actions API over loopback, on this same process,
through the typed client, so the API's rules (validation, idempotency in the store, ownership,
rate limits, its answers) hold exactly as they do for any client, with one code path shared
with ``signoff-mcp``. The server is stateless and answers each request with plain JSON: any
replica can take any request, and nothing is kept between requests.

The SDK's transport is an ASGI application and the bot is aiohttp: ``serve_asgi`` carries one
aiohttp request to it and its answer back (the body streamed both ways).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Final

import aiohttp
from aiohttp import web
from mcp.server import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from api.actions import find_client, given_key
from api.client import SignoffClient
from settings import ApiKey
from signoff_mcp.tools import ToolFailure, build_server

log = logging.getLogger(__name__)

PATH: Final = "/mcp"
LOOPBACK_TIMEOUT_SECONDS: Final = 75.0  # past get_approval's longest wait (50 s)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def loopback_url(host: str, port: int) -> str:
    """This process's own HTTP address, reached from itself: a wildcard bind by loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve_asgi(app: AsgiApp, request: web.Request) -> web.StreamResponse:
    """One aiohttp request through an ASGI (3.0, HTTP) application, its answer streamed back."""
    host, port = request.url.host or "", request.url.port or 0
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
        "root_path": "",
        "query_string": request.query_string.encode("latin-1"),
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else None,
        "server": (host, port),
        "state": {},
    }
    response: web.StreamResponse | None = None
    body_read = False
    answered = asyncio.Event()

    async def receive() -> Message:
        nonlocal body_read
        if not body_read:
            chunk = await request.content.readany()
            body_read = not chunk or request.content.at_eof()
            return {"type": "http.request", "body": chunk, "more_body": not body_read}
        await answered.wait()  # nothing more comes in: the request is over once it is answered
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=int(message["status"]))
            for name, value in message.get("headers", ()):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body":
            if response is None:
                raise RuntimeError("the ASGI application sent a body before starting its answer")
            body = message.get("body", b"")
            if body:
                await response.write(body)
            if not message.get("more_body", False):
                await response.write_eof()
                answered.set()

    try:
        await app(scope, receive, send)
    finally:
        answered.set()
    if response is None:
        return web.json_response({"code": "NO_ANSWER", "message": "the MCP server gave no answer"}, status=502)
    return response


class McpEndpoint:
    """The MCP server mounted at ``/mcp``, acting as each caller's API key over loopback."""

    def __init__(self, keys: list[ApiKey], api_url: Callable[[], str]) -> None:
        """``api_url``: where this process's Actions API answers (known once it listens)."""
        self._keys = keys
        self._api_url = api_url
        self._http: aiohttp.ClientSession | None = None
        self._manager = StreamableHTTPSessionManager(
            build_server(self._client_for),
            json_response=True,
            stateless=True,
            # DNS-rebinding protection checks Host and Origin against a list; here every request
            # must carry an API key instead, which a page in a browser cannot, and the bot answers
            # at whatever public name it is given.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", PATH, self.handle)
        app.cleanup_ctx.append(self._lifetime)

    def _client_for(self, ctx: ServerRequestContext[Any, Any]) -> SignoffClient:
        headers = getattr(ctx.request, "headers", None)
        key = given_key(headers) if headers is not None else None
        if key is None or self._http is None:
            raise ToolFailure("no API key came with this request (Authorization: Bearer <key>)")
        return SignoffClient(self._api_url(), key, session=self._http, timeout=LOOPBACK_TIMEOUT_SECONDS)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if find_client(self._keys, given_key(request.headers)) is None:
            return web.json_response(
                {"code": "UNAUTHORIZED", "message": "missing or wrong API key (Authorization: Bearer <key>)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="signoff"'},
            )
        return await serve_asgi(self._manager.handle_request, request)

    async def _lifetime(self, _app: web.Application) -> AsyncIterator[None]:
        """The session manager runs in a task of its own (its task group is entered and left
        there, as anyio requires), from the app's start to its cleanup."""
        self._http = aiohttp.ClientSession()
        started, stopping = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with self._manager.run():
                started.set()
                await stopping.wait()

        task = asyncio.create_task(run(), name="mcp-session-manager")
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            await self._http.close()
            task.result()  # raises what stopped it
            raise RuntimeError("the MCP session manager stopped at start")
        try:
            yield
        finally:
            stopping.set()
            await task
            await self._http.close()
            self._http = None
