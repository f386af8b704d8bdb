"""`neuronmap demo`: the main job end to end on data that ships with scikit-learn."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from neuronmap.service.cli.common import StageBars, console, progress, store_from
from neuronmap.service.cli.output import emit

if TYPE_CHECKING:
    from neuronmap.cypher import Store

DEMO_MODELS = ("digits-mlp", "digits-cnn")


def _ingest_file(ctx: click.Context, store, name: str, path: Path, arch: str | None) -> None:
    from neuronmap.loaders import load_graph
    from neuronmap.loaders.ingest.weights import ingest as ingest_graph

    graph = load_graph(path, arch=arch)
    with progress() as bar:
        task = bar.add_task(f"ingest {name}", total=graph.n_edges)
        ingest_graph(
            store, name, graph, replace=True, batch_size=ctx.obj.batch_size, on_batch=lambda n: bar.advance(task, n)
        )


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to save the trained models (default: <data home>/demo).",
)
@click.option("--epochs", default=20, show_default=True, help="Training epochs per network.")
@click.option("--seed", default=0, show_default=True)
@click.option("--shuffles", default=100, show_default=True, help="Shuffled networks for the clusterability null.")
@click.option(
    "--random-sets",
    default=100,
    show_default=True,
    type=click.IntRange(min=2),
    help="Random same-size neuron sets per sub-cluster for importance (coherence uses up to 20).",
)
@click.option(
    "--assess/--no-assess",
    default=True,
    show_default=True,
    help="Then test the partitions' sub-clusters for importance (lesions) and coherence.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Replace digits-mlp and digits-cnn even if they have partitions or activation graphs (an earlier demo's, "
    "or your own work), which are dropped with them.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    out: Path | None,
    epochs: int,
    seed: int,
    shuffles: int,
    random_sets: int,
    assess: bool,
    replace: bool,
) -> None:
    """Train small nets on scikit-learn's digits, save and ingest them, cluster them against shuffled nets, and
    assess the partitions (importance and coherence of every sub-cluster).

    \b
    neuronmap demo
    neuronmap models
    """
    import torch
    from safetensors.torch import save_file

    from neuronmap.examples import nets
    from neuronmap.examples.train import train
    from neuronmap.loaders.datasets import digits
    from neuronmap.service.runs import ClusterConfig, run_clustering
    from neuronmap.service.store.admin import list_models

    if not replace:
        with store_from(ctx) as store:
            _refuse_to_replace_work(store)
    out = out or ctx.obj.home / "demo"
    out.mkdir(parents=True, exist_ok=True)
    flat, image = digits(), digits(image=True)

    torch.manual_seed(seed)
    mlp = nets.digits_mlp()
    console.print(f"Training digits-mlp (64-64-64-10) for {epochs} epochs…")
    acc = train(mlp, flat, epochs=epochs, seed=seed)
    console.print(f"  test accuracy {acc:.3f}")
    mlp_path = out / "digits-mlp.safetensors"
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(mlp_path))

    torch.manual_seed(seed)
    cnn = nets.digits_cnn()
    console.print(f"Training digits-cnn (conv-BN ×2, pool, dense) for {epochs} epochs…")
    acc = train(cnn, image, epochs=epochs, seed=seed)
    console.print(f"  test accuracy {acc:.3f}")
    cnn_path = out / "digits-cnn.pt2"
    torch.export.save(torch.export.export(cnn.eval(), (image.x_test[:1],)), str(cnn_path))

    with store_from(ctx) as store:
        _ingest_file(ctx, store, "digits-mlp", mlp_path, "neuronmap.examples.nets:digits_mlp")
        _ingest_file(ctx, store, "digits-cnn", cnn_path, None)
        rows = list_models(store)
        emit(
            [r for r in rows if r["name"] in ("digits-mlp", "digits-cnn")],
            ["name", "status", "n_layers", "n_neurons", "n_edges", "arch"],
            "table",
            title="demo models",
        )
        results = []
        for name, config in (
            ("digits-mlp", ClusterConfig(n_clusters=8, n_shuffles=shuffles, random_state=seed)),
            ("digits-cnn", ClusterConfig(n_clusters=4, n_shuffles=shuffles, random_state=seed)),
        ):
            with console.status(f"clustering {name} and {shuffles} shuffled copies…"):
                results.append(run_clustering(store, name, config))
        emit(
            [r.model_dump() for r in results],
            ["model", "id", "k", "ncut", "null_mean", "null_sd", "z", "p_value"],
            "table",
            title="partitions (lower n-cut than the shuffled nets = more clusterable)",
        )
        if assess:
            emit(
                [_assess(ctx, store, r.model, seed, out, random_sets) for r in results],
                ["model", "accuracy", "important", "importance_fisher_p", "coherent_features", "coherent_examples"],
                "table",
                title="sub-clusters that matter (lesions, 100 random sets) and mean something (20 sets)",
            )
    console.print(
        f"Saved the trained models in {out}. Next: neuronmap partitions digits-mlp, "
        "neuronmap query important-modules --model digits-mlp, neuronmap report digits-mlp --out report"
    )


def _refuse_to_replace_work(store: Store) -> None:
    """Stop before training when a demo model holds work that re-ingesting it would drop: partitions (with their
    assessments) or activation graphs. A bare model, such as the leftovers of an interrupted demo, is replaced."""
    from neuronmap.loaders.ingest.activations import list_graphs
    from neuronmap.service.store.admin import list_models, list_partitions

    present = {row["name"] for row in list_models(store)}
    for name in DEMO_MODELS:
        if name not in present:
            continue
        work = [
            _count(len(list_partitions(store, name)), "partition"),
            _count(len(list_graphs(store, name)), "activation graph"),
        ]
        held = " and ".join(w for w in work if w)
        if held:
            raise click.ClickException(
                f"Model {name!r} is already in the store with {held} (an earlier demo's or your own work); "
                "pass --replace to replace it and drop them, or `neuronmap drop` it first."
            )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}" if n else ""


def _assess(ctx: click.Context, store, model: str, seed: int, out: Path, random_sets: int) -> dict[str, object]:
    """Importance and coherence of the model's newest partition, as one summary row."""
    from neuronmap.service.runs import run_coherence, run_importance

    with progress() as bar:
        bars = StageBars(bar)
        importance = run_importance(
            store,
            model,
            "latest",
            dataset="digits",
            n_null=random_sets,
            seed=seed,
            device=ctx.obj.device,
            on_progress=bars,
        )
        coherence = run_coherence(
            store,
            model,
            "latest",
            dataset="digits",
            n_null=min(20, random_sets),
            seed=seed,
            device=ctx.obj.device,
            steps=128,
            out_dir=out / f"{model}-features",
            on_progress=bars,
        )

    def share(result) -> str:
        return f"{result.n_coherent} of {len(result.subclusters)}"

    return {
        "model": model,
        "accuracy": importance.accuracy,
        "important": f"{importance.n_important} of {importance.n_tested}",
        "importance_fisher_p": importance.fisher_p,
        "coherent_features": share(coherence.features),
        "coherent_examples": share(coherence.examples),
    }


COMMANDS = [demo]
