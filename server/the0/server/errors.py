"""Typed API errors and their wire form.

Services raise these; the error-mapping interceptor turns them into a
``google.rpc.Status`` carrying an ``ErrorInfo`` (reason from
``the0.common.v1.ErrorReason``) and, where fields are wrong, a ``BadRequest``
with one field violation per field. Handlers never build statuses themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from the0.common.v1 import error_reason_pb2

ERROR_DOMAIN = "api.the0.dev"
_REASON_PREFIX = "ERROR_REASON_"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One wrong field: ``field`` is a dotted path in JSON names (``config.symbol``)."""

    field: str
    description: str


class ApiError(Exception):
    """An error a client should see. ``reason`` is an ErrorReason name without its prefix."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[FieldViolation] = (),
        retry_after: timedelta | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        # Unknown reasons are bugs: fail where they are raised, not on the wire.
        error_reason_pb2.ErrorReason.Value(_REASON_PREFIX + self.reason)
        self.metadata = dict(metadata or {})
        self.violations = tuple(violations)
        self.retry_after = retry_after

    def to_status(self) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        details = [_pack(info)]
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.violations
                ]
            )
            details.append(_pack(bad_request))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(self.retry_after)
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        return rpc_status.to_status(status)


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "VALIDATION_FAILED"


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "TOKEN_INVALID"


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(ApiError):
    """Missing or not the caller's: deliberately indistinguishable."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class Aborted(ApiError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ETAG_MISMATCH"


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "INVALID_STATE"


class ResourceExhausted(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "TOO_LARGE"


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "DEPENDENCY_UNAVAILABLE"


class DeadlineExceeded(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unimplemented(ApiError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "NOT_IMPLEMENTED"


class DataLoss(ApiError):
    code = grpc.StatusCode.DATA_LOSS
    default_reason = "RESULTS_UNAVAILABLE"


class Internal(ApiError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


def require_fields(values: Mapping[str, object]) -> None:
    """Raise one InvalidArgument listing every empty REQUIRED field (by JSON name)."""
    missing = [FieldViolation(name, "is required") for name, value in values.items() if not value]
    if missing:
        raise InvalidArgument(
            f"missing required field{'s' if len(missing) > 1 else ''}: "
            + ", ".join(v.field for v in missing),
            violations=missing,
        )
