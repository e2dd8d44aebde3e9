"""Every way a command can fail, as one line on stderr and a documented exit code (docs/cli.md).

The API's errors carry an ErrorReason; each maps to an exit code and, where a person can do something
about it, a hint saying what to do next.
"""

from __future__ import annotations

import grpc

from the0.client.errors import The0Error

OK = 0
ERROR = 1  # anything not below: a server bug (INTERNAL), a local I/O error
USAGE = 2  # a bad option or argument, unreadable input, a bot folder that fails local validation
NOT_AUTHENTICATED = 3  # no credentials, or they were refused (expired, revoked)
PERMISSION_DENIED = 4
NOT_FOUND = 5
CONFLICT = 6  # already exists, changed since read (etag), wrong state for this
INVALID = 7  # the server refused the input (field violations)
LIMITED = 8  # rate, size or quota limit
UNAVAILABLE = 9  # the server or one of its dependencies is down, or too slow: try again
NOT_CONFIRMED = 10  # a destructive command was not confirmed
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES: dict[int, str] = {
    OK: "success",
    ERROR: "other error (a server bug, a local I/O error)",
    USAGE: "bad option, argument or local input (`--config`, `@file`, bot-config.yaml, config file)",
    NOT_AUTHENTICATED: "not logged in, or the session / API key was refused",
    PERMISSION_DENIED: "not allowed (an admin command as a user, a call outside the API key's scopes)",
    NOT_FOUND: "no such resource (or not yours)",
    CONFLICT: "already exists, changed since read (etag), or wrong state",
    INVALID: "the server refused the input",
    LIMITED: "a rate, size or quota limit",
    UNAVAILABLE: "the server or a dependency is unavailable: try again",
    NOT_CONFIRMED: "a destructive command was not confirmed",
    INTERRUPTED: "interrupted (Ctrl-C)",
}

_BY_CODE = {
    grpc.StatusCode.UNAUTHENTICATED: NOT_AUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND: NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: CONFLICT,
    grpc.StatusCode.ABORTED: CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: CONFLICT,
    grpc.StatusCode.INVALID_ARGUMENT: INVALID,
    grpc.StatusCode.OUT_OF_RANGE: INVALID,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LIMITED,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNAVAILABLE,
}

LOGIN = "run `the0 login`"
ACCOUNT_DISABLED = "the account is disabled: contact an admin (saved credentials are kept)"
_HINTS = {
    "TOKEN_MISSING": f"not logged in: {LOGIN} (or set THE0_API_KEY)",
    "TOKEN_EXPIRED": LOGIN,
    "TOKEN_INVALID": LOGIN,
    "TOKEN_REVOKED": f"the session has ended: {LOGIN}",
    "REFRESH_TOKEN_INVALID": f"the session has ended: {LOGIN}",
    "REFRESH_TOKEN_REUSED": f"the session was ended for safety: {LOGIN}",
    "API_KEY_INVALID": f"the API key was revoked or has expired: {LOGIN}, then `the0 api-keys create NAME --save`",
    "API_KEY_NOT_ALLOWED": f"this needs a login session, not an API key: {LOGIN}",
    "INVALID_CREDENTIALS": "check the email and password",
    "PERMISSION_DENIED": "this needs an admin's login session",
    "SELF_ADMINISTRATION": "admins cannot do this to their own account: ask another admin",
    "PASSWORD_RESET_REQUIRED": "a new password is required: `the0 password reset-request EMAIL`",
    "ACCOUNT_TOKEN_INVALID": "the token is wrong, used or expired: ask for a new one",
    "ETAG_MISMATCH": "it changed since it was read: look at it again and retry",
    "CUSTOM_BOT_NOT_APPROVED": "wait for the review: `the0 custom-bots watch ID`",
    "VERSION_NOT_INCREASING": "raise `version` in bot-config.yaml",
    "RESULTS_UNAVAILABLE": "results exist once the backtest has completed: `the0 backtests watch ID`",
    "TOTP_CODE_INVALID": "use the app's current code (each code works once), or an unused recovery code",
    "SECOND_FACTOR_CHALLENGE_INVALID": f"the login took too long or was already completed: {LOGIN}",
    "TOTP_ALREADY_ENABLED": "two-factor login is on already: `the0 2fa disable` first to enrol a new app",
    "TOTP_NOT_ENABLED": "two-factor login is off (or no enrolment was begun): `the0 2fa enable`",
    "FRESH_SECOND_FACTOR_REQUIRED": f"this needs a login with your code in the last 10 minutes: {LOGIN}",
}


class CliError(Exception):
    """A failure found by the CLI itself (bad input, a missing file): a message and an exit code."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe(error: The0Error, *, target: str) -> tuple[str, int]:
    """The line to print for an API error, and the exit code."""
    text = error.message or error.code.name.lower().replace("_", " ")
    if error.violations:
        # Some descriptions already start with their field's name: say it once.
        text += ": " + "; ".join(v.description if v.description.startswith(v.field) else f"{v.field}: {v.description}"
                                 for v in error.violations)
    text += f" [{error.reason or error.code.name}]"
    hint = _HINTS.get(error.reason)
    if error.metadata.get("accountDisabled") == "true":  # TOKEN_REVOKED, but a new login would not help
        hint = ACCOUNT_DISABLED
    if hint is None and error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = f"is the API running at {target}? try again, or pick another with --url / `the0 config use`"
    if hint is None and error.retry_after_seconds is not None:
        hint = f"retry in {error.retry_after_seconds:.0f}s"
    if hint is None and error.code is grpc.StatusCode.NOT_FOUND:
        hint = "check the id (it may not exist, or not be yours)"
    if hint:
        text += f" — {hint}"
    return one_line(text), _BY_CODE.get(error.code, ERROR)
