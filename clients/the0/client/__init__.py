"""Typed Python client for the0 API, over the generated gRPC stubs."""

from the0.client.client import The0Client
from the0.client.errors import (
    AlreadyExistsError,
    AuthenticationError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    RateLimitedError,
    The0Error,
    UnavailableError,
)

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionError",
    "RateLimitedError",
    "The0Client",
    "The0Error",
    "UnavailableError",
]
