"""Requests the service refuses: each error carries its HTTP status, the field at fault
and a message; the transports map them to 404/409/422 (HTTP) or NOT_FOUND/
FAILED_PRECONDITION/INVALID_ARGUMENT (gRPC). Split out of services/core/request_pipeline.py,
which re-exports them.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses, with its status and the field at fault."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class NotFoundError(ServiceError):
    status = 404


class InvalidInputError(ServiceError):
    status = 422


class ConflictError(ServiceError):
    """Well-formed, but at odds with the service's state (e.g. feedback for a track that
    was not the request's pick)."""

    status = 409
