"""Persistence: the models, the session, and the queries (the only place SQL is written), by what they store.

credentials (the hot path's lookups), api_keys, organizations (and users), rulesets, platform_apis,
console_sessions, and trail (the audit trail and the change feed). Each persists what it is given: secrets
come hashed from keyhouse.keys, credit rules from keyhouse.credits, and wake-ups are keyhouse.changes'.
"""
