"""Archive share links: fetched with no credentials until they expire, are revoked or are used up.

Revision ID: 0010
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "archive_links",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("download_id", sa.String(26), nullable=True),
        sa.Column("batch_id", sa.String(26), nullable=True),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("single_use", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("use_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_use_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["download_id"],
            ["downloads.id"],
            name=op.f("fk_archive_links_download_id_downloads"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_archive_links_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_archive_links_token_hash")),
    )
    op.create_index(op.f("ix_archive_links_download_id"), "archive_links", ["download_id"])
    op.create_index(op.f("ix_archive_links_batch_id"), "archive_links", ["batch_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_archive_links_batch_id"), table_name="archive_links")
    op.drop_index(op.f("ix_archive_links_download_id"), table_name="archive_links")
    op.drop_table("archive_links")
