"""`neuronmap serve`, `neuronmap jobs` and `neuronmap sweep`: jobs on Ray, with Neo4j as their record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from neuronmap.options import JOB_LEASE_SECONDS
from neuronmap.service.cli.common import _starting, console, device_option, format_option, progress, store_from
from neuronmap.service.cli.http import http_options, start_http
from neuronmap.service.cli.output import emit

if TYPE_CHECKING:  # loaded only when a command runs (`-h` stays fast)
    from pathlib import Path

    from neuronmap.service.dispatch import DispatcherConfig, JobEvent
    from neuronmap.service.dispatch.specs import JobKind

RAY_ADDRESS_HELP = (
    "Join this Ray cluster (ray://head:10001, head:6379 or auto; default NEURONMAP_RAY_ADDRESS); without one a "
    "local Ray starts with this machine's resources and stops with the command."
)


def _dispatcher_config(lease: float, poll: float, max_in_flight: int | None, null_chunk: int) -> DispatcherConfig:
    from neuronmap.service.dispatch import DispatcherConfig

    return DispatcherConfig(lease_seconds=lease, poll_seconds=poll, max_in_flight=max_in_flight, null_chunk=null_chunk)


def _dispatch_options(f: Any) -> Any:
    """The options serve and sweep share: where Ray is and how the dispatcher runs."""
    for option in reversed(
        [
            click.option("--ray-address", help=RAY_ADDRESS_HELP),
            click.option("--num-cpus", type=click.IntRange(min=1), help="CPUs of the local Ray (default: all)."),
            click.option(
                "--max-in-flight", type=click.IntRange(min=1), help="Jobs at once (default: the Ray cluster's CPUs)."
            ),
            click.option(
                "--null-chunk",
                type=click.IntRange(min=0),
                default=100,
                show_default=True,
                help="Shuffles per task when a null is split over workers (0: never split).",
            ),
            click.option(
                "--lease",
                type=click.FloatRange(min=3.0),
                default=JOB_LEASE_SECONDS,
                show_default=True,
                help="Seconds a claimed job stays this dispatcher's without a heartbeat; another dispatcher takes "
                "over a job whose dispatcher died after this.",
            ),
        ]
    ):
        f = option(f)
    return f


@click.command()
@_dispatch_options
@click.option("--poll", default=1.0, show_default=True, help="Seconds between looks at an empty queue.")
@click.option("--exit-when-idle", is_flag=True, help="Stop once the queue is empty (for batch runs).")
@click.option("--http", "http_", is_flag=True, help="Also serve the explorer and the HTTP API (as `neuronmap http`).")
@http_options
@click.pass_context
def serve(
    ctx: click.Context,
    ray_address: str | None,
    num_cpus: int | None,
    max_in_flight: int | None,
    null_chunk: int,
    lease: float,
    poll: float,
    exit_when_idle: bool,
    http_: bool,
    host: str,
    port: int,
    token_file: Path | None,
) -> None:
    """Run queued jobs (from `neuronmap jobs add` or `sweep`) on Ray until Ctrl-C; several may serve one store.

    \b
    neuronmap serve                                  # local Ray, this machine's CPUs and GPUs
    neuronmap serve --ray-address ray://head:10001   # join a Ray cluster
    neuronmap serve --http                           # + the explorer and the API on http://127.0.0.1:8765
    """
    from neuronmap.service.dispatch.service import serve as serve_jobs

    def report(event: JobEvent) -> None:
        console.print(f"{event.id} {event.kind} {event.model}: {event.status}  {event.detail}")

    def ready(resources: dict[str, float]) -> None:
        cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        console.print(f"Serving jobs on Ray ({cpus} CPUs, {gpus} GPUs); Ctrl-C stops.")

    config = _dispatcher_config(lease, poll, max_in_flight, null_chunk)
    if http_:  # in a thread beside the dispatcher, stopped with the command
        ctx.call_on_close(start_http(ctx, host, port, token_file))
    try:
        n = serve_jobs(
            ctx.obj,
            ray_address=ray_address,
            num_cpus=num_cpus,
            config=config,
            exit_when_idle=exit_when_idle,
            on_event=report,
            on_ready=ready,
            on_start=_starting,
        )
    except KeyboardInterrupt:
        console.print("Stopped; the jobs that were running are queued again.")
        return
    console.print(f"Ran {n} job(s); the queue is empty.")


@click.group()
def jobs() -> None:
    """The job queue that `neuronmap serve` works through.

    \b
    neuronmap jobs add cluster mnist-mlp-a --k 12 --shuffles 200
    neuronmap jobs list
    neuronmap jobs cancel job-1a2b3c4d
    """


@jobs.group(name="add")
def add() -> None:
    """Queue a job of one kind; prints its id.

    \b
    neuronmap jobs add cluster mnist-mlp-a --k 12 --shuffles 200
    neuronmap jobs add importance mnist-mlp-a --partition latest --random-sets 200
    """


def _queue(ctx: click.Context, kind: JobKind, model: str, settings: dict[str, Any]) -> None:
    from neuronmap.service.dispatch import submit
    from neuronmap.service.dispatch.specs import CONFIGS

    config = CONFIGS[kind].model_validate(settings)  # a bad setting fails here, not on a worker
    with store_from(ctx) as store:
        click.echo(submit(store, kind, model, config).id)


@add.command(name="cluster")
@click.argument("model")
@click.option("-k", "--k", "n_clusters", default=12, show_default=True)
@click.option("--shuffles", "n_shuffles", default=0, show_default=True)
@click.option("--layers")
@click.option("--edges", default="weight", show_default=True)
@click.option("--seed", default=0, show_default=True)
@device_option()
@click.pass_context
def add_cluster(ctx: click.Context, model: str, device: str | None, **settings: Any) -> None:
    """Partition a model (the options of `neuronmap cluster`).

    \b
    neuronmap jobs add cluster mnist-mlp-a --k 12 --shuffles 200
    """
    settings["random_state"] = settings.pop("seed")
    _queue(ctx, "cluster", model, {**settings, "device": device or ctx.obj.device})


def _assessment_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--partition", default="latest", show_default=True, help="A partition id, or latest."),
            click.option("--edges", default="weight", show_default=True, help="The graph 'latest' is of."),
            click.option("--data", "dataset", default="digits", show_default=True),
            click.option("--random-sets", "n_null", default=100, show_default=True, help="Random same-size sets."),
            click.option("--seed", default=0, show_default=True),
            device_option(),
        ]
    ):
        f = option(f)
    return f


@add.command(name="importance")
@click.argument("model")
@_assessment_options
@click.pass_context
def add_importance(ctx: click.Context, model: str, device: str | None, **settings: Any) -> None:
    """Lesion-test a partition (`neuronmap importance`).

    \b
    neuronmap jobs add importance mnist-mlp-a --partition latest --random-sets 200
    """
    _queue(ctx, "importance", model, {**settings, "device": device or ctx.obj.device})


@add.command(name="coherence")
@click.argument("model")
@_assessment_options
@click.option("--method", "methods", default="features,examples", show_default=True)
@click.option("--steps", default=256, show_default=True)
@click.option("--top-k", "k", default=32, show_default=True)
@click.pass_context
def add_coherence(ctx: click.Context, model: str, device: str | None, methods: str, **settings: Any) -> None:
    """Coherence of a partition's modules (`neuronmap coherence`)."""
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    _queue(ctx, "coherence", model, {**settings, "methods": chosen, "device": device or ctx.obj.device})


@add.command(name="activations")
@click.argument("model")
@click.option("--data", default="digits", show_default=True)
@click.option("--corr", "method", default="spearman", show_default=True)
@click.option("--min-r2", default=0.0, show_default=True)
@click.option("--top-k", type=int)
@click.option("--name", help="The graph's name (default: DATA-CORR).")
@click.option("--replace", is_flag=True)
@device_option()
@click.pass_context
def add_activations(ctx: click.Context, model: str, device: str | None, **settings: Any) -> None:
    """An activation graph of a model (`neuronmap activations`)."""
    _queue(ctx, "activations", model, {**settings, "device": device or ctx.obj.device})


JOB_COLUMNS = ["id", "kind", "model", "status", "result", "error", "worker", "attempts", "created_at", "finished_at"]


@jobs.command(name="list")
@click.option("--limit", default=50, show_default=True)
@click.option("--sweep", default="", help="Only this sweep's jobs.")
@format_option()
@click.pass_context
def list_jobs(ctx: click.Context, limit: int, sweep: str, fmt: str) -> None:
    """List jobs, newest first, with their status, what each wrote and how often a dispatcher claimed it.

    \b
    neuronmap jobs list --format json
    """
    from neuronmap.service.store import jobs as jobs_store

    with store_from(ctx) as store:
        rows = jobs_store.list_jobs(store, limit, sweep=sweep)
    emit(rows, JOB_COLUMNS, fmt, title="jobs")


@jobs.command(name="show")
@click.argument("job_id")
@format_option()
@click.pass_context
def show(ctx: click.Context, job_id: str, fmt: str) -> None:
    """One job's whole record: settings, status, lease, the task's host:pid, what it wrote or its error.

    \b
    neuronmap jobs show job-1a2b3c4d --format json
    """
    from neuronmap.service.dispatch import JobNotFoundError
    from neuronmap.service.store import jobs as jobs_store

    with store_from(ctx) as store:
        rows = jobs_store.show(store, [job_id])
    if not rows:
        raise JobNotFoundError(job_id)
    columns = [c for c in rows[0] if c != "outcome"]
    emit(rows, columns, fmt, title=f"job {job_id}")


@jobs.command(name="cancel")
@click.argument("job_id")
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a queued job, or stop a running one (its dispatcher cancels the Ray task at its next heartbeat).

    \b
    neuronmap jobs cancel job-1a2b3c4d
    """
    from neuronmap.service.dispatch import JobNotFoundError
    from neuronmap.service.store import jobs as jobs_store

    with store_from(ctx) as store:
        status = jobs_store.cancel(store, job_id)
    if status is None:
        raise JobNotFoundError(job_id)
    console.print(f"{job_id}: {status}")


@click.command()
@click.option("--models", required=True, help="Model names or shell patterns, comma-separated: 'ckpt-*'.")
@click.option("--k", "ks", default="12", show_default=True, help="K values: 4,8,12 or 4-12.")
@click.option("--seeds", default="0", show_default=True, help="Seeds: 0-4 or 0,3.")
@click.option("--shuffles", default="0", show_default=True, help="Null sizes: 100, or 50,200.")
@click.option("--edges", default="weight", show_default=True)
@click.option("--layers")
@device_option()
@_dispatch_options
@format_option()
@click.pass_context
def sweep(ctx: click.Context, models: str, ks: str, seeds: str, shuffles: str, fmt: str, **options: Any) -> None:
    """Cluster many models × K × seeds × null sizes on Ray; one progress bar, then the compare-models table.

    \b
    neuronmap sweep --models 'ckpt-*' --k 4,8,12 --seeds 0-4 --shuffles 100
    """
    from neuronmap.service.dispatch import parse_ints
    from neuronmap.service.dispatch.service import sweep as run_sweep
    from neuronmap.service.runs import ClusterConfig
    from neuronmap.service.store.library import run_library_query

    base = ClusterConfig(edges=options["edges"], layers=options["layers"], device=options["device"] or ctx.obj.device)
    config = _dispatcher_config(options["lease"], 1.0, options["max_in_flight"], options["null_chunk"])
    with progress() as bar:
        task = bar.add_task("sweep", total=0)
        plan, records = run_sweep(
            ctx.obj,
            [m.strip() for m in models.split(",") if m.strip()],
            parse_ints(ks),
            parse_ints(seeds),
            parse_ints(shuffles),
            base=base,
            ray_address=options["ray_address"],
            num_cpus=options["num_cpus"],
            config=config,
            on_queued=lambda s: bar.update(task, total=len(s.jobs), description=f"{s.id}: {len(s.jobs)} jobs"),
            on_progress=lambda done, total: bar.update(task, completed=done),
            on_start=_starting,
        )
    for row in records:
        if row["status"] != "done":
            console.print(f"{row['id']} {row['model']}: {row['status']}  {row['error'] or ''}")
    with store_from(ctx) as store:
        rows = run_library_query(store, "compare_models", models=plan.models, all_partitions=True)
    mine = {row["result"] for row in records}
    emit([r for r in rows if r["partition"] in mine], list(rows[0].keys()) if rows else [], fmt, title=plan.id)


COMMANDS = [serve, jobs, sweep]
