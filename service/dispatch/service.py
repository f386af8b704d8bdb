"""What `neuronmap serve` and `neuronmap sweep` run: open the store, start or join Ray, dispatch.

The dispatcher runs in this process; Ray's workers run the tasks (here, or on the cluster's machines); the store is
wherever the settings point (the managed local Neo4j, or NEO4J_URI: a server or a cluster every worker reaches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from neuronmap.service.config import Settings
from neuronmap.service.dispatch.client import JobFuture, Sweep, match_models, queue_sweep, run_sweep
from neuronmap.service.dispatch.dispatcher import Dispatcher, DispatcherConfig, JobEvent
from neuronmap.service.dispatch.ray_runtime import ray_session
from neuronmap.service.runs.clustering import ClusterConfig
from neuronmap.service.store import local_neo4j


def _connection(settings: Settings, on_start: Callable[[local_neo4j.LocalServer], None] | None) -> Any:
    return local_neo4j.resolve_connection(settings, autostart=True, on_start=on_start)


def serve(
    settings: Settings,
    *,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    config: DispatcherConfig | None = None,
    exit_when_idle: bool = False,
    on_event: Callable[[JobEvent], None] = lambda event: None,
    on_ready: Callable[[dict[str, float]], None] = lambda resources: None,
    on_start: Callable[[local_neo4j.LocalServer], None] | None = None,
) -> int:
    """Run queued jobs on Ray until interrupted (or idle, with ``exit_when_idle``); the number finished here.

    ``ray_address`` (else ``settings.ray_address``) joins a Ray cluster; without one a local Ray starts with this
    machine's resources (``num_cpus`` to limit them) and is shut down on the way out, Ctrl-C included.
    """
    from neuronmap.service.dispatch.ray_runtime import cluster_resources
    from neuronmap.service.store.open import connect

    connection = _connection(settings, on_start)
    with connect(connection) as store, ray_session(ray_address or settings.ray_address, num_cpus=num_cpus):
        on_ready(cluster_resources())
        dispatcher = Dispatcher(store, connection, config, on_event=on_event)
        return dispatcher.run(exit_when_idle=exit_when_idle)


def sweep(
    settings: Settings,
    models: Sequence[str],
    ks: Sequence[int],
    seeds: Sequence[int],
    shuffles: Sequence[int],
    *,
    base: ClusterConfig | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    config: DispatcherConfig | None = None,
    on_queued: Callable[[Sweep], None] = lambda sweep: None,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    on_start: Callable[[local_neo4j.LocalServer], None] | None = None,
) -> tuple[Sweep, list[dict[str, Any]]]:
    """Queue the cross product of ``models`` (names or shell patterns of ready models) × K × seeds × null sizes
    and run it on Ray until every job is finished; the sweep and its jobs' records, in queue order.

    A dispatcher runs in this process for the sweep; other dispatchers serving the store may take some jobs too.
    """
    from neuronmap.service.store.open import connect

    connection = _connection(settings, on_start)
    with connect(connection) as store:
        names = match_models(store, models)
        plan, futures = queue_sweep(store, names, ks, seeds, shuffles, base)
        on_queued(plan)
        try:
            with ray_session(ray_address or settings.ray_address, num_cpus=num_cpus):
                dispatcher = Dispatcher(store, connection, config)
                records = run_sweep(
                    store, futures, lambda stop: dispatcher.run(stop), on_progress=on_progress, poll=0.25
                )
        except BaseException:
            _cancel_unfinished(futures)  # Ctrl-C: the rest of the sweep is not left queued
            raise
    return plan, [records[f.id] for f in futures]


def _cancel_unfinished(futures: Sequence[JobFuture]) -> None:
    for future in futures:
        try:
            future.cancel()
        except Exception:  # noqa: BLE001, S110 - best effort on the way out
            pass
