"""Exit codes: 0 success; 2 a user error (bad arguments or input, unknown id, bad credentials,
missing permission, wrong state); 1 anything else (server or network trouble, a download that failed)."""

from __future__ import annotations

from wallwhale_client.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    WallWhaleError,
)

EXIT_OK = 0
EXIT_FAILURE = 1  # the server, the network, or a download failed
EXIT_USAGE = 2  # the user has something to change (argparse also exits 2)
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it
USER_ERRORS = (
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
)


class UsageError(Exception):
    """A mistake in how the command was called (exit 2)."""


def exit_code(error: BaseException) -> int:
    if isinstance(error, (UsageError, *USER_ERRORS)):
        return EXIT_USAGE
    # A job (or a direct run) that found no such item: the user's URL is wrong.
    if isinstance(error, WallWhaleError) and error.code is None and error.reason == "ITEM_NOT_FOUND":
        return EXIT_USAGE
    return EXIT_FAILURE
