"""`neuronmap ingest`, `models`, `drop`: put models into the store, list them, take them out."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click

from neuronmap.options import KernelNorm
from neuronmap.service.cli.common import choice, console, format_option, progress, store_from


@contextlib.contextmanager
def ctrl_c_between_batches() -> Iterator[threading.Event]:
    """Ctrl-C sets the event, and the work stops after its batch in flight; a second Ctrl-C interrupts at once.

    A KeyboardInterrupt raised inside the driver's read of a reply can break its connection handling (a BufferError
    traceback) and waits for the server anyway, so the first Ctrl-C only asks the batch loop to stop.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        stop.set()
        console.print("Stopping after the batch in flight (Ctrl-C again to stop at once)…")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a shape; write it like 1,28,28 (no batch dimension).") from None
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"{text!r} is not a shape; write it like 1,28,28 (no batch dimension).")
    return shape


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="The model's name in the store (default: the file's stem).")
@click.option("--arch", help="module:factory that builds the nn.Module for a state dict (.pt/.pth/.safetensors).")
@click.option("--input-shape", help="Input shape without the batch dimension, e.g. 1,28,28 (conv nets).")
@click.option(
    "--kernel-norm",
    type=choice(KernelNorm),
    default="entry_l1",
    show_default=True,
    help="Conv kernel-slice norm; induced1 is the reference code's (parity).",
)
@click.option("--no-fold-batchnorm", is_flag=True, help="Ignore BatchNorm scaling (the reference code's VGG graphs).")
@click.option("--replace", is_flag=True, help="Replace a model of the same name.")
@click.pass_context
def ingest(
    ctx: click.Context,
    checkpoint: Path,
    name: str | None,
    arch: str | None,
    input_shape: str | None,
    kernel_norm: KernelNorm,
    no_fold_batchnorm: bool,
    replace: bool,
) -> None:
    """Load a model file and write its neurons and weighted edges into the store.

    \b
    neuronmap ingest mlp.safetensors --arch neuronmap.examples.nets:mlp_4x256 --name mnist-mlp-a
    neuronmap ingest cnn.pt2 --name small-cnn       # a torch.export program: no --arch needed
    """
    from neuronmap.loaders import load_graph
    from neuronmap.loaders.ingest.lease import check_free
    from neuronmap.loaders.ingest.names import check_name
    from neuronmap.loaders.ingest.weights import ModelExistsError, model_status
    from neuronmap.loaders.ingest.weights import ingest as ingest_graph

    if not checkpoint.exists():
        raise click.ClickException(f"There is no file {str(checkpoint)!r}.")
    name = check_name(name if name is not None else checkpoint.stem)
    with store_from(ctx) as store:
        # Refused at once, before the file is read: a run that holds the name, or a ready model without --replace.
        check_free(store, name)
        if not replace and model_status(store, name) == "ready":
            raise ModelExistsError(name)
        # Everything is read and checked before the first write: a bad file writes nothing.
        graph = load_graph(
            checkpoint,
            arch=arch,
            input_shape=parse_shape(input_shape),
            kernel_norm=kernel_norm,
            fold_batchnorm=not no_fold_batchnorm,
        )
        try:
            with progress() as bar, ctrl_c_between_batches() as stop:
                task = bar.add_task(f"ingest {name}", total=graph.n_edges)
                written = ingest_graph(
                    store,
                    name,
                    graph,
                    replace=replace,
                    batch_size=ctx.obj.batch_size,
                    delete_batch=2 * ctx.obj.batch_size,  # a deleted relationship holds less heap than a created one
                    on_batch=lambda n: bar.advance(task, n),
                    stop=stop,
                )
        except KeyboardInterrupt:
            raise click.ClickException(
                f"Interrupted: model {name!r} is not ready (analysis ignores it); run the same command again to "
                "replace what was written."
            ) from None
    console.print(
        f"Model {name!r} is ready: {len(graph.layers)} layers, {graph.n_neurons:,} neurons, {written:,} edges."
    )


@click.command()
@format_option()
@click.pass_context
def models(ctx: click.Context, fmt: str) -> None:
    """List every model in the store: status, layers, neurons, edges.

    \b
    neuronmap models
    """
    from neuronmap.service.cli.output import emit
    from neuronmap.service.store import admin

    with store_from(ctx) as store:
        rows = admin.list_models(store)
    emit(rows, ["name", "status", "n_layers", "n_neurons", "n_edges", "arch", "created_at"], fmt, title="models")


@click.command()
@click.argument("name")
@click.pass_context
def drop(ctx: click.Context, name: str) -> None:
    """Remove a model with its layers, neurons, edges and partitions.

    It is marked 'deleting' first (analysis refuses it from then on), then goes in transactions of at most twice
    NEURONMAP_BATCH_SIZE relationships; Ctrl-C stops it between two, and running the command again finishes it.

    \b
    neuronmap drop mnist-mlp-a
    """
    from neuronmap.loaders.errors import InterruptedDeleteError
    from neuronmap.loaders.ingest.weights import delete_model, model_counts

    with store_from(ctx) as store:
        try:
            with progress() as bar, ctrl_c_between_batches() as stop:
                total = int(model_counts(store, name)["n_edges"] or 0)
                task = bar.add_task(f"drop {name}", total=max(total, 1))
                deleted = delete_model(
                    store,
                    name,
                    batch_size=2 * ctx.obj.batch_size,
                    on_batch=lambda n: bar.advance(task, n),
                    stop=stop,
                )
        except KeyboardInterrupt:  # honoured between batches: one batch's wait at most
            raise InterruptedDeleteError(
                f"model {name!r}", f"Run `neuronmap drop {name}` again to finish (or ingest the name anew)."
            ) from None
    click.echo(f"Dropped model {name!r} ({deleted:,} neurons).")


COMMANDS = [ingest, models, drop]
