"""Re-load a stored model's network from the file it was ingested from, refusing a file that changed or is gone.

``load_network`` gives it as a ``LesionNetwork`` checked against the stored layers, for the assessments.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from neuronmap.cypher import Store
from neuronmap.loaders import build_module, file_sha256, load_exported, load_state_dict, load_state_dict_into
from neuronmap.loaders.tracing.trace_export import trace_export
from neuronmap.options import BatchNormLesion
from neuronmap.service.assessment.network import LesionNetwork
from neuronmap.service.errors import (
    LayerMismatchError,
    ModelNotFoundError,
    ModelNotReadyError,
    SourceUnavailableError,
)


def reload_module(store: Store, model: str, *, exported_ok: bool = True) -> tuple[nn.Module, tuple[int, ...]]:
    """The model's nn.Module (in eval mode) and its input shape without the batch dimension.

    ``exported_ok=False`` refuses models ingested from a ``torch.export`` program, whose module is a flat graph of
    ATen calls: work that hooks into the network's own modules (recording activations) needs the original one.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError
    SourceUnavailableError
        The model was ingested from Python rather than a file, or its file is gone or has changed since (the
        SHA-256 recorded at ingest no longer matches).
    """
    rows = store.run("admin.model_source", model=model)
    if not rows:
        raise ModelNotFoundError(model)
    row = rows[0]
    if row["status"] != "ready":
        raise ModelNotReadyError(model, row["status"])
    source, arch = row.get("source") or "", row.get("arch") or ""
    if not source or not Path(source).is_file():
        reason = "was ingested from Python, not from a file" if not source else f"came from {source!r}, which is gone"
        raise SourceUnavailableError(model, reason)
    if row.get("sha256") and file_sha256(source) != row["sha256"]:
        raise SourceUnavailableError(
            model, f"came from {source!r}, which has changed since it was ingested (its SHA-256 differs)"
        )
    if arch == "torch.export":
        if not exported_ok:
            raise SourceUnavailableError(
                model,
                f"came from the torch.export program {source!r}, whose graph of ATen "
                "calls has no modules to record from",
                "Ingest its state dict with --arch module:factory instead",
            )
        module: nn.Module = load_exported(source).module()  # exported in eval mode; its eval() is not supported
    else:
        module = load_state_dict_into(build_module(arch), load_state_dict(source), spec=arch)
        module.eval()
    return module, tuple(int(d) for d in (row.get("input_shape") or []))


def load_network(
    store: Store, model: str, *, device: str | torch.device = "cpu", batchnorm: BatchNormLesion = "after"
) -> LesionNetwork:
    """The stored model's network, re-loaded from its ingest source and checked against its stored layers.

    Parameters
    ----------
    store : neuronmap.cypher.Store
    model : str
    device : str or torch.device, default "cpu"
    batchnorm : {"after", "before"}, default "after"

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, SourceUnavailableError
        As ``reload_module`` raises them (a missing or changed source file is refused).
    LayerMismatchError
        The network's layers (names, sizes) are not the stored ones.
    """
    module, input_shape = reload_module(store, model)
    source = store.run("admin.model_source", model=model)[0]
    traced = trace_export(load_exported(source["source"])) if source.get("arch") == "torch.export" else None
    net = LesionNetwork(module, input_shape or None, device=device, batchnorm=batchnorm, traced=traced)
    stored = [
        (row["index"], row["name"], row["size"])
        for row in store.run("admin.model_layers", model=model)
        if row["index"] > 0
    ]
    found = [(p.index, p.name, p.size) for p in net.layers]
    if stored != found:
        differ = next(((a, b) for a, b in zip(stored, found) if a != b), None)
        detail = (
            f"stored layer {differ[0]} vs re-loaded {differ[1]} (index, name, size)"
            if differ
            else f"{len(stored)} stored layers vs {len(found)} re-loaded"
        )
        raise LayerMismatchError(model, detail)
    return net
