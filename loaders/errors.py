"""The errors the loaders raise on purpose.

Every class has ``LoadError`` as its base, which the CLI prints as one line without a traceback, and the builtin
that fits as a second base (sklearn's double base), so library users can catch either. A message names the
thing, the value, the rule and the way out; the context is kept as attributes.
"""

from __future__ import annotations

from collections.abc import Iterable

from neuronmap.errors import NeuronmapError


class LoadError(NeuronmapError):
    """Base of the errors this package raises on purpose; the CLI prints them without a traceback."""


class CheckpointError(LoadError, ValueError):
    """A file that cannot be read as a checkpoint, or holds something other than weights."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class ArchitectureError(LoadError, ValueError):
    """A bad "module:factory" spec, a state dict that does not fit the module, or a module that cannot run."""

    def __init__(self, message: str, *, spec: str = "") -> None:
        super().__init__(message)
        self.spec = spec


class OptionError(LoadError, ValueError):
    """A loader option outside its allowed values."""

    def __init__(self, name: str, value: object, allowed: Iterable[object]) -> None:
        choices = ", ".join(repr(choice) for choice in allowed)
        super().__init__(f"{name}={value!r} is not one of the supported values: {choices}.")
        self.name, self.value = name, value


class UnsupportedLayerError(LoadError, TypeError):
    """A module or operation that neuronmap cannot turn into neurons and edges."""

    SUPPORTED = (
        "Linear and Conv2d layers joined by element-wise activations, dropout, BatchNorm, 2-D pooling, "
        "spatial means, flatten/reshape and residual adds"
    )

    def __init__(self, path: str, type_name: str, reason: str = "", *, hint: str = "") -> None:
        where = f"Module {path!r} ({type_name})" if path else f"The top-level forward of {type_name}"
        why = reason or "is not supported"
        way_out = hint or f"neuronmap builds graphs from {self.SUPPORTED}; remove or replace it to load this model"
        super().__init__(f"{where} {why}. {way_out}.")
        self.path, self.type_name = path, type_name


class NonFiniteWeightsError(LoadError, ValueError):
    """Weights or biases with NaN or inf, which would poison every statistic computed on the graph."""

    def __init__(self, layer: str, n_bad: int, n_total: int, *, what: str = "weights", note: str = "") -> None:
        extra = f" {note}" if note else ""
        super().__init__(
            f"Layer {layer!r} has {n_bad:,} non-finite {what} (NaN or inf) out of {n_total:,}{extra}. "
            "neuronmap does not ingest them."
        )
        self.layer, self.n_bad, self.n_total = layer, n_bad, n_total


class ActivationError(LoadError, ValueError):
    """Activations neuronmap cannot correlate: non-finite values, too few inputs, or a value of unexpected shape."""


class ActivationGraphExistsError(LoadError, FileExistsError):
    """An activation graph of that name is already stored for the model."""

    def __init__(self, model: str, name: str, *, concurrent: bool = False) -> None:
        if concurrent:
            message = (
                f"Another process is writing activation graph {name!r} of model {model!r} right now. Wait "
                "for it to finish, or choose another --name."
            )
        else:
            message = (
                f"Model {model!r} already has an activation graph {name!r}. Pass --replace to recompute it, "
                "or choose another --name."
            )
        super().__init__(message)
        self.model, self.name = model, name


class UnknownActivationGraphError(LoadError, LookupError):
    """No activation graph of that name is stored for the model."""

    def __init__(self, model: str, name: str) -> None:
        super().__init__(
            f"Model {model!r} has no activation graph {name!r}. `neuronmap activations list {model}` lists its graphs."
        )
        self.model, self.name = model, name


class ActivationLayoutError(LoadError, ValueError):
    """Correlations recorded from a network whose layers differ from those of the stored model."""
