"""Rows out as a table (rich), JSON or CSV, so results can be exported."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from neuronmap.service.cli.common import print_table


def emit(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str,
    title: str | None = None,
    *,
    select: Sequence[str] | None = None,
) -> None:
    """Print rows as a table (one row prints as field/value lines; wide tables come in blocks), JSON or CSV.

    ``select`` (from ``--columns a,b,c``) keeps only those columns, in that order; an unknown name is a usage error
    that lists the columns there are.
    """
    columns = selected(columns, select)
    if fmt == "json":
        json.dump([{c: row.get(c) for c in columns} for row in rows], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: json.dumps(v) if isinstance(v, (list, dict)) else v for c, v in row.items()})
    else:
        print_table(rows, columns, title)


def selected(columns: Sequence[str], select: Sequence[str] | None) -> list[str]:
    """The columns ``--columns`` asks for, in its order; all of them when it is not given."""
    if not select:
        return list(columns)
    unknown = [name for name in select if name not in columns]
    if unknown:
        raise click.BadParameter(
            f"no column {', '.join(map(repr, unknown))}; the columns are {', '.join(columns)}.", param_hint="--columns"
        )
    return list(dict.fromkeys(select))
