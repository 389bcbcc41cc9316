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

with engine.connect() as connection:
    context.configure(
        connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite", compare_type=True
    )
    with context.begin_transaction():
        context.run_migrations()
