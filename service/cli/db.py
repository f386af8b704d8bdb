"""`neuronmap db`: the managed local Neo4j (start, stop, status, logs) and the schema (init)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from neuronmap.service.cli.common import console, store_from

if TYPE_CHECKING:
    from neuronmap.service.config import Settings
    from neuronmap.service.store import local_neo4j


@click.group()
def db() -> None:
    """The local Neo4j server and the schema.

    \b
    neuronmap db start      # Neo4j 5.26 Community on 127.0.0.1, data kept between runs
    neuronmap db status
    """


def _server(ctx: click.Context) -> local_neo4j.LocalServer:
    from neuronmap.service.store import local_neo4j  # the driver loads only when a command needs it

    settings: Settings = ctx.obj
    if settings.neo4j_uri:
        console.print(
            f"[yellow]NEO4J_URI is set ({settings.neo4j_uri}): commands use that server, "
            "not the local one managed here.[/yellow]"
        )
    return local_neo4j.LocalServer.from_settings(settings)


@db.command()
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the server to answer.")
@click.option(
    "--http",
    is_flag=True,
    help="Also serve Neo4j's HTTP API and Neo4j Browser on 127.0.0.1 (Browser's assets are fetched once).",
)
@click.option("--http-port", default=7474, show_default=True, type=click.IntRange(1, 65535), help="With --http.")
@click.pass_context
def start(ctx: click.Context, timeout: float, http: bool, http_port: int) -> None:
    """Fetch the Neo4j jars once, then start the local server (a no-op if it runs already).

    \b
    neuronmap db start
    neuronmap db start --http       # then open http://127.0.0.1:7474/browser/ (user neo4j, `neuronmap db password`)
    """
    from neuronmap.service.store import local_neo4j

    settings: Settings = ctx.obj
    if settings.neo4j_uri:
        _server(ctx)  # says that commands use NEO4J_URI
    server = local_neo4j.LocalServer.from_settings(settings, http_port=http_port if http else None)
    before = server.status()
    if not (local_neo4j.jar_dir(server.home) / ".complete").exists():
        console.print(f"Fetching Neo4j {local_neo4j.NEO4J_VERSION} from Maven Central into {server.home}…")
    if before.running and not before.ready:
        console.print(
            f"The local Neo4j (pid {before.pid}) is still starting, perhaps recovering after an unclean stop; "
            "waiting for it (`neuronmap db logs` shows its progress)…"
        )
    status, started = server.start(timeout=timeout)
    if started:
        click.echo(f"Neo4j {status.version} is running at {status.uri} (pid {status.pid}); data in {status.home}.")
    elif not before.ready:
        click.echo(f"Neo4j is running at {status.uri} (pid {status.pid}); it was starting, and now answers.")
    else:
        click.echo(f"Neo4j is already running at {status.uri} (pid {status.pid}); nothing to do.")
    if http and not status.http_uri:
        click.echo("It runs without HTTP: `neuronmap db stop`, then `neuronmap db start --http`.")
    if status.http_uri:
        if (local_neo4j.browser_dir(server.home) / ".complete").exists():
            click.echo(f"HTTP API and Neo4j Browser at {status.http_uri}/browser/ (connect to {status.uri}).")
        else:
            click.echo(
                f"HTTP API at {status.http_uri}; Neo4j Browser's assets could not be fetched from Maven Central "
                f"(org.neo4j.client:neo4j-browser:{local_neo4j.BROWSER_VERSION}), so connect a Browser you have, "
                f"or cypher-shell, to {status.uri}."
            )
    click.echo(f"User 'neo4j', password in {server.password_file} (owner-only).")


@db.command()
@click.pass_context
def fetch(ctx: click.Context) -> None:
    """Fetch the pinned Neo4j jars from Maven Central into the data home (once; cached afterwards).

    \b
    neuronmap db fetch
    """
    from neuronmap.service.store import local_neo4j

    settings: Settings = ctx.obj
    lib = local_neo4j.fetch_jars(settings.home)
    click.echo(f"Neo4j {local_neo4j.NEO4J_VERSION} jars in {lib}.")


@db.command()
@click.pass_context
def stop(ctx: click.Context) -> None:
    """Stop the local server; its data stays.

    \b
    neuronmap db stop
    """
    if _server(ctx).stop():
        click.echo("Stopped the local Neo4j.")
    else:
        click.echo("The local Neo4j was not running.")


@db.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Say whether the local server runs, where, and with which data folder.

    \b
    neuronmap db status
    """
    state = _server(ctx).status()
    if state.running:
        http = f"  http {state.http_uri}" if state.http_uri else ""
        what = "running" if state.ready else "starting"
        click.echo(f"{what}  {state.uri}{http}  pid {state.pid}  Neo4j {state.version}  data {state.home}")
        if not state.ready:
            click.echo(f"  {state.detail}; `neuronmap db logs` shows its progress")
    else:
        click.echo(f"stopped  ({state.detail})  data {state.home}")
        ctx.exit(3)


@db.command()
@click.option("-n", "--lines", default=40, show_default=True, type=click.IntRange(1, 100_000), help="Lines of each.")
@click.pass_context
def logs(ctx: click.Context, lines: int) -> None:
    """Print the end of the local server's logs: the launcher's output, then Neo4j's own debug.log.

    \b
    neuronmap db logs -n 100
    """
    server = _server(ctx)
    click.echo(f"== {server.log_file} (the launcher) ==")
    click.echo(server.log_tail(lines))
    click.echo(f"== {server.debug_log_file} (Neo4j) ==")
    click.echo(server.debug_log_tail(lines))


@db.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create the constraints and indexes (safe to run twice; every command also does this on first use).

    \b
    neuronmap db init
    """
    with store_from(ctx) as store:
        click.echo(f"Schema in place on {store.uri}.")


@db.command(name="password")
@click.pass_context
def password(ctx: click.Context) -> None:
    """Print the local server's generated password (for Neo4j Browser or cypher-shell).

    \b
    cypher-shell -a bolt://127.0.0.1:7687 -u neo4j -p "$(neuronmap db password)"
    """
    click.echo(_server(ctx).password())


COMMANDS = [db]
