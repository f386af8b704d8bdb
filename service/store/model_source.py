"""Re-load a stored model's network from the file it was ingested from, refusing a file that changed or is gone, or
take the caller's in-process network for a model ingested from memory.

``load_network`` gives it as a ``LesionNetwork`` checked against the stored layers, for the assessments.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram

from neuronmap.cypher import Store
from neuronmap.loaders import build_module, file_sha256, load_exported, load_state_dict, load_state_dict_into
from neuronmap.loaders.tracing.trace_export import trace_export
from neuronmap.options import BatchNormLesion
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.errors import (
    AssessmentInputError,
    LayerMismatchError,
    ModelNotFoundError,
    ModelNotReadyError,
    SourceUnavailableError,
)

Network = nn.Module | ExportedProgram
"""What a model's network may be: an nn.Module, or a ``torch.export`` program (whose ``.module()`` runs it)."""

TRANSFORMER_ARCH = "transformers:"  # ModelMeta.arch of every graph from loaders/transformers

# The sources that graph_from_module and graph_from_exported record for a network read from memory.
_IN_PROCESS = frozenset({"", "in-process nn.Module", "ExportedProgram"})


def _source_row(store: Store, model: str) -> dict[str, Any]:
    rows = store.run("admin.model_source", model=model)
    if not rows:
        raise ModelNotFoundError(model)
    row = rows[0]
    if row["status"] != "ready":
        raise ModelNotReadyError(model, row["status"])
    return row


def _input_shape(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in (row.get("input_shape") or []))


def reload_source(store: Store, model: str) -> tuple[Network, tuple[int, ...]]:
    """The model's network as it was ingested, and its input shape without the batch dimension.

    A model ingested from a ``torch.export`` program comes back as the ``ExportedProgram``: its graph names the
    layers, and ``.module()`` runs it. Any other comes back as its nn.Module in eval mode.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError
    SourceUnavailableError
        The model was ingested from Python rather than a file (pass its network as ``module=`` instead), or its
        file is gone or has changed since (the SHA-256 recorded at ingest no longer matches).
    """
    row = _source_row(store, model)
    source, arch = row.get("source") or "", row.get("arch") or ""
    if arch.startswith(TRANSFORMER_ARCH):
        # A Hugging Face directory holds no MLP/CNN this runner can lesion or record (methods.md §10).
        raise SourceUnavailableError(
            model,
            f"is a transformer ({arch.removeprefix(TRANSFORMER_ARCH)}, read from a Hugging Face model directory), "
            "not an MLP or CNN file",
            "Lesions, activation graphs and feature visualisation here take MLP and CNN files; "
            "transformers have their own importance by ablation",
        )
    if not source or not Path(source).is_file():
        if source in _IN_PROCESS:
            raise SourceUnavailableError(
                model,
                "was ingested from Python, not from a file",
                "Pass the network itself: module=your_module (an nn.Module or a torch.export program)",
            )
        raise SourceUnavailableError(model, f"came from {source!r}, which is gone")
    if row.get("sha256") and file_sha256(source) != row["sha256"]:
        raise SourceUnavailableError(
            model, f"came from {source!r}, which has changed since it was ingested (its SHA-256 differs)"
        )
    if arch == "torch.export":
        return load_exported(source), _input_shape(row)
    module = load_state_dict_into(build_module(arch), load_state_dict(source), spec=arch)
    module.eval()
    return module, _input_shape(row)


def reload_module(store: Store, model: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The model's nn.Module (in eval mode) and its input shape without the batch dimension; for a ``torch.export``
    program, its ``.module()`` (a flat graph of ATen calls, already an inference graph). Raises as
    :func:`reload_source`."""
    network, input_shape = reload_source(store, model)
    if isinstance(network, ExportedProgram):
        return network.module(), input_shape  # exported in eval mode; its eval() is not supported
    return network, input_shape


def load_network(
    store: Store,
    model: str,
    *,
    device: str | torch.device = "cpu",
    batchnorm: BatchNormLesion = "after",
    module: Network | None = None,
) -> LesionNetwork:
    """The stored model's network, checked against its stored layers.

    Parameters
    ----------
    store : neuronmap.cypher.Store
    model : str
    device : str or torch.device, default "cpu"
    batchnorm : {"after", "before"}, default "after"
    module : nn.Module or torch.export.ExportedProgram, optional
        The network in this process, for a model ingested from memory (``ingest(store, name,
        graph_from_module(m))``) or to skip re-loading the file. A copy runs, so ``module`` is neither moved nor put
        in eval mode. Without it the network is re-loaded from the file it was ingested from.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, SourceUnavailableError
        As ``reload_source`` raises them (a missing or changed source file is refused).
    AssessmentInputError
        ``module`` is neither an nn.Module nor an ExportedProgram.
    LayerMismatchError
        The network's layers (names, sizes) are not the stored ones.
    """
    if module is None:
        network, input_shape = reload_source(store, model)
    elif isinstance(module, (nn.Module, ExportedProgram)):
        network, input_shape = module, _input_shape(_source_row(store, model))
        if isinstance(network, nn.Module):
            network = copy.deepcopy(network)
    else:
        raise AssessmentInputError(
            f"module= must be an nn.Module or a torch.export ExportedProgram, got {type(module).__name__}."
        )
    if isinstance(network, ExportedProgram):
        net = LesionNetwork(
            network.module(), input_shape or None, device=device, batchnorm=batchnorm, traced=trace_export(network)
        )
    else:
        net = LesionNetwork(network, input_shape or None, device=device, batchnorm=batchnorm)
    stored = [
        (row["index"], row["name"], row["size"])
        for row in store.run("admin.model_layers", model=model)
        if row["index"] > 0
    ]
    found = [(p.index, p.name, p.size) for p in net.layers]
    if stored != found:
        differ = next(((a, b) for a, b in zip(stored, found) if a != b), None)
        which = "re-loaded" if module is None else "in the module given"
        detail = (
            f"stored layer {differ[0]} vs {which} {differ[1]} (index, name, size)"
            if differ
            else f"{len(stored)} stored layers vs {len(found)} {which}"
        )
        raise LayerMismatchError(model, detail)
    return net
