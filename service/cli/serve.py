"""`neuronmap serve` and `neuronmap jobs`: the long-running clustering service and its queue."""

from __future__ import annotations

import click

from neuronmap.options import JOB_LEASE_SECONDS
from neuronmap.service.cli.common import console, format_option, store_from
from neuronmap.service.cli.output import emit


@click.command()
@click.option("--poll", default=2.0, show_default=True, help="Seconds between looks at an empty queue.")
@click.option("--exit-when-idle", is_flag=True, help="Stop once the queue is empty (for batch runs).")
@click.option(
    "--lease",
    type=click.FloatRange(min=3.0),
    default=JOB_LEASE_SECONDS,
    show_default=True,
    help="Seconds a claimed job stays this worker's without a heartbeat; a job whose worker died is taken over "
    "after this.",
)
@click.pass_context
def serve(ctx: click.Context, poll: float, exit_when_idle: bool, lease: float) -> None:
    """Run queued clustering jobs (from `neuronmap jobs add`) until stopped; several workers may share a store.

    \b
    neuronmap jobs add mnist-mlp-a --k 12 --shuffles 200
    neuronmap serve --exit-when-idle
    """
    from neuronmap.service.worker import serve as serve_jobs

    def report(outcome: dict[str, str]) -> None:
        detail = outcome.get("partition") or outcome.get("error", "")
        console.print(f"{outcome['id']}: {outcome['status']}  {detail}")

    with store_from(ctx) as store:
        try:
            n = serve_jobs(store, poll_seconds=poll, exit_when_idle=exit_when_idle, lease_seconds=lease, on_job=report)
        except KeyboardInterrupt:
            console.print("Stopped.")
            return
    console.print(f"Ran {n} job(s); the queue is empty.")


@click.group()
def jobs() -> None:
    """The clustering job queue that `neuronmap serve` works through.

    \b
    neuronmap jobs add mnist-mlp-a --k 12
    neuronmap jobs list
    """


@jobs.command(name="add")
@click.argument("model")
@click.option("-k", "--k", "n_clusters", default=12, show_default=True)
@click.option("--shuffles", "n_shuffles", default=0, show_default=True)
@click.option("--layers")
@click.option("--edges", default="weight", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.pass_context
def add(
    ctx: click.Context, model: str, n_clusters: int, n_shuffles: int, layers: str | None, edges: str, seed: int
) -> None:
    """Queue a clustering job (the options of `neuronmap cluster`).

    \b
    neuronmap jobs add mnist-mlp-a --k 12 --shuffles 200
    """
    from neuronmap.service.runs import ClusterConfig
    from neuronmap.service.worker import enqueue

    config = ClusterConfig(
        n_clusters=n_clusters,
        n_shuffles=n_shuffles,
        layers=layers,
        edges=edges,
        random_state=seed,
        device=ctx.obj.device,
    )
    with store_from(ctx) as store:
        click.echo(enqueue(store, model, config))


@jobs.command(name="list")
@click.option("--limit", default=50, show_default=True)
@format_option()
@click.pass_context
def list_jobs(ctx: click.Context, limit: int, fmt: str) -> None:
    """List jobs, newest first, with their status, the partition each wrote and how often a worker claimed it.

    \b
    neuronmap jobs list --format json
    """
    from neuronmap.service.store import jobs as jobs_store

    with store_from(ctx) as store:
        rows = jobs_store.list_jobs(store, limit)
    emit(
        rows,
        ["id", "model", "status", "partition", "error", "worker", "attempts", "created_at", "finished_at"],
        fmt,
        title="jobs",
    )


COMMANDS = [serve, jobs]
