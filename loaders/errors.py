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


_DOING = {"ingest": "being ingested", "drop": "being dropped", "activations": "being written"}


class ModelBusyError(LoadError, RuntimeError):
    """Another run (an ingest or a drop) holds the lease on the model or activation graph right now."""

    def __init__(self, model: str, graph: str, holder: dict[str, object]) -> None:
        what = f"Activation graph {graph!r} of model {model!r}" if graph else f"Model {model!r}"
        doing = _DOING.get(str(holder.get("op")), "being written")
        who = f"`neuronmap {holder.get('op', '?')}`, pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = f", since {holder['since']}" if holder.get("since") else ""
        super().__init__(
            f"{what} is {doing} by another run ({who}{since}). Wait for it to finish, or stop it; if that run "
            "has died, a rerun takes over at once on the same host, or within a minute from elsewhere."
        )
        self.model, self.graph, self.holder = model, graph, holder


class LeaseLostError(LoadError, RuntimeError):
    """Another run took over this run's lease (this one stalled for longer than the lease lasts)."""

    def __init__(self, model: str, graph: str = "") -> None:
        what = f"activation graph {graph!r} of model {model!r}" if graph else f"model {model!r}"
        super().__init__(
            f"Another run took over the lease on {what} while this one was stalled; this run stopped so that the "
            "two do not write over each other. See `neuronmap models`, and rerun if it is not ready."
        )
        self.model, self.graph = model, graph


class BadNameError(LoadError, ValueError):
    """A model or activation-graph name that cannot be stored: empty, too long, or with control characters."""

    def __init__(self, what: str, name: object, rule: str) -> None:
        shown = repr(name) if len(repr(name)) <= 60 else f"{repr(name)[:40]}…({len(str(name)):,} characters)"
        super().__init__(f"The {what} name {shown} {rule}. Choose another with --name.")
        self.what, self.name = what, name


class InterruptedDeleteError(LoadError, RuntimeError):
    """A drop or replace stopped between batches (Ctrl-C): what is left is marked 'deleting', and a rerun finishes."""

    def __init__(self, what: str, way_out: str) -> None:
        super().__init__(f"Interrupted: {what} is left marked 'deleting', which analysis refuses. {way_out}")
