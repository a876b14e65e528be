"""Alembic's environment: keyhouse passes a connection in (keyhouse.store.session.Store.upgrade)."""

from alembic import context

from keyhouse.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying
with context.begin_transaction():
    context.run_migrations()
