"""Retired secrets (a rerolled-away secret is REVOKED, and tokens die with their secret), and the folded
forms of the filterable text columns (case-insensitive filters that fold Unicode alike on every database).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from keyhouse.store.models import UtcDateTime, fold

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

FOLDED = {"id": "id_folded", "description": "description_folded", "api_user": "api_user_folded"}
BATCH = 5000


def upgrade() -> None:
    # First: SQLite's batch mode copies the table, and would lose these (expression indexes do not reflect).
    for column in FOLDED:
        op.drop_index(f"ix_api_keys_lower_{column}", table_name="api_keys")
    # Keys inside a reroll's grace window keep their previous secret, as a retired secret of version 0
    # (every key is at 1). Read before api_keys is altered, and written after: on SQLite an alteration
    # copies and drops the table, and dropping it would cascade to the rows of a table that refers to it.
    keys = sa.table("api_keys", sa.column("pk", sa.Integer), sa.column("previous_key_hash"),
                    sa.column("previous_valid_until", UtcDateTime), sa.column("updated_at", UtcDateTime))
    previous = op.get_bind().execute(sa.select(keys).where(keys.c.previous_key_hash.is_not(None))).all()
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("secret_version", sa.Integer(), nullable=False, server_default="1"))
        for folded in FOLDED.values():
            batch.add_column(sa.Column(folded, sa.Text(), nullable=True))
        batch.drop_column("previous_key_hash")
        batch.drop_column("previous_valid_until")
    _fill_folded()
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("id_folded", existing_type=sa.Text(), nullable=False)
        batch.alter_column("description_folded", existing_type=sa.Text(), nullable=False)
    for column in FOLDED:
        op.create_index(f"ix_api_keys_folded_{column}", "api_keys", ["organization_id", FOLDED[column]])
    retired = op.create_table(
        "retired_secrets",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("retired_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("valid_until", UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["key_pk"], ["api_keys.pk"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    op.create_index("ix_retired_secrets_key_version", "retired_secrets", ["key_pk", "version"])
    if previous:
        op.bulk_insert(retired, [{"key_hash": row.previous_key_hash, "key_pk": row.pk, "version": 0,
                                  "retired_at": row.updated_at,
                                  "valid_until": row.previous_valid_until or row.updated_at} for row in previous])


def _fill_folded() -> None:
    """The folded forms of the keys already stored, in batches (Python folds; no database does alike)."""
    bind = op.get_bind()
    keys = sa.table("api_keys", sa.column("pk", sa.Integer), *(sa.column(c) for c in (*FOLDED, *FOLDED.values())))
    update = keys.update().where(keys.c.pk == sa.bindparam("b_pk")).values(
        **{folded: sa.bindparam(f"b_{folded}") for folded in FOLDED.values()})
    last = 0
    while True:
        rows = bind.execute(sa.select(keys.c.pk, *(keys.c[c] for c in FOLDED)).where(keys.c.pk > last)
                            .order_by(keys.c.pk).limit(BATCH)).all()
        if not rows:
            return
        bind.execute(update, [{"b_pk": row.pk, **{f"b_{FOLDED[c]}": fold(getattr(row, c)) for c in FOLDED}}
                              for row in rows])
        last = rows[-1].pk


def downgrade() -> None:
    for column in FOLDED:
        op.drop_index(f"ix_api_keys_folded_{column}", table_name="api_keys")
        op.create_index(f"ix_api_keys_lower_{column}", "api_keys", [sa.text("organization_id"),
                                                                    sa.text(f"lower({column})")])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("previous_key_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("previous_valid_until", UtcDateTime(timezone=True), nullable=True))
        for folded in FOLDED.values():
            batch.drop_column(folded)
        batch.drop_column("secret_version")
        batch.create_unique_constraint("api_keys_previous_key_hash_key", ["previous_key_hash"])
    op.drop_index("ix_retired_secrets_key_version", table_name="retired_secrets")
    op.drop_table("retired_secrets")
