"""The refusals of the transformer loader, each one line that names the class, tensor or option at fault.

All are ``LoadError``s (the CLI prints them without a traceback) with the fitting builtin as a second base, as in
``neuronmap.loaders.errors``. Each is raised before a graph is built, so nothing reaches the store.
"""

from __future__ import annotations

from neuronmap.loaders.errors import LoadError

SUPPORTED = "GPT-2 (gpt2), GPT-NeoX/Pythia (gpt_neox) and Llama (llama)"


class UnsupportedTransformerError(LoadError, TypeError):
    """An architecture outside the supported families, or a supported one built in a way the graph cannot follow."""

    def __init__(self, name: str, reason: str = "") -> None:
        why = reason or f"is not a supported transformer; neuronmap reads {SUPPORTED} models"
        super().__init__(f"{name} {why}.")
        self.name = name


class RemoteCodeError(LoadError, ValueError):
    """A model directory whose config asks for code of its own (``auto_map``, ``trust_remote_code``)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(
            f"{path!r} asks for its own code ({what}); neuronmap never runs a model's code "
            f"(trust_remote_code), so it reads only {SUPPORTED} directories."
        )
        self.path = path


class MissingTensorError(LoadError, LookupError):
    """A tensor the model needs is absent from the weight files."""

    def __init__(self, tensor: str, where: str, n_missing: int = 1) -> None:
        more = f" (and {n_missing - 1} more)" if n_missing > 1 else ""
        super().__init__(
            f"Tensor {tensor!r}{more} is missing from {where}; re-save the model with save_pretrained, "
            "which writes every tensor."
        )
        self.tensor = tensor


class TransformerOptionError(LoadError, ValueError):
    """A transformer graph option out of range, or one that does not apply to the chosen graph."""
