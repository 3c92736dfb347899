"""Alembic's environment for Signoff's schema.

``Database.migrate()`` (``python app.py migrate``, and the bot's start) runs this with its own
connection, already locked and inside a transaction, in ``config.attributes["connection"]``.

Developers can also use the ``alembic`` command with ``store/alembic.ini``, naming a database
with ``-x url=…`` (for example to autogenerate a new revision against a database at head):

    alembic -c store/alembic.ini -x url=sqlite:///dev.db revision --autogenerate --rev-id 0003 -m "…"

That path takes no lock and adopts no pre-migration schema: apply migrations to a real
deployment with ``python app.py migrate``.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlmodel import SQLModel

from store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from store.db import Database

config = context.config
target_metadata = SQLModel.metadata
log = logging.getLogger("signoff.store")


def _applied(ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]) -> None:
    # up_revision is typed as a Revision; it is the migration's Script, which has the doc.
    doc = getattr(step.up_revision, "doc", None)
    log.info("%s revision %s: %s", "applied" if step.is_upgrade else "reverted", step.up_revision_id, doc)


def _configure(**kwargs: Any) -> None:
    dialect = (
        kwargs["connection"].dialect.name if "connection" in kwargs else sa.make_url(kwargs["url"]).get_backend_name()
    )
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",  # SQLite alters most things by copying the table
        compare_type=True,  # UTCDateTime compares as the DateTime(timezone=True) it stores as
        on_version_apply=_applied,
        **kwargs,
    )


def _run(connection: sa.Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("name the database: alembic -c store/alembic.ini -x url=sqlite:///dev.db …")
    return url


async def _run_online(url: str) -> None:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await db.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    if config.config_file_name is not None:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        _configure(url=_url(), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_online(_url()))
