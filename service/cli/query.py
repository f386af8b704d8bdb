"""`neuronmap query` (the named library queries) and `neuronmap report` (the explorer's partition page as one HTML
file, and PNG figures)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from neuronmap.options import LATEST
from neuronmap.service.cli.common import console, format_option, store_from
from neuronmap.service.cli.output import emit

if TYPE_CHECKING:
    from neuronmap.service.store.library import LibraryQuery, LibraryRows

# Short spellings of parameters that the examples use (compare-partitions --a/--b).
_ALIASES = {"a": "partition_a", "b": "partition_b"}
_TEXT_PARAMS = ("model", "layer", "models", "edges")  # taken as typed: names, ids and lists are resolved later
# Columns that hold one layer's name: a table prints the layer's role, kind and size beside it.
_LAYER_COLUMNS = ("layer", "first_layer", "last_layer", "thickest_layer", "src_layer", "dst_layer")


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
        params[name] = text if name.startswith("partition") or name in _TEXT_PARAMS else param.cast(text)
    return params


def _list_queries() -> None:
    from neuronmap.service.store.library import library_queries

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


def _say_resolved(rows: LibraryRows) -> None:
    from neuronmap.service.store.library import describe_latest

    for key, partition in rows.resolved.items():
        prefix = "" if key == "partition" else f"{key}: "
        console.print(prefix + describe_latest(rows.model, partition, rows.edges), highlight=False)


def with_layer_labels(
    rows: Sequence[dict[str, Any]], labels: dict[str, str], columns: Sequence[str] = _LAYER_COLUMNS
) -> list[dict[str, Any]]:
    """Rows for a table: each layer name in ``columns`` replaced by ``0 (hidden, Linear, 64)``."""
    return [
        {
            key: labels.get(value, value) if key in columns and isinstance(value, str) else value
            for key, value in row.items()
        }
        for row in rows
    ]


def _compare(ctx: click.Context, params: dict[str, object], fmt: str, matrix: bool) -> None:
    from neuronmap.service.store.compare import compare_partitions
    from neuronmap.service.store.library import describe_latest

    asked = {key: str(params.get(key, LATEST)) for key in ("partition_a", "partition_b")}
    model = str(params["model"]) if params.get("model") else None
    edges = str(params.get("edges") or "weight")
    with store_from(ctx) as store:
        comparison = compare_partitions(store, asked["partition_a"], asked["partition_b"], model=model, edges=edges)
    for key, resolved in (("partition_a", comparison.partition_a), ("partition_b", comparison.partition_b)):
        if asked[key] == LATEST:
            console.print(f"{key}: {describe_latest(model, resolved, edges)}", highlight=False)
    scores = {"ari": comparison.ari, "nmi": comparison.nmi}
    if matrix:
        rows, columns = comparison.matrix_rows(), comparison.matrix_columns()
        if fmt != "table":
            rows = [{**row, **scores} for row in rows]
            columns = [*columns, "ari", "nmi"]
        title = f"{comparison.partition_a} (rows) × {comparison.partition_b} (columns); -1: not in that partition"
        emit(rows, columns, fmt, title=title)
    elif fmt == "table":
        emit(comparison.rows(), ["cluster_a", "cluster_b", "n"], fmt, title="compare-partitions")
    else:
        columns = ["partition_a", "partition_b", "cluster_a", "cluster_b", "n", "ari", "nmi"]
        emit(comparison.rows(), columns, fmt, title="compare-partitions")
    console.print(
        f"ARI {comparison.ari:.4f}   NMI {comparison.nmi:.4f}   "
        f"({comparison.partition_a} vs {comparison.partition_b}, {comparison.n_common:,} neurons in both)",
        highlight=False,
    )


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List every named query, its parameters and columns.")
@click.option(
    "--show",
    "show",
    is_flag=True,
    help="Print the query's Cypher with its header as // comments; with parameters, resolved and written in.",
)
@click.option("--matrix", is_flag=True, help="compare-partitions: print the contingency table as a k×k matrix.")
@click.option("-p", "--param", "pairs", type=(str, str), multiple=True, help="A parameter as NAME VALUE.")
@format_option()
@click.pass_context
def query(
    ctx: click.Context,
    name: str | None,
    list_: bool,
    show: bool,
    matrix: bool,
    pairs: tuple[tuple[str, str], ...],
    fmt: str,
) -> None:
    """Run a named library query; parameters go as --name value (or -p name value).

    Partition 'latest' is the model's newest partition of its weights, or of the activation graph --edges names.
    A layer is given by its name (--layer 0), or by its index (--layer-index 1).

    \b
    neuronmap query --list
    neuronmap query module-span --model mnist-mlp-a --partition latest
    neuronmap query module-flow --model mnist-mlp-a --edges digits-pearson --format csv > flow.csv
    neuronmap query neuron --model mnist-mlp-a --layer fc1 --unit 7
    neuronmap query compare-models --format json
    neuronmap query compare-partitions --model mnist-mlp-a --a <partition id> --b latest --matrix
    neuronmap query module-span --show --model mnist-mlp-a     # the Cypher, ready to paste
    """
    from neuronmap.service.store.library import (
        layer_labels,
        library_query,
        library_query_text,
        run_library_query,
        show_library_query,
    )

    if list_ or not name:
        _list_queries()
        return
    described = library_query(name)
    params = _parse_params(described, ctx.args, pairs)
    if matrix and described.name != "compare_partitions":
        raise click.UsageError("--matrix goes with compare-partitions only.")
    if show:
        if not params:
            click.echo(library_query_text(name), nl=False)
            return
        with store_from(ctx) as store:
            click.echo(show_library_query(store, name, **params), nl=False)
        return
    if described.name == "compare_partitions":
        _compare(ctx, params, fmt, matrix)
        return
    with store_from(ctx) as store:
        rows = run_library_query(store, name, **params)
        labels = layer_labels(store, rows.model) if fmt == "table" and rows.model else {}
    _say_resolved(rows)
    emit(
        with_layer_labels(rows, labels) if labels else rows,
        described.columns,
        fmt,
        title=described.name.replace("_", "-"),
    )
    if not rows and fmt == "table":
        console.print("(no rows)")


@click.command()
@click.argument("model")
@click.option(
    "--partition",
    default=LATEST,
    show_default=True,
    help="A partition id, or latest: the newest partition of the --edges graph.",
)
@click.option(
    "--edges",
    default="weight",
    show_default=True,
    help="Which graph's newest partition 'latest' means: 'weight', or an activation graph's name.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True)
@click.pass_context
def report(ctx: click.Context, model: str, partition: str, edges: str, out: Path) -> None:
    """Save one partition's explorer page as a self-contained report.html, with PNG figures beside it.

    \b
    neuronmap report mnist-mlp-a --out report/
    """
    from neuronmap.service.report import write_report
    from neuronmap.service.store.library import describe_latest, resolve_partition

    with store_from(ctx) as store:
        partition_id = resolve_partition(store, model, partition, edges=edges)
        if partition == LATEST:
            console.print(describe_latest(model, partition_id, edges), highlight=False)
        written = write_report(store, model, partition_id, out, edges=edges)
    click.echo(f"Wrote {written.page} and {', '.join(path.name for path in written.figures.values())}")


COMMANDS = [query, report]
