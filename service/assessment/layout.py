"""A partition's sub-clusters as the assessments read them: pure types, filled from the store by
``store.assessments.read_partition_layout``."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict


class LayerInfo(BaseModel):
    """A stored layer, as ``admin.model_layers`` lists it."""

    model_config = ConfigDict(frozen=True)

    index: int
    name: str
    kind: str
    role: str
    size: int


class SubClusterRef(BaseModel):
    """One sub-cluster of a partition: the units (indices within their layer) of a cluster in one layer."""

    model_config = ConfigDict(frozen=True)

    cluster: int
    layer: int  # layer index, 0 is the input
    layer_name: str
    units: tuple[int, ...]  # ascending unit indices within the layer
    pool_size: int  # the layer's units in the partition: random sets are drawn from these

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def complete(self) -> bool:
        """The sub-cluster is the whole layer (of the partition's units), so a random set would be itself."""
        return self.size == self.pool_size


class PartitionLayout(BaseModel):
    """A partition's hidden-layer sub-clusters and, per layer, the units random sets are drawn from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model: str
    partition: str
    layers: tuple[LayerInfo, ...]
    subclusters: tuple[SubClusterRef, ...]  # hidden layers only, ordered by (layer, cluster)
    pools: dict[int, np.ndarray]  # layer index → the layer's units in the partition, ascending
