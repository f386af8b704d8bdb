"""Jobs on Ray, with Neo4j as their record: the dispatcher, the task bodies, and queueing from Python.

``neuronmap serve`` runs a :class:`Dispatcher` on a local Ray (or a cluster's); ``submit`` and ``queue_sweep``
queue work from any process with a Bolt connection and return futures. Ray loads only when a dispatcher starts.
"""

from neuronmap.service.dispatch.client import (
    JobFailedError,
    JobFuture,
    JobNotFoundError,
    Sweep,
    match_models,
    parse_ints,
    queue_sweep,
    run_sweep,
    submit,
    wait_all,
)
from neuronmap.service.dispatch.dispatcher import Dispatcher, DispatcherConfig, JobEvent
from neuronmap.service.dispatch.ray_runtime import RayStartError, ray_session
from neuronmap.service.dispatch.specs import (
    ActivationsJob,
    ActivationsResult,
    CoherenceJob,
    ImportanceJob,
    Job,
    JobOutcome,
)

__all__ = [
    "ActivationsJob",
    "ActivationsResult",
    "CoherenceJob",
    "Dispatcher",
    "DispatcherConfig",
    "ImportanceJob",
    "Job",
    "JobEvent",
    "JobFailedError",
    "JobFuture",
    "JobNotFoundError",
    "JobOutcome",
    "RayStartError",
    "Sweep",
    "match_models",
    "parse_ints",
    "queue_sweep",
    "ray_session",
    "run_sweep",
    "submit",
    "wait_all",
]
