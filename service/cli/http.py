"""`neuronmap http`: the explorer and the HTTP API over the store (`neuronmap serve --http` starts the same)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from neuronmap.errors import NeuronmapError
from neuronmap.service.cli.common import console, store_from

DEFAULT_HOST = "127.0.0.1"  # the same as neuronmap.service.http's, repeated so that -h loads no FastAPI
DEFAULT_PORT = 8765


class TokenFileError(NeuronmapError, ValueError):
    """A --token-file that cannot be read, or holds no token."""


def read_token(path: Path | None) -> str | None:
    """The token in ``path`` (its first line, stripped); None without a file."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TokenFileError(f"Cannot read the token file {str(path)!r}: {error}.") from None
    token = lines[0].strip() if lines else ""
    if len(token) < 8:
        raise TokenFileError(
            f"The token file {str(path)!r} holds no token of at least 8 characters; write one, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe())' > token.txt`."
        )
    return token


def http_options(function: click.decorators.FC) -> click.decorators.FC:
    """``--host``, ``--port`` and ``--token-file``, shared with ``neuronmap serve --http``."""
    function = click.option(
        "--token-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="A file whose first line is the token that POST /api/jobs needs; without it, a bind beyond "
        "127.0.0.1 is read-only.",
    )(function)
    function = click.option(
        "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="The HTTP port."
    )(function)
    return click.option(
        "--host", default=DEFAULT_HOST, show_default=True, help="The address to bind; 0.0.0.0 shares it with a team."
    )(function)


@click.command(name="http")
@http_options
@click.pass_context
def http(ctx: click.Context, host: str, port: int, token_file: Path | None) -> None:
    """Serve the explorer (pages with plots of the modules) and the HTTP API over the store, until Ctrl-C.

    \b
    neuronmap http                      # http://127.0.0.1:8765/
    neuronmap http --host 0.0.0.0 --token-file token.txt   # shared: read-only without the token
    curl 127.0.0.1:8765/api/models
    """
    token = read_token(token_file)
    from neuronmap.service.http import serve_http

    with store_from(ctx) as store:
        try:
            serve_http(host, port, store=store, token=token)
        except KeyboardInterrupt:
            pass
    console.print("Stopped.")


def start_http(ctx: click.Context, host: str, port: int, token_file: Path | None) -> Callable[[], None]:
    """Serve the explorer and the API in a background thread (for `neuronmap serve --http`, whose main loop runs
    the jobs); returns the function that stops it and closes its store (hand it to ``ctx.call_on_close``)."""
    import threading
    import time

    import uvicorn

    from neuronmap.service.http.app import HttpStartError, create_app, is_loopback, write_policy
    from neuronmap.service.http.cache import prewarm
    from neuronmap.service.store.open import open_store

    token = read_token(token_file)
    store = open_store(ctx.obj)
    app = create_app(store, token, writes_open=is_loopback(host))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)

    def run() -> None:
        try:
            server.run()
        except SystemExit:  # uvicorn exits when it cannot bind: said below, as one line
            pass

    thread = threading.Thread(target=run, name="neuronmap-http", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():  # uvicorn ends its thread if it cannot bind
        time.sleep(0.05)
    if not server.started:
        store.close()
        raise HttpStartError(f"Cannot serve HTTP on {host}:{port}: is the port in use? Pick another with --port.")
    # Warmed only once the port is ours, and joined before the store closes: a driver closed under a running
    # query breaks its connection (and would leak the socket).
    warming = prewarm(store, app.state.cache)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"Explorer and API on http://{shown}:{port}/ (the API's docs: /docs)", highlight=False)
    console.print(write_policy(host, token), highlight=False)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        warming.join(timeout=30)
        store.close()

    return stop


COMMANDS = [http]
