"""Pieces every API route shares: JSON rendering, body reading and error rendering.

Whatever goes wrong, the client gets ``{"NeutronError": {"type", "message", "detail"}}``:
NeutronErrors raised by Services keep their status; the framework's own errors
(unknown route, wrong method, request validation) are translated; anything unexpected
is logged with its traceback and answered with a bare 500 NeutronError.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from lbtap.server import errors

log = logging.getLogger("lbtap.server.api")

# A bulk create of 1000 ports is ~200 KiB; 8 MiB leaves room and still bounds memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Nesting deeper than this is never a Neutron body; refusing early keeps json safe.
_MAX_DEPTH = 32


def _default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class NeutronJSONResponse(Response):
    """Compact JSON that also renders datetimes (Neutron's ``...Z`` format) and sets."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_default, separators=(",", ":"), ensure_ascii=False).encode()


def error_response(err: errors.NeutronError) -> Response:
    headers = {"WWW-Authenticate": 'Keystone uri="none"'} if err.status == 401 else None
    return NeutronJSONResponse(err.body(), status_code=err.status, headers=headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


async def read_json_body(request: Request, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The request body as JSON; 413 when too large, 400 MalformedRequestBody when not JSON."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > max_bytes:
                raise errors.RequestEntityTooLarge(f"Request body larger than {max_bytes} bytes.")
        except ValueError:
            raise errors.BadRequest("Invalid Content-Length header.") from None
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:  # chunked bodies carry no Content-Length to check up front
            raise errors.RequestEntityTooLarge(f"Request body larger than {max_bytes} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise errors.MalformedRequestBody("Resource body required.")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise errors.MalformedRequestBody(f"Malformed request body: {e}") from None
    if _depth(body, _MAX_DEPTH) > _MAX_DEPTH:
        raise errors.MalformedRequestBody("Malformed request body: nested too deeply.")
    return body


class NeutronRoute(APIRoute):
    """An APIRoute whose handler turns every exception into a NeutronError response.

    Catching here rather than in a Starlette exception handler means unexpected
    errors still produce a normal response that middleware (metrics) can observe.
    """

    def get_route_handler(self):
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except errors.NeutronError as e:
                if e.status >= 500:
                    log.error("%s %s failed: %s", request.method, request.url.path, e)
                response = error_response(e)
            except RequestValidationError as e:
                response = error_response(_validation_error(e))
            except StarletteHTTPException as e:
                response = error_response(_http_error(e.status_code, e.detail))
            except Exception:
                log.exception("unexpected error in %s %s (request %s)", request.method, request.url.path,
                              getattr(request.state, "request_id", "-"))
                response = error_response(errors.InternalServerError())
            # Set by the auth dependency; clients (openstacksdk) log it for correlation.
            request_id = getattr(request.state, "request_id", None)
            if request_id:
                response.headers["X-Openstack-Request-Id"] = request_id
            return response

        return handler


def _validation_error(exc: RequestValidationError) -> errors.NeutronError:
    problems = exc.errors()
    if problems:
        first = problems[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"Invalid input for {where}: {first.get('msg', 'invalid')}"
    else:
        message = "Invalid input."
    return errors.BadRequest(message, type_name="HTTPBadRequest")


_HTTP_TYPES = {400: "HTTPBadRequest", 401: "HTTPUnauthorized", 403: "HTTPForbidden", 404: "HTTPNotFound",
               405: "HTTPMethodNotAllowed", 406: "HTTPNotAcceptable", 409: "HTTPConflict",
               413: "HTTPRequestEntityTooLarge", 415: "HTTPUnsupportedMediaType"}


def _http_error(status: int, detail: Any) -> errors.NeutronError:
    err = errors.NeutronError(
        "The resource could not be found." if status == 404 else str(detail or "Request failed."),
        type_name=_HTTP_TYPES.get(status, "HTTPError"),
    )
    err.status = status
    return err


def install_error_handlers(app: FastAPI) -> None:
    """Render the framework's own errors (routing, validation, crashes) as NeutronErrors."""

    async def on_neutron(request: Request, exc: errors.NeutronError) -> Response:
        return error_response(exc)

    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(_http_error(exc.status_code, exc.detail))

    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        return error_response(_validation_error(exc))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(errors.InternalServerError())

    app.add_exception_handler(errors.NeutronError, on_neutron)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_crash)
