"""`neuronmap ingest`, `models`, `drop`: put models into the store, list them, take them out."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from neuronmap.options import KernelNorm, TransformerGraph
from neuronmap.service.cli.common import choice, console, format_option, progress, store_from

if TYPE_CHECKING:
    from neuronmap.loaders.records import ModelGraph


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


def transformer_options(
    checkpoint: Path,
    graph: str | None,
    top_k: int | None,
    min_weight: float | None,
    fold_norm: bool | None,
    heads: bool = False,
) -> dict[str, object]:
    """The transformer options given, or a one-line refusal when they are given for a model file."""
    given: dict[str, object] = {
        "graph": graph,
        "top_k": top_k,
        "min_weight": min_weight,
        "fold_norm": fold_norm,
        "heads": heads or None,
    }
    given = {key: value for key, value in given.items() if value is not None}
    if given and not checkpoint.is_dir():
        flags = ", ".join("--" + key.replace("_", "-") for key in given)
        raise click.UsageError(
            f"Only a Hugging Face model directory (config.json and *.safetensors) takes {flags}; "
            f"{str(checkpoint)!r} is a file."
        )
    return given


def load_transformer_dir(
    checkpoint: Path, options: dict[str, object], arch: str | None, input_shape: str | None, kernel_norm: str, raw: bool
) -> ModelGraph:
    """The neuron graph of a Hugging Face model directory (methods.md §10); the MLP/CNN options are refused."""
    from neuronmap.loaders.transformers import load_transformer

    misplaced = [
        flag
        for flag, given in (
            ("--arch", arch is not None),
            ("--input-shape", input_shape is not None),
            ("--kernel-norm", kernel_norm != "entry_l1"),
            ("--no-fold-batchnorm", raw),
        )
        if given
    ]
    if misplaced:
        raise click.UsageError(
            f"Only model files take {', '.join(misplaced)}; a Hugging Face model directory takes --graph, --top-k, "
            "--min-weight, --fold-norm and --heads."
        )
    return load_transformer(checkpoint, **options)  # type: ignore[arg-type]  # checked by click and check_options


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--name", help="The model's name in the store (default: the file's stem, or the directory's name).")
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
@click.option(
    "--graph",
    type=choice(TransformerGraph),
    default=None,
    help="Transformers: virtual (MLP neurons of all blocks through the residual stream; the default) or mlp-in "
    "(per block, residual dims → MLP neurons by W_in).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=0),
    default=None,
    help="Transformers, virtual graph: edges kept per neuron and downstream block, the largest |w| [default: 32; "
    "0 keeps all].",
)
@click.option(
    "--min-weight",
    type=click.FloatRange(min=0),
    default=None,
    help="Transformers: drop edges with |w| below this [default: 0].",
)
@click.option(
    "--fold-norm/--no-fold-norm",
    default=None,
    help="Transformers, mlp-in graph: fold the norm's scale γ into W_in first [default: no].",
)
@click.option(
    "--heads",
    is_flag=True,
    help="Transformers, virtual graph: a unit per attention head beside the MLP neurons, joined MLP → head and "
    "head → MLP (methods.md §10.6).",
)
@click.option(
    "--no-relationships",
    is_flag=True,
    help="Store the edges only as packed chunks (what clustering and assessment read), without a WEIGHT "
    "relationship per edge: ~5x faster and ~5x smaller at GPT-2-small scale; the queries that walk single edges "
    "(neuron, module-flow, module-cohesion, module-core, module-paths) then refuse the model.",
)
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
    graph: TransformerGraph | None,
    top_k: int | None,
    min_weight: float | None,
    fold_norm: bool | None,
    heads: bool,
    no_relationships: bool,
    replace: bool,
) -> None:
    """Load a model file, or a Hugging Face model directory, and write its neurons and weighted edges into the store.

    \b
    neuronmap ingest mlp.safetensors --arch neuronmap.examples.nets:mlp_4x256 --name mnist-mlp-a
    neuronmap ingest cnn.pt2 --name small-cnn       # a torch.export program: no --arch needed
    neuronmap ingest ./gpt2-small/ --name gpt2-a    # save_pretrained's folder: GPT-2, GPT-NeoX/Pythia, Llama
    neuronmap ingest ./llama-tiny/ --name llama-a --graph mlp-in --fold-norm
    neuronmap ingest ./gpt2-small/ --name gpt2-heads --heads   # attention heads as units too
    neuronmap ingest ./gpt2-small/ --name gpt2-b --no-relationships   # packed edges only: fast, for clustering
    """
    from neuronmap.loaders import load_graph
    from neuronmap.loaders.ingest.lease import check_free
    from neuronmap.loaders.ingest.names import check_name
    from neuronmap.loaders.ingest.weights import ModelExistsError, model_status
    from neuronmap.loaders.ingest.weights import ingest as ingest_graph

    if not checkpoint.exists():
        raise click.ClickException(f"There is no file {str(checkpoint)!r}.")
    options = transformer_options(checkpoint, graph, top_k, min_weight, fold_norm, heads)
    name = check_name(
        name if name is not None else (checkpoint.resolve().name if checkpoint.is_dir() else checkpoint.stem)
    )
    with store_from(ctx) as store:
        # Refused at once, before the file is read: a run that holds the name, or a ready model without --replace.
        check_free(store, name)
        if not replace and model_status(store, name) == "ready":
            raise ModelExistsError(name)
        # Everything is read and checked before the first write: a bad file writes nothing.
        if checkpoint.is_dir():
            model_graph = load_transformer_dir(checkpoint, options, arch, input_shape, kernel_norm, no_fold_batchnorm)
        else:
            model_graph = load_graph(
                checkpoint,
                arch=arch,
                input_shape=parse_shape(input_shape),
                kernel_norm=kernel_norm,
                fold_batchnorm=not no_fold_batchnorm,
            )
        try:
            with progress() as bar, ctrl_c_between_batches() as stop:
                task = bar.add_task(f"ingest {name}", total=model_graph.n_edges)
                written = ingest_graph(
                    store,
                    name,
                    model_graph,
                    replace=replace,
                    batch_size=ctx.obj.batch_size,
                    delete_batch=2 * ctx.obj.batch_size,  # a deleted relationship holds less heap than a created one
                    on_batch=lambda n: bar.advance(task, n),
                    stop=stop,
                    relationships=not no_relationships,
                )
        except KeyboardInterrupt:
            raise click.ClickException(
                f"Interrupted: model {name!r} is not ready (analysis ignores it); run the same command again to "
                "replace what was written."
            ) from None
    console.print(
        f"Model {name!r} is ready: {len(model_graph.layers)} layers, {model_graph.n_neurons:,} neurons, "
        f"{written:,} edges{kept_of(model_graph)}."
    )


def kept_of(graph: ModelGraph) -> str:
    """ ", the top-32 of 623,040,000 candidate edges" for a sparsified transformer graph; "" otherwise.

    Every candidate layer pair of a virtual graph has its edge block (empty or not), so the candidates are the
    blocks' sizes, heads or not.
    """
    meta = graph.meta
    if meta.graph != "virtual" or meta.top_k is None:
        return ""
    candidates = sum(int(block.weight.shape[0]) * int(block.weight.shape[1]) for block in graph.blocks)
    rule = f"top-{meta.top_k} per neuron and block" if meta.top_k else "all"
    if meta.heads:
        rule += ", heads as units"
    if meta.min_weight:
        rule += f", |w| ≥ {meta.min_weight:g}"
    return f" ({rule}, of {candidates:,} candidate edges)"


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
