"""`neuronmap importance` and `neuronmap coherence`: do a partition's parts matter, and do they mean something?"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import click

from neuronmap.options import AblationMethod, CoherenceMethod, choices
from neuronmap.service.cli.common import StageBars, console, device_option, format_option, progress, store_from
from neuronmap.service.cli.output import emit

_IMPORTANCE_COLUMNS = [
    "layer_name",
    "cluster",
    "size",
    "accuracy",
    "delta_accuracy",
    "null_delta_mean",
    "p_value",
    "p_adjusted",
    "range_statistic",
    "p_range",
    "category",
]
_COHERENCE_COLUMNS = [
    "layer_name",
    "cluster",
    "size",
    "statistic",
    "p_value",
    "p_adjusted",
    "entropy",
    "null_entropy_mean",
    "activation",
    "null_activation_mean",
    "similarity",
]


def _token_options(command: Any) -> Any:
    """``--context`` and ``--heldout``: how a transformer's token data is cut and split."""
    command = click.option(
        "--heldout", default=0.2, show_default=True, help="Transformers: the fraction of contexts held out and scored."
    )(command)
    return click.option("--context", default=128, show_default=True, help="Transformers: tokens per context.")(command)


@click.command()
@click.argument("model")
@click.option(
    "--partition",
    default="latest",
    show_default=True,
    help="A partition id, or latest: the newest partition of the --edges graph.",
)
@click.option(
    "--edges",
    default="weight",
    show_default=True,
    help="Which graph's newest partition 'latest' means: 'weight', or an activation graph's name.",
)
@click.option(
    "--data",
    "dataset",
    default="digits",
    show_default=True,
    help="A classification data set the net reads; for a transformer, text:PATH, npz:PATH or two-task.",
)
@click.option(
    "--random-sets",
    "n_null",
    default=200,
    show_default=True,
    help="Random same-size sets per sub-cluster (N); the smallest p-value is 1/(N+1).",
)
@click.option(
    "--double",
    is_flag=True,
    help="Also run the double-lesion interaction test (methods.md §5.8; transformers: double ablations, §11.2).",
)
@click.option("--parity", is_flag=True, help="The reference code's choices (balanced accuracy, thresholds).")
@click.option(
    "--ablation",
    type=click.Choice(choices(AblationMethod)),
    default="mean",
    show_default=True,
    help="Transformers: set the ablated MLP neurons to their mean over the data, or to 0.",
)
@_token_options
@click.option("--seed", default=0, show_default=True)
@device_option()
@format_option()
@click.pass_context
def importance(
    ctx: click.Context,
    model: str,
    partition: str,
    edges: str,
    dataset: str,
    n_null: int,
    double: bool,
    parity: bool,
    ablation: str,
    context: int,
    heldout: float,
    seed: int,
    device: str | None,
    fmt: str,
) -> None:
    """Lesion every sub-cluster (a cluster within one layer) and compare with random same-size sets.

    A transformer's MLP sub-clusters (a cluster within one block) are ablated instead, scored by next-token loss
    on held-out text (methods.md §11).

    \b
    neuronmap importance mnist-mlp-a --partition latest --data digits --random-sets 200
    neuronmap importance gpt2-a --partition latest --data text:corpus/ --random-sets 200 --ablation mean
    neuronmap query important-modules --model mnist-mlp-a
    """
    from neuronmap.service.runs import run_double_lesion, run_importance

    options: dict[str, Any] = {"parity": True} if parity else {}
    with store_from(ctx) as store, progress() as bar:
        if _transformer(store, model, dataset, "importance"):
            if parity:
                raise click.BadParameter(
                    "is the reference's choices for classifiers (balanced accuracy); transformers are scored by "
                    "next-token loss.",
                    param_hint="--parity",
                )
            from neuronmap.service.cli.assess_transformer import transformer_importance

            used = transformer_importance(
                store,
                bar,
                model,
                partition,
                fmt,
                data=dataset,
                n_null=n_null,
                ablation=ablation,
                context=context,
                heldout=heldout,
                seed=seed,
                device=device or ctx.obj.device,
                edges=edges,
                double=double,
            )
            _say_resolved(model, partition, used.partition, edges)
            return
        result = run_importance(
            store,
            model,
            partition,
            dataset=dataset,
            n_null=n_null,
            seed=seed,
            device=device or ctx.obj.device,
            on_progress=StageBars(bar),
            edges=edges,
            **options,
        )
        _say_resolved(model, partition, result.partition, edges)
        pairs = (
            run_double_lesion(
                store,
                model,
                result.partition,  # the one just assessed, even if a partition is written meanwhile
                dataset=dataset,
                seed=seed,
                device=device or ctx.obj.device,
                on_progress=StageBars(bar),
                **options,
            )
            if double
            else None
        )
    if fmt != "table":
        emit([s.model_dump() for s in result.subclusters], _IMPORTANCE_COLUMNS, fmt)
        return
    emit(
        [s.model_dump() for s in result.subclusters],
        _IMPORTANCE_COLUMNS,
        "table",
        title=f"importance of {result.partition} ({result.n_null} random sets, {result.dataset})",
    )
    console.print(
        f"intact accuracy {result.accuracy:.4f}; {result.n_important} of {result.n_tested} sub-clusters "
        f"important; network: Fisher p = {result.fisher_p:.3g}, reference χ² (two-sided) "
        f"p = {result.chi2_p:.3g}. Stored as {result.assessment}."
    )
    if pairs is not None:
        console.print(
            f"double lesions: {len(pairs.pairs)} pairs; Fisher p = {pairs.fisher_p:.3g}, χ² p = {pairs.chi2_p:.3g}"
        )


@click.command()
@click.argument("model")
@click.option(
    "--partition",
    default="latest",
    show_default=True,
    help="A partition id, or latest: the newest partition of the --edges graph.",
)
@click.option(
    "--edges",
    default="weight",
    show_default=True,
    help="Which graph's newest partition 'latest' means: 'weight', or an activation graph's name.",
)
@click.option(
    "--data",
    "dataset",
    default="digits",
    show_default=True,
    help="Data set for data-set examples; for a transformer, text:PATH, npz:PATH or two-task.",
)
@click.option(
    "--method",
    "methods",
    default="features,examples",
    show_default=True,
    help="features (feature visualisation), examples (data-set examples), or both; for a transformer any of "
    "examples, logits, inputs (default examples,logits).",
)
@click.option("--random-sets", "n_null", default=100, show_default=True, help="Random same-size sets (N).")
@click.option("--steps", default=256, show_default=True, help="Optimisation steps of feature visualisation.")
@click.option("--top-k", "k", default=32, show_default=True, help="Data-set examples per set.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Save the images here.")
@_token_options
@click.option("--seed", default=0, show_default=True)
@device_option()
@format_option()
@click.pass_context
def coherence(
    ctx: click.Context,
    model: str,
    partition: str,
    edges: str,
    dataset: str,
    methods: str,
    n_null: int,
    steps: int,
    k: int,
    out: Path | None,
    context: int,
    heldout: float,
    seed: int,
    device: str | None,
    fmt: str,
) -> None:
    """Do a sub-cluster's neurons respond to the same features, more than random same-size sets do?

    For a transformer: data-set examples on text, and the tokens its neurons write (logits) and read (inputs).

    \b
    neuronmap coherence mnist-mlp-a --partition latest --data digits --method features,examples
    neuronmap coherence gpt2-a --partition latest --data text:corpus/ --method examples,logits
    neuronmap query coherent-modules --model mnist-mlp-a
    """
    from neuronmap.service.runs import run_coherence

    with store_from(ctx) as store:
        if _transformer(store, model, dataset, "coherence"):
            from neuronmap.service.cli.assess_transformer import transformer_coherence

            default = ctx.get_parameter_source("methods") == click.core.ParameterSource.DEFAULT
            results = transformer_coherence(
                store,
                model,
                partition,
                fmt,
                methods=("examples", "logits")
                if default
                else tuple(m.strip() for m in methods.split(",") if m.strip()),
                data=dataset,
                n_null=n_null,
                context=context,
                heldout=heldout,
                seed=seed,
                device=device or ctx.obj.device,
                edges=edges,
                k=k,
            )
            if results:
                _say_resolved(model, partition, results[0].partition, edges)
            return

    chosen = cast("tuple[CoherenceMethod, ...]", tuple(m.strip() for m in methods.split(",") if m.strip()))
    unknown = [m for m in chosen if m not in choices(CoherenceMethod)]
    if unknown or not chosen:
        raise click.BadParameter(
            f"{methods!r}: choose features, examples, or features,examples.", param_hint="--method"
        )
    with store_from(ctx) as store, progress() as bar:
        run = run_coherence(
            store,
            model,
            partition,
            dataset=dataset,
            n_null=n_null,
            seed=seed,
            device=device or ctx.obj.device,
            methods=chosen,
            steps=steps,
            k=k,
            out_dir=out,
            on_progress=StageBars(bar),
            edges=edges,
        )
    used = run.features or run.examples
    if used is not None:
        _say_resolved(model, partition, used.partition, edges)
    for result in (run.features, run.examples):
        if result is None:
            continue
        rows = [s.model_dump() for s in result.subclusters]
        if fmt != "table":
            emit([{"method": result.method, **r} for r in rows], ["method"] + _COHERENCE_COLUMNS, fmt)
            continue
        emit(rows, _COHERENCE_COLUMNS, "table", title=f"{result.method} of {result.partition} ({result.n_null} sets)")
        skipped = f"; skipped (size rule): {', '.join(result.skipped)}" if result.skipped else ""
        console.print(
            f"{result.n_coherent} of {len(result.subclusters)} sub-clusters coherent (BH, α={result.alpha}); "
            f"network Fisher p = {result.fisher_p if result.fisher_p is not None else float('nan'):.3g}"
            f"{skipped}. Stored as {result.assessment}."
        )


def _transformer(store: Any, model: str, dataset: str, command: str) -> bool:
    """Whether ``model`` is a transformer (its token-data branch runs); token data for another model is refused."""
    from neuronmap.service.cli.assess_transformer import is_token_data
    from neuronmap.service.store.transformer_source import is_transformer

    transformer = is_transformer(store, model)
    if transformer and not is_token_data(dataset):
        raise click.BadParameter(
            f"{dataset!r}: model {model!r} is a transformer; its {command} reads token data: "
            "text:PATH, npz:PATH or two-task.",
            param_hint="--data",
        )
    return transformer or is_token_data(dataset)


def _say_resolved(model: str, asked: str, used: str | None, edges: str) -> None:
    """Say which partition 'latest' turned out to be (on stderr, so JSON and CSV output stay clean)."""
    from neuronmap.service.store.library import LATEST, describe_latest

    if asked == LATEST and used:
        console.print(describe_latest(model, used, edges), highlight=False)


COMMANDS = [importance, coherence]
