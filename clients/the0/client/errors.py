"""gRPC errors as typed exceptions carrying the server's ErrorInfo, BadRequest and RetryInfo."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class The0Error(Exception):
    """Any error the API returned. ``reason`` is the ErrorReason name, e.g. ``TOKEN_EXPIRED``."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_seconds: float | None = None

    def __str__(self) -> str:
        text = f"{self.message} ({self.reason or self.code.name})"
        for violation in self.violations:
            text += f"\n  {violation.field}: {violation.description}"
        if self.retry_after_seconds is not None:
            text += f"\n  retry in {self.retry_after_seconds:.0f}s"
        return text


class InvalidArgumentError(The0Error):
    pass


class AuthenticationError(The0Error):
    pass


class PermissionDeniedError(The0Error):
    pass


class NotFoundError(The0Error):
    pass


class AlreadyExistsError(The0Error):
    pass


class PreconditionError(The0Error):
    """Wrong state (FAILED_PRECONDITION) or a stale etag (ABORTED)."""


class RateLimitedError(The0Error):
    """Too many requests or too large (RESOURCE_EXHAUSTED); see ``reason``."""


class UnavailableError(The0Error):
    pass


_BY_CODE: dict[grpc.StatusCode, type[The0Error]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionError,
    grpc.StatusCode.ABORTED: PreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(error: grpc.RpcError) -> The0Error:
    code = error.code()
    reason, metadata = "", {}
    violations: list[FieldViolation] = []
    retry_after_seconds: float | None = None
    # The stub asks for a grpc.Call; the RpcError a stub raises is one at run time
    # (mypy cannot see that: the two stub classes' details() signatures differ).
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is not None:
        for detail in status.details:
            info, bad_request, retry = (
                error_details_pb2.ErrorInfo(),
                error_details_pb2.BadRequest(),
                error_details_pb2.RetryInfo(),
            )
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(bad_request):
                violations = [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
            elif detail.Unpack(retry):
                retry_after_seconds = retry.retry_delay.ToTimedelta().total_seconds()
    return _BY_CODE.get(code, The0Error)(
        code=code,
        message=error.details() or "",
        reason=reason,
        metadata=metadata,
        violations=violations,
        retry_after_seconds=retry_after_seconds,
    )
