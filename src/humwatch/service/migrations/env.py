"""Alembic's environment for the service's store: run by :meth:`humwatch.service.store.Store.migrate`
with the store's engine (``config.attributes["engine"]``); there is no alembic.ini."""

from __future__ import annotations

from alembic import context

from humwatch.service.store import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # pragma: no cover - only reachable by running the alembic command by hand
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url"))


def _sqlite_foreign_keys(connection, on: bool) -> None:
    """SQLite changes a column by copying its table into a new one and dropping the old: with
    foreign keys enforced, dropping a table that other rows point to (alerts, by notifications)
    fails. So they are off while migrating, outside any transaction (where SQLite honours the
    pragma), and on again after; the copy keeps every id, so every reference still holds."""
    if connection.dialect.name == "sqlite":
        connection.connection.driver_connection.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


with engine.connect() as connection:
    _sqlite_foreign_keys(connection, False)
    try:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite", compare_type=True
        )
        with context.begin_transaction():
            context.run_migrations()
    finally:
        _sqlite_foreign_keys(connection, True)
