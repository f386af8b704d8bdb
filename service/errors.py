"""Errors the service raises on purpose; the CLI prints them as one line, without a traceback.

Each error derives from :class:`ServiceError` and from the builtin that fits, so library users can catch either
(sklearn's double base).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors the service package raises on purpose."""


class LocalServerError(ServiceError, RuntimeError):
    """The managed local Neo4j could not be fetched, started or reached."""


class ModelNotFoundError(ServiceError, LookupError):
    def __init__(self, model: str) -> None:
        super().__init__(f"There is no model {model!r} in the store. `neuronmap models` lists them.")
        self.model = model


class DeviceError(ServiceError, RuntimeError):
    """The requested compute device is not available."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"Cannot compute on device {device!r}: {reason}")
        self.device = device


class ClusteringInputError(ServiceError, ValueError):
    """A graph, labelling or parameter that clustering cannot use; the message names the rule and the way out."""


class DisconnectedGraphWarning(UserWarning):
    """The graph has more than one connected component; spectral clustering proceeds, as sklearn does."""

    def __init__(self, message: str, n_components: int = 0) -> None:
        super().__init__(message)
        self.n_components = n_components


class ModelNotReadyError(ServiceError, RuntimeError):
    def __init__(self, model: str, status: str) -> None:
        super().__init__(f"Model {model!r} is {status!r}, not ready: its ingest has not finished or failed. "
                         f"Re-run its `neuronmap ingest` command, or `neuronmap drop {model}`.")
        self.model, self.status = model, status


class PartitionNotFoundError(ServiceError, LookupError):
    def __init__(self, partition: str, model: str | None = None) -> None:
        where = f" for model {model!r}" if model else ""
        super().__init__(f"There is no partition {partition!r}{where}. `neuronmap partitions MODEL` lists them.")
        self.partition = partition


class PartitionWriteError(ServiceError, RuntimeError):
    def __init__(self, model: str, expected: int, written: int) -> None:
        super().__init__(f"Only {written:,} of {expected:,} cluster memberships of model {model!r} found their neuron; "
                         "the partition was not stored. Was the model replaced while it was being clustered?")
