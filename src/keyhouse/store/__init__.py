"""Persistence: models, the session, and the queries (the only place SQL is written)."""
