"""What several commands share: opening the store with a notice, tables, progress bars."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from neuronmap.options import DeviceName, OutputFormat, choices

if TYPE_CHECKING:  # the driver and the server code load only when a command opens the store (`-h` stays fast)
    from neuronmap.cypher import Store
    from neuronmap.service.config import Settings
    from neuronmap.service.store import local_neo4j

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
    from neuronmap.service.store import local_neo4j

    console.print(
        f"Starting the local Neo4j {local_neo4j.NEO4J_VERSION} in {server.root} "
        "(first start fetches the jars; 'neuronmap db stop' stops it)…"
    )


@contextlib.contextmanager
def store_from(ctx: click.Context) -> Iterator[Store]:
    from neuronmap.service.store.open import open_store

    settings: Settings = ctx.obj
    store = open_store(settings, on_start=_starting)
    try:
        yield store
    finally:
        store.close()


def columns_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--columns a,b,c``: print only these columns, in this order (``emit``'s ``select``)."""

    def split(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        return tuple(part.strip() for part in value.split(",") if part.strip())

    return click.option(
        "--columns", "columns", default=None, callback=split, help="Only these columns, in this order: a,b,c."
    )


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    title: str | None = None,
    *,
    out: Console | None = None,
) -> None:
    """Rows as a table that fits the width, with every cell whole.

    One row of three or more columns prints vertically, one ``field  value`` line per column. A table wider than
    the terminal is cut into blocks of columns that fit, each repeating the first column, rather than squeezing
    every column down to "0.9…".
    """
    if out is None:
        out = Console()
        # Piped into a file or a pager there is no terminal width to fit: use 240 columns rather than rich's
        # 80-column default.
        if not out.is_terminal:
            out = Console(width=max(out.width, 240))
    cells = [["" if row.get(c) is None else _fmt(row.get(c)) for c in columns] for row in rows]
    if len(cells) == 1 and len(columns) > 2:
        _print_record(cells[0], columns, title, out)
        return
    widths = [max([cell_len(column)] + [_text_width(row[i]) for row in cells]) for i, column in enumerate(columns)]
    blocks = _blocks(widths, out.width)
    for number, block in enumerate(blocks, 1):
        part = title
        if len(blocks) > 1:
            start = 1 if number == 1 else block[1] + 1  # later blocks repeat column 1 first
            span = f"columns {start}-{block[-1] + 1} of {len(columns)}"
            part = f"{title} ({span})" if title else span
        table = Table(title=part)
        for i in block:
            table.add_column(columns[i], overflow="fold")
        for row in cells:
            table.add_row(*[row[i] for i in block])
        out.print(table)


def _print_record(cells: Sequence[str], columns: Sequence[str], title: str | None, out: Console) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for column, cell in zip(columns, cells):
        table.add_row(column, cell)
    out.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"  # a table is for reading; --format json or csv keep every digit
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _text_width(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _blocks(widths: Sequence[int], width: int) -> list[list[int]]:
    """Column indices in groups that fit ``width``; every group after the first starts with column 0 again.

    A rich table with the default box takes one character for its left edge and, per column, the cell's width,
    two of padding and one of border.
    """
    if 1 + sum(w + 3 for w in widths) <= width or len(widths) <= 1:
        return [list(range(len(widths)))]
    blocks: list[list[int]] = []
    current = [0]
    used = 1 + widths[0] + 3
    for i in range(1, len(widths)):
        need = widths[i] + 3
        if used + need > width and len(current) > 1:
            blocks.append(current)
            current, used = [0], 1 + widths[0] + 3
        current.append(i)
        used += need
    blocks.append(current)
    return blocks


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
