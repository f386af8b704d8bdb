"""The transformer assessments (methods.md §11): pull a partition's layout and the model's causal LM, read token
contexts, run the pure assessor of ``neuronmap.service.assessment.transformer`` and store the result as an
(:Assessment) that ``important-modules`` and ``coherent-modules`` read, as the MLPs' runs are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel
from torch import nn

from neuronmap.cypher import Store
from neuronmap.device import resolve_device
from neuronmap.loaders.tokens import TokenData, load_token_data
from neuronmap.options import AblationMethod, TokenCoherenceMethod, choices
from neuronmap.service.assessment.common import Progress, no_progress
from neuronmap.service.assessment.layout import PartitionLayout
from neuronmap.service.assessment.transformer.coherence import (
    TokenCoherenceConfig,
    TokenCoherenceResult,
    TokenMethod,
    assess_token_coherence,
)
from neuronmap.service.assessment.transformer.double import TransformerDoubleResult, assess_transformer_double
from neuronmap.service.assessment.transformer.importance import (
    TransformerImportanceConfig,
    TransformerImportanceResult,
    assess_transformer_importance,
)
from neuronmap.service.errors import AssessmentInputError
from neuronmap.service.runs.assessment import interaction_rows, scored_rows
from neuronmap.service.store.assessments import read_partition_layout, write_assessment
from neuronmap.service.store.transformer_source import load_language_model

_STORED_AS_RESULT = frozenset({"dataset", "n_null", "random_state", "device", "ablation"})
TOKEN_METHODS = choices(TokenCoherenceMethod)


@dataclass(frozen=True)
class PulledLM:
    """What a transformer assessment reads: the partition's layout, the causal LM on its device and the contexts."""

    layout: PartitionLayout
    model: nn.Module
    data: TokenData


def pull_language_model(
    store: Store,
    model: str,
    partition: str,
    *,
    data: str,
    device: str,
    context: int,
    heldout: float,
    seed: int,
    edges: str = "weight",
    module: nn.Module | None = None,
) -> PulledLM:
    """The layout, the LM (re-loaded from its directory, or a copy of ``module``) and the token contexts."""
    layout = read_partition_layout(store, model, partition, edges=edges)
    lm, directory = load_language_model(store, layout.model, module=module)
    config: Any = lm.config
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if positions is not None and context > int(positions):
        raise AssessmentInputError(
            f"--context {context} is longer than model {layout.model!r} reads ({positions} positions); lower it."
        )
    tokens = load_token_data(
        data, vocab_size=int(config.vocab_size), model_dir=directory, context=context, heldout=heldout, seed=seed
    )
    return PulledLM(layout, lm.to(resolve_device(device)), tokens)


def record(
    store: Store,
    layout: PartitionLayout,
    result: Any,
    config: BaseModel,
    method: str,
    *,
    write: bool,
) -> None:
    """Name the result's model and partition and, with ``write``, store it with one SCORED row per sub-cluster (or,
    for double ablations, one INTERACTS row per pair)."""
    result.model, result.partition = layout.model, layout.partition
    if not write:
        return
    settings = {f"config_{k}": v for k, v in config.model_dump().items() if k not in _STORED_AS_RESULT}
    props = {**result.stored_properties(), **settings}
    if isinstance(result, TransformerDoubleResult):
        pairs = interaction_rows(result.pairs)
        result.assessment = write_assessment(store, layout, method, props, [], interactions=pairs)
        return
    result.assessment = write_assessment(store, layout, method, props, scored_rows(result.subclusters))


def run_transformer_importance(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    data: str = "two-task",
    n_null: int = 100,
    ablation: AblationMethod = "mean",
    context: int = 128,
    heldout: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    on_progress: Progress | None = None,
    write: bool = True,
    edges: str = "weight",
    module: nn.Module | None = None,
    **options: Any,
) -> TransformerImportanceResult:
    """Ablation test of a stored transformer partition's sub-clusters, stored as an (:Assessment) of method
    ``importance`` (methods.md §11.2).

    Parameters
    ----------
    store : Store
    model : str
    partition : str, default "latest"
    data : str, default "two-task"
        ``text:PATH``, ``npz:PATH`` or ``two-task`` (``neuronmap.loaders.tokens``).
    n_null : int, default 100
        Random same-size sets of the same block per sub-cluster.
    ablation : {"mean", "zero"}, default "mean"
    context : int, default 128
        Tokens per context.
    heldout : float, default 0.2
        The fraction of contexts held out and scored; mean-ablation values come from the rest.
    seed : int, default 0
    device : str, default "auto"
    module : nn.Module, optional
        The causal LM in this process (a copy runs), for a model ingested from memory; without it, the model is
        re-loaded from the directory it was ingested from.
    **options
        Any other ``TransformerImportanceConfig`` field (``batch_size``, ``max_rows``, ``min_increase``, …).

    Raises
    ------
    ModelNotFoundError, PartitionNotFoundError, NoPartitionError, SourceUnavailableError, AssessmentInputError,
    TokenDataError, LoadError
    """
    on_progress = on_progress or no_progress
    config = TransformerImportanceConfig(
        dataset=data, n_null=n_null, ablation=ablation, random_state=seed, device=device, **options
    )
    on_progress("load", 0, 1)
    pulled = pull_language_model(
        store,
        model,
        partition,
        data=data,
        device=device,
        context=context,
        heldout=heldout,
        seed=seed,
        edges=edges,
        module=module,
    )
    on_progress("load", 1, 1)
    result = assess_transformer_importance(
        pulled.model,
        pulled.data.train,
        pulled.data.test,
        pulled.layout.subclusters,
        pulled.layout.pools,
        config,
        task_test=pulled.data.task_test,
        task_names=pulled.data.task_names,
        on_progress=on_progress,
    )
    record(store, pulled.layout, result, config, "importance", write=write)
    return result


def run_transformer_double(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    data: str = "two-task",
    n_null: int = 50,
    ablation: AblationMethod = "mean",
    context: int = 128,
    heldout: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    same_block: bool = True,
    on_progress: Progress | None = None,
    write: bool = True,
    edges: str = "weight",
    module: nn.Module | None = None,
    **options: Any,
) -> TransformerDoubleResult:
    """The double-ablation interaction test of a stored transformer partition (methods.md §5.8, §11.2), stored as an
    ``importance_pairs`` assessment with ``(:SubCluster)-[:INTERACTS]->(:SubCluster)`` per pair, as the MLPs' is.

    Parameters are ``run_transformer_importance``'s (default ``n_null=50``, as the MLPs'), plus ``same_block``
    (also test pairs within one block). Stages reported: ``"load"`` and ``"double ablations"``.
    """
    progress = on_progress or no_progress
    config = TransformerImportanceConfig(
        dataset=data, n_null=n_null, ablation=ablation, random_state=seed, device=device, **options
    )
    progress("load", 0, 1)
    pulled = pull_language_model(
        store,
        model,
        partition,
        data=data,
        device=device,
        context=context,
        heldout=heldout,
        seed=seed,
        edges=edges,
        module=module,
    )
    progress("load", 1, 1)
    result = assess_transformer_double(
        pulled.model,
        pulled.data.train,
        pulled.data.test,
        pulled.layout.subclusters,
        pulled.layout.pools,
        config,
        same_block=same_block,
        on_progress=progress,
    )
    record(store, pulled.layout, result, config, "importance_pairs", write=write)
    return result


def run_transformer_coherence(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    methods: Sequence[str] = ("examples", "logits"),
    data: str = "two-task",
    n_null: int = 100,
    context: int = 128,
    heldout: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    write: bool = True,
    edges: str = "weight",
    module: nn.Module | None = None,
    **options: Any,
) -> list[TokenCoherenceResult]:
    """Token coherence of a stored transformer partition's sub-clusters, one (:Assessment) per method
    (``coherence_examples``, ``coherence_logits``, ``coherence_inputs``; methods.md §11.3).

    ``examples`` reads the held-out contexts of ``data`` (with their tasks, when the data set has them); ``logits``
    and ``inputs`` read weights only. The other parameters are ``run_transformer_importance``'s; ``**options`` are
    ``TokenCoherenceConfig`` fields (``k``, ``window``, ``top_tokens``, ``min_size``, …).
    """
    unknown = sorted(set(methods) - set(TOKEN_METHODS))
    if unknown or not methods:
        raise AssessmentInputError(
            f"--method {','.join(methods)!r}: transformer coherence methods are {', '.join(TOKEN_METHODS)}."
        )
    config = TokenCoherenceConfig(dataset=data, n_null=n_null, random_state=seed, device=device, **options)
    pulled = pull_language_model(
        store,
        model,
        partition,
        data=data,
        device=device,
        context=context,
        heldout=heldout,
        seed=seed,
        edges=edges,
        module=module,
    )
    results = []
    for method in methods:
        result = assess_token_coherence(
            pulled.model,
            cast(TokenMethod, method),
            pulled.layout.subclusters,
            pulled.layout.pools,
            config,
            ids=pulled.data.test,
            tasks=pulled.data.task_test,
            show=pulled.data.token,
        )
        record(store, pulled.layout, result, config, result.method, write=write)
        results.append(result)
    return results
