"""The transformer branch of `neuronmap importance` and `neuronmap coherence` (methods.md §11): ablations and token
coherence on text. Helpers only (the commands are in ``assess``); heavy imports stay inside the functions."""

from __future__ import annotations

from typing import Any

from neuronmap.service.cli.common import StageBars, console
from neuronmap.service.cli.output import emit

TOKEN_DATA_PREFIXES = ("text:", "npz:")
_IMPORTANCE_COLUMNS = [
    "layer_name",
    "cluster",
    "size",
    "loss",
    "delta_loss",
    "null_delta_loss_mean",
    "delta_accuracy",
    "p_value",
    "p_adjusted",
    "p_task",
    "category",
]
_COHERENCE_COLUMNS = ["layer_name", "cluster", "size", "statistic", "p_value", "p_adjusted", "top_tokens"]


def is_token_data(spec: str) -> bool:
    """Whether a --data value names token data (text:PATH, npz:PATH or two-task) rather than a classification set."""
    return spec.startswith(TOKEN_DATA_PREFIXES) or spec == "two-task"


def transformer_importance(
    store: Any, bar: Any, model: str, partition: str, fmt: str, *, double: bool = False, **options: Any
) -> Any:
    """Run and print the ablation test (and, with ``double``, the double-ablation test); returns the result."""
    from neuronmap.service.runs.transformer_assessment import run_transformer_double, run_transformer_importance

    result = run_transformer_importance(store, model, partition, on_progress=StageBars(bar), **options)
    pairs = None
    if double:  # the partition just assessed, even if a partition is written meanwhile; N = 50 as the MLPs'
        pairs = run_transformer_double(
            store, model, result.partition, on_progress=StageBars(bar), **{**options, "n_null": 50}
        )
    rows = [s.model_dump() for s in result.subclusters]
    if fmt != "table":
        emit(rows, _IMPORTANCE_COLUMNS, fmt)
        return result
    title = (
        f"importance of {result.partition} ({result.ablation} ablation, {result.n_null} random sets, {result.dataset})"
    )
    emit(rows, _IMPORTANCE_COLUMNS, "table", title=title)
    tasks = ", ".join(f"{n} {v:.4f}" for n, v in zip(result.task_names, result.task_loss))
    console.print(
        f"intact loss {result.loss:.4f} nats{f' ({tasks})' if tasks else ''}, top-1 accuracy {result.accuracy:.4f}; "
        f"{result.n_important} of {result.n_tested} sub-clusters important"
        + (f", per task {result.n_important_task}" if result.task_names else "")
        + f"; network: Fisher p = {_g(result.fisher_p)}. Stored as {result.assessment}."
    )
    if pairs is not None:
        console.print(
            f"double ablations: {len(pairs.pairs)} pairs; Fisher p (super-additive loss) = {_g(pairs.fisher_p)}, "
            f"χ² p = {_g(pairs.chi2_p)}. Stored as {pairs.assessment}."
        )
    return result


def transformer_coherence(store: Any, model: str, partition: str, fmt: str, **options: Any) -> list[Any]:
    """Run and print the token coherence methods; returns the results."""
    from neuronmap.service.runs.transformer_assessment import run_transformer_coherence

    results = run_transformer_coherence(store, model, partition, **options)
    if fmt != "table":  # one document for every method
        rows = [{"method": r.method, **s.model_dump()} for r in results for s in r.subclusters]
        emit(rows, ["method"] + _COHERENCE_COLUMNS, fmt)
        return results
    for result in results:
        rows = [{**s.model_dump(), "top_tokens": " ".join(s.top_tokens[:8])} for s in result.subclusters]
        emit(rows, _COHERENCE_COLUMNS, "table", title=f"{result.method} of {result.partition} ({result.n_null} sets)")
        if result.method == "coherence_examples":
            for sub in result.subclusters[:12]:
                shown = " | ".join(sub.windows[:3])
                console.print(f"  {sub.layer_name}:{sub.cluster}  {shown}", highlight=False, markup=False)
        skipped = f"; skipped (size rule): {', '.join(result.skipped)}" if result.skipped else ""
        console.print(
            f"{result.n_coherent} of {len(result.subclusters)} sub-clusters coherent (BH, α={result.alpha}); "
            f"network Fisher p = {_g(result.fisher_p)}{skipped}. Stored as {result.assessment}."
        )
    return results


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
