"""Alembic migrations: the only way the schema changes (`keyhouse db upgrade`)."""
