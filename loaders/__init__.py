"""Stage 1: a network → neurons and weighted edges (a ``ModelGraph``), with no database involved.

- ``graph_from_module(module)``: trace an in-process nn.Module with torch.fx.
- ``graph_from_exported(ep)``: read a ``torch.export`` program.
- ``load_graph(path, arch=...)``: open a checkpoint file and do one of the two.
- ``load_transformer(directory)`` / ``graph_from_transformer(model)``: GPT-2, GPT-NeoX and Llama models
  (``loaders.transformers``, methods.md §10).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from neuronmap.loaders.architectures import build_module, load_state_dict_into, resolve_factory
from neuronmap.loaders.checkpoint import (
    SUPPORTED_SUFFIXES,
    file_sha256,
    load_exported,
    load_state_dict,
    read_checkpoint,
)
from neuronmap.loaders.errors import (
    ArchitectureError,
    CheckpointError,
    LoadError,
    NonFiniteWeightsError,
    OptionError,
    UnsupportedLayerError,
)
from neuronmap.loaders.records import EdgeBlock, KernelNorm, LayerRecord, ModelGraph, ModelMeta
from neuronmap.loaders.tracing.trace_export import graph_from_exported
from neuronmap.loaders.tracing.trace_module import graph_from_module
from neuronmap.loaders.tracing.weight_edges import KERNEL_NORMS, check_kernel_norm, kernel_slice_norm
from neuronmap.loaders.transformers import graph_from_transformer, load_transformer

__all__ = [
    "load_graph",
    "graph_from_module",
    "graph_from_exported",
    "load_transformer",
    "graph_from_transformer",
    "ModelGraph",
    "LayerRecord",
    "EdgeBlock",
    "ModelMeta",
    "KernelNorm",
    "KERNEL_NORMS",
    "SUPPORTED_SUFFIXES",
    "kernel_slice_norm",
    "file_sha256",
    "read_checkpoint",
    "load_state_dict",
    "load_exported",
    "build_module",
    "resolve_factory",
    "load_state_dict_into",
    "LoadError",
    "CheckpointError",
    "ArchitectureError",
    "UnsupportedLayerError",
    "NonFiniteWeightsError",
    "OptionError",
]


def load_graph(
    path: str | PathLike[str],
    *,
    arch: str | None = None,
    input_shape: Sequence[int] | None = None,
    kernel_norm: KernelNorm = "entry_l1",
    fold_batchnorm: bool = True,
) -> ModelGraph:
    """Open a checkpoint file and build its ModelGraph.

    Parameters
    ----------
    path : str or PathLike
        A state dict (``.pt``, ``.pth``, ``.safetensors``) or a ``torch.export`` program (``.pt2``).
    arch : str, optional
        ``"package.module:factory"`` that builds the empty module for a state dict, e.g.
        ``"neuronmap.examples.nets:mlp_4x256"``. Required for state dicts; a ``.pt2`` carries its own graph and
        takes none.
    input_shape : sequence of int, optional
        The input's shape without the batch dim, for modules that do not set ``input_shape`` themselves (see
        ``graph_from_module``). Ignored for ``.pt2``, whose example input fixed the shapes.
    kernel_norm : {"entry_l1", "induced1", "spectral2", "fro"}, default="entry_l1"
        The norm that turns a kernel slice into one channel edge.
    fold_batchnorm : bool, default=True
        Fold BatchNorm into the preceding Linear/Conv.

    Returns
    -------
    graph : ModelGraph
        ``meta`` records the arch spec (``"torch.export"`` for ``.pt2``), the source path, the file's SHA-256 and
        the loader options.

    Raises
    ------
    CheckpointError, ArchitectureError, UnsupportedLayerError, NonFiniteWeightsError
        All are ``LoadError``s, which the CLI prints as one line.

    Examples
    --------
    >>> graph = nm.load_graph(path, arch="neuronmap.examples.nets:digits_mlp")
    >>> [(layer.name, layer.role, layer.size) for layer in graph.layers]
    [('input', 'input', 64), ('0', 'hidden', 64), ('2', 'hidden', 64), ('4', 'output', 10)]
    >>> graph.adjacency().shape
    (202, 202)
    >>> nm.load_graph(path)
    Traceback (most recent call last):
    ...
    neuronmap.loaders.errors.ArchitectureError: 'digits-mlp.safetensors' holds only weights; pass --arch ...
    """
    path = Path(path)
    kernel_norm = check_kernel_norm(kernel_norm)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise CheckpointError(
            f"Cannot open {path.name!r}: the suffix {path.suffix or '(none)'!r} is not one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}.",
            path=str(path),
        )
    if suffix == ".pt2":
        if arch is not None:
            raise ArchitectureError(
                f"{path.name!r} is a torch.export program, which carries its own graph; drop --arch.", spec=arch
            )
        graph = graph_from_exported(load_exported(path), kernel_norm=kernel_norm, fold_batchnorm=fold_batchnorm)
        arch_name = "torch.export"
    else:
        if arch is None:
            raise ArchitectureError(
                f"{path.name!r} holds only weights; pass --arch package.module:factory naming "
                "the function that builds its nn.Module, e.g. "
                "neuronmap.examples.nets:mlp_4x256."
            )
        state_dict = load_state_dict(path)
        module = load_state_dict_into(build_module(arch), state_dict, spec=arch)
        graph = graph_from_module(
            module, input_shape=input_shape, kernel_norm=kernel_norm, fold_batchnorm=fold_batchnorm
        )
        arch_name = arch
    graph.meta = ModelMeta(
        arch=arch_name,
        source=str(path.resolve()),  # absolute: assessments re-load it from any working directory
        sha256=file_sha256(path),
        kernel_norm=kernel_norm,
        fold_batchnorm=fold_batchnorm,
    )
    return graph
