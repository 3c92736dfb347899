"""The DATABASE_URL users write, mapped onto the drivers Signoff ships."""

from __future__ import annotations

import asyncio

import pytest

from store.db import Database, async_url


def test_plain_urls_map_onto_the_shipped_drivers_and_libpq_options_onto_asyncpgs() -> None:
    assert async_url("sqlite:///./signoff.db").drivername == "sqlite+aiosqlite"
    pg = async_url("postgresql://u:p@db.example:5433/signoff?sslmode=require&connect_timeout=5")
    assert pg.drivername == "postgresql+asyncpg"
    assert (pg.host, pg.port, pg.database, pg.username) == ("db.example", 5433, "signoff", "u")
    assert dict(pg.query) == {"ssl": "require", "timeout": "5"}
    with pytest.raises(ValueError, match="unsupported database"):
        async_url("mysql://localhost/x")


async def test_a_connect_timeout_in_the_url_bounds_the_connect() -> None:
    # A server that accepts and never answers: without the timeout, asyncpg waits 60 s.
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    db = Database(f"postgresql://u@127.0.0.1:{port}/signoff?sslmode=disable&connect_timeout=0.3")
    try:
        assert dict(db.url.query) == {"ssl": "disable"}
        started = asyncio.get_running_loop().time()
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(db.ping(), timeout=10)
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await db.dispose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
