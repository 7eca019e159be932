"""Database layer: models, column types, engine and sessions, migrations (wallwhale.db.migrate)."""

from wallwhale.db import watch_models, webhook_models  # noqa: F401  (their tables join Base.metadata)
from wallwhale.db.engine import backend_name, create_engine, ping, session_factory
from wallwhale.db.models import Base
from wallwhale.db.types import JSONType, UTCDateTime, utcnow

__all__ = [
    "Base",
    "JSONType",
    "UTCDateTime",
    "backend_name",
    "create_engine",
    "ping",
    "session_factory",
    "utcnow",
]
