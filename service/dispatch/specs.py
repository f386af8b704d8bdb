"""What a job is and what it gives back: the kinds' settings as queued in (:Job).config, and the outcome a task
returns (pydantic, so it travels through Ray and is stored on the job as JSON)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from neuronmap.options import ChannelReduction, CoherenceMethod, CorrelationMethod, DeviceName
from neuronmap.service.assessment.coherence import CoherenceResult
from neuronmap.service.assessment.importance import ImportanceResult
from neuronmap.service.runs.clustering import ClusterConfig, PartitionResult

JobKind = Literal["cluster", "importance", "coherence", "activations"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED: tuple[JobStatus, ...] = ("done", "failed", "cancelled")


class ImportanceJob(BaseModel):
    """A lesion test of a partition (``neuronmap importance``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str = "latest"  # resolved when the job runs
    edges: str = "weight"
    dataset: str = "digits"
    n_null: int = Field(default=100, ge=1)
    seed: int = 0
    device: DeviceName = "auto"


class CoherenceJob(BaseModel):
    """Feature and/or data-set-example coherence of a partition (``neuronmap coherence``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition: str = "latest"
    edges: str = "weight"
    dataset: str = "digits"
    n_null: int = Field(default=100, ge=1)
    seed: int = 0
    device: DeviceName = "auto"
    methods: tuple[CoherenceMethod, ...] = ("features", "examples")
    steps: int = Field(default=256, ge=1)
    k: int = Field(default=32, ge=1)


class ActivationsJob(BaseModel):
    """An activation graph of a model over a data set (``neuronmap activations``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: str = "digits"
    method: CorrelationMethod = "spearman"
    min_r2: float = Field(default=0.0, ge=0.0)
    top_k: int | None = Field(default=None, ge=1)
    reduction: ChannelReduction = "l2"
    name: str | None = None  # default: DATA-METHOD
    batch_size: int = Field(default=512, ge=1)
    device: DeviceName = "auto"
    replace: bool = False

    @property
    def graph_name(self) -> str:
        return self.name or f"{self.data}-{self.method}"


JobConfig = ClusterConfig | ImportanceJob | CoherenceJob | ActivationsJob
CONFIGS: dict[str, type[BaseModel]] = {
    "cluster": ClusterConfig,
    "importance": ImportanceJob,
    "coherence": CoherenceJob,
    "activations": ActivationsJob,
}


class Job(BaseModel):
    """A claimed job as a task receives it (ids and settings only: every task pulls its data from the store)."""

    id: str
    kind: JobKind
    model: str
    config: str  # JSON of the kind's settings
    attempts: int = 1

    def settings(self) -> Any:
        """The kind's settings (ClusterConfig, ImportanceJob, CoherenceJob or ActivationsJob)."""
        return CONFIGS[self.kind].model_validate_json(self.config)

    @property
    def device(self) -> str:
        return str(getattr(self.settings(), "device", "auto"))


class ActivationsResult(BaseModel):
    """The activation graph an activations job stored."""

    model: str
    name: str
    n_units: int | None = None
    n_edges: int | None = None


class JobOutcome(BaseModel):
    """What a job wrote. ``result`` holds the stored ids (partition, assessments or graph); one of the detail fields
    holds the run's result. ``reused``: an earlier run of the same job had written it (a retry found it), so nothing
    was written again; the detail then holds what the store keeps."""

    id: str
    kind: JobKind
    model: str
    result: list[str]
    task: str = ""  # host:pid of the Ray worker that ran it
    reused: bool = False
    partition: PartitionResult | None = None
    importance: ImportanceResult | None = None
    coherence: list[CoherenceResult] = Field(default_factory=list)
    activations: ActivationsResult | None = None
