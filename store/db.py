"""The database: one async engine, read sessions and write transactions, and the schema.

SQLite runs in WAL mode on the event loop's own thread (``store.inline_sqlite``), and every
write transaction starts with ``BEGIN IMMEDIATE`` so that two writers queue on the lock instead
of one failing with ``database is locked`` when it upgrades from reading to writing. Writers of
this process queue on a lock of their own (``WriterQueue``); a writer that finds another
process holding SQLite's lock retries ``BEGIN IMMEDIATE`` with sleeps, never blocking the loop,
for up to ``SQLITE_BUSY_TIMEOUT_MS``. PostgreSQL uses its own row locks; the compare-and-set
updates in ``store.queries`` make races safe on both.

The schema is managed by the Alembic migrations in ``store/migrations``. ``migrate()`` applies
the pending ones under a lock (PostgreSQL: an advisory lock; SQLite: one ``BEGIN IMMEDIATE``
transaction), so replicas starting together apply them once; ``check_schema()`` only checks.
A database at a revision this code does not know (written by a newer Signoff) is a
``SchemaError`` either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from store import (
    hot,
    inline_sqlite,
    models,  # noqa: F401  (registers the tables on SQLModel.metadata)
)

log = logging.getLogger("signoff.store")

SQLITE_BUSY_TIMEOUT_MS = 15_000
_WRITE = "signoff_write"

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock that serializes migrations ("Signoff" in ASCII).
MIGRATION_LOCK_KEY = 0x5369676E6F6666

# Alembic keeps the migration it runs in module globals (alembic.context, alembic.op): one
# migration at a time in a process, whatever the database (the locks below are per database).
_IN_PROCESS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


_T = TypeVar("_T")


class SchemaError(Exception):
    """The database's schema does not fit this Signoff; the message says what to do."""


def alembic_config() -> Config:
    """Alembic's configuration for Signoff's migrations, independent of the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def head_revision() -> str:
    """The revision this code's schema is at."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "store/migrations has no revisions"
    return head


_LIBPQ_TO_ASYNCPG = {"sslmode": "ssl", "connect_timeout": "timeout"}


def async_url(url: str) -> sa.URL:
    """Map the plain URLs users write onto the async drivers we ship."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        # asyncpg takes its own names for the two libpq options people put in URLs.
        query = {_LIBPQ_TO_ASYNCPG.get(k, k): v for k, v in parsed.query.items()}
        return parsed.set(drivername="postgresql+asyncpg", query=query)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///... or postgresql://...")


class Database:
    def __init__(self, url: str, *, echo: bool = False, inline: bool = True) -> None:
        """``inline``: SQLite on the event loop's thread (``store.inline_sqlite``); False runs
        it through plain aiosqlite, one thread per connection (bench/ack.py compares them)."""
        self.url = async_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        database = self.url.database or ":memory:"
        uri = str(self.url.query.get("uri", "")).lower() in ("1", "true")
        connect_args: dict[str, Any] = {}
        if self.is_sqlite and inline:
            kwargs["async_creator"] = functools.partial(inline_sqlite.connect, database, uri=uri)
        elif not self.is_sqlite:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
            if "timeout" in self.url.query:  # asyncpg wants a number, a URL holds strings
                connect_args = kwargs["connect_args"] = {"timeout": float(str(self.url.query["timeout"]))}
                self.url = self.url.difference_update_query(["timeout"])
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._reader = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._sqlite_writers = WriterQueue() if self.is_sqlite else None
        self.transactions = Transactions()  # opened by this process since it started
        self._writer = async_sessionmaker(
            self.engine.execution_options(**{_WRITE: True}), class_=AsyncSession, expire_on_commit=False
        )
        # The ack path (a click's check, a decision's write) on the driver's own connection.
        self.hot: hot.HotPath
        in_memory = database == ":memory:" or "mode=memory" in database
        if self.is_sqlite and inline and not in_memory:
            self.hot = hot.SQLiteHotPath(
                dialect=self.engine.dialect,
                writers=self._sqlite_writers,
                immediate=_immediate,
                count=self._count,
                open_connection=functools.partial(_hot_sqlite_connection, database, uri=uri),
            )
        elif not self.is_sqlite:
            args, params = self.engine.dialect.create_connect_args(self.url)
            self.hot = hot.PostgresHotPath(
                dialect=self.engine.dialect,
                connect_args=(args, {**params, **connect_args}),
                count=self._count,
                size=10,
            )
        else:
            self.hot = hot.SessionHotPath(
                read=self.read, write=functools.partial(self.write, urgent=True), writing=self.write
            )

    def _count(self, write: bool) -> None:
        _count(self.transactions, write=write)

    async def migrate(self) -> None:
        """Apply the pending migrations, if any. Replicas doing this at once take turns: the
        first migrates, the others then find the schema at head."""
        in_process = _IN_PROCESS.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with in_process, self._migration_lock() as conn:
            await conn.run_sync(_upgrade)

    async def check_schema(self) -> None:
        """Raise ``SchemaError`` unless the schema is at this code's head revision."""
        async with self.engine.connect() as conn:
            state = await conn.run_sync(_SchemaState.read)
        if state.current == (state.head,):
            return
        if state.current:
            found = f"schema revision {', '.join(state.current)}"
        else:
            found = "no Signoff schema"
        raise SchemaError(
            f"database has {found}, and this Signoff needs revision {state.head}: run `python app.py migrate` "
            "(with AUTO_MIGRATE=false, migrations are not applied on start)"
        )

    async def schema_revision(self) -> str | None:
        """The revision the database's schema is at, or None before the first migration."""
        async with self.engine.connect() as conn:
            heads = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_heads())
        return ", ".join(heads) or None

    @asynccontextmanager
    async def _migration_lock(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction that no other Signoff can be migrating in."""
        if self.is_sqlite:
            # BEGIN IMMEDIATE takes SQLite's write lock for the whole migration (SQLite's DDL
            # is transactional): another process waits for it (``_immediate`` retries).
            async with _immediate(self._open_migrator) as conn:
                yield conn
            return
        async with self.engine.connect() as conn:
            key = {"key": MIGRATION_LOCK_KEY}
            if not (await conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), key)).scalar_one():
                log.info("another Signoff is migrating the database; waiting for it to finish")
                await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), key)
            await conn.commit()  # the advisory lock belongs to the session, not the transaction
            try:
                async with conn.begin():
                    yield conn
            finally:
                try:
                    await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), key)
                    await conn.commit()
                except BaseException as e:
                    # Never pool a session that may still hold the lock: ending it releases it.
                    await conn.invalidate()
                    if not isinstance(e, Exception):
                        raise
                    log.warning("could not release the migration lock (%s); closed its connection", type(e).__name__)

    async def _open_migrator(self, stack: contextlib.AsyncExitStack) -> AsyncConnection:
        conn = await stack.enter_async_context(self.engine.execution_options(**{_WRITE: True}).connect())
        await stack.enter_async_context(conn.begin())  # BEGIN IMMEDIATE
        return conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; nothing it does is committed."""
        _count(self.transactions, write=False)
        async with self._reader() as session:
            yield session

    @asynccontextmanager
    async def write(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed when the block ends, rolled back if it raises.

        On SQLite this process's writers queue on a lock of their own before taking SQLite's:
        left to SQLite's busy handler, many waiting writers retry after sleeps in no order, and
        one click can wait seconds (bench/ack.py). ``urgent`` writers (a person waiting on the
        answer: a click's decision) go before background jobs' writers; each kind is served
        first-come, first-served. Writers of other processes are waited for by retrying
        ``BEGIN IMMEDIATE`` (``_immediate``). No write block awaits the network: on SQLite a
        transaction's statements run without yielding, so the block holds the write lock only
        as long as its own work takes.
        """
        _count(self.transactions, write=True)
        queue = self._sqlite_writers
        if queue is None:
            async with self._writer() as session:
                async with session.begin():
                    yield session
            return
        async with queue.hold(urgent=urgent):
            async with _immediate(self._open_writer) as session:
                yield session

    async def _open_writer(self, stack: contextlib.AsyncExitStack) -> AsyncSession:
        session = await stack.enter_async_context(self._writer())
        await stack.enter_async_context(session.begin())
        await session.connection()  # BEGIN IMMEDIATE, now: it is where another process makes us wait
        return session

    async def dispose(self) -> None:
        await self.hot.close()
        await self.engine.dispose()


_Work = Callable[[AsyncSession], Awaitable[Any]]


class Grouped:
    """Group commit: short pieces of store work that arrive while one transaction of this
    group is under way share the next transaction, instead of opening one each.

    When nothing is under way a piece runs at once, in a transaction of its own, so there is
    no added latency; under load (a burst of card renders) many share one. Each caller gets its
    own piece's result. If the shared transaction fails, each piece is run again in one of its
    own, so one piece's error is only its caller's (pieces must therefore do nothing but store
    work: a rolled-back piece is run again). ``open`` is ``Database.read`` or ``Database.write``.
    """

    def __init__(
        self, open_: Callable[[], contextlib.AbstractAsyncContextManager[AsyncSession]], *, most: int = 32
    ) -> None:
        # ``most`` bounds one shared transaction: on SQLite its statements run on the loop's
        # thread without yielding, so a click arriving meanwhile waits for all of them.
        self._open = open_
        self._most = most
        self._queue: list[tuple[_Work, asyncio.Future[Any]]] = []
        self._lock = asyncio.Lock()

    async def run(self, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
        item: tuple[_Work, asyncio.Future[Any]] = (work, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        try:
            async with self._lock:
                if not item[1].done():
                    batch, self._queue = self._queue[: self._most], self._queue[self._most :]
                    if item not in batch:  # more than ``most`` waited: take the oldest, and this
                        batch[-1:] = [item]
                        self._queue.remove(item)
                    await self._flush(batch)
        finally:
            if item in self._queue:  # cancelled while waiting
                self._queue.remove(item)
        result: _T = item[1].result()
        return result

    async def _flush(self, batch: list[tuple[_Work, asyncio.Future[Any]]]) -> None:
        try:
            results = []
            async with self._open() as session:
                for work, _future in batch:
                    results.append(await work(session))
        except BaseException as e:
            if not isinstance(e, Exception):
                # Cancelled: the pieces of others go back, for their own callers to run.
                self._queue[:0] = [i for i in batch if not i[1].done()]
                raise
            if len(batch) == 1:
                batch[0][1].set_exception(e)
                return
            for work, future in batch:  # each alone, so that only the failing piece fails
                try:
                    async with self._open() as session:
                        future.set_result(await work(session))
                except Exception as alone:  # noqa: BLE001 - handed to that piece's caller, who handles it
                    future.set_exception(alone)
            return
        for (_work, future), result in zip(batch, results, strict=True):
            future.set_result(result)


@dataclass
class Transactions:
    """How many transactions (read sessions and write transactions) were opened."""

    reads: int = 0
    writes: int = 0

    @property
    def total(self) -> int:
        return self.reads + self.writes


# A tally of the transactions opened by one piece of work (a request, from its start until
# its answer) and the tasks it starts; set by whoever wants to know (bench/ack.py, tests).
TALLY: contextvars.ContextVar[Transactions | None] = contextvars.ContextVar("signoff_transactions", default=None)


def _count(process: Transactions, *, write: bool) -> None:
    tally = TALLY.get()
    for t in (process, tally) if tally is not None else (process,):
        if write:
            t.writes += 1
        else:
            t.reads += 1


@asynccontextmanager
async def _immediate(open_: Callable[[contextlib.AsyncExitStack], Awaitable[_T]]) -> AsyncIterator[_T]:
    """Open a SQLite write transaction, waiting (without blocking the loop) while another
    process holds the write lock, for up to the busy timeout; then hold it for the block."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.002
    while True:
        stack = contextlib.AsyncExitStack()
        try:
            value = await open_(stack)
        except OperationalError as e:
            await stack.__aexit__(type(e), e, e.__traceback__)
            if "locked" not in str(e.orig) or loop.time() >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        except BaseException as e:
            await stack.__aexit__(type(e), e, e.__traceback__)
            raise
        break
    async with stack:
        yield value


class WriterQueue:
    """One writer at a time; urgent writers first, each kind in arrival order."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # asyncio's lock wakes its waiters in order
        self._urgent_waiting = 0
        self._no_urgent = asyncio.Event()
        self._no_urgent.set()

    @asynccontextmanager
    async def hold(self, *, urgent: bool) -> AsyncIterator[None]:
        if urgent:
            self._urgent_waiting += 1
            self._no_urgent.clear()
            try:
                await self._lock.acquire()
            finally:
                self._urgent_waiting -= 1
                if not self._urgent_waiting:
                    self._no_urgent.set()
        else:
            while True:
                await self._no_urgent.wait()
                await self._lock.acquire()
                if not self._urgent_waiting:
                    break
                self._lock.release()  # an urgent writer arrived while this one queued: after it
        try:
            yield
        finally:
            self._lock.release()


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _sqlite_settings(dbapi_connection)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        # Straight on the driver's cursor: through ``exec_driver_sql`` this one statement cost
        # as much as a query (every transaction runs it). A driver error is raised as
        # SQLAlchemy's, as it would have been (``_immediate`` retries "database is locked").
        dbapi = conn.dialect.loaded_dbapi
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        except dbapi.Error as e:
            raise sa.exc.DBAPIError.instance("BEGIN", None, e, dbapi.Error) from e
        finally:
            cursor.close()


def _sqlite_settings(dbapi_connection: Any) -> None:
    """Every connection's settings (the engine's, and the ack path's own)."""
    # Let us issue BEGIN ourselves (pysqlite's own would be a deferred BEGIN).
    if dbapi_connection.isolation_level is not None:
        dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(inline_sqlite.INLINE_BUSY_TIMEOUT_S * 1000)}")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _hot_sqlite_connection(database: str, *, uri: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(
        database, uri=uri, timeout=inline_sqlite.INLINE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    _sqlite_settings(conn)
    return conn


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL (a setting the file keeps). The switch needs the file to itself,
    and SQLite answers ``database is locked`` at once, without its busy handler, when another
    process holds it (two replicas starting on a new file): so retry it here, briefly."""
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.fetchall()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        # Only on the first connections to a new file, and only under contention; this runs
        # in the connect hook, which cannot await.
        time.sleep(0.01)


@dataclass(frozen=True)
class _SchemaState:
    head: str
    current: tuple[str, ...]  # the revisions in alembic_version; empty before the first migration

    @classmethod
    def read(cls, conn: sa.Connection) -> _SchemaState:
        script = ScriptDirectory.from_config(alembic_config())
        head = script.get_current_head()
        assert head is not None
        current = tuple(MigrationContext.configure(conn).get_current_heads())
        known = {rev.revision for rev in script.walk_revisions()}
        unknown = [rev for rev in current if rev not in known]
        if unknown:
            raise SchemaError(
                f"database schema is at revision {', '.join(unknown)}, newer than this Signoff (head {head}): "
                "upgrade Signoff, or restore the database from a backup taken before that migration"
            )
        return cls(head=head, current=current)


def _upgrade(conn: sa.Connection) -> None:
    """Bring the schema to head on ``conn``, which holds the migration lock."""
    state = _SchemaState.read(conn)
    if state.current == (state.head,):
        log.info("database schema is up to date (revision %s)", state.head)
        return
    config = alembic_config()
    config.attributes["connection"] = conn
    start = ", ".join(state.current) or "an empty database"
    log.info("migrating database schema from %s to revision %s", start, state.head)
    command.upgrade(config, "head")
