"""What a transaction leaves to do once it has committed: the one place where side effects happen.

Core code that changes something this instance must act on says so on the session, next to the
change (and next to the NOTIFY that tells the other instances, where there is one):

    after_commit(session).publish(stored)          events for this instance's watchers
    after_commit(session).wake_worker()            a job may be claimable
    after_commit(session).forget_principals()      cached API-key principals may be stale
    after_commit(session).delete_archive(path)     an archive file no row names any more
    after_commit(session).remove_item_dir(app, id) an item's DepotDownloader folder nobody needs
    after_commit(session).count(metric, *labels)   a metrics counter, counted once it is true
    after_commit(session).wake_webhooks()          webhook deliveries are due (worker.webhook_delivery)

They are kept in `session.info` and applied by a SQLAlchemy `after_commit` listener when the
outermost transaction commits; a rollback drops them (a savepoint that rolls back drops those
registered inside it). Whom they reach (`Targets`: the event hub, the worker, the principal cache,
the storage) comes from the session's maker, set up once by app.py with `install()`. Sessions made
without targets (the CLI, tests of core alone) have nobody in this process to tell: the effects
are dropped, and other instances still hear the NOTIFY.

A new kind of effect is a field of `Effects`, a method that records it and a line in `_apply`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeAlias

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from wallwhale import tracing
from wallwhale.log import get_logger

if TYPE_CHECKING:  # only named here: core.events registers its events with this module
    from wallwhale.core.events import EventHub, StoredEvent
    from wallwhale.core.identity import PrincipalCache
    from wallwhale.storage.archives import Storage

_log = get_logger("wallwhale.after_commit")

_PENDING = "wallwhale.after_commit"
_TARGETS = "wallwhale.after_commit.targets"
_SAVEPOINTS = "wallwhale.after_commit.savepoints"


@dataclass(frozen=True)
class Targets:
    """Whom the effects of this instance's transactions reach."""

    hub: EventHub
    wake_worker: Callable[[], None]
    principals: PrincipalCache
    storage: Storage
    wake_webhooks: Callable[[], None] | None = None


@dataclass
class Effects:
    """The side effects one transaction has recorded so far."""

    events: list[StoredEvent] = field(default_factory=list)
    wake: bool = False
    principals_changed: bool = False
    archives: list[str] = field(default_factory=list)  # relative to the storage root
    item_dirs: list[tuple[int, int]] = field(default_factory=list)  # (app id, workshop id)
    counts: list[tuple[Counter, tuple[str, ...], float]] = field(default_factory=list)
    webhooks: bool = False
    span_events: list[tracing.SpanEvent] = field(default_factory=list)

    def publish(self, events: list[StoredEvent]) -> None:
        self.events += events

    def wake_worker(self) -> None:
        self.wake = True

    def wake_webhooks(self) -> None:
        self.webhooks = True

    def forget_principals(self) -> None:
        self.principals_changed = True

    def delete_archive(self, relative_path: str) -> None:
        self.archives.append(relative_path)

    def remove_item_dir(self, app_id: int, workshop_id: int) -> None:
        self.item_dirs.append((app_id, workshop_id))

    def count(self, counter: Counter, *labels: str, amount: float = 1) -> None:
        self.counts.append((counter, labels, amount))

    def trace_event(self, name: str, **attributes: str | int | float | bool) -> None:
        """An event on the current span (the call's or the job's), if tracing records one."""
        if (pending := tracing.span_event(name, attributes)) is not None:
            self.span_events.append(pending)

    def _copy(self) -> Effects:
        return replace(
            self,
            events=[*self.events],
            archives=[*self.archives],
            item_dirs=[*self.item_dirs],
            counts=[*self.counts],
            span_events=[*self.span_events],
        )


AnySession: TypeAlias = AsyncSession | Session


def after_commit(session: AnySession) -> Effects:
    """The effects the session's current transaction will apply once it commits."""
    effects: Effects | None = session.info.get(_PENDING)
    if effects is None:
        effects = session.info[_PENDING] = Effects()
    return effects


def install(sessions: async_sessionmaker[AsyncSession], targets: Targets) -> None:
    """Sessions made by `sessions` from now on apply their effects to `targets`."""
    sessions.configure(info={_TARGETS: targets})


def _apply(effects: Effects, targets: Targets) -> None:
    # Files first: the events may tell watchers that an archive is gone.
    for path in effects.archives:
        _attempt("delete an archive", targets.storage.delete, path)
    for app_id, workshop_id in effects.item_dirs:
        _attempt("remove an item folder", targets.storage.remove_item_dir, app_id, workshop_id)
    if effects.events:
        _attempt("publish events", targets.hub.publish, effects.events)
    if effects.wake:
        _attempt("wake the worker", targets.wake_worker)
    if effects.webhooks and targets.wake_webhooks is not None:
        _attempt("wake the webhook sender", targets.wake_webhooks)
    if effects.principals_changed:
        _attempt("forget cached principals", targets.principals.clear)
    for counter, labels, amount in effects.counts:
        (counter.labels(*labels) if labels else counter).inc(amount)
    for pending in effects.span_events:
        pending.add()


def _attempt(what: str, action: Callable[..., None], *args: object) -> None:
    # The transaction has committed: a failing effect is logged, and the others still happen.
    try:
        action(*args)
    except Exception as exc:
        _log.warning(
            f"after commit: could not {what}", error=str(exc).splitlines()[0][:300] if str(exc) else ""
        )


@event.listens_for(Session, "after_transaction_create")
def _savepoint_begun(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        pending: Effects | None = session.info.get(_PENDING)
        session.info.setdefault(_SAVEPOINTS, {})[transaction] = pending._copy() if pending else None


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        savepoints = session.info.get(_SAVEPOINTS, {})
        if transaction in savepoints:
            before = savepoints.pop(transaction)
            if not getattr(transaction, "_wallwhale_committed", False):
                # Rolled back: what was recorded inside it goes too.
                if before is None:
                    session.info.pop(_PENDING, None)
                else:
                    session.info[_PENDING] = before
    elif transaction.parent is None:
        # The outermost transaction ended without a commit (a commit applied and dropped them).
        session.info.pop(_PENDING, None)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    nested = session.get_nested_transaction()
    if nested is not None:  # a savepoint was released: its effects wait for the outermost commit
        nested._wallwhale_committed = True  # type: ignore[attr-defined]
        return
    effects: Effects | None = session.info.pop(_PENDING, None)
    targets: Targets | None = session.info.get(_TARGETS)
    if effects is not None and targets is not None:
        _apply(effects, targets)
