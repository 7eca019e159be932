"""Watches: followed items and collections, their items and what changed (core.watches).

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watches",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("owner_user_id", sa.String(length=26), nullable=False),
        sa.Column("api_key_id", sa.String(length=26), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("workshop_id", sa.BigInteger(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=256), server_default="", nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_message", sa.String(length=512), server_default="", nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("delete_removed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("next_check_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_check_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=512), server_default="", nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_watches_api_key_id_api_keys"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["owner_user_id"], ["users.id"], name=op.f("fk_watches_owner_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watches")),
    )
    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_watches_api_key_id"), ["api_key_id"], unique=False)
        batch_op.create_index(
            "ix_watches_owner_user_id_create_time", ["owner_user_id", "create_time"], unique=False
        )
        batch_op.create_index("ix_watches_state_next_check_time", ["state", "next_check_time"], unique=False)

    op.create_table(
        "watch_items",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("watch_id", sa.String(length=26), nullable=False),
        sa.Column("workshop_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(length=256), server_default="", nullable=False),
        sa.Column("content_handle", sa.BigInteger(), nullable=True),
        sa.Column("item_update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("unavailable_reason", sa.String(length=256), server_default="", nullable=False),
        sa.Column("download_id", sa.String(length=26), nullable=True),
        sa.ForeignKeyConstraint(
            ["download_id"],
            ["downloads.id"],
            name=op.f("fk_watch_items_download_id_downloads"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["watch_id"], ["watches.id"], name=op.f("fk_watch_items_watch_id_watches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_items")),
        sa.UniqueConstraint("watch_id", "workshop_id", name=op.f("uq_watch_items_watch_id_workshop_id")),
    )
    op.create_table(
        "watch_versions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("watch_id", sa.String(length=26), nullable=False),
        sa.Column("workshop_id", sa.BigInteger(), nullable=False),
        sa.Column("change", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=256), server_default="", nullable=False),
        sa.Column("content_handle", sa.BigInteger(), nullable=True),
        sa.Column("item_update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("download_id", sa.String(length=26), nullable=True),
        sa.Column("detail", sa.String(length=512), server_default="", nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["download_id"],
            ["downloads.id"],
            name=op.f("fk_watch_versions_download_id_downloads"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["watch_id"], ["watches.id"], name=op.f("fk_watch_versions_watch_id_watches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_versions")),
    )
    with op.batch_alter_table("watch_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_watch_versions_download_id"), ["download_id"], unique=False)
        batch_op.create_index(
            "ix_watch_versions_watch_id_create_time", ["watch_id", "create_time"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("watch_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_watch_versions_watch_id_create_time")
        batch_op.drop_index(batch_op.f("ix_watch_versions_download_id"))

    op.drop_table("watch_versions")
    op.drop_table("watch_items")
    with op.batch_alter_table("watches", schema=None) as batch_op:
        batch_op.drop_index("ix_watches_state_next_check_time")
        batch_op.drop_index("ix_watches_owner_user_id_create_time")
        batch_op.drop_index(batch_op.f("ix_watches_api_key_id"))

    op.drop_table("watches")
