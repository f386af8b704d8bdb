"""Rows out as a table (rich), JSON or CSV, so results can be exported."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

from neuronmap.service.cli.common import print_table


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, title: str | None = None) -> None:
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
