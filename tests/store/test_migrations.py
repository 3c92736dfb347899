"""The schema is Alembic's: migrations build exactly the models' tables, keep the audit trail
append-only, run once when replicas start together, and a schema that does not fit this
code (newer, or not migrated with AUTO_MIGRATE=false) is a clear ``SchemaError``."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel, select

import app
from app import Signoff
from store.db import MIGRATION_LOCK_KEY, Database, SchemaError, alembic_config, head_revision
from store.models import Action, Card, Decision, Notice
from tests.conftest import BOT_TOKEN, CHANNEL, FLOKIT_KEY, SIGNING_SECRET, make_settings
from tests.fakes.flokit import FakeFloKit
from tests.fakes.paths import REPO_ROOT
from tests.fakes.slack_api import FakeSlack

REVISIONS = [rev.revision for rev in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))]
APPEND_ONLY = "decisions is an append-only audit trail"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
async def db(database_url: str) -> Any:
    database = Database(database_url)
    yield database
    await database.dispose()


async def schema_diff(db: Database) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), SQLModel.metadata)
        )


async def run_alembic(db: Database, fn: Callable[..., Any], *args: Any) -> None:
    """Run an Alembic command (downgrade, stamp…) on the database, as a developer would."""

    def run(sync: sa.Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync
        fn(config, *args)

    async with db.engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()


async def execute(db: Database, sql: str) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(sa.text(sql))
        await conn.commit()


async def add_action(db: Database) -> int:
    async with db.write() as session:
        action = Action(source="flokit", external_id="act_1", status="ready", version=1, first_seen_at=NOW)
        session.add(action)
        await session.flush()
        assert action.id is not None
        session.add(Decision(action_id=action.id, event="discovered", actor="upstream", to_status="ready", at=NOW))
        return action.id


def applied(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "signoff.store" and r.getMessage().startswith("applied")]


# ---- the schema ------------------------------------------------------------------------


def test_revisions_are_one_line_starting_at_0001() -> None:
    assert REVISIONS[:2] == ["0001", "0002"]
    assert head_revision() == REVISIONS[-1]


async def test_migrations_build_exactly_the_models_tables(db: Database) -> None:
    assert await db.schema_revision() is None
    await db.migrate()
    assert await db.schema_revision() == head_revision()
    assert await schema_diff(db) == []
    await db.check_schema()


async def test_migrations_downgrade_to_nothing_and_back(db: Database) -> None:
    await db.migrate()
    await add_action(db)
    await run_alembic(db, command.downgrade, "base")
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    assert set(tables) <= {"alembic_version"}
    assert await db.schema_revision() is None
    await db.migrate()
    assert await schema_diff(db) == []


async def test_0010_settles_the_notices_owed_by_held_cards_as_skipped(db: Database) -> None:
    """Before 0010 a held card's actions were owed thread notices that could never be posted;
    the migration settles those (and only those) as skipped."""
    await run_alembic(db, command.upgrade, "0009")
    held, shown = await add_action(db), 0
    async with db.write() as session:
        other = Action(source="flokit", external_id="act_2", status="approved", version=1, first_seen_at=NOW)
        session.add(other)
        await session.flush()
        assert other.id is not None
        shown = other.id
        session.add(Card(action_id=held, channel=CHANNEL, state="held"))
        session.add(Card(action_id=shown, channel=CHANNEL, state="posted", ts="1.000001"))
        for action_id, key in ((held, "held"), (shown, "shown")):
            session.add(Notice(
                action_id=action_id, key=key, kind="status", payload={}, state="pending", next_attempt_at=NOW, created_at=NOW,
            ))
    await db.migrate()
    async with db.read() as session:
        states = {n.key: n.state for n in await session.exec(select(Notice))}
    assert states == {"held": "skipped", "shown": "pending"}


# ---- the audit trail is append-only ------------------------------------------------------


async def test_the_audit_trail_refuses_update_and_delete_but_takes_inserts(db: Database) -> None:
    await db.migrate()
    action_id = await add_action(db)

    with pytest.raises(sa.exc.IntegrityError, match=APPEND_ONLY):
        async with db.write() as session:
            await session.exec(sa.update(Decision).values(actor="someone else"))
    with pytest.raises(sa.exc.IntegrityError, match=APPEND_ONLY):
        async with db.write() as session:
            await session.exec(sa.delete(Decision))

    async with db.write() as session:
        session.add(Decision(action_id=action_id, event="requested", op="approve", actor="U0APPROVER", at=NOW))
    async with db.read() as session:
        rows = (await session.exec(sa.select(Decision.event, Decision.actor))).all()
    assert sorted(tuple(r) for r in rows) == [("discovered", "upstream"), ("requested", "U0APPROVER")]


async def test_downgrading_0002_lifts_the_append_only_rule(db: Database) -> None:
    await db.migrate()
    await add_action(db)
    await run_alembic(db, command.downgrade, "0001")
    async with db.write() as session:
        await session.exec(sa.update(Decision).values(actor="fixed by hand"))
    await db.migrate()
    with pytest.raises(sa.exc.IntegrityError, match=APPEND_ONLY):
        async with db.write() as session:
            await session.exec(sa.delete(Decision))


# ---- migrating under a lock ------------------------------------------------------------


async def test_two_replicas_migrating_together_apply_each_migration_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="signoff.store")
    first, second = Database(database_url), Database(database_url)
    try:
        await asyncio.gather(first.migrate(), second.migrate())
        assert await first.schema_revision() == await second.schema_revision() == head_revision()
        assert [m.split(":")[0] for m in applied(caplog)] == [f"applied revision {rev}" for rev in REVISIONS]
        assert await schema_diff(first) == []
    finally:
        await first.dispose()
        await second.dispose()


@pytest.mark.parametrize("database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
async def test_on_postgresql_a_migration_waits_for_the_advisory_lock(database_url: str) -> None:
    holder, db = Database(database_url), Database(database_url)
    try:
        async with holder.engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.commit()
            migrating = asyncio.ensure_future(db.migrate())

            async def waiting() -> bool:
                result = await conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    )
                )
                await conn.commit()
                return bool(result.scalar_one())

            deadline = asyncio.get_running_loop().time() + 10
            while not await waiting():
                assert not migrating.done(), migrating
                assert asyncio.get_running_loop().time() < deadline, "migrate() never waited for the lock"
                await asyncio.sleep(0.01)
            assert await db.schema_revision() is None  # nothing done while the lock is held elsewhere
            await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.commit()
        await asyncio.wait_for(migrating, timeout=20)
        assert await db.schema_revision() == head_revision()
        # ...and it let go of the lock afterwards.
        async with holder.engine.connect() as conn:
            got = await conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            assert got.scalar_one() is True
    finally:
        await holder.dispose()
        await db.dispose()


# ---- schemas that do not fit this code ---------------------------------------------------


async def test_a_schema_newer_than_this_code_is_a_clear_error(db: Database) -> None:
    await db.migrate()
    await execute(db, "UPDATE alembic_version SET version_num = '9999_from_the_future'")
    expected = (
        f"database schema is at revision 9999_from_the_future, newer than this Signoff (head {head_revision()}): "
        "upgrade Signoff"
    )
    with pytest.raises(SchemaError, match=re.escape(expected)):
        await db.migrate()
    with pytest.raises(SchemaError, match=re.escape(expected)):
        await db.check_schema()


async def test_without_auto_migrate_an_unmigrated_database_refuses_to_start(
    database_url: str, flokit: FakeFloKit, slack: FakeSlack
) -> None:
    settings = make_settings(flokit=flokit, slack=slack, database_url=database_url, auto_migrate=False)
    bot = Signoff(settings)
    try:
        with pytest.raises(SchemaError, match=r"no Signoff schema.*run `python app.py migrate`"):
            await bot.start(host="127.0.0.1")
    finally:
        await bot.stop()
    assert slack.calls_to("chat.postMessage") == []

    # One migration behind is refused too, naming both revisions.
    db = Database(database_url)
    try:
        await run_alembic(db, command.upgrade, REVISIONS[-2])
        with pytest.raises(SchemaError, match=rf"revision {REVISIONS[-2]}, and this Signoff needs revision {REVISIONS[-1]}"):
            await db.check_schema()
        await db.migrate()
    finally:
        await db.dispose()

    bot = Signoff(settings)
    try:
        await bot.start(host="127.0.0.1")  # migrated by `python app.py migrate`: starts
    finally:
        await bot.stop()


# ---- the command line --------------------------------------------------------------------


def _env(database_url: str, **values: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "FLOKIT_", "DATABASE_URL", "APPROVERS", "AUTO_MIGRATE"))
    }
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_CHANNEL=CHANNEL,
        APPROVERS="U0APPROVER", FLOKIT_API_KEY=FLOKIT_KEY, DATABASE_URL=database_url, **values,
    )
    return env


async def test_migrate_command_prints_the_head_and_runs_once_for_two_processes(database_url: str, tmp_path: Any) -> None:
    async def migrate() -> tuple[int | None, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO_ROOT / "app.py"), "migrate", cwd=tmp_path, env=_env(database_url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode, out.decode(), err.decode()

    results = await asyncio.gather(migrate(), migrate())
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert out.strip() == f"database schema at revision {head_revision()} (head)"
    logs = "".join(err for _code, _out, err in results)
    for rev in REVISIONS:
        assert logs.count(f"applied revision {rev}:") == 1, logs[-3000:]
    for secret in (BOT_TOKEN, SIGNING_SECRET, FLOKIT_KEY):
        assert secret not in logs


def test_unknown_commands_print_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["migrat"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("signoff: unknown command 'migrat'\n") and "usage: python app.py [COMMAND]" in err


def test_a_schema_error_on_start_or_migrate_exits_2_with_the_message(
    database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for key, value in _env(database_url, AUTO_MIGRATE="false", SLACK_API_URL="http://127.0.0.1:9/api/",
                           FLOKIT_API_URL="http://127.0.0.1:9", PORT="0").items():
        monkeypatch.setenv(key, value)
    assert app.main([]) == 2
    assert "run `python app.py migrate`" in capsys.readouterr().err

    async def from_the_future() -> None:
        db = Database(database_url)
        try:
            await db.migrate()
            await execute(db, "UPDATE alembic_version SET version_num = 'ffff'")
        finally:
            await db.dispose()

    asyncio.run(from_the_future())
    assert app.main(["migrate"]) == 2
    assert "signoff: database schema is at revision ffff, newer than this Signoff" in capsys.readouterr().err


async def test_a_new_sqlite_file_switches_to_wal_while_another_process_holds_it(tmp_path: Any) -> None:
    # Switching a file to WAL needs it to itself, and SQLite refuses at once (no busy handler)
    # while another process writes: two replicas starting on a new file hit exactly this.
    import sqlite3
    import threading

    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_process (x)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    db = Database(f"sqlite:///{path}")
    try:
        await db.ping()
        async with db.engine.connect() as conn:
            mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
        assert mode == "wal"
    finally:
        release.join()
        holder.close()
        await db.dispose()


async def test_urgent_sqlite_writers_go_before_queued_background_ones() -> None:
    from store.db import WriterQueue

    queue, order = WriterQueue(), []
    started = asyncio.Event()

    async def writer(name: str, urgent: bool) -> None:
        async with queue.hold(urgent=urgent):
            order.append(name)
            if name == "first":
                started.set()
                await asyncio.sleep(0.05)

    first = asyncio.ensure_future(writer("first", False))
    await started.wait()
    waiting = [asyncio.ensure_future(writer(f"job{i}", False)) for i in range(3)]
    await asyncio.sleep(0)
    clicks = [asyncio.ensure_future(writer(f"click{i}", True)) for i in range(2)]
    await asyncio.gather(first, *waiting, *clicks)
    assert order == ["first", "click0", "click1", "job0", "job1", "job2"]
