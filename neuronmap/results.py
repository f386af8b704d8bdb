"""What result objects share: a short ``repr`` and ``.to_frame()`` for pandas users.

``Rows`` is the list of dicts a named query returns, with its column order. ``BriefRepr`` gives a pydantic result a
one-line repr of its headline fields, with long lists shown as their length. pandas is an optional extra
(``pip install 'neuronmap[frames]'``), imported only when a frame is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from neuronmap.errors import NeuronmapError

if TYPE_CHECKING:
    import pandas as pd


class MissingExtraError(NeuronmapError, ImportError):
    """An optional dependency is not installed."""


def to_frame(records: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A DataFrame of dict records, in the given column order (else the first record's)."""
    try:
        import pandas as pd
    except ImportError as error:
        raise MissingExtraError("DataFrames need pandas: pip install 'neuronmap[frames]' (or pandas).") from error
    records = list(records)
    return pd.DataFrame.from_records(records, columns=list(columns) if columns else None)


def brief(value: Any) -> str:
    """A value as it reads in a one-line repr: floats to 4 significant digits, long sequences as their length."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)) and len(value) > 6:
        return f"<{len(value)} items>"
    if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
        return f"<array {tuple(value.shape)}>"
    return repr(value)


class Rows(list[dict[str, Any]]):
    """The rows of a named query: a plain list of dicts that also knows its query and columns."""

    def __init__(self, rows: Iterable[dict[str, Any]] = (), *, query: str = "", columns: Sequence[str] = ()) -> None:
        super().__init__(rows)
        self.query = query
        self.columns = tuple(columns) or (tuple(self[0]) if self else ())

    def to_frame(self) -> pd.DataFrame:
        """The rows as a pandas DataFrame, one column per returned column."""
        return to_frame(self, self.columns)

    def __repr__(self) -> str:
        shown = ", ".join(self.columns[:6]) + (", …" if len(self.columns) > 6 else "")
        return f"<Rows {self.query or 'query'}: {len(self)} row{'s' if len(self) != 1 else ''} × ({shown})>"


class BriefRepr:
    """Mixin for pydantic results: ``repr`` shows ``_brief_fields`` only (all fields when empty), briefly."""

    _brief_fields: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        names = self._brief_fields or tuple(type(self).model_fields)  # type: ignore[attr-defined]  # pydantic's
        parts = [f"{name}={brief(getattr(self, name))}" for name in names if getattr(self, name, None) is not None]
        return f"{type(self).__name__}({', '.join(parts)})"


class SubclusterTable:
    """Mixin for assessment results: ``.to_frame()`` gives one row per sub-cluster with its statistics."""

    def to_frame(self) -> pd.DataFrame:
        rows = [row.model_dump() for row in self.subclusters]  # type: ignore[attr-defined]  # the result's field
        return to_frame(rows)
