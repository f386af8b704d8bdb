"""`neuronmap query` (the named library queries) and `neuronmap report` (HTML + PNG figures)."""

from __future__ import annotations

from pathlib import Path

import click

from neuronmap.cypher import catalog
from neuronmap.service.cli.common import console, format_option, store_from
from neuronmap.service.cli.output import emit
from neuronmap.service.store.library import LibraryQuery, library_queries, library_query, run_library_query

# Short spellings of parameters that the examples use (compare-partitions --a/--b).
_ALIASES = {"a": "partition_a", "b": "partition_b"}


def _parse_params(query: LibraryQuery, args: list[str], pairs: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """`--name value` options after the query's name, and `-p name value` pairs, cast by the header's types."""
    raw: dict[str, str] = {}
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if not token.startswith("--"):
            raise click.UsageError(f"Unexpected argument {token!r}; parameters go as --name value or -p name value.")
        key, _, value = token[2:].partition("=")
        if not value:
            if not rest:
                raise click.UsageError(f"Parameter --{key} needs a value.")
            value = rest.pop(0)
        raw[key] = value
    raw.update(dict(pairs))
    params: dict[str, object] = {}
    for key, text in raw.items():
        name = _ALIASES.get(key, key).replace("-", "_")
        param = query.param(name)  # an unknown name fails here, listing the known ones
        params[name] = (
            text if name.startswith("partition") or name in ("model", "layer", "models") else param.cast(text)
        )
    return params


def _list_queries() -> None:
    rows = [
        {
            "query": q.name.replace("_", "-"),
            "summary": q.summary,
            "parameters": ", ".join(f"{p.name}{'' if not p.has_default else '=' + str(p.default)}" for p in q.params),
            "columns": ", ".join(q.columns),
        }
        for q in library_queries()
    ]
    emit(rows, ["query", "summary", "parameters", "columns"], "table", title="named queries")


def _show(name: str) -> None:
    query = library_query(name)
    click.echo(f"-- {query.query}  (cypher/queries/{query.query.replace('.', '/')}.cypher)")
    for param in query.params:
        default = f" = {param.default}" if param.has_default else ""
        click.echo(f"--   {param.name}: {param.type}{default}   {param.doc}")
    click.echo(catalog.get(query.query).text)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List every named query, its parameters and columns.")
@click.option("--show", "show", is_flag=True, help="Print the query's parameters and Cypher text.")
@click.option("-p", "--param", "pairs", type=(str, str), multiple=True, help="A parameter as NAME VALUE.")
@format_option()
@click.pass_context
def query(
    ctx: click.Context, name: str | None, list_: bool, show: bool, pairs: tuple[tuple[str, str], ...], fmt: str
) -> None:
    """Run a named library query; parameters go as --name value (or -p name value).

    \b
    neuronmap query --list
    neuronmap query module-span --model mnist-mlp-a --partition latest
    neuronmap query module-flow --model mnist-mlp-a --format csv > flow.csv
    neuronmap query compare-models --format json
    neuronmap query compare-partitions --model mnist-mlp-a --a <partition id> --b latest
    """
    if list_ or not name:
        _list_queries()
        return
    if show:
        _show(name)
        return
    described = library_query(name)
    params = _parse_params(described, ctx.args, pairs)
    with store_from(ctx) as store:
        rows = run_library_query(store, name, **params)
        comparison = None
        if described.name == "compare_partitions":
            from neuronmap.service.store.compare import compare_partitions

            comparison = compare_partitions(
                store,
                str(params.get("partition_a", "latest")),
                str(params.get("partition_b", "latest")),
                model=str(params["model"]) if params.get("model") else None,
            )
    emit(rows, described.columns, fmt, title=described.name.replace("_", "-"))
    if not rows and fmt == "table":
        console.print("(no rows)")
    if comparison is not None:
        console.print(
            f"ARI {comparison.ari:.4f}   NMI {comparison.nmi:.4f}   "
            f"({comparison.partition_a} vs {comparison.partition_b})"
        )


@click.command()
@click.argument("model")
@click.option("--partition", default="latest", show_default=True, help="A partition id, or latest.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True)
@click.pass_context
def report(ctx: click.Context, model: str, partition: str, out: Path) -> None:
    """Write a self-contained HTML report with PNG figures for one partition of a model.

    \b
    neuronmap report mnist-mlp-a --out report/
    """
    from neuronmap.service.report import write_report

    with store_from(ctx) as store:
        page = write_report(store, model, partition, out)
    click.echo(f"Wrote {page}")


COMMANDS = [query, report]
