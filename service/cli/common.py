"""What several commands share: opening the store with a notice, tables, progress bars."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from neuronmap.cypher import Store
from neuronmap.options import DeviceName, OutputFormat, choices
from neuronmap.service.config import Settings
from neuronmap.service.store import local_neo4j
from neuronmap.service.store.open import open_store

console = Console(stderr=True)


def choice(option: Any) -> click.Choice:
    """A click.Choice of a Literal option type from neuronmap.options."""
    return click.Choice(choices(option))


def format_option(formats: Any = OutputFormat) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--format``: how rows come out (a table for people, JSON or CSV for export)."""
    return click.option("--format", "fmt", type=choice(formats), default="table", show_default=True)


def device_option(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--device``: where to compute; unset means NEURONMAP_DEVICE, else auto."""
    kwargs.setdefault("help", "Where to compute (default NEURONMAP_DEVICE, else auto).")
    return click.option("--device", type=choice(DeviceName), default=None, **kwargs)


def _starting(server: local_neo4j.LocalServer) -> None:
    console.print(
        f"Starting the local Neo4j {local_neo4j.NEO4J_VERSION} in {server.root} "
        "(first start fetches the jars; 'neuronmap db stop' stops it)…"
    )


@contextlib.contextmanager
def store_from(ctx: click.Context) -> Iterator[Store]:
    settings: Settings = ctx.obj
    store = open_store(settings, on_start=_starting)
    try:
        yield store
    finally:
        store.close()


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else _fmt(row.get(c)) for c in columns])
    # Piped into a file or a pager there is no terminal width to fit: print whole cells rather than rich's
    # 80-column default, which cuts a wide table's numbers down to "0.9…".
    out = Console()
    if not out.is_terminal:
        out = Console(width=max(out.width, 240))
    out.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"  # a table is for reading; --format json or csv keep every digit
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class StageBars:
    """Feeds the library's on_progress(stage, done, total) into one rich bar per stage."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=max(total, 1))
        self.bar.update(self.tasks[stage], completed=done, total=max(total, 1))


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
