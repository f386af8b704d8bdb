"""Ray, started or joined: a local Ray with this machine's resources by default, or a cluster by address.

Ray is imported only here and in the dispatcher, inside functions, so `neuronmap -h` never loads it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

from neuronmap.service.errors import ServiceError


class RayStartError(ServiceError, RuntimeError):
    """Ray could not be started or joined."""

    def __init__(self, address: str | None, reason: str) -> None:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        super().__init__(f"Could not start or join {where}: {reason}")


@contextlib.contextmanager
def ray_session(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[bool]:
    """Ray for the block: joins ``address`` (``ray://head:10001``, ``head:6379`` or ``auto``) or starts a local Ray
    with this machine's resources (``num_cpus``/``num_gpus`` to limit them), and shuts down only what it started.

    Yields True when this block started (or joined) Ray, False when Ray was running in this process already.
    The local Ray's dashboard is off; Ray's own ports are guarded by its token authentication.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        raise RayStartError(address, str(error).strip().split("\n")[0]) from None
    try:
        yield True
    finally:
        ray.shutdown()


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


@functools.cache
def remote_functions() -> tuple[Any, Any]:
    """The Ray remote functions of the task bodies: (run_job, null_chunk)."""
    import ray

    from neuronmap.service.dispatch import tasks

    return ray.remote(tasks.run_job), ray.remote(tasks.null_chunk)
