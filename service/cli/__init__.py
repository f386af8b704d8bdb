"""The neuronmap command line: one group per stage; errors raised on purpose are printed once, as one line."""

from __future__ import annotations

from typing import Any

import click
import pydantic

from neuronmap.errors import NeuronmapError
from neuronmap.service.cli import activations as _activations
from neuronmap.service.cli import assess as _assess
from neuronmap.service.cli import cluster as _cluster
from neuronmap.service.cli import db as _db
from neuronmap.service.cli import demo as _demo
from neuronmap.service.cli import ingest as _ingest
from neuronmap.service.cli import query as _query
from neuronmap.service.cli import serve as _serve
from neuronmap.service.config import Settings


def one_line_per_field(error: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())


class _Root(click.Group):
    """Prints the errors we raise on purpose as one line; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NeuronmapError as error:
            raise click.ClickException(str(error)) from error
        except pydantic.ValidationError as error:
            raise click.ClickException(one_line_per_field(error)) from error


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="neuronmap")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Find the modules inside neural networks, with Neo4j as the store.

    With NEO4J_URI (and NEO4J_USERNAME / NEO4J_PASSWORD) set, every command uses that server; otherwise the
    managed local Neo4j (`neuronmap db start`), started on first use.
    """
    ctx.obj = Settings.from_env()


def main() -> None:
    cli(prog_name="neuronmap")


for _module in (_db, _ingest, _activations, _cluster, _assess, _query, _serve, _demo):  # register the commands
    for _command in _module.COMMANDS:
        cli.add_command(_command)
