"""The store's inventory: models, their layers and partitions, and dropping a partition."""

from __future__ import annotations

from neuronmap.cypher import Store
from neuronmap.results import Rows
from neuronmap.service.errors import ModelNotFoundError, PartitionNotFoundError


def list_models(store: Store) -> Rows:
    """Every model in the store with its status and size, as ``neuronmap models`` prints it."""
    return Rows(store.run("admin.list_models"), query="list_models")


def model_layers(store: Store, model: str) -> Rows:
    """The model's layers in order: index, name, kind, role and size."""
    return Rows(store.run("admin.model_layers", model=model), query="model_layers")


def require_model(store: Store, model: str) -> None:
    """Raise ModelNotFoundError unless the store holds the model (in any status)."""
    if not store.run("ingest.model_status", model=model):
        raise ModelNotFoundError(model)


def list_partitions(store: Store, model: str) -> Rows:
    """The model's partitions, newest first; the model must exist."""
    require_model(store, model)
    return Rows(store.run("admin.list_partitions", model=model), query="list_partitions")


def drop_partition(store: Store, model: str, partition: str) -> None:
    """Remove one of the model's partitions with its clusters, memberships and assessments."""
    if partition not in {row["id"] for row in list_partitions(store, model)}:
        raise PartitionNotFoundError(partition, model)
    store.run("admin.delete_partition", partition=partition)
