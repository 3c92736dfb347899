"""The ack path's store work on the driver's own connection: a click's check and a decision's
write, the two things a person waits on before Slack is answered.

Through SQLAlchemy's session and connection layers each of these statements cost ten to twenty
times what the database takes to run it (bench/README.md: about half of a decision's ack).
Here the same statements (built with SQLAlchemy's Core in ``store.queries``, compiled once per
dialect, with SQLAlchemy's own type conversions) run on the driver: ``sqlite3`` on SQLite, on
one connection of this path's own that a transaction never yields with (so one suffices), and
``asyncpg`` on PostgreSQL, from a small pool of this path's own. Rows come back as the same
detached model objects a session would have returned.

Durability and races are as through the session: a decision's compare-and-set, its audit
entry, its outbox entry and its card's mark commit in one transaction (SQLite: ``BEGIN
IMMEDIATE`` behind this process's writer queue, retried while another process holds the lock;
PostgreSQL: the row lock of the locked re-read), and a driver error is raised as SQLAlchemy's
``DBAPIError``, which the callers already answer as "store unavailable".

Where SQLite runs through plain aiosqlite or in memory (a second connection would see another
database), ``SessionHotPath`` does the same through sessions.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.orm import configure_mappers
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import cloned_traverse
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from sources.base import Op, Option, Status
from store import queries
from store.models import Action, Card, Decision, Notice, Outbox, Watch

_R = TypeVar("_R")
_M = TypeVar("_M", bound=SQLModel)

__all__ = ["HotPath", "Lost", "Moved", "Reads", "SessionReads", "SessionHotPath", "SQLiteHotPath", "PostgresHotPath"]


@dataclass(frozen=True)
class Lost:
    """A decision not begun: the action is not (or no longer) where it can be made. The action
    as it now is (None: gone) and its latest decision, read in the same transaction."""

    action: Action | None
    latest: Decision | None


@dataclass(frozen=True)
class Moved:
    """A decision not begun because the action is no longer at the version it was decided
    from (``strict``): nothing was written; decide again from the action as it is now."""


# How long closing waits for a PostgreSQL connection still in use before cutting it.
CLOSE_TIMEOUT_S = 5.0

# How many actions' rows the path keeps from a click's check for the decision that follows.
RECENT_ROWS = 1024


class HotPath(Protocol):
    async def click_check(self, *, action_id: int, channel: str | None, ts: str | None) -> tuple[Action | None, bool]:
        """The action, and whether the message at ``channel``/``ts`` shows it (True where no
        message is given), in one read."""

    def kept(self, *, action_id: int) -> Action | None:
        """The action as a click's check in this process read it lately, if it kept it (once:
        the row is then forgotten). It may be stale: decide from it only with
        ``begin_decision(strict=True)``."""

    async def action(self, *, action_id: int) -> Action | None:
        """The action, read on its own."""

    async def begin_decision(
        self,
        *,
        action_id: int,
        op: Op,
        allowed_from: frozenset[Status],
        in_flight: Status,
        actor: str,
        note: str | None,
        idempotency_key: str,
        notify_channel: str | None,
        now: datetime,
        option: Option | None = None,
        actor_identifier: str | None = None,
        claim: queries.Claim | None = None,
        seen: Action | None = None,
        strict: bool = False,
    ) -> queries.Begun | Lost | Moved:
        """``queries.begin_decision`` in a write transaction of its own (on PostgreSQL, from
        ``seen`` while it is still the stored version, ``queries.begin_decision_in_one``: one
        statement); where the decision cannot be made, what the action is now (``Lost``).
        ``strict``: where the action is no longer at ``seen``'s version, write nothing and
        say so (``Moved``) instead of deciding from the row as it now is."""

    def writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A write transaction with a session for store work that only ``exec``s statements
        (a ``DriverSession`` on the driver's connection, where the path has one): the settle,
        a card's write-back. On SQLite the work must await nothing but the session."""

    async def read(self, work: Callable[[Reads], Awaitable[_R]]) -> _R:
        """``work`` with the store's reads at one moment (one snapshot on SQLite; on
        PostgreSQL each statement's own, as a session at read committed has them). ``work``
        awaits nothing but those reads: on SQLite nothing else may use the connection meanwhile."""

    async def close(self) -> None: ...


class Reads(Protocol):
    """What a card shows, read as ``store.queries`` reads it (the same statements)."""

    async def action(self, *, action_id: int) -> Action | None: ...

    async def card_for_action(self, *, action_id: int) -> Card | None: ...

    async def latest_decision(self, *, action_id: int) -> Decision | None: ...

    async def latest_outbox(self, *, action_id: int) -> Outbox | None: ...

    async def latest_confirmed(self, *, action_id: int) -> Decision | None: ...

    async def latest(self, *, action_id: int) -> queries.Latest: ...

    async def card_shown(self, *, action_id: int) -> tuple[Card, Action, queries.Latest] | None: ...

    async def endorsements(self, *, action_id: int) -> list[Decision]: ...

    async def watches_for(self, *, action_id: int) -> Sequence[Watch]: ...

    async def posted_notices(self, *, action_id: int, kinds: Iterable[str]) -> Sequence[Notice]: ...

    async def notices_by_id(self, *, notice_ids: Sequence[int]) -> list[Notice]: ...


class SessionReads:
    """``Reads`` through a session of the store's."""

    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def action(self, *, action_id: int) -> Action | None:
        return await queries.get_action(self._s, action_id=action_id)

    async def card_for_action(self, *, action_id: int) -> Card | None:
        return await queries.card_for_action(self._s, action_id=action_id)

    async def latest_decision(self, *, action_id: int) -> Decision | None:
        return await queries.latest_decision(self._s, action_id=action_id)

    async def latest_outbox(self, *, action_id: int) -> Outbox | None:
        return await queries.latest_outbox(self._s, action_id=action_id)

    async def latest_confirmed(self, *, action_id: int) -> Decision | None:
        return await queries.latest_confirmed(self._s, action_id=action_id)

    async def latest(self, *, action_id: int) -> queries.Latest:
        return await queries.latest(self._s, action_id=action_id)

    async def card_shown(self, *, action_id: int) -> tuple[Card, Action, queries.Latest] | None:
        return await queries.card_shown(self._s, action_id=action_id)

    async def endorsements(self, *, action_id: int) -> list[Decision]:
        return await queries.endorsements(self._s, action_id=action_id)

    async def watches_for(self, *, action_id: int) -> Sequence[Watch]:
        return await queries.watches_for(self._s, action_id=action_id)

    async def posted_notices(self, *, action_id: int, kinds: Iterable[str]) -> Sequence[Notice]:
        return await queries.posted_notices(self._s, action_id=action_id, kinds=kinds)

    async def notices_by_id(self, *, notice_ids: Sequence[int]) -> list[Notice]:
        return await queries.notices_by_id(self._s, notice_ids=notice_ids)


# ---- statements, compiled once per dialect ---------------------------------------------------


class _Compiled:
    """One Core statement compiled for a driver: its SQL, its parameters in order with
    SQLAlchemy's conversions for them, and its result columns' conversions. ``expanded``:
    compiled with its IN lists' lengths as bound (``_Cache``), each item a parameter of its own."""

    __slots__ = ("sql", "_params", "_defaults", "keys", "_results")

    def __init__(
        self,
        stmt: sa.sql.ClauseElement,
        dialect: sa.Dialect,
        *,
        expanded: bool = False,
        column_keys: Sequence[str] | None = None,
    ) -> None:
        compiled = stmt.compile(
            dialect=dialect, column_keys=column_keys, compile_kwargs={"render_postcompile": expanded}
        )
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        # Per position: the parameter's name, its item's index (an IN list's "p_ids_2" is
        # item 1 of "p_ids"), and SQLAlchemy's conversion for its type.
        self._params: list[tuple[str, int | None, Any]] = []
        for name in compiled.positiontup or ():
            key, index = name, None
            if name not in compiled.binds:
                key, _, n = name.rpartition("_")
                index = int(n) - 1
            bind = compiled.binds[key]
            self._params.append((key, index, bind.type.dialect_impl(dialect).bind_processor(dialect)))
        # The values the statement binds itself (its literals), by name.
        self._defaults: dict[str, Any] = {
            key: compiled.binds[key].effective_value for key, _, _ in self._params if not compiled.binds[key].required
        }
        # Columns an INSERT leaves out take their defaults, as SQLAlchemy would fill them in.
        for column in getattr(compiled, "insert_prefetch", ()):
            default = column.default
            if default is None or not default.is_scalar:
                raise ValueError(f"{column}: only scalar column defaults are filled in on the driver's connection")
            self._defaults[column.key] = default.arg
        columns = getattr(stmt, "selected_columns", None) or getattr(stmt, "_returning", None) or ()
        self.keys: tuple[str, ...] = tuple(c.key for c in columns)
        self._results = tuple(_result_processor(c.type, dialect) for c in columns)

    def args(self, params: dict[str, Any]) -> list[Any]:
        out = []
        for key, index, process in self._params:
            value = params[key] if key in params else self._defaults[key]
            if index is not None:
                value = value[index]
            out.append(process(value) if process is not None and value is not None else value)
        return out

    def values(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            process(value) if process is not None else value for process, value in zip(self._results, raw, strict=True)
        )

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        return {
            key: (process(value) if process is not None else value)
            for key, process, value in zip(self.keys, self._results, raw, strict=True)
        }


# PostgreSQL's wire types for numbers (asyncpg's dialect converts by them): what the DDL declares.
_FLOAT8, _NUMERIC = 701, 1700


def _result_processor(type_: Any, dialect: sa.Dialect) -> Any:
    coltype = _FLOAT8 if isinstance(type_, sa.Float) else _NUMERIC if isinstance(type_, sa.Numeric) else None
    return type_.dialect_impl(dialect).result_processor(dialect, coltype)


def _with_values(stmt: Any, values: dict[str, Any]) -> Any:
    """A copy of ``stmt`` with these values bound (``Select.params``, for any statement:
    an UPDATE's or a DELETE's IN list too)."""

    def bind(param: sa.BindParameter[Any]) -> None:
        if param.key in values:
            param.value = values[param.key]
            param.required = False

    return cloned_traverse(stmt, {"maintain_key": True, "detect_subquery_cols": True}, {"bindparam": bind})


class _Statements:
    def __init__(self, dialect: sa.Dialect) -> None:
        def c(stmt: sa.sql.ClauseElement) -> _Compiled:
            return _Compiled(stmt, dialect)

        self.action = c(queries._ACTION_BY_ID)
        self.action_card_at = c(queries._ACTION_CARD_AT)
        self.notice_message = c(queries._NOTICE_MESSAGE_ACTION)
        self.digest_lists = c(queries._DIGEST_LISTS)
        self.latest_decision = c(queries._LATEST_DECISION)
        # The card's reads (``Reads``).
        self.card_for_action = c(queries._CARD_FOR_ACTION)
        self.latest_outbox = c(queries._LATEST_OUTBOX)
        self.latest_confirmed = c(queries._LATEST_CONFIRMED)
        self.latest = c(queries._LATEST)
        self.card_shown = c(queries._CARD_SHOWN)
        self.endorsements = c(queries._ENDORSEMENTS)
        self.watches_for = c(queries._WATCHES_FOR)
        # Statements with IN lists (compiled per length) and any other: by the cache.
        self.cache = _Cache(dialect)


_detached = queries.as_loaded


# ---- one connection's statements, whatever the driver ----------------------------------------


class _Conn(Protocol):
    async def raw(self, q: _Compiled, params: dict[str, Any]) -> Sequence[Any] | None: ...

    async def one(self, q: _Compiled, params: dict[str, Any]) -> dict[str, Any] | None: ...

    async def rows(self, q: _Compiled, params: dict[str, Any]) -> list[dict[str, Any]]: ...

    async def scalar(self, q: _Compiled, params: dict[str, Any]) -> Any: ...

    async def rowcount(self, q: _Compiled, params: dict[str, Any]) -> int: ...

    async def many(self, q: _Compiled, params: Sequence[dict[str, Any]]) -> None: ...

    async def raws(self, q: _Compiled, params: dict[str, Any]) -> list[Sequence[Any]]: ...


async def begin_decision(session: AsyncSession, *, strict: bool = False, **kwargs: Any) -> queries.Begun | Lost | Moved:
    """``queries.begin_decision``, saying why nothing was written: ``Moved`` where ``strict``
    and the action is no longer the version seen; else ``Lost``, with the action and the
    decision that won."""
    begun = await queries.begin_decision(session, strict=strict, **kwargs)
    if begun is not None:
        return begun
    if strict and kwargs.get("seen") is not None:
        return Moved()
    action_id = kwargs["action_id"]
    return Lost(
        await queries.get_action(session, action_id=action_id),
        await queries.latest_decision(session, action_id=action_id),
    )


class _Operations:
    """The ack path's reads and its write, on any ``_Conn`` (the drivers below)."""

    def __init__(self, statements: _Statements) -> None:
        self._q = self.statements = statements
        # Rows of actions a click's check read, as the driver returned them, newest last.
        self._recent: OrderedDict[int, Sequence[Any]] = OrderedDict()

    def kept(self, action_id: int) -> Action | None:
        raw = self._recent.pop(action_id, None)
        return _detached(Action, self._q.action.row(raw)) if raw is not None else None

    async def click_check(
        self, c: _Conn, *, action_id: int, channel: str | None, ts: str | None
    ) -> tuple[Action | None, bool]:
        q = self._q
        at_message = channel is not None and ts is not None
        params: dict[str, Any] = {"action_id": action_id, "channel": channel, "ts": ts}
        raw = await c.raw(q.action_card_at if at_message else q.action, params)
        if raw is None:
            self._recent.pop(action_id, None)
            return None, True
        card_at = bool(raw[-1]) if at_message else True
        raw = raw[:-1] if at_message else raw
        self._recent[action_id] = raw
        self._recent.move_to_end(action_id)
        if len(self._recent) > RECENT_ROWS:
            self._recent.popitem(last=False)
        action: Action = _detached(Action, q.action.row(raw))
        if card_at:  # its card (or no message to check)
            return action, True
        found = await c.one(q.notice_message, params)
        if found is not None and found["action_id"] == action_id:
            return action, True
        return action, await c.one(q.digest_lists, params) is not None

    async def action(self, c: _Conn, *, action_id: int) -> Action | None:
        self._recent.pop(action_id, None)
        row = await c.one(self._q.action, {"action_id": action_id})
        return _detached(Action, row) if row is not None else None


def _error(sql: str, e: BaseException) -> sa.exc.DBAPIError:
    """A driver's error as SQLAlchemy's (what the store's callers catch)."""
    return sa.exc.OperationalError(sql, None, e)


# ---- a session's exec, on the driver's connection -----------------------------------------


class _Cache:
    """Statements compiled for a driver, by statement and the parameters given (an INSERT
    compiles to the columns it is given), with the model a row is (a select of one entity).
    The store's statements are built once; one built per call is compiled per call (and kept
    a while only). A statement with IN lists given at run time is compiled once per
    combination of the lists' lengths."""

    MOST = 512

    def __init__(self, dialect: sa.Dialect) -> None:
        self.dialect = dialect
        self._kept: OrderedDict[tuple[Any, ...], tuple[_Compiled, Any]] = OrderedDict()
        # Statements found to have IN lists given at run time: their lists' names.
        self._expanding: OrderedDict[tuple[Any, ...], tuple[str, ...]] = OrderedDict()

    def get(self, stmt: Any, params: dict[str, Any]) -> tuple[_Compiled, Any]:
        base = (stmt, tuple(params))
        lists = self._expanding.get(base)
        key = base if lists is None else (*base, tuple(len(params[n]) for n in lists))
        found = self._kept.get(key)
        if found is not None:
            self._kept.move_to_end(key)
            return found
        keys = list(params) if isinstance(stmt, sa.Insert) and stmt.select is None else None
        if lists is None:
            compiled = _Compiled(stmt, self.dialect, column_keys=keys)
            if "__[POSTCOMPILE_" in compiled.sql:
                lists = tuple(name for name, value in params.items() if isinstance(value, list | tuple))
                self._keep(self._expanding, base, lists)
                key = (*base, tuple(len(params[n]) for n in lists))
        if lists is not None:
            # Compiled for these lengths; the values bound are placeholders (each run binds its own).
            placeholders = {**dict.fromkeys(params), **{n: [None] * len(params[n]) for n in lists}}
            compiled = _Compiled(_with_values(stmt, placeholders), self.dialect, expanded=True, column_keys=keys)
        found = (compiled, _entity(stmt))
        self._keep(self._kept, key, found)
        return found

    def _keep(self, kept: OrderedDict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> None:
        kept[key] = value
        if len(kept) > self.MOST:
            kept.popitem(last=False)


def _entity(stmt: Any) -> tuple[tuple[type[SQLModel], int], ...] | None:
    """The models a select of entities returns, each with its number of columns, in order
    (None: rows of values)."""
    if not isinstance(stmt, sa.Select):
        return None
    models = [d.get("expr") for d in stmt.column_descriptions]
    if not all(isinstance(m, type) and issubclass(m, SQLModel) for m in models):
        return None
    return tuple((m, len(m.__table__.columns)) for m in models)


def _models(entities: tuple[tuple[type[SQLModel], int], ...], keys: tuple[str, ...], values: tuple[Any, ...]) -> Any:
    """A row of a select of entities: its model object, or a tuple of them."""
    out, start = [], 0
    for model, n in entities:
        out.append(_detached(model, dict(zip(keys[start : start + n], values[start : start + n], strict=True))))
        start += n
    return out[0] if len(out) == 1 else tuple(out)


class DriverResult:
    """What ``DriverSession.exec`` returns: the part of SQLAlchemy's result the store uses."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise sa.exc.MultipleResultsFound("more than one row")
        return self.first()

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise sa.exc.NoResultFound("no row") if not self._rows else sa.exc.MultipleResultsFound("more than one row")
        return self._rows[0]

    def scalar_one_or_none(self) -> Any:
        return _scalar(self.one_or_none())

    def scalar_one(self) -> Any:
        return _scalar(self.one())

    def scalar(self) -> Any:
        return _scalar(self.first())


def _scalar(row: Any) -> Any:
    """A row's first column (a row of one model, or of sqlmodel's one column, is that)."""
    return row[0] if isinstance(row, tuple) else row


class DriverSession:
    """The part of a session the store's plain statement work uses, ``exec(statement,
    params=...)`` (and ``get_bind().dialect``), run on a driver's connection: rows of models
    come back as detached objects, of one column (sqlmodel's ``select(X.c)``) as its values,
    others as tuples. Anything else of a session (``add``,
    ``get``, ``flush``) is not here: work that needs it runs in ``Database.write``."""

    __slots__ = ("_c", "_cache")

    def __init__(self, c: _Conn, cache: _Cache) -> None:
        self._c = c
        self._cache = cache

    @property
    def dialect(self) -> sa.Dialect:
        return self._cache.dialect

    def get_bind(self) -> DriverSession:
        return self

    async def exec(
        self, statement: Any, *, params: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> DriverResult:
        try:
            if isinstance(params, list):
                q, _model = self._cache.get(statement, params[0] if params else {})
                await self._c.many(q, params)
                return DriverResult([], len(params))
            given = params or {}
            q, model = self._cache.get(statement, given)
            if not q.keys:
                return DriverResult([], await self._c.rowcount(q, given))
            raws = await self._c.raws(q, given)
        except _PG_ERRORS as e:
            raise _error(str(statement), e) from e
        if model is not None:
            rows = [_models(model, q.keys, q.values(raw)) for raw in raws]
        elif isinstance(statement, SelectOfScalar):  # sqlmodel's select of one column: its values
            rows = [q.values(raw)[0] for raw in raws]
        else:
            rows = [q.values(raw) for raw in raws]
        return DriverResult(rows, len(rows))


def _as_session(driver: DriverSession) -> AsyncSession:
    """For the store's functions, typed for a session: they use only what ``DriverSession`` has."""
    return cast(AsyncSession, driver)


def _columns(model: type[SQLModel]) -> tuple[str, ...]:
    return tuple(c.key for c in model.__table__.columns)  # type: ignore[attr-defined]


# The models ``queries._LATEST`` and ``queries._CARD_SHOWN`` select, in order, with their columns' names.
_LATEST_ROWS = ((Decision, _columns(Decision)), (Outbox, _columns(Outbox)), (Decision, _columns(Decision)))
_CARD_SHOWN_ROWS = ((Card, _columns(Card)), (Action, _columns(Action)), *_LATEST_ROWS)


def _objects(layout: Sequence[tuple[type[SQLModel], tuple[str, ...]]], values: Sequence[Any]) -> list[Any]:
    """A row of several models' columns (``layout``) as their objects; None for a model whose
    columns are all missing (an outer join that found no row: its id is NULL)."""
    found, start = [], 0
    for model, keys in layout:
        row = values[start : start + len(keys)]
        found.append(_detached(model, dict(zip(keys, row, strict=True))) if row[0] is not None else None)
        start += len(keys)
    return found


class _DriverReads:
    """``Reads`` on a driver's connection: rows as detached model objects."""

    __slots__ = ("_c", "_q")

    def __init__(self, c: _Conn, statements: _Statements) -> None:
        self._c = c
        self._q = statements

    async def _first(self, model: type[_M], q: _Compiled, params: dict[str, Any]) -> _M | None:
        row = await self._c.one(q, params)
        return _detached(model, row) if row is not None else None

    async def _all(self, model: type[_M], q: _Compiled, params: dict[str, Any]) -> list[_M]:
        return [_detached(model, row) for row in await self._c.rows(q, params)]

    async def action(self, *, action_id: int) -> Action | None:
        return await self._first(Action, self._q.action, {"action_id": action_id})

    async def card_for_action(self, *, action_id: int) -> Card | None:
        return await self._first(Card, self._q.card_for_action, {"action_id": action_id})

    async def latest_decision(self, *, action_id: int) -> Decision | None:
        return await self._first(Decision, self._q.latest_decision, {"action_id": action_id})

    async def latest_outbox(self, *, action_id: int) -> Outbox | None:
        return await self._first(Outbox, self._q.latest_outbox, {"action_id": action_id})

    async def latest_confirmed(self, *, action_id: int) -> Decision | None:
        return await self._first(Decision, self._q.latest_confirmed, {"action_id": action_id})

    async def latest(self, *, action_id: int) -> queries.Latest:
        q = self._q.latest
        raw = await self._c.raw(q, {"action_id": action_id})
        return (
            queries.Latest(*_objects(_LATEST_ROWS, q.values(raw)))
            if raw is not None
            else queries.Latest(None, None, None)
        )

    async def card_shown(self, *, action_id: int) -> tuple[Card, Action, queries.Latest] | None:
        q = self._q.card_shown
        raw = await self._c.raw(q, {"action_id": action_id})
        if raw is None:
            return None
        card, action, *latest = _objects(_CARD_SHOWN_ROWS, q.values(raw))
        return card, action, queries.Latest(*latest)

    async def endorsements(self, *, action_id: int) -> list[Decision]:
        return await self._all(Decision, self._q.endorsements, {"action_id": action_id})

    async def watches_for(self, *, action_id: int) -> Sequence[Watch]:
        return await self._all(Watch, self._q.watches_for, {"p_action": action_id})

    async def posted_notices(self, *, action_id: int, kinds: Iterable[str]) -> Sequence[Notice]:
        params: dict[str, Any] = {"p_action": action_id, "p_kinds": list(kinds)}
        return await self._all(Notice, self._in(queries._POSTED_NOTICES, params), params) if params["p_kinds"] else []

    async def notices_by_id(self, *, notice_ids: Sequence[int]) -> list[Notice]:
        params = {"p_ids": list(notice_ids)}
        return await self._all(Notice, self._in(queries._NOTICES_BY_ID, params), params) if notice_ids else []

    def _in(self, stmt: Any, params: dict[str, Any]) -> _Compiled:
        return self._q.cache.get(stmt, params)[0]


# ---- on the driver's own connection -----------------------------------------------------------


class _DriverPath:
    """The four operations, each run by ``_run`` on a connection of the path's own, in a
    write transaction where ``write``."""

    _ops: _Operations
    # Whether one statement may write a whole decision (``queries.begin_decision_in_one``).
    _IN_ONE = False

    async def _run(self, work: Callable[[_Conn], Awaitable[_R]], *, write: bool) -> _R:
        """``work`` on a connection of the path's own, in a write transaction where ``write``."""
        raise NotImplementedError

    def writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError

    async def click_check(self, *, action_id: int, channel: str | None, ts: str | None) -> tuple[Action | None, bool]:
        return await self._run(
            lambda c: self._ops.click_check(c, action_id=action_id, channel=channel, ts=ts), write=False
        )

    def kept(self, *, action_id: int) -> Action | None:
        return self._ops.kept(action_id)

    async def action(self, *, action_id: int) -> Action | None:
        return await self._run(lambda c: self._ops.action(c, action_id=action_id), write=False)

    async def begin_decision(self, **kwargs: Any) -> queries.Begun | Lost | Moved:
        seen = kwargs.get("seen")
        if self._IN_ONE and seen is not None:
            # The common case, from the version a click's check read: one statement. In a
            # transaction all the same: a bot that dies before its COMMIT leaves nothing (a
            # statement alone would still commit, once a lock it waits for is released).
            one = {k: v for k, v in kwargs.items() if k != "strict"}
            begun = await self._run(lambda c: queries.begin_decision_in_one(self._session(c), **one), write=True)
            if begun is not None:
                return begun
            if kwargs.get("strict"):
                return Moved()
            kwargs["seen"] = None  # it moved on: decide from the row as it now is
        return await self._run(lambda c: begin_decision(self._session(c), **kwargs), write=True)

    def _session(self, c: _Conn) -> AsyncSession:
        return _as_session(DriverSession(c, self._ops.statements.cache))

    async def read(self, work: Callable[[Reads], Awaitable[_R]]) -> _R:
        return await self._run(lambda c: work(_DriverReads(c, self._ops.statements)), write=False)


# ---- SQLite: one sqlite3 connection, used without yielding inside a transaction ---------------


class _SQLiteConn:
    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def raw(self, q: _Compiled, params: dict[str, Any]) -> Sequence[Any] | None:
        found: Sequence[Any] | None = self._run(q, params).fetchone()
        return found

    async def one(self, q: _Compiled, params: dict[str, Any]) -> dict[str, Any] | None:
        raw = await self.raw(q, params)
        return q.row(raw) if raw is not None else None

    async def rows(self, q: _Compiled, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [q.row(raw) for raw in await self.raws(q, params)]

    async def raws(self, q: _Compiled, params: dict[str, Any]) -> list[Sequence[Any]]:
        found: list[Sequence[Any]] = self._run(q, params).fetchall()
        return found

    async def scalar(self, q: _Compiled, params: dict[str, Any]) -> Any:
        raw = await self.raw(q, params)
        return raw[0] if raw is not None else None

    async def rowcount(self, q: _Compiled, params: dict[str, Any]) -> int:
        return self._run(q, params).rowcount

    async def many(self, q: _Compiled, params: Sequence[dict[str, Any]]) -> None:
        try:
            self._db.executemany(q.sql, [q.args(p) for p in params])
        except sqlite3.Error as e:
            raise _error(q.sql, e) from e

    def _run(self, q: _Compiled, params: dict[str, Any]) -> sqlite3.Cursor:
        try:
            return self._db.execute(q.sql, q.args(params))
        except sqlite3.Error as e:
            raise _error(q.sql, e) from e


# ``store.db._immediate``: opens a write transaction with the opener given, retrying (with
# sleeps, never blocking the loop) while another process holds SQLite's write lock.
Immediate = Callable[[Callable[[Any], Awaitable[Any]]], AbstractAsyncContextManager[Any]]


class SQLiteHotPath(_DriverPath):
    """``open_connection`` opens a configured sqlite3 connection (autocommit: BEGIN is ours);
    ``writers`` is the process's writer queue; ``immediate`` is how the store opens a write
    transaction; ``count(write)`` tallies a transaction."""

    def __init__(
        self,
        *,
        dialect: sa.Dialect,
        open_connection: Callable[[], sqlite3.Connection],
        writers: Any,
        immediate: Immediate,
        count: Callable[[bool], None],
    ) -> None:
        configure_mappers()
        self._ops = _Operations(_Statements(dialect))
        self._cache = self._ops.statements.cache
        self._open = open_connection
        self._db: sqlite3.Connection | None = None
        self._writers = writers
        self._immediate = immediate
        self._count = count

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._open()
            except sqlite3.Error as e:
                raise _error("connect", e) from e
        return self._db

    async def _run(self, work: Callable[[_Conn], Awaitable[_R]], *, write: bool) -> _R:
        self._count(write)
        if not write:
            db = self._conn()
            self._exec(db, "BEGIN")
            try:
                return await work(_SQLiteConn(db))
            finally:
                self._exec(db, "ROLLBACK")  # nothing was written; ends the read's snapshot
        async with self._writers.hold(urgent=True), self._immediate(self._begin_immediate) as db:
            try:
                done = await work(_SQLiteConn(db))
            except BaseException:
                self._exec(db, "ROLLBACK")
                raise
            self._exec(db, "COMMIT")
            return done

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        self._count(True)
        async with self._writers.hold(urgent=False), self._immediate(self._begin_immediate) as db:
            try:
                yield _as_session(DriverSession(_SQLiteConn(db), self._cache))
            except BaseException:
                self._exec(db, "ROLLBACK")
                raise
            self._exec(db, "COMMIT")

    async def _begin_immediate(self, _stack: Any) -> sqlite3.Connection:
        db = self._conn()
        self._exec(db, "BEGIN IMMEDIATE")
        return db

    @staticmethod
    def _exec(db: sqlite3.Connection, sql: str) -> None:
        try:
            db.execute(sql)
        except sqlite3.Error as e:
            raise _error(sql, e) from e

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# ---- PostgreSQL: asyncpg, from a pool of this path's own ---------------------------------------


class _PgConn:
    __slots__ = ("_db",)

    def __init__(self, db: Any) -> None:
        self._db = db

    async def raw(self, q: _Compiled, params: dict[str, Any]) -> Sequence[Any] | None:
        found = await self._db.fetchrow(q.sql, *q.args(params))
        return tuple(found) if found is not None else None

    async def one(self, q: _Compiled, params: dict[str, Any]) -> dict[str, Any] | None:
        raw = await self.raw(q, params)
        return q.row(raw) if raw is not None else None

    async def rows(self, q: _Compiled, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [q.row(raw) for raw in await self.raws(q, params)]

    async def raws(self, q: _Compiled, params: dict[str, Any]) -> list[Sequence[Any]]:
        return [tuple(raw) for raw in await self._db.fetch(q.sql, *q.args(params))]

    async def scalar(self, q: _Compiled, params: dict[str, Any]) -> Any:
        return await self._db.fetchval(q.sql, *q.args(params))

    async def rowcount(self, q: _Compiled, params: dict[str, Any]) -> int:
        status: str = await self._db.execute(q.sql, *q.args(params))  # "UPDATE 1"
        return int(status.rsplit(" ", 1)[-1])

    async def many(self, q: _Compiled, params: Sequence[dict[str, Any]]) -> None:
        await self._db.executemany(q.sql, [q.args(p) for p in params])


async def _pg_codecs(conn: Any) -> None:
    # JSON columns as SQLAlchemy's asyncpg dialect has them: its bind conversion writes the
    # text, its result conversion expects the value decoded.
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=lambda v: v, decoder=json.loads, schema="pg_catalog", format="text")


# A connection the server dropped (the work is run again on a new one), and any other error.
# (InternalClientError: a connection the server has just dropped, its protocol still busy with
# the server's last word, "cannot switch to state ...; another operation is in progress".)
_PG_DROPPED = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
)
_PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


async def _pg_keep(_conn: Any) -> None:
    """A connection goes back to the pool as it is: this path changes no session state (no
    SET, LISTEN or advisory lock), and asyncpg still rolls back a transaction left open.
    (asyncpg's default reset is a round trip to the server at every release.)"""


class PostgresHotPath(_DriverPath):
    """``connect_args``: asyncpg's arguments for the database (from SQLAlchemy's dialect)."""

    _IN_ONE = True

    def __init__(
        self,
        *,
        dialect: sa.Dialect,
        connect_args: tuple[Sequence[Any], dict[str, Any]],
        count: Callable[[bool], None],
        size: int,
    ) -> None:
        configure_mappers()
        self._ops = _Operations(_Statements(dialect))
        self._cache = self._ops.statements.cache
        self._connect_args = connect_args
        self._count = count
        self._size = size
        self._pool: Any = None
        self._opening: asyncio.Lock | None = None

    async def _get_pool(self) -> Any:
        if self._pool is None:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if self._pool is None:
                    args, kwargs = self._connect_args
                    try:
                        self._pool = await asyncpg.create_pool(
                            *args,
                            **kwargs,
                            min_size=1,
                            max_size=self._size,
                            init=_pg_codecs,
                            reset=_pg_keep,
                        )
                    except _PG_ERRORS as e:
                        raise _error("connect", e) from e
        return self._pool

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncSession]:
        self._count(True)
        pool = await self._get_pool()
        try:
            async with pool.acquire() as db, db.transaction():
                yield _as_session(DriverSession(_PgConn(db), self._cache))
        except _PG_ERRORS as e:
            raise _error("asyncpg", e) from e

    async def _run(self, work: Callable[[_Conn], Awaitable[_R]], *, write: bool) -> _R:
        """``work`` on a pooled connection (in a transaction where it writes). A connection
        the server dropped while it sat in the pool (a restart, a failover, an administrator)
        is replaced and the work run again, once: safe for a write too, as a decision's
        compare-and-set cannot apply twice (a retry of a write that did commit loses, and
        says that this decision won)."""
        for attempt in (1, 2):
            self._count(write)
            pool = await self._get_pool()
            try:
                async with pool.acquire() as db:
                    try:
                        if not write:
                            # Read committed: each statement sees what was committed when it
                            # began, so a read needs no BEGIN and COMMIT of its own.
                            return await work(_PgConn(db))
                        async with db.transaction():
                            return await work(_PgConn(db))
                    except _PG_DROPPED:
                        db.terminate()  # not back into the pool as it is: the pool opens a new one
                        raise
                    except sa.exc.DBAPIError as e:
                        if isinstance(e.orig, _PG_DROPPED):
                            db.terminate()
                        raise
            except _PG_DROPPED as e:
                if attempt == 2:
                    raise _error("asyncpg", e) from e
            except _PG_ERRORS as e:
                raise _error("asyncpg", e) from e
            except sa.exc.DBAPIError as e:  # from a DriverSession's statement
                if attempt == 2 or not isinstance(e.orig, _PG_DROPPED):
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_S)  # lets a statement under way finish
            except TimeoutError:
                pool.terminate()


# ---- through sessions (plain aiosqlite, SQLite in memory) --------------------------------------


class SessionHotPath:
    """The same operations through the store's sessions, where the driver's own connection
    cannot be used. ``read``/``write``: ``Database.read`` and ``Database.write``."""

    def __init__(
        self,
        *,
        read: Callable[[], Any],
        write: Callable[[], Any],
        writing: Callable[[], AbstractAsyncContextManager[AsyncSession]] | None = None,
    ) -> None:
        self._read = read
        self._write = write
        self._writing = writing or write

    def writing(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self._writing()

    async def click_check(self, *, action_id: int, channel: str | None, ts: str | None) -> tuple[Action | None, bool]:
        async with self._read() as session:
            action = await queries.get_action(session, action_id=action_id)
            shown = (
                await queries.message_shows(session, channel=channel, ts=ts, action_id=action_id)
                if action is not None and channel is not None and ts is not None
                else True
            )
        return action, shown

    def kept(self, *, action_id: int) -> Action | None:
        return None  # nothing is kept from a click's check here: a decision reads first

    async def action(self, *, action_id: int) -> Action | None:
        async with self._read() as session:
            return await queries.get_action(session, action_id=action_id)

    async def begin_decision(self, **kwargs: Any) -> queries.Begun | Lost | Moved:
        async with self._write() as session:
            return await begin_decision(session, **kwargs)

    async def read(self, work: Callable[[Reads], Awaitable[_R]]) -> _R:
        async with self._read() as session:
            return await work(SessionReads(session))

    async def close(self) -> None:
        return None
