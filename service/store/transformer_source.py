"""Re-load a stored transformer's causal LM from the directory it was ingested from, refusing a directory whose
weights changed or are gone, or take the caller's in-process model (methods.md §11)."""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from neuronmap.cypher import Store
from neuronmap.service.errors import (
    AssessmentInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    SourceUnavailableError,
)


def transformer_source(store: Store, model: str) -> tuple[str, str, str]:
    """(source, sha256, arch) of a ready model; refuses a model that is not a transformer."""
    rows = store.run("admin.model_source", model=model)
    if not rows:
        raise ModelNotFoundError(model)
    row = rows[0]
    if row["status"] != "ready":
        raise ModelNotReadyError(model, row["status"])
    arch = row.get("arch") or ""
    if not arch.startswith("transformers:"):
        raise AssessmentInputError(
            f"Model {model!r} is not a transformer (arch {arch!r}); its importance and coherence run through "
            "the MLP and CNN assessments (without --data text:, npz: or two-task)."
        )
    return row.get("source") or "", row.get("sha256") or "", arch


def is_transformer(store: Store, model: str) -> bool:
    """Whether the stored model was ingested as a transformer (its arch is ``transformers:…``)."""
    rows = store.run("admin.model_source", model=model)
    return bool(rows) and str(rows[0].get("arch") or "").startswith("transformers:")


def load_language_model(store: Store, model: str, *, module: nn.Module | None = None) -> tuple[nn.Module, Path | None]:
    """(the model's causal LM in eval mode, its directory or None for ``module``). ``module`` is copied.

    Raises
    ------
    ModelNotFoundError, ModelNotReadyError, AssessmentInputError
    SourceUnavailableError
        The model came from memory and ``module`` is not given, or its directory is gone or its weights changed.
    """
    source, sha256, _ = transformer_source(store, model)
    if module is not None:
        if not isinstance(module, nn.Module):
            raise AssessmentInputError(f"module= must be a transformers model, got {type(module).__name__}.")
        return copy.deepcopy(module).eval(), None
    if not Path(source).is_dir():
        if source.startswith("in-process"):
            raise SourceUnavailableError(
                model, "was ingested from Python, not from a directory", "Pass the model itself: module=your_model"
            )
        raise SourceUnavailableError(model, f"came from {source!r}, which is gone")
    from neuronmap.loaders.transformers.lm_head import load_causal_lm

    lm, files = load_causal_lm(source)
    if sha256 and files.digest != sha256:
        raise SourceUnavailableError(
            model, f"came from {source!r}, whose weights have changed since it was ingested (their SHA-256 differs)"
        )
    return lm, Path(source)
