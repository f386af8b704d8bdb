"""The neuronmap command line: one group per stage; errors raised on purpose are printed once, as one line."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

try:  # Ctrl-C while the command line loads (torch and the driver take seconds on a busy machine): no traceback
    import click

    from neuronmap.errors import NeuronmapError
    from neuronmap.service.cli import activations as _activations
    from neuronmap.service.cli import adhoc as _adhoc
    from neuronmap.service.cli import assess as _assess
    from neuronmap.service.cli import cluster as _cluster
    from neuronmap.service.cli import db as _db
    from neuronmap.service.cli import demo as _demo
    from neuronmap.service.cli import http as _http
    from neuronmap.service.cli import ingest as _ingest
    from neuronmap.service.cli import query as _query
    from neuronmap.service.cli import serve as _serve
except KeyboardInterrupt:
    sys.stderr.write("Interrupted while neuronmap was starting; nothing was done.\n")
    raise SystemExit(130) from None


if TYPE_CHECKING:
    import pydantic


def one_line_per_field(error: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())


class _Root(click.Group):
    """Prints the errors we raise on purpose as one line; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NeuronmapError as error:
            raise click.ClickException(str(error)) from error
        except Exception as error:
            pydantic = sys.modules.get("pydantic")  # not imported: then nothing raised a validation error
            if pydantic is not None and isinstance(error, pydantic.ValidationError):
                raise click.ClickException(one_line_per_field(error)) from error
            line = driver_error_line(error, ctx.invoked_subcommand or "")
            if line is None:
                raise  # a bug: keep the traceback
            raise click.ClickException(line) from error


def driver_error_line(error: BaseException, command: str = "") -> str | None:
    """One line for an error of the Neo4j driver: what failed, Neo4j's code, and the way out; None for others.

    The Store turns a lost server into StoreUnavailableError itself; what still arrives here is the server
    refusing or failing a statement (out of transaction memory, a constraint, a terminated transaction, …).
    """
    exceptions = sys.modules.get("neo4j.exceptions")  # not imported: if the driver never loaded, it raised nothing
    if exceptions is None or not isinstance(error, exceptions.Neo4jError | exceptions.DriverError):
        return None
    what = f"`neuronmap {command}`" if command else "The command"
    code = getattr(error, "code", None) or type(error).__name__
    message = (getattr(error, "message", None) or str(error) or type(error).__name__).strip()
    message = message.splitlines()[0].rstrip(".")
    if "OutOfMemory" in code or "MemoryPool" in code:
        way_out = (
            "The server ran out of transaction memory: raise NEURONMAP_NEO4J_HEAP (default 1g), then run "
            "`neuronmap db stop` and `neuronmap db start`; `neuronmap db logs` shows the server's side."
        )
    elif isinstance(error, exceptions.ServiceUnavailable | exceptions.SessionExpired | exceptions.IncompleteCommit):
        way_out = "`neuronmap db logs` shows why the server stopped; `neuronmap db start` starts it again."
    else:
        way_out = (
            "`neuronmap db logs` shows the server's side; `neuronmap db status` says whether it runs "
            "(`neuronmap db start` starts it)."
        )
    return f"{what} failed: Neo4j {code}: {message}. {way_out}"


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="neuronmap")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Find the modules inside neural networks, with Neo4j as the store.

    With NEO4J_URI (and NEO4J_USERNAME / NEO4J_PASSWORD) set, every command uses that server; otherwise the
    managed local Neo4j (`neuronmap db start`), started on first use.
    """
    from neuronmap.service.config import Settings  # pydantic loads once a command runs, not for `-h`

    ctx.obj = Settings.from_env()


def main() -> None:
    cli(prog_name="neuronmap")


for _module in (
    _db,
    _ingest,
    _activations,
    _cluster,
    _assess,
    _query,
    _adhoc,
    _serve,
    _http,
    _demo,
):  # register the commands
    for _command in _module.COMMANDS:
        cli.add_command(_command)
