"""JSON and CSV bodies, and errors as one-line JSON with the status that fits.

Rows from the store may hold NaN (a statistic not computed), numpy scalars or driver types; browsers reject NaN in
JSON, so every value is made plain first: NaN and infinities become null, numpy becomes Python, anything else text.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response

from neuronmap.errors import NeuronmapError

log = logging.getLogger("neuronmap.http")


def plain(value: Any) -> Any:
    """A value that ``json.dumps(allow_nan=False)`` takes: NaN → None, numpy → Python, unknown types → str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return plain(value.tolist())
    return str(value)


def json_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [plain(dict(row)) for row in rows]


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV with a header line; lists and maps are written as JSON-like text, null as an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if (value := plain(row.get(column))) is None else value for column in columns])
    return out.getvalue()


def rows_response(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, name: str) -> Response:
    """``fmt='json'``: a list of objects; ``'csv'``: a CSV download named after the query."""
    if fmt == "csv":
        return Response(
            csv_text(rows, columns),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return JSONResponse(json_rows(rows))


def status_of(error: BaseException) -> int:
    """404 for what is not there, 422 for a value that does not fit, 503 for a store that cannot be reached."""
    if isinstance(error, LookupError):
        return 404
    if isinstance(error, ValueError):
        return 422
    if isinstance(error, ConnectionError):
        return 503
    if isinstance(error, PermissionError):
        return 403
    return 400


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_response(status: int, message: str) -> JSONResponse:
    """``{"error": "one line", "status": 404}``: what every failing endpoint answers."""
    return JSONResponse({"error": one_line(message), "status": status}, status_code=status)


def neuronmap_error(error: NeuronmapError) -> JSONResponse:
    return error_response(status_of(error), str(error))


def unexpected_error(error: Exception) -> JSONResponse:
    """A bug: the client gets one line naming the exception; the traceback goes to the server's log only."""
    log.error("unexpected error", exc_info=error)
    first = (str(error).strip().splitlines() or [""])[0]
    return error_response(500, f"Internal error: {type(error).__name__}: {first}. The server's log has the details.")
