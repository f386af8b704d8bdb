"""Errors the service raises on purpose; the CLI prints them as one line, without a traceback.

Each error derives from :class:`ServiceError` and from the builtin that fits, so library users can catch either
(sklearn's double base).
"""

from __future__ import annotations

from collections.abc import Sequence

from neuronmap.errors import DeviceError, NeuronmapError, SeedError

__all__ = ["DeviceError", "SeedError"]  # shared with loaders; kept here so service users find every error in one place


class ServiceError(NeuronmapError):
    """Base of the errors the service package raises on purpose."""


class LocalServerError(ServiceError, RuntimeError):
    """The managed local Neo4j could not be fetched, started or reached."""


class ModelNotFoundError(ServiceError, LookupError):
    def __init__(self, model: str) -> None:
        super().__init__(f"There is no model {model!r} in the store. `neuronmap models` lists them.")
        self.model = model


class ClusteringInputError(ServiceError, ValueError):
    """A graph, labelling or parameter that clustering cannot use; the message names the rule and the way out."""


class DisconnectedGraphWarning(UserWarning):
    """The graph has more than one connected component; spectral clustering proceeds, as sklearn does."""

    def __init__(self, message: str, n_components: int = 0) -> None:
        super().__init__(message)
        self.n_components = n_components


class ModelNotReadyError(ServiceError, RuntimeError):
    def __init__(self, model: str, status: str) -> None:
        if status == "deleting":
            message = (
                f"Model {model!r} is 'deleting': a drop or replace is removing it, or was stopped part-way. "
                f"Run `neuronmap drop {model}` to finish the drop, or re-run its `neuronmap ingest` command."
            )
        else:
            message = (
                f"Model {model!r} is {status!r}, not ready: its ingest has not finished or failed. "
                f"Re-run its `neuronmap ingest` command, or `neuronmap drop {model}`."
            )
        super().__init__(message)
        self.model, self.status = model, status


class PartitionNotFoundError(ServiceError, LookupError):
    def __init__(self, partition: str, model: str | None = None) -> None:
        where = f" for model {model!r}" if model else ""
        super().__init__(f"There is no partition {partition!r}{where}. `neuronmap partitions MODEL` lists them.")
        self.partition = partition


class PartitionWriteError(ServiceError, RuntimeError):
    def __init__(self, model: str, expected: int, written: int) -> None:
        super().__init__(
            f"Only {written:,} of {expected:,} cluster memberships of model {model!r} found their neuron; "
            "the partition was not stored. Was the model replaced while it was being clustered?"
        )


class ActivationGraphNotFoundError(ServiceError, LookupError):
    def __init__(self, model: str, name: str) -> None:
        super().__init__(
            f"Model {model!r} has no activation graph {name!r}. `neuronmap activations list {model}` "
            "lists its graphs; `neuronmap activations` computes one."
        )
        self.model, self.name = model, name


class ActivationGraphNotReadyError(ServiceError, RuntimeError):
    def __init__(self, model: str, name: str, status: str) -> None:
        why = (
            "it is being removed, or its removal was stopped part-way"
            if status == "deleting"
            else "its ingest has not finished or failed"
        )
        super().__init__(
            f"Activation graph {name!r} of model {model!r} is {status!r}, not ready: {why}. "
            "Re-run its `neuronmap activations` command (leftovers are replaced)."
        )
        self.model, self.name, self.status = model, name, status


class NoPartitionError(PartitionNotFoundError):
    """'latest' was asked for, but the model has no partition (of the graph asked for) yet."""

    def __init__(self, model: str, edges: str = "weight", others: Sequence[str] = ()) -> None:
        graph = "weight graph" if edges == "weight" else f"activation graph {edges!r}"
        flag = "" if edges == "weight" else f" --edges {edges}"
        if others:
            kinds = ", ".join("its weights" if other == "weight" else f"activation graph {other!r}" for other in others)
            message = (
                f"Model {model!r} has no partition of its {graph} yet, so there is no 'latest' one; its partitions "
                f"were cut from {kinds}. Pass --edges (weight, or the graph's name) to mean the newest of those, "
                f"or a partition id, or run `neuronmap cluster {model}{flag}` first."
            )
        else:
            message = (
                f"Model {model!r} has no partition yet, so there is no 'latest' one. "
                f"Run `neuronmap cluster {model}{flag}` first, or pass a partition id."
            )
        ServiceError.__init__(self, message)
        self.partition, self.model, self.edges = "latest", model, edges


class NeuronNotFoundError(ServiceError, LookupError):
    def __init__(self, model: str, where: str, layers: str) -> None:
        super().__init__(
            f"Model {model!r} has no neuron {where}. Its layers are: {layers}. Name a layer (--layer NAME), or "
            "give its index (--layer-index N); units and ordinals count from 0."
        )
        self.model = model


class WeightRelationshipsMissingError(ServiceError, LookupError):
    """A query walks single WEIGHT relationships, and the model was ingested with its edges in packed chunks only."""

    def __init__(self, model: str, query: str) -> None:
        super().__init__(
            f"Query {query!r} walks single WEIGHT edges, and model {model!r} was ingested without them "
            "(--no-relationships: its edges are only in packed chunks, which clustering reads). Re-ingest it "
            "without --no-relationships to run this query."
        )
        self.model, self.query = model, query


class LibraryQueryInputError(ServiceError, ValueError):
    """Parameters that a library query cannot use as given; the message names the rule and the way out."""


class SourceUnavailableError(ServiceError, FileNotFoundError):
    def __init__(self, model: str, reason: str, way_out: str = "") -> None:
        way_out = (
            way_out or f"Re-ingest it from its file (neuronmap ingest FILE --name {model} --replace), then try again"
        )
        super().__init__(f"Cannot re-load the network of model {model!r}: it {reason}. {way_out}.")
        self.model = model


class AssessmentInputError(ServiceError, ValueError):
    """A data set, partition or option that an importance or coherence run cannot use; the message says why."""


class LayerMismatchError(ServiceError, LookupError):
    """The re-loaded network does not have the layers the store holds for its model."""

    def __init__(self, model: str, detail: str) -> None:
        super().__init__(
            f"The re-loaded network of model {model!r} does not match its stored layers: {detail}. "
            f"Was it ingested with other loader options? Re-ingest it (neuronmap ingest FILE --name "
            f"{model} --replace) and cluster it again."
        )
        self.model = model


class AssessmentNotFoundError(ServiceError, LookupError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"There is no assessment {what}. `neuronmap importance` and `neuronmap coherence` "
            "create them; the partition's assessments are listed by list_assessments()."
        )
        self.what = what
