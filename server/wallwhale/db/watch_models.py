"""The tables of watches (core.watches): what is followed, its items, and what changed.

Kept apart from db/models.py (same Base, same conventions); db/__init__.py imports this module, so
the tables are in `Base.metadata` wherever the models are.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from wallwhale.db.models import Base, _create_time, _enum, _flag, _id, _optional_ref, _text, _update_time


class WatchKind(StrEnum):
    ITEM = "ITEM"
    COLLECTION = "COLLECTION"


class WatchState(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    UNAVAILABLE = "UNAVAILABLE"


class WatchChange(StrEnum):  # values match wallwhale.v1.WatchChange without its prefix
    FIRST = "FIRST"
    UPDATED = "UPDATED"
    ADDED = "ADDED"
    REMOVED = "REMOVED"
    UNAVAILABLE = "UNAVAILABLE"
    AVAILABLE = "AVAILABLE"


class Watch(Base):
    """A followed item or collection (core.watches); due at `next_check_time`, leased while checked."""

    __tablename__ = "watches"
    __table_args__ = (
        sa.Index("ix_watches_state_next_check_time", "state", "next_check_time"),
        sa.Index("ix_watches_owner_user_id_create_time", "owner_user_id", "create_time"),
    )

    id: Mapped[str] = _id()
    owner_user_id: Mapped[str] = mapped_column(sa.String(26), sa.ForeignKey("users.id", ondelete="CASCADE"))
    # The key that made the watch: its quota and limits count the downloads the watch queues.
    api_key_id: Mapped[str | None] = _optional_ref("api_keys.id", index=True)
    kind: Mapped[WatchKind] = mapped_column(_enum(WatchKind))
    workshop_id: Mapped[int] = mapped_column(sa.BigInteger)
    app_id: Mapped[int]
    title: Mapped[str] = _text(256)
    state: Mapped[WatchState] = mapped_column(_enum(WatchState), default=WatchState.ACTIVE)
    state_message: Mapped[str] = _text(512)
    interval_seconds: Mapped[int]
    delete_removed: Mapped[bool] = _flag()
    next_check_time: Mapped[datetime]
    last_check_time: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_expire_time: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    last_error: Mapped[str] = _text(512)
    create_time: Mapped[datetime] = _create_time()
    update_time: Mapped[datetime] = _update_time()


class WatchItem(Base):
    """An item a watch follows, with the version it last queued a download of."""

    __tablename__ = "watch_items"
    __table_args__ = (sa.UniqueConstraint("watch_id", "workshop_id"),)
    id: Mapped[str] = _id()
    watch_id: Mapped[str] = mapped_column(sa.String(26), sa.ForeignKey("watches.id", ondelete="CASCADE"))
    workshop_id: Mapped[int] = mapped_column(sa.BigInteger)
    title: Mapped[str] = _text(256)
    content_handle: Mapped[int | None] = mapped_column(sa.BigInteger)
    item_update_time: Mapped[datetime | None]
    available: Mapped[bool] = _flag(True)
    unavailable_reason: Mapped[str] = _text(256)
    download_id: Mapped[str | None] = _optional_ref("downloads.id")


class WatchVersion(Base):
    """What a watch saw change (a new version, a member added or removed, an item gone or back)."""

    __tablename__ = "watch_versions"
    __table_args__ = (sa.Index("ix_watch_versions_watch_id_create_time", "watch_id", "create_time"),)
    id: Mapped[str] = _id()
    watch_id: Mapped[str] = mapped_column(sa.String(26), sa.ForeignKey("watches.id", ondelete="CASCADE"))
    workshop_id: Mapped[int] = mapped_column(sa.BigInteger)
    change: Mapped[WatchChange] = mapped_column(_enum(WatchChange))
    title: Mapped[str] = _text(256)
    content_handle: Mapped[int | None] = mapped_column(sa.BigInteger)
    item_update_time: Mapped[datetime | None]
    download_id: Mapped[str | None] = _optional_ref("downloads.id", index=True)
    detail: Mapped[str] = _text(512)
    create_time: Mapped[datetime] = _create_time()
