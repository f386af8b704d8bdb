"""The assessment runs: each pulls a partition's layout, its re-loaded network and (when it needs one) a data split
from the store once, runs the pure assessor of ``neuronmap.service.assessment`` and stores the result as an
(:Assessment)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel

from neuronmap.cypher import Store
from neuronmap.device import resolve_device
from neuronmap.loaders.datasets import Dataset
from neuronmap.options import BatchNormLesion, CoherenceMethod, Split, choices
from neuronmap.service.assessment.coherence import (
    CoherenceResult,
    ExamplesConfig,
    FeatureConfig,
    assess_examples,
    assess_features,
)
from neuronmap.service.assessment.common import Progress, load_split, no_progress
from neuronmap.service.assessment.double_lesion import DoubleLesionResult, assess_double_lesion
from neuronmap.service.assessment.importance import (
    ImportanceConfig,
    ImportanceResult,
    assess_importance,
)
from neuronmap.service.assessment.layout import PartitionLayout
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.errors import AssessmentInputError
from neuronmap.service.store.assessments import read_partition_layout, write_assessment
from neuronmap.service.store.model_source import Network, load_network

Result = TypeVar("Result", ImportanceResult, DoubleLesionResult, CoherenceResult)

# Settings the (:Assessment) holds as the result's own properties; the other config fields are stored as config_*.
_STORED_AS_RESULT = frozenset({"dataset", "n_null", "random_state", "device", "split"})


@dataclass(frozen=True)
class Pulled:
    """What an assessment reads from the store: the partition's layout, its network and a data split."""

    layout: PartitionLayout
    net: LesionNetwork
    data: Dataset | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None

    def split(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(inputs, labels, number of classes) of the data split."""
        assert self.data is not None and self.x is not None and self.y is not None, "pulled without a data split"
        return self.x, self.y, self.data.n_classes


def pull(
    store: Store,
    model: str,
    partition: str,
    *,
    device: str,
    batchnorm: BatchNormLesion = "after",
    split: tuple[str, Split] | None = None,
    on_progress: Progress = no_progress,
    edges: str = "weight",
    module: Network | None = None,
) -> Pulled:
    """Read a partition's layout, re-load its model's network (or take ``module``) and load ``split`` = (data set,
    split) if given. ``'latest'`` means the newest partition of the ``edges`` graph.

    Reports the stage ``"load"`` (0/1, 1/1). The errors are those of ``read_partition_layout``, ``load_network``,
    ``resolve_device`` and ``load_split``.
    """
    on_progress("load", 0, 1)
    layout = read_partition_layout(store, model, partition, edges=edges)
    net = load_network(store, layout.model, device=resolve_device(device), batchnorm=batchnorm, module=module)
    data, x, y = load_split(*split) if split is not None else (None, None, None)
    on_progress("load", 1, 1)
    return Pulled(layout, net, data, x, y)


def _record(
    store: Store,
    layout: PartitionLayout,
    result: Result,
    config: BaseModel,
    *,
    write: bool,
    method: str,
    scores: Sequence[dict[str, Any]] = (),
    interactions: Sequence[dict[str, Any]] = (),
    skip: frozenset[str] = _STORED_AS_RESULT,
    key: str | None = None,
) -> Result:
    """Name the result's model and partition and, with ``write``, store it with its scores; returns it.

    ``key`` makes the assessment's id ``{partition}/{method}-{key}`` (a job's id: its retry writes the same id).
    """
    result.model, result.partition = layout.model, layout.partition
    if write:
        settings = {
            f"config_{k}": (list(v) if isinstance(v, tuple) else v)
            for k, v in config.model_dump().items()
            if k not in skip
        }
        result.assessment = write_assessment(
            store,
            layout,
            method,
            {**result.stored_properties(), **settings},
            scores,
            interactions=interactions,
            key=key,
        )
    return result


def scored_rows(subclusters: Sequence[Any]) -> list[dict[str, Any]]:
    """The SCORED rows: one per sub-cluster (anything with ``cluster``, ``layer`` and ``stored_properties()``)."""
    return [{"cluster": s.cluster, "layer": s.layer, "stats": s.stored_properties()} for s in subclusters]


def interaction_rows(pairs: Sequence[Any]) -> list[dict[str, Any]]:
    """The INTERACTS rows of a double-lesion (or double-ablation) run: one per pair of sub-clusters."""
    return [
        {
            "cluster_a": p.cluster_a,
            "layer_a": p.layer_a,
            "cluster_b": p.cluster_b,
            "layer_b": p.layer_b,
            "stats": p.stored_properties(),
        }
        for p in pairs
    ]


# -- importance ----------------------------------------------------------------------------------------------------


def run_importance(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    dataset: str = "digits",
    n_null: int = 100,
    seed: int = 0,
    device: str = "auto",
    on_progress: Progress | None = None,
    write: bool = True,
    edges: str = "weight",
    module: Network | None = None,
    result_key: str | None = None,
    **options: Any,
) -> ImportanceResult:
    """Lesion test of a stored partition's sub-clusters; the result is stored as an (:Assessment).

    Parameters
    ----------
    store : Store
    model : str
        The model's name.
    partition : str, default "latest"
        A partition id of the model, or ``'latest'``: the newest partition of the ``edges`` graph.
    dataset : str, default "digits"
        A ``load_dataset`` name or path of a classification data set the network reads.
    n_null : int, default 100
        Random same-size sets per sub-cluster (N).
    seed : int, default 0
        Seeds the random sets; the same seed gives the same result on CPU and CUDA (up to float ties).
    device : str, default "auto"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    on_progress : callable, optional
        ``on_progress(stage, done, total)``; the stages are ``"load"`` (0/1, 1/1) and ``"lesions"``.
    write : bool, default True
        Store the run (sub-clusters, assessment, scores).
    edges : str, default "weight"
        The graph whose newest partition ``'latest'`` means: ``"weight"``, or an activation graph's name.
    module : nn.Module or torch.export.ExportedProgram, optional
        The model's network in this process: needed for a model ingested from memory (``ingest(store, name,
        graph_from_module(m))``), which has no file to re-load. Its layers must be the stored ones; a copy runs.
        Without it, the network is re-loaded from the file it was ingested from.
    result_key : str, optional
        Names the stored assessment ``{partition}/importance-{result_key}`` (a job's id), so that a retried job
        cannot store a second one; by default a random id.
    **options
        Any other ``ImportanceConfig`` field, e.g. ``split="train"``, ``parity=True``, ``method="mask"``.

    Returns
    -------
    ImportanceResult
        ``assessment`` is the stored run's id (None with ``write=False``).

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, PartitionNotFoundError, NoPartitionError
    SourceUnavailableError
        The model's source file is gone or changed since ingest, or it came from memory and ``module`` is not given.
    LayerMismatchError, AssessmentInputError, DatasetError, DeviceError
    pydantic.ValidationError
        An unknown or invalid option.

    Examples
    --------
    >>> _ = nm.cluster(store, model, nm.ClusterConfig(n_clusters=4))
    >>> result = nm.importance(store, model, "latest", n_null=20)
    >>> result
    ImportanceResult(assessment='...', model='...', partition='...', n_null=20, accuracy=..., n_tested=..., ...)
    >>> frame = result.to_frame()
    >>> len(frame) == len(result.subclusters) and {"cluster", "layer_name", "p_value"} <= set(frame.columns)
    True
    """
    config = ImportanceConfig(dataset=dataset, n_null=n_null, random_state=seed, device=device, **options)
    progress = on_progress or no_progress
    pulled = pull(
        store,
        model,
        partition,
        device=config.device,
        batchnorm=config.batchnorm,
        split=(config.dataset, config.split),
        on_progress=progress,
        edges=edges,
        module=module,
    )
    x, y, n_classes = pulled.split()
    layout = pulled.layout
    result = assess_importance(
        pulled.net, x, y, n_classes, layout.subclusters, layout.pools, config, on_progress=progress
    )
    return _record(
        store,
        layout,
        result,
        config,
        write=write,
        method="importance",
        scores=scored_rows(result.subclusters),
        skip=_STORED_AS_RESULT | {"metric", "ties"},
        key=result_key,
    )


def run_double_lesion(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    dataset: str = "digits",
    n_null: int = 50,
    seed: int = 0,
    device: str = "auto",
    on_progress: Progress | None = None,
    write: bool = True,
    same_layer: bool = True,
    edges: str = "weight",
    module: Network | None = None,
    **options: Any,
) -> DoubleLesionResult:
    """The double-lesion interaction test of a stored partition; stored as an ``importance_pairs`` assessment.

    Parameters are those of :func:`run_importance` (default ``n_null=50``, as the reference; ``edges`` and ``module``
    too), plus ``same_layer``
    (also test pairs within one layer). The stages reported to ``on_progress`` are ``"load"`` and
    ``"double lesions"``. The pairs are stored as ``(:SubCluster)-[:INTERACTS]->(:SubCluster)``.
    """
    config = ImportanceConfig(dataset=dataset, n_null=n_null, random_state=seed, device=device, **options)
    progress = on_progress or no_progress
    pulled = pull(
        store,
        model,
        partition,
        device=config.device,
        batchnorm=config.batchnorm,
        split=(config.dataset, config.split),
        on_progress=progress,
        edges=edges,
        module=module,
    )
    x, y, n_classes = pulled.split()
    layout = pulled.layout
    result = assess_double_lesion(
        pulled.net,
        x,
        y,
        n_classes,
        layout.subclusters,
        layout.pools,
        config,
        same_layer=same_layer,
        on_progress=progress,
    )
    interactions = interaction_rows(result.pairs)
    return _record(
        store,
        layout,
        result,
        config,
        write=write,
        method="importance_pairs",
        skip=_STORED_AS_RESULT | {"metric", "ties"},
        interactions=interactions,
    )


# -- coherence -----------------------------------------------------------------------------------------------------


def _features(
    store: Store,
    pulled: Pulled,
    config: FeatureConfig,
    out_dir: str | Path | None,
    progress: Progress,
    write: bool,
    key: str | None = None,
) -> CoherenceResult:
    layout = pulled.layout
    result = assess_features(
        pulled.net, layout.subclusters, layout.pools, config, out_dir=out_dir, on_progress=progress
    )
    return _record(
        store,
        layout,
        result,
        config,
        write=write,
        method=result.method,
        scores=scored_rows(result.subclusters),
        key=key,
    )


def _examples(
    store: Store,
    pulled: Pulled,
    config: ExamplesConfig,
    out_dir: str | Path | None,
    progress: Progress,
    write: bool,
    key: str | None = None,
) -> CoherenceResult:
    layout = pulled.layout
    x, y, n_classes = pulled.split()
    result = assess_examples(
        pulled.net, x, y, n_classes, layout.subclusters, layout.pools, config, out_dir=out_dir, on_progress=progress
    )
    return _record(
        store,
        layout,
        result,
        config,
        write=write,
        method=result.method,
        scores=scored_rows(result.subclusters),
        key=key,
    )


def run_feature_coherence(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    n_null: int = 100,
    seed: int = 0,
    device: str = "auto",
    steps: int = 256,
    out_dir: str | Path | None = None,
    on_progress: Progress | None = None,
    write: bool = True,
    edges: str = "weight",
    module: Network | None = None,
    **options: Any,
) -> CoherenceResult:
    """Feature-visualisation coherence of a stored partition; stored as a ``coherence_features`` assessment.

    Parameters
    ----------
    store : Store
    model : str
    partition : str, default "latest"
    n_null : int, default 100
        Random same-size sets per sub-cluster (the reference used 9). A sub-cluster's p-value is at least
        2/(N + 1) (two statistics, Bonferroni), so per-sub-cluster verdicts need N of about 60 or more; the
        network-level Fisher test works with fewer.
    seed : int, default 0
        Seeds the random sets, the initial inputs and the transforms.
    device : str, default "auto"
    steps : int, default 256
        Optimisation steps (the reference: 256).
    out_dir : str or Path, optional
        Save the images under ``out_dir/features/``.
    on_progress : callable, optional
        ``on_progress(stage, done, total)``; stages ``"load"`` and ``"features"``.
    write : bool, default True
    edges, module
        As :func:`run_importance` takes them.
    **options
        Any other ``FeatureConfig`` field, e.g. ``transforms=("jitter", "scale")``, ``parameterization="pixel"``.

    Returns
    -------
    CoherenceResult
    """
    config = FeatureConfig(n_null=n_null, random_state=seed, device=device, steps=steps, **options)
    progress = on_progress or no_progress
    pulled = pull(store, model, partition, device=config.device, on_progress=progress, edges=edges, module=module)
    return _features(store, pulled, config, out_dir, progress, write)


def run_example_coherence(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    dataset: str = "digits",
    n_null: int = 100,
    seed: int = 0,
    device: str = "auto",
    k: int = 32,
    out_dir: str | Path | None = None,
    on_progress: Progress | None = None,
    write: bool = True,
    edges: str = "weight",
    module: Network | None = None,
    **options: Any,
) -> CoherenceResult:
    """Data-set-example coherence of a stored partition; stored as a ``coherence_examples`` assessment.

    Parameters
    ----------
    store : Store
    model : str
    partition : str, default "latest"
    dataset : str, default "digits"
        A classification data set the network reads (``load_dataset`` name or path).
    n_null : int, default 100
    seed : int, default 0
    device : str, default "auto"
    k : int, default 32
        Top inputs per set.
    out_dir : str or Path, optional
        Save the top inputs under ``out_dir/examples/``.
    on_progress : callable, optional
        Stages ``"load"`` and ``"examples"``.
    write : bool, default True
    edges, module
        As :func:`run_importance` takes them.
    **options
        Any other ``ExamplesConfig`` field, e.g. ``split="train"``.
    """
    config = ExamplesConfig(dataset=dataset, n_null=n_null, random_state=seed, device=device, k=k, **options)
    progress = on_progress or no_progress
    pulled = pull(
        store,
        model,
        partition,
        device=config.device,
        split=(config.dataset, config.split),
        on_progress=progress,
        edges=edges,
        module=module,
    )
    return _examples(store, pulled, config, out_dir, progress, write)


class CoherenceRun(BaseModel):
    """Both coherence methods of one partition (``run_coherence``)."""

    features: CoherenceResult | None = None
    examples: CoherenceResult | None = None


def run_coherence(
    store: Store,
    model: str,
    partition: str = "latest",
    *,
    dataset: str = "digits",
    n_null: int = 100,
    seed: int = 0,
    device: str = "auto",
    methods: Sequence[CoherenceMethod] = ("features", "examples"),
    steps: int = 256,
    k: int = 32,
    out_dir: str | Path | None = None,
    on_progress: Progress | None = None,
    write: bool = True,
    edges: str = "weight",
    module: Network | None = None,
    result_key: str | None = None,
) -> CoherenceRun:
    """Run the chosen coherence methods with one N and seed on one loaded network (what ``neuronmap coherence``
    runs by default); the stages are ``"load"``, ``"features"`` and ``"examples"``. ``'latest'`` means the newest
    partition of the ``edges`` graph; ``module`` is the network in this process and ``result_key`` names the stored
    assessments (see :func:`run_importance`)."""
    unknown = set(methods) - set(choices(CoherenceMethod))
    if unknown:
        raise AssessmentInputError(f"Unknown coherence method(s) {sorted(unknown)}; choose 'features', 'examples'.")
    if not methods:
        return CoherenceRun()
    features = (
        FeatureConfig(n_null=n_null, random_state=seed, device=device, steps=steps) if "features" in methods else None
    )
    examples = (
        ExamplesConfig(dataset=dataset, n_null=n_null, random_state=seed, device=device, k=k)
        if "examples" in methods
        else None
    )
    progress = on_progress or no_progress
    pulled = pull(
        store,
        model,
        partition,
        device=device,
        on_progress=progress,
        split=(examples.dataset, examples.split) if examples is not None else None,
        edges=edges,
        module=module,
    )
    return CoherenceRun(
        features=_features(store, pulled, features, out_dir, progress, write, result_key) if features else None,
        examples=_examples(store, pulled, examples, out_dir, progress, write, result_key) if examples else None,
    )
