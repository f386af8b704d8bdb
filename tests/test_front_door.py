"""`import neuronmap as nm`: every front-door name resolves, the import stays light, results print briefly."""

from __future__ import annotations

import subprocess
import sys

import pytest

import neuronmap as nm
from neuronmap import _EXPORTS
from neuronmap.results import BriefRepr, Rows


@pytest.mark.parametrize("name", sorted(_EXPORTS))
def test_every_export_resolves(name: str) -> None:
    assert getattr(nm, name) is not None
    assert name in dir(nm)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        nm.no_such_thing  # noqa: B018  # the lookup is the test


def test_import_does_not_load_torch() -> None:
    code = "import sys, neuronmap; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_rows_convert_to_a_frame_in_column_order() -> None:
    rows = Rows([{"b": 1, "a": 2.5}, {"b": 3, "a": None}], query="module_span", columns=("a", "b"))
    frame = rows.to_frame()
    assert list(frame.columns) == ["a", "b"]
    assert frame["b"].tolist() == [1, 3]
    assert repr(rows) == "<Rows module_span: 2 rows × (a, b)>"
    assert rows == [{"b": 1, "a": 2.5}, {"b": 3, "a": None}]  # still a plain list of dicts


def test_brief_repr_shortens_long_lists_and_floats() -> None:
    from pydantic import BaseModel

    class Result(BriefRepr, BaseModel):
        _brief_fields = ("id", "ncut", "null_ncuts")
        id: str
        ncut: float
        null_ncuts: list[float]
        other: int = 0

    text = repr(Result(id="p1", ncut=6.5712345, null_ncuts=[1.0] * 50))
    assert text == "Result(id='p1', ncut=6.571, null_ncuts=<50 items>)"
