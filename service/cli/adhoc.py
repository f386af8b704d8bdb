"""`neuronmap cypher`: one Cypher statement of the user's own, for questions the named queries do not have."""

from __future__ import annotations

import sys

import click

from neuronmap.service.cli.common import columns_option, console, format_option, store_from
from neuronmap.service.cli.output import emit


@click.command(name="cypher")
@click.argument("statement")
@click.option(
    "-p",
    "--param",
    "pairs",
    type=(str, str),
    multiple=True,
    help='A parameter as NAME VALUE, read as JSON when it is JSON (5, 0.5, true, null, [1, 2], {"a": 1}, "5"), '
    "else as text.",
)
@click.option("--write", is_flag=True, help="Allow writes; without it the statement runs in a read transaction.")
@columns_option()
@format_option()
@click.pass_context
def cypher(
    ctx: click.Context,
    statement: str,
    pairs: tuple[tuple[str, str], ...],
    write: bool,
    columns: tuple[str, ...] | None,
    fmt: str,
) -> None:
    """Run one Cypher statement of your own (- reads it from stdin); read-only unless --write.

    Values go as $parameters (-p NAME VALUE), never into the text; quote the statement with '…' so that the shell
    leaves $name alone. Without --write the statement runs in a READ transaction, so the server itself refuses a
    write.

    \b
    neuronmap cypher "MATCH (m:Model) RETURN m.name AS model, m.n_edges AS edges ORDER BY edges DESC"
    neuronmap cypher 'MATCH (c:Cluster {partition: $p}) WHERE c.size >= $min RETURN c.index, c.size' \\
        -p p <partition id> -p min 10 --format csv
    neuronmap cypher "MATCH (n:Scratch) DETACH DELETE n" --write
    """
    from neuronmap.cypher.adhoc import parse_params, run_ad_hoc

    if statement == "-":
        statement = sys.stdin.read()
    if not statement.strip():
        raise click.UsageError("The statement is empty.")
    params = parse_params(pairs)
    with store_from(ctx) as store:
        result = run_ad_hoc(store, statement, params, write=write)
    emit(result.rows, result.columns, fmt, select=columns)
    if fmt == "table" and not result.rows:
        changed = ", ".join(f"{what.replace('_', ' ')}: {count:,}" for what, count in result.counters.items())
        console.print(f"(no rows{'; ' + changed if changed else ''})")


COMMANDS = [cypher]
