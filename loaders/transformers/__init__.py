"""Transformers as neuron graphs (methods.md §10), with no database involved.

- ``load_transformer(path, graph=...)``: a Hugging Face model directory (config.json + safetensors) → ModelGraph.
- ``graph_from_transformer(model, graph=...)``: the same from an in-process ``transformers`` model.
- ``graph="virtual"`` (default): MLP neurons of every block joined through the residual stream (``virtual``).
- ``graph="mlp-in"``: per block, residual dims → MLP neurons by W_in, and its statistic C (``mlp_in``).
- ``heads=True`` (virtual only): attention heads as units beside the MLP neurons (``heads``).

Supported: GPT-2, GPT-NeoX/Pythia and Llama (``families``). ``transformers`` itself is imported only when a model
is read, so importing this package stays cheap.
"""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from neuronmap.loaders.records import ModelGraph, ModelMeta
from neuronmap.loaders.transformers.directory import WeightFiles, key_prefix, load_bare_model, read_config, weight_files
from neuronmap.loaders.transformers.errors import (
    MissingTensorError,
    RemoteCodeError,
    TransformerOptionError,
    UnsupportedTransformerError,
)
from neuronmap.loaders.transformers.families import (
    FAMILIES,
    AttentionBlock,
    Family,
    MlpBlock,
    TransformerWeights,
    detect_family,
    extract,
)
from neuronmap.loaders.transformers.heads import head_edges, heads_graph
from neuronmap.loaders.transformers.mlp_in import (
    BlockFraction,
    fraction_of_partition,
    mlp_in_graph,
    within_cluster_fraction,
)
from neuronmap.loaders.transformers.virtual import PairEdges, pair_edges, virtual_edges, virtual_graph
from neuronmap.options import TransformerGraph, choices

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "load_transformer",
    "graph_from_transformer",
    "read_transformer",
    "transformer_weights",
    "build_graph",
    "virtual_graph",
    "virtual_edges",
    "pair_edges",
    "PairEdges",
    "heads_graph",
    "head_edges",
    "AttentionBlock",
    "mlp_in_graph",
    "within_cluster_fraction",
    "fraction_of_partition",
    "BlockFraction",
    "TransformerWeights",
    "MlpBlock",
    "Family",
    "FAMILIES",
    "detect_family",
    "TRANSFORMER_GRAPHS",
    "UnsupportedTransformerError",
    "RemoteCodeError",
    "MissingTensorError",
    "TransformerOptionError",
]

TRANSFORMER_GRAPHS = choices(TransformerGraph)


def check_options(graph: str, top_k: int, min_weight: float, fold_norm: bool, heads: bool = False) -> None:
    """Refuse option values out of range, or that do not apply to ``graph``, before any file is read."""
    if graph not in TRANSFORMER_GRAPHS:
        raise TransformerOptionError(
            f"graph={graph!r} is not one of the supported values: {', '.join(map(repr, TRANSFORMER_GRAPHS))}."
        )
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise TransformerOptionError(f"top_k={top_k!r} must be a whole number ≥ 0 (0 keeps every edge).")
    if not (isinstance(min_weight, int | float) and math.isfinite(min_weight) and min_weight >= 0):
        raise TransformerOptionError(f"min_weight={min_weight!r} must be a finite number ≥ 0.")
    if fold_norm and graph != "mlp-in":
        raise TransformerOptionError(
            "fold_norm applies to graph='mlp-in'; the virtual graph always folds the norm's γ into its edges."
        )
    if not isinstance(heads, bool):
        raise TransformerOptionError(f"heads={heads!r} must be True or False.")
    if heads and graph != "virtual":
        raise TransformerOptionError(
            "heads applies to graph='virtual'; mlp-in joins residual dims to MLP neurons only."
        )


def build_graph(
    weights: TransformerWeights,
    *,
    graph: TransformerGraph = "virtual",
    top_k: int = 32,
    min_weight: float = 0.0,
    fold_norm: bool = False,
    heads: bool = False,
    meta: ModelMeta | None = None,
    sparse: bool | None = None,
) -> ModelGraph:
    """The chosen graph of ``weights``; ``meta`` gets the graph options added; ``sparse`` as ``virtual_graph``.

    ``heads`` (virtual only) adds a unit per attention head (methods.md §10.6); ``weights`` must then hold the
    attention (``read_transformer(path, attention=True)``, ``transformer_weights(model, attention=True)``).
    """
    check_options(graph, top_k, min_weight, fold_norm, heads)
    options: dict[str, object] = {"graph": graph, "min_weight": float(min_weight)}
    if graph == "virtual":
        meta = (meta or ModelMeta()).model_copy(update={**options, "top_k": top_k, "heads": heads})
        if heads:
            return heads_graph(weights, top_k=top_k, min_weight=min_weight, meta=meta, sparse=sparse)
        return virtual_graph(weights, top_k=top_k, min_weight=min_weight, meta=meta, sparse=sparse)
    meta = (meta or ModelMeta()).model_copy(update={**options, "fold_norm": fold_norm})
    return mlp_in_graph(weights, fold_norm=fold_norm, min_weight=min_weight, meta=meta)


def read_transformer(path: str | PathLike[str], *, attention: bool = False) -> tuple[TransformerWeights, WeightFiles]:
    """A model directory's per-block weights (float32) and its weight files; every refusal comes from here.

    ``attention`` also reads each block's W_V, W_O and γ_attn (for ``heads``).
    """
    path = Path(path)
    config, family = read_config(path)
    files = weight_files(path)
    model = load_bare_model(path, family, files)
    architectures = config.get("architectures") or [family.base_class]
    weights = extract(model, family, prefix=key_prefix(family, files), arch=str(architectures[0]), attention=attention)
    return weights, files


def load_transformer(
    path: str | PathLike[str],
    *,
    graph: TransformerGraph = "virtual",
    top_k: int = 32,
    min_weight: float = 0.0,
    fold_norm: bool = False,
    heads: bool = False,
    sparse: bool | None = None,
) -> ModelGraph:
    """Read a Hugging Face model directory and build its neuron graph (methods.md §10).

    Parameters
    ----------
    path : str or PathLike
        The folder ``save_pretrained`` writes: ``config.json`` and ``model.safetensors``, or shards with their
        ``model.safetensors.index.json``. Read with ``transformers`` from local files only, safetensors only, and
        never with the model's own code.
    graph : {"virtual", "mlp-in"}, default="virtual"
        ``virtual``: the MLP neurons of every block, joined block pair by block pair through the residual stream.
        ``mlp-in``: per block, its residual dims and MLP neurons joined by W_in (Golechha et al.).
    top_k : int, default=32
        virtual: edges kept per source neuron and downstream block, the largest |w|; 0 keeps all.
    min_weight : float, default=0.0
        Drop edges with |w| below this.
    fold_norm : bool, default=False
        mlp-in: multiply W_in's rows by the norm's γ first.
    heads : bool, default=False
        virtual: a unit per attention head beside the MLP neurons, joined MLP → head and head → MLP (§10.6).
    sparse : bool, optional
        virtual: hold the edge blocks as CSR (True) or dense (False); by default CSR for blocks of at least 65,536
        entries that are at most 1/8 full.

    Returns
    -------
    graph : ModelGraph
        ``meta`` records the family, the config (JSON), the stored dtype, the safetensors files with their
        SHA-256s (``sha256`` is one digest over them) and the graph options.

    Raises
    ------
    CheckpointError, RemoteCodeError, UnsupportedTransformerError, MissingTensorError, TransformerOptionError
        All are ``LoadError``s, raised before a graph exists.
    """
    check_options(graph, top_k, min_weight, fold_norm, heads)
    weights, files = read_transformer(path, attention=heads)
    meta = ModelMeta(
        arch=f"transformers:{weights.arch}",
        source=str(Path(path).resolve()),  # absolute: assessments re-load it from any working directory
        sha256=files.digest,
        family=weights.family.name,
        config=weights.config_json(),
        dtype=files.dtype,
        weight_files=files.names,
        weight_sha256=files.sha256,
    )
    return build_graph(
        weights,
        graph=graph,
        top_k=top_k,
        min_weight=min_weight,
        fold_norm=fold_norm,
        heads=heads,
        meta=meta,
        sparse=sparse,
    )


def transformer_weights(model: PreTrainedModel, *, attention: bool = False) -> TransformerWeights:
    """The per-block weights (float32) of an in-process ``transformers`` model of a supported family.

    ``attention`` also reads each block's W_V, W_O and γ_attn (for ``heads``).
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "base_model"):
        raise UnsupportedTransformerError(type(model).__name__, "is not a transformers PreTrainedModel")
    config_dict = config.to_dict()
    if config_dict.get("auto_map"):
        raise RemoteCodeError(type(model).__name__, "auto_map in its config")
    family = detect_family({**config_dict, "architectures": [type(model).__name__]})
    return extract(model, family, attention=attention)


def graph_from_transformer(
    model: PreTrainedModel,
    *,
    graph: TransformerGraph = "virtual",
    top_k: int = 32,
    min_weight: float = 0.0,
    fold_norm: bool = False,
    heads: bool = False,
    sparse: bool | None = None,
) -> ModelGraph:
    """``load_transformer`` for a model already in memory; its layers are named by its own module paths.

    ``meta`` records the class, the family, the config and the parameters' dtype; there are no files to hash.
    """
    check_options(graph, top_k, min_weight, fold_norm, heads)
    weights = transformer_weights(model, attention=heads)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    meta = ModelMeta(
        arch=f"transformers:{weights.arch}",
        source=f"in-process {weights.arch}",
        family=weights.family.name,
        config=weights.config_json(),
        dtype=dtypes[0] if len(dtypes) == 1 else "mixed:" + ",".join(dtypes),
    )
    return build_graph(
        weights,
        graph=graph,
        top_k=top_k,
        min_weight=min_weight,
        fold_norm=fold_norm,
        heads=heads,
        meta=meta,
        sparse=sparse,
    )
