"""Typed Python client for WallWhale: `Client` (blocking) and `AsyncClient` (asyncio).

    from wallwhale_client import Client

    with Client("127.0.0.1:50051", api_key="ww_...") as client:
        path = client.download("https://steamcommunity.com/sharedfiles/filedetails/?id=2831234567", "out")

The generated messages and stubs are in `wallwhale_client.v1`.
"""

from wallwhale_client._version import __version__
from wallwhale_client.aio import (
    ArchiveInfo,
    AsyncClient,
    BatchArchive,
    BatchArchiveInfo,
    BatchProgress,
    BatchProgressCallback,
    Progress,
    ProgressCallback,
    Tls,
)
from wallwhale_client.errors import (
    AlreadyExists,
    BatchFailed,
    Cancelled,
    DeadlineExceeded,
    DownloadFailed,
    FailedPrecondition,
    FieldViolation,
    IntegrityError,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    QuotaViolation,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    UntrustedCertificate,
    WallWhaleError,
)
from wallwhale_client.retry import NO_RETRY, RetryPolicy
from wallwhale_client.sync import Client, ClientOptions

__all__ = [
    "NO_RETRY",
    "AlreadyExists",
    "ArchiveInfo",
    "AsyncClient",
    "BatchArchive",
    "BatchArchiveInfo",
    "BatchFailed",
    "BatchProgress",
    "BatchProgressCallback",
    "Cancelled",
    "Client",
    "ClientOptions",
    "DeadlineExceeded",
    "DownloadFailed",
    "FailedPrecondition",
    "FieldViolation",
    "IntegrityError",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Progress",
    "ProgressCallback",
    "QuotaExceeded",
    "QuotaViolation",
    "RateLimited",
    "ResourceExhausted",
    "RetryPolicy",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UntrustedCertificate",
    "WallWhaleError",
    "__version__",
]
