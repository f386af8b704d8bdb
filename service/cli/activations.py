"""`neuronmap activations`: correlation graphs from a model's activations over a data set."""

from __future__ import annotations

import click

from neuronmap.options import ChannelReduction, CorrelationMethod, DeviceName, choices
from neuronmap.service.cli.common import console, progress, store_from
from neuronmap.service.cli.output import emit


@click.command()
@click.argument("model")
@click.option(
    "--data",
    default="digits",
    show_default=True,
    help="A named data set (digits, digits-image, line, poly, halves, …), an .npz file or an image folder.",
)
@click.option(
    "--corr",
    "method",
    type=click.Choice(choices(CorrelationMethod)),
    default="spearman",
    show_default=True,
    help="Edges are r² of this correlation (the reference's squared Spearman by default).",
)
@click.option("--min-r2", default=0.0, show_default=True, help="Keep only edges with r² at least this.")
@click.option("--top-k", type=int, help="Keep each neuron's k strongest edges (the union over both ends).")
@click.option(
    "--reduction",
    type=click.Choice(choices(ChannelReduction)),
    default="l2",
    show_default=True,
    help="Conv channel per image: L2 (Frobenius), mean, or the reference's spectral norm (parity).",
)
@click.option("--name", help="The graph's name (default: DATA-CORR); `cluster --edges NAME` uses it.")
@click.option("--batch-size", default=512, show_default=True)
@click.option("--device", type=click.Choice(choices(DeviceName)), default=None)
@click.option("--replace", is_flag=True, help="Replace an activation graph of the same name.")
@click.option("--list", "list_", is_flag=True, help="List the model's activation graphs instead.")
@click.pass_context
def activations(
    ctx: click.Context,
    model: str,
    data: str,
    method: CorrelationMethod,
    min_r2: float,
    top_k: int | None,
    reduction: ChannelReduction,
    name: str | None,
    batch_size: int,
    device: str | None,
    replace: bool,
    list_: bool,
) -> None:
    """Correlate a model's hidden units over a data set and store the graph as CORRELATION edges.

    \b
    neuronmap activations mnist-mlp-a --data digits --corr spearman --min-r2 0.0
    neuronmap cluster mnist-mlp-a --edges digits-spearman --k 12 --shuffles 100
    """
    from neuronmap.loaders.activations import compute_correlations, sparsify
    from neuronmap.loaders.datasets import load_dataset
    from neuronmap.loaders.ingest.activations import ingest_activation_graph, list_graphs
    from neuronmap.service.store.model_source import reload_source

    with store_from(ctx) as store:
        if list_:
            emit(
                list_graphs(store, model),
                ["name", "status", "data", "method", "n_inputs", "n_units", "n_edges"],
                "table",
                title=f"activation graphs of {model}",
            )
            return
        module, input_shape = reload_source(store, model)  # a .pt2 model's ExportedProgram runs as it is
        dataset = load_dataset(data)
        inputs = dataset.x_test  # the reference correlates over the test set
        if input_shape and tuple(inputs.shape[1:]) != input_shape and inputs[0].numel() == _numel(input_shape):
            inputs = inputs.reshape(-1, *input_shape)  # e.g. digits' 64 features for a 1×8×8 conv net
        with console.status(f"recording and correlating {len(inputs):,} inputs…"):
            corr = compute_correlations(
                module,
                inputs,
                method=method,
                reduction=reduction,
                batch_size=batch_size,
                device=device or ctx.obj.device,
                input_shape=input_shape or None,
                data=f"{data}:test",
            )
            edges = sparsify(corr, min_r2=min_r2, top_k=top_k)
        name = name or f"{data}-{method}"
        with progress() as bar:
            task = bar.add_task(f"ingest {name}", total=edges.n_edges)
            written = ingest_activation_graph(
                store,
                model,
                name,
                edges,
                replace=replace,
                batch_size=ctx.obj.batch_size,
                on_batch=lambda n: bar.advance(task, n),
            )
    excluded = f", {edges.excluded.size} zero-variance units excluded" if edges.excluded.size else ""
    console.print(
        f"Activation graph {name!r} of {model!r}: {edges.n_units:,} units, {written:,} edges{excluded}. "
        f"Cluster it with: neuronmap cluster {model} --edges {name}"
    )


def _numel(shape: tuple[int, ...]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


COMMANDS = [activations]
