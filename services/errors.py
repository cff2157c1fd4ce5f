"""How refused requests are answered: one JSON shape for HTTP, one status mapping for gRPC.

Where it sits: ``install_error_handlers`` is called on the ingress's FastAPI app
(services/ingress.py) and on the in-process baseline's (services/inprocess.py), so both
answer bad input the same way; ``grpc_status`` wraps the ingress's gRPC methods.

Contract (never a 500 for bad input): a body that cannot be decoded (not UTF-8) or a
pydantic validation failure -> 422 with
``{"detail": "invalid <field>: <message>", "errors": [{field, message}, ...]}``; a
``ServiceError`` (services/core/request_pipeline.py) -> its status with
``{"detail", "field"}``; the OpenAPI schema documents these shapes
(services/schemas.py ``ErrorResponse``). gRPC answers NOT_FOUND / INVALID_ARGUMENT / FAILED_PRECONDITION (409) with the same message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from services.core.request_pipeline import ServiceError


def validation_errors(exc: RequestValidationError | ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as JSON-safe {field, message} (the input may hold NaN: not echoed)."""
    out = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        out.append({"field": ".".join(location) or "body", "message": str(error.get("msg", ""))})
    return out


def validation_response(exc: RequestValidationError | ValidationError) -> JSONResponse:
    errors = validation_errors(exc)
    return JSONResponse(
        status_code=422,
        content={
            "detail": f"invalid {errors[0]['field']}: {errors[0]['message']}",
            "errors": errors,
        },
    )


def service_error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": exc.message, "field": exc.field})


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation failures and ``ServiceError`` with the contract's JSON."""

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return service_error_response(exc)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot even decode (not UTF-8): a validation
            # failure of the body like any other, answered as the documented 422.
            return JSONResponse(
                status_code=422,
                content={
                    "detail": f"invalid body: {exc.detail}",
                    "field": "body",
                    "errors": [{"field": "body", "message": str(exc.detail)}],
                },
            )
        return JSONResponse(
            status_code=exc.status_code,
            content={"detail": str(exc.detail), "field": None},
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(ServiceError, refused)
    app.add_exception_handler(HTTPException, http_error)


@contextlib.contextmanager
def grpc_status(context: Any) -> Iterator[None]:
    """Answer bad input with a proper gRPC status instead of Serve's generic INTERNAL.

    Used as ``with grpc_status(ctx): return ...`` followed by returning an empty message:
    a refused request falls through to that line with the code and details set.
    """
    try:
        yield
    except ValidationError as exc:
        error = validation_errors(exc)[0]
        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        context.set_details(f"invalid {error['field']}: {error['message']}")
    except ServiceError as exc:
        codes = {
            404: grpc.StatusCode.NOT_FOUND,
            409: grpc.StatusCode.FAILED_PRECONDITION,
            503: grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
        context.set_code(codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT))
        context.set_details(exc.message)
