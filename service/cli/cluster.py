"""`neuronmap cluster` and `neuronmap partitions`: partition a model, list and drop partitions."""

from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING

import click

from neuronmap.options import EigenSolver, NullMethod, SummaryFormat
from neuronmap.service.cli.common import StageBars, choice, console, device_option, format_option, progress, store_from
from neuronmap.service.cli.output import emit

if TYPE_CHECKING:
    from neuronmap.service.runs import PartitionResult


def _summary_rows(result: PartitionResult) -> list[dict[str, object]]:
    rows = [
        ("partition", result.id),
        ("model", result.model),
        ("edges", result.edges),
        ("layers", result.layers),
        ("k", result.k),
        ("neurons", result.n_neurons),
        ("isolated (label -1)", result.n_isolated),
        ("n-cut", f"{result.ncut:.6g}"),
        ("cluster sizes", " ".join(map(str, result.cluster_sizes))),
        ("solver / device", f"{result.solver} / {result.device}"),
        ("eigen-residual", f"{result.eigen_residual:.2e}"),
    ]
    if result.n_null:
        rows += [
            ("null", f"{result.n_null} × {result.null_method}"),
            ("null n-cut mean ± sd", f"{result.null_mean:.6g} ± {result.null_sd:.3g}"),
            ("z-score", f"{result.z:.3g}"),
            ("p-value", f"{result.p_value:.4g}"),
        ]
    rows.append(
        (
            "seconds (pull, cluster, null, write)",
            f"{result.pull_seconds:.2f}, {result.cluster_seconds:.2f}, "
            f"{result.null_seconds:.2f}, {result.write_seconds:.2f}",
        )
    )
    return [{"field": k, "value": v} for k, v in rows]


@click.command()
@click.argument("model")
@click.option("-k", "--k", "n_clusters", default=12, show_default=True, help="Number of clusters.")
@click.option(
    "--shuffles",
    "n_shuffles",
    default=0,
    show_default=True,
    help="Shuffled networks for the clusterability null (0: none).",
)
@click.option(
    "--null-method",
    type=choice(NullMethod),
    help="Default: layer for weight graphs, upper_triangle for activation graphs.",
)
@click.option(
    "--layers",
    help="first:last layer by name to cluster, e.g. conv1:conv3; for a transformer, blocks by number or module "
    "path (3, 2:5, transformer.h.3).",
)
@click.option("--layer-index", "layer_indexes", help="first:last layer by index instead, e.g. 1:3.")
@click.option(
    "--edges", default="weight", show_default=True, help="'weight', or the name of an activation graph of the model."
)
@click.option("--min-weight", default=0.0, show_default=True, help="Drop edges with |w| below this.")
@device_option()
@click.option("--seed", default=0, show_default=True, help="Makes labels and nulls identical run to run.")
@click.option("--solver", "eigen_solver", type=choice(EigenSolver), default="auto", show_default=True)
@click.option("--n-init", type=int, help="k-means restarts (default 10; 25/100 with --parity).")
@click.option("--parity", is_flag=True, help="The reference code's settings (methods.md §3).")
@format_option(SummaryFormat)
@click.pass_context
def cluster(
    ctx: click.Context,
    model: str,
    n_clusters: int,
    n_shuffles: int,
    null_method: str | None,
    layers: str | None,
    layer_indexes: str | None,
    edges: str,
    min_weight: float,
    device: str | None,
    seed: int,
    eigen_solver: str,
    n_init: int | None,
    parity: bool,
    fmt: str,
) -> None:
    """Partition a model's neurons by spectral clustering and write the partition back.

    \b
    neuronmap cluster mnist-mlp-a --k 12
    neuronmap cluster mnist-mlp-a --k 12 --shuffles 200     # + clusterability: z-score, p-value
    neuronmap cluster small-cnn --k 8 --layers conv1:conv3 --device cuda
    neuronmap cluster gpt2-mlp-in --k 2 --layers 3          # one transformer block (mlp-in graph); stores C
    """
    from neuronmap.service.runs import ClusterConfig, run_clustering

    config = ClusterConfig(
        n_clusters=n_clusters,
        edges=edges,
        layers=layers,
        layer_indexes=layer_indexes,
        min_weight=min_weight,
        n_shuffles=n_shuffles,
        null_method=null_method,
        random_state=seed,
        device=device or ctx.obj.device,
        eigen_solver=eigen_solver,
        n_init=n_init,
        parity=parity,
    )
    with store_from(ctx) as store, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from neuronmap.service.store import transformers

        # a transformer's blocks by number or module path (--layers 3, transformer.h.2:transformer.h.5)
        config = config.model_copy(update={"layers": transformers.resolve_block_spec(store, model, layers)})
        if n_shuffles:
            # a bar for the shuffled networks, as ingest and the lesions have; the stages before them as a line
            stages = ["pull", "cluster", "write"]
            with progress() as bar:
                stage = bar.add_task("pull…", total=len(stages))
                bars = StageBars(bar)
                result = run_clustering(
                    store,
                    model,
                    config,
                    on_stage=lambda s: bar.update(stage, description=f"{s}…", completed=stages.index(s)),
                    on_progress=lambda s, done, total: bars("shuffled networks", done, total),
                )
                bar.update(stage, completed=len(stages), description="clustered and stored")
        else:
            with console.status("clustering…") as status:
                result = run_clustering(store, model, config, on_stage=lambda s: status.update(f"{s}…"))
        # a transformer partition also carries C, its share of squared weight inside the clusters (vs 1/k)
        within = (
            transformers.record_within_fraction(store, model, result.id)
            if edges == "weight" and (transformers.is_transformer(store, model))
            else None
        )
    for warning in caught:  # degraded but usable input (a disconnected graph): say so, once, without a traceback
        console.print(f"[yellow]warning:[/yellow] {warning.message}")
    if fmt == "json":
        extra = (
            {"within_fraction": within.fraction, "within_fraction_no_structure": within.no_structure}
            if within is not None
            else {}
        )
        click.echo(json.dumps({**result.model_dump(mode="json"), **extra}, indent=2))
        return
    emit(_summary_rows(result), ["field", "value"], "table", title=f"partition of {model}")
    if within is not None:
        console.print(
            f"within-cluster fraction C = {within.fraction:.3g} (no structure: 1/k = {within.no_structure:.3g})",
            highlight=False,
        )
    verdict = result.verdict()
    if verdict:
        console.print(verdict, highlight=False)


@click.command()
@click.argument("model")
@click.option("--drop", "drop_id", help="Remove this partition (its clusters and memberships).")
@format_option()
@click.pass_context
def partitions(ctx: click.Context, model: str, drop_id: str | None, fmt: str) -> None:
    """List the partitions stored for a model, newest first; or drop one.

    \b
    neuronmap partitions mnist-mlp-a
    neuronmap partitions mnist-mlp-a --drop mnist-mlp-a/p-1a2b3c4d
    """
    from neuronmap.service.store import admin

    with store_from(ctx) as store:
        if drop_id:
            admin.drop_partition(store, model, drop_id)
            click.echo(f"Dropped partition {drop_id}.")
            return
        rows = admin.list_partitions(store, model)
    emit(
        rows,
        ["id", "k", "edges", "layers", "seed", "ncut", "n_null", "null_mean", "z", "p_value", "created_at"],
        fmt,
        title=f"partitions of {model}",
    )


COMMANDS = [cluster, partitions]
