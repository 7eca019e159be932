"""Users: their own limits (NULL: the server's default), download counters per user, and an index
for counting a user's running jobs when claiming.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIMITS = (
    ("requests_per_minute", sa.Integer()),
    ("burst", sa.Integer()),
    ("daily_download_quota", sa.BigInteger()),
    ("monthly_download_quota", sa.BigInteger()),
    ("max_concurrent_downloads", sa.Integer()),
    ("max_runtime_seconds", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for name, kind in _LIMITS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_table(
        "user_usage_counters",
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("downloads", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("period IN ('day', 'month')", name=op.f("ck_user_usage_counters_period")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_usage_counters_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "period", "period_start", name=op.f("pk_user_usage_counters")),
    )
    op.create_index("ix_downloads_owner_user_id_state", "downloads", ["owner_user_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_downloads_owner_user_id_state", table_name="downloads")
    op.drop_table("user_usage_counters")
    with op.batch_alter_table("users") as batch:
        for name, _ in reversed(_LIMITS):
            batch.drop_column(name)
