"""The only place where errors become HTTP status codes.

Routes raise calogan's domain errors; the handlers here turn each into a JSON :class:`ErrorBody`
(``detail``, ``allowed``) with the right status:

=======================  ======  =============================================
error                    status  when
=======================  ======  =============================================
malformed JSON           400     the body is not JSON
InvalidRequest           422     a value out of range (energy, n, seed, dtype)
request validation       422     a parameter of the wrong type or unknown value
NotAcceptable            406     Accept names no format we produce
Unauthorized             401     a token is required and missing or wrong
ModelMismatch            409     the request pins a model this server does not serve
Overloaded / Draining    503     queue full or shutting down; with Retry-After
ModelLoadError           503     no model to serve
RequestTimeout           504     not finished within request_timeout_s
GenerationFailed         500     the model failed on this request's batch
RequestCancelled         499     the client went away (nobody reads it)
=======================  ======  =============================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.errors import CaloganError, InvalidRequest, ModelLoadError, ModelMismatch, Overloaded
from app.serving.api.schemas import ErrorBody
from app.serving.batcher import GenerationFailed, RequestCancelled, RequestTimeout

logger = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; never seen by a client


class NotAcceptable(InvalidRequest):
    """The Accept header names no media type the service produces."""


class Unauthorized(CaloganError):
    """The service requires a bearer token, and the request has none or a wrong one."""


def error_response(status: int, detail: str, *, allowed: str | None = None, **extra: Any) -> JSONResponse:
    """A JSON error answer in the one shape every error uses."""
    headers = extra.pop("headers", None)
    body = ErrorBody(detail=detail, allowed=allowed, **extra).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _message(exc: CaloganError) -> str:
    """The message without the ``; allowed: ...`` tail that InvalidRequest appends (it has its own field)."""
    text = str(exc)
    allowed = getattr(exc, "allowed", None)
    suffix = f"; allowed: {allowed}"
    return text[: -len(suffix)] if allowed and text.endswith(suffix) else text


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidRequest)
    status = 406 if isinstance(exc, NotAcceptable) else 422
    logger.info("request rejected: %s", exc, extra={"status": status, "path": request.url.path})
    return error_response(status, _message(exc), allowed=exc.allowed)


async def _unauthorized(request: Request, exc: Exception) -> JSONResponse:
    return error_response(
        401, str(exc), allowed="an 'Authorization: Bearer <token>' header with a configured token",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    retry_after = max(1, math.ceil(exc.retry_after_s))
    logger.warning("request rejected: %s", exc, extra={"status": 503, "retry_after_s": retry_after})
    return error_response(
        503, str(exc), allowed="retry after the Retry-After delay, or ask for fewer showers",
        headers={"Retry-After": str(retry_after)},
    )


async def _model_mismatch(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelMismatch)
    logger.info("request rejected: %s", exc, extra={"status": 409})
    return error_response(409, str(exc), allowed=f"the served model: {exc.served}")


async def _model_load(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc))


async def _timeout(request: Request, exc: Exception) -> JSONResponse:
    return error_response(504, str(exc))


async def _failed(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, str(exc))


async def _cancelled(request: Request, exc: Exception) -> JSONResponse:
    return error_response(CLIENT_CLOSED_REQUEST, str(exc))


async def _calogan(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unexpected calogan error: %s", exc, exc_info=exc)
    return error_response(500, str(exc))


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]
    malformed = any(err["type"] == "json_invalid" for err in errors)
    if malformed:
        position = next(err["loc"][-1] for err in errors if err["type"] == "json_invalid")
        detail = f"malformed JSON body (cannot decode at character {position})"
    else:
        parts = [f"{' '.join(str(part) for part in err['loc']) or 'request'}: {err['msg']}" for err in errors]
        detail = "invalid request; " + "; ".join(parts)
    logger.info("request rejected: %s", detail, extra={"status": 400 if malformed else 422})
    allowed = "see the OpenAPI description at /docs"
    return error_response(400 if malformed else 422, detail, allowed=allowed, errors=errors)


Handler = Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]

ERROR_HANDLERS: dict[type[Exception], Handler] = {
    RequestValidationError: _validation,
    InvalidRequest: _invalid,
    Unauthorized: _unauthorized,
    Overloaded: _overloaded,
    ModelLoadError: _model_load,
    ModelMismatch: _model_mismatch,
    RequestTimeout: _timeout,
    GenerationFailed: _failed,
    RequestCancelled: _cancelled,
    CaloganError: _calogan,
}
"""Handed to ``FastAPI(exception_handlers=...)``; Starlette picks the most specific class (by MRO)."""
