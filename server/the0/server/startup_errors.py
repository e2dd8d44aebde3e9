"""Start-up failures as one line a person can act on, naming the setting to change.

A taken port, a database that cannot be reached or does not exist: these are the
operator's to fix, and a traceback (135 lines from SQLAlchemy, or grpc's "Failed to
bind ...; set GRPC_VERBOSITY=debug") hides the one fact that matters. Anything not
recognised here is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from sqlalchemy.exc import DBAPIError, OperationalError

from the0.server.redaction import redact_url


class StartupError(RuntimeError):
    """A failure the operator fixes with a setting; its message is the whole story."""


def describe_database_error(error: BaseException, database_url: str) -> str | None:
    """One line for a database that cannot be reached or does not exist, else None."""
    if not isinstance(error, OperationalError | DBAPIError):
        return None
    reason = str(error.orig or error).strip().splitlines()[0] if str(error.orig or error).strip() else "no answer"
    where = redact_url(database_url)
    if "does not exist" in reason:
        return f"the database of DATABASE_URL ({where}) does not exist: create it, or set DATABASE_URL ({reason})"
    return f"cannot reach the database at DATABASE_URL ({where}): {reason}"


def fail(message: str) -> SystemExit:
    """Print ``the0: message`` on stderr; the caller raises the returned SystemExit (exit code 2)."""
    print(f"the0: {message}", file=sys.stderr, flush=True)
    return SystemExit(2)
