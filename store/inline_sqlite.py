"""SQLite on the event loop's own thread, behind the async driver interface SQLAlchemy expects.

SQLAlchemy's async SQLite dialect drives aiosqlite, which runs each connection in a thread of
its own and hands every call to it through a queue: opening a cursor, executing, fetching and
closing are four round trips through the event loop per statement. SQLite itself answers an
indexed statement in microseconds, so under load nearly all of a write transaction's time was
spent waiting for the loop to come back to it (bench/ack.py measured 20-25 ms per decision
transaction, holding SQLite's only writer slot all along).

This module gives the dialect a connection with aiosqlite's interface whose calls run at once
on the calling thread: a transaction's statements run back to back. Nothing here blocks on a
lock: connections get a short busy timeout, and ``store.db`` retries ``BEGIN IMMEDIATE``
asynchronously (with sleeps the loop can use) while another process holds the write lock.
Reads in WAL mode never wait for writers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

# How long one statement may block the loop waiting for a lock held by another process
# before SQLite answers ``database is locked`` (then retried without blocking, see store.db).
INLINE_BUSY_TIMEOUT_S = 0.02


class InlineCursor:
    """aiosqlite's cursor interface over a sqlite3 cursor, without the thread."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any] | dict[str, Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def nextset(self) -> None:
        return None

    def __aiter__(self) -> InlineCursor:  # server-side ("stream") results
        return self

    async def __anext__(self) -> Any:
        row = self._cursor.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """aiosqlite's connection interface over a sqlite3 connection, without the thread."""

    # ``_connection`` is aiosqlite's name, which SQLAlchemy's adapter reads: None once closed.
    __slots__ = ("_connection",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._connection: sqlite3.Connection | None = conn

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("Connection closed")
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        return InlineCursor(self._conn.execute(sql, parameters))

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Also called when SQLAlchemy terminates the connection outright (garbage collection)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


async def connect(database: str, *, uri: bool = False) -> InlineConnection:
    """A connection in autocommit mode (``store.db`` issues BEGIN itself)."""
    conn = sqlite3.connect(
        database, uri=uri, timeout=INLINE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    return InlineConnection(conn)
