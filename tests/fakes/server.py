"""What the fake upstreams share: an aiohttp app served on 127.0.0.1 at a free port, and
delays that end at once when the server stops."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Self

from aiohttp import web


class LoopbackServer:
    def __init__(self) -> None:
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    def app(self) -> web.Application:  # pragma: no cover - each fake builds its own
        raise NotImplementedError

    async def start(self, path: str = "") -> str:
        """Serve ``self.app()``; returns the base URL (plus ``path``)."""
        self._closing.clear()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]  # the bound address of the site's server socket
        self.url = f"http://127.0.0.1:{port}{path}"
        return self.url

    async def stop(self) -> None:
        self._closing.set()  # ends every pending delay at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the server stops meanwhile."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._closing.wait(), seconds)
            except TimeoutError:
                pass

    @staticmethod
    def _reset(request: web.Request) -> None:
        """Drop the connection with a TCP RST and no answer."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
