"""How rows print: one record vertically, wide tables in blocks that fit, every cell whole, --columns."""

from __future__ import annotations

import io
import json

import click
import pytest
from rich.console import Console

from neuronmap.service.cli.common import print_table
from neuronmap.service.cli.output import emit

WIDE = ["partition"] + [f"statistic_{i:02d}" for i in range(54)]  # partition-stats has 55 columns


def _row(i: int) -> dict[str, object]:
    return {"partition": f"p-{i}-6f1c2a", **{f"statistic_{j:02d}": 1000.0 * j + 0.25 + i for j in range(54)}}


def _printed(rows: list[dict[str, object]], columns: list[str], width: int = 100) -> str:
    out = io.StringIO()
    print_table(rows, columns, "partition-stats", out=Console(file=out, width=width))
    return out.getvalue()


def test_one_record_prints_as_field_value_lines():
    text = _printed([_row(0)], WIDE)
    lines = text.splitlines()
    fields = [line.split("│")[1:3] for line in lines if line.startswith("│")]
    assert [field.strip() for field, _ in fields] == WIDE  # one line per column, in order …
    assert dict((f.strip(), v.strip()) for f, v in fields)["statistic_53"] == "5.3e+04"  # … with its value
    assert "…" not in text and max(len(line) for line in lines) <= 100


def test_a_wide_table_comes_in_blocks_that_fit_with_every_cell_whole():
    rows = [_row(i) for i in range(3)]
    text = _printed(rows, WIDE)
    lines = text.splitlines()
    assert "…" not in text
    assert max(len(line) for line in lines) <= 100
    for column in WIDE[1:]:
        assert sum(f" {column} " in line for line in lines) == 1, column  # each column shown once …
    assert sum(" partition " in line for line in lines) > 1  # … next to the first column, repeated per block
    assert "partition-stats (columns 1-" in text
    for row in rows:
        assert str(row["partition"]) in text


def test_a_narrow_table_is_one_table():
    text = _printed([{"a": 1, "b": 2}, {"a": 3, "b": 4}], ["a", "b"])
    assert "columns" not in text and text.count("┃ a ") == 1


def test_columns_picks_and_orders_and_refuses_unknown_names(capsys):
    rows = [{"a": 1, "b": 2, "c": 3}]
    emit(rows, ["a", "b", "c"], "json", select=["c", "a"])
    assert json.loads(capsys.readouterr().out) == [{"c": 3, "a": 1}]
    emit(rows, ["a", "b", "c"], "csv", select=["b"])
    assert capsys.readouterr().out.splitlines() == ["b", "2"]
    with pytest.raises(click.BadParameter, match="no column 'd'; the columns are a, b, c"):
        emit(rows, ["a", "b", "c"], "table", select=["d"])
