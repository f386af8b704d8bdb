"""The FastAPI app over one store (:func:`create_app`) and the uvicorn runner (:func:`serve_http`).

Reads need nothing. The one write, ``POST /api/jobs``, needs ``Authorization: Bearer TOKEN`` when the app has a
token; without one, writes are open on a loopback bind (127.0.0.1, the default) and off on any other bind, and
:func:`serve_http` says which at start-up. ``/docs`` is the OpenAPI description rendered on the server (no Swagger
UI: it would fetch its JavaScript from a CDN, and the explorer works offline); ``/openapi.json`` is the schema.
"""

from __future__ import annotations

import html
import ipaddress
import secrets
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuronmap.cypher import Store
from neuronmap.errors import NeuronmapError
from neuronmap.service.http import api, assets, pages
from neuronmap.service.http.cache import PartitionCache, prewarm
from neuronmap.service.http.responses import error_response, neuronmap_error, unexpected_error

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


class WriteRefusedError(NeuronmapError, PermissionError):
    """A write without the token, or on a server that takes none."""


class HttpStartError(NeuronmapError, OSError):
    """The HTTP server could not start (the port is taken, the address is not this machine's)."""


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1 and localhost: a bind that only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_policy(host: str, token: str | None) -> str:
    """The line the server prints at start-up: who may queue jobs."""
    if token:
        return "POST /api/jobs needs the token (Authorization: Bearer TOKEN); everything else is read-only."
    if is_loopback(host):
        return f"Bound to {host}: this machine only; POST /api/jobs needs no token."
    return (
        f"Bound to {host} without a token: read-only, POST /api/jobs is refused. "
        "Pass --token-file FILE to let the token's holders queue jobs."
    )


def _write_guard(token: str | None, writes_open: bool) -> Callable[[Request], None]:
    def require_write(request: Request) -> None:
        if token:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), token.encode()):
                raise WriteRefusedError("Queuing a job needs the server's token: send Authorization: Bearer TOKEN.")
        elif not writes_open:
            raise WriteRefusedError(
                "This server is read-only: it is bound beyond this machine without a token "
                "(start it with --token-file FILE to take jobs)."
            )

    return require_write


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(NeuronmapError)
    async def on_neuronmap_error(request: Request, error: NeuronmapError) -> JSONResponse:
        return neuronmap_error(error)

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body", "path"))
            parts.append(f"{where or 'value'}: {item.get('msg', 'invalid')}")
        return error_response(422, "Bad parameter: " + "; ".join(parts) + ".")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail if isinstance(error.detail, str) else "error"
        if error.status_code == 404:
            detail = f"No page or endpoint {request.url.path}; /docs lists the API."
        return error_response(error.status_code, detail)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, error: Exception) -> JSONResponse:
        return unexpected_error(error)


def create_app(store: Store, token: str | None = None, *, writes_open: bool = True) -> FastAPI:
    """The API (``/api/…``), the explorer's pages and the OpenAPI docs over one open store.

    Parameters
    ----------
    store : Store
        Held open for the app's life; the caller closes it.
    token : str, optional
        When set, ``POST /api/jobs`` needs ``Authorization: Bearer TOKEN``.
    writes_open : bool, default True
        Without a token: whether ``POST /api/jobs`` is allowed (:func:`serve_http` passes False on a non-loopback
        bind).
    """
    app = FastAPI(
        title="neuronmap",
        summary="The modules of neural networks stored in Neo4j: models, partitions, clusters, assessments, jobs.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    app.state.cache = PartitionCache()  # stored partitions never change
    _handlers(app)
    app.include_router(api.build_router(_write_guard(token, writes_open)))
    app.include_router(pages.build_router())

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    return app


def docs_page(schema: dict[str, Any]) -> str:
    """The OpenAPI schema as one HTML page: every endpoint with its parameters (served offline, no Swagger UI)."""
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, operation in methods.items():
            params = ", ".join(
                f"{p['name']}{'' if p.get('required') else '?'} ({p.get('in', '')})"
                for p in operation.get("parameters", [])
            )
            if "requestBody" in operation:
                params = (params + ", " if params else "") + "JSON body"
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation.get('summary', ''))}</td><td>{html.escape(params)}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>neuronmap API</title>"
        f"<style>{assets.CSS}</style></head><body><main><h1>neuronmap API</h1>"
        "<p>The machine-readable schema is <a href='/openapi.json'>/openapi.json</a>. Errors are JSON "
        '<code>{"error": "one line", "status": 404}</code>; library queries take <code>format=csv</code>.</p>'
        "<table><thead><tr><th>method</th><th>path</th><th>what</th><th>parameters</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></main></body></html>"
    )


def serve_http(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    store: Store,
    token: str | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> None:
    """Serve :func:`create_app` with uvicorn until stopped (Ctrl-C); says the address and the write policy first."""
    import uvicorn

    app = create_app(store, token, writes_open=is_loopback(host))
    warming = prewarm(store, app.state.cache)  # the newest partitions' model pages, read while the server starts
    shown = f"[{host}]" if ":" in host else host
    say(f"neuronmap explorer and API on http://{shown}:{port}/ (the API's docs: /docs)")
    say(write_policy(host, token))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:
        if server.started:
            raise
        raise HttpStartError(
            f"Cannot serve HTTP on {host}:{port}: is the port in use? Pick another with --port."
        ) from None
    finally:
        warming.join(timeout=30)  # the caller closes the store next; a driver closed under a query breaks
