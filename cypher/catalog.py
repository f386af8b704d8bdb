"""Every Cypher statement of neuronmap, parsed once from the named ``.cypher`` files under ``queries/``.

The path is the name (``queries/ingest/create_edges.cypher`` is ``ingest.create_edges``). The leading ``//``
comment is the query's typed header: a summary, then ``mode``, ``param NAME: TYPE [= DEFAULT] [(BOUNDS)]`` and
``returns`` lines, which the runner and the CLI rely on (docs/architecture.md shows one). Bounds are inclusive, for
int and float parameters: ``(>= 1)``, ``(<= 100)``, ``(>= 1, <= 100)`` or ``(1..100)``; every int must also fit the
64 bits of a Cypher INTEGER.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from neuronmap.cypher.errors import QueryHeaderError, QueryParameterError, UnknownQueryError

Mode = Literal["read", "write", "autocommit", "system"]

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list, tuple),
    "map": (dict,),
    "bytes": (bytes, bytearray),
    "any": (object,),
}
_PARAM = re.compile(
    r"^param\s+(\w+)\s*:\s*([\w\[\], ]+?)"  # name: type
    r"(?:\s*=\s*([^\s(]+))?"  # = default
    r"(?:\s*\(([^)]*)\))?"  # (bounds): >= 1, <= 100, or 1..100
    r"(?:\s{2,}(.*))?$"  # two spaces, then what it means
)
_BOUND = re.compile(r"^(?:(>=|<=)\s*(-?[\d.e+]+)|(-?[\d.e+]+)\s*\.\.\s*(-?[\d.e+]+))$")
INT64 = (-(2**63), 2**63 - 1)  # what a Cypher INTEGER holds; the driver cannot send a larger Python int


class QueryParam(BaseModel):
    """One ``param NAME: TYPE [= DEFAULT] [(BOUNDS)]  doc`` line of a query's header."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str  # str, int, float, bool, list[...], map, any
    default: Any = None
    has_default: bool = False
    doc: str = ""
    minimum: int | float | None = None  # inclusive bounds, from "(>= 1)", "(<= 100)" or "(1..100)"
    maximum: int | float | None = None
    query: str = ""  # the query this parameter belongs to, so a bad value's error can name it

    @property
    def base(self) -> str:
        return self.type.split("[", 1)[0].strip()

    @property
    def bounds(self) -> str:
        """The bounds as the header spells them ("" when unbounded)."""
        if self.minimum is not None and self.maximum is not None:
            return f"{self.minimum}..{self.maximum}"
        if self.minimum is not None:
            return f">= {self.minimum}"
        if self.maximum is not None:
            return f"<= {self.maximum}"
        return ""

    def describe(self) -> str:
        """``limit: int = 50 (>= 1)``: the parameter as its header line declares it."""
        default = f" = {'null' if self.default is None else self.default}" if self.has_default else ""
        bounds = f" ({self.bounds})" if self.bounds else ""
        return f"{self.name}: {self.type}{default}{bounds}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit this parameter's type and bounds, or None when it does."""
        if value is None:
            if self.has_default and self.default is None:
                return None
            return f"{self.name} must be {self.type}, got null"
        if (self.base == "int" and isinstance(value, bool)) or not isinstance(value, _TYPES.get(self.base, (object,))):
            return f"{self.name} must be {self.type}, got {type(value).__name__} {value!r:.40}"
        if self.base == "int" and isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            return f"{self.name} must be an integer of 64 bits (-2^63 to 2^63-1), got {value}"
        if self.base in ("int", "float") and isinstance(value, int | float):
            low_ok = self.minimum is None or value >= self.minimum
            high_ok = self.maximum is None or value <= self.maximum
            if not (low_ok and high_ok):
                return f"{self.name} must be {self.bounds}, got {value}"
        return None

    def accepts(self, value: Any) -> bool:
        return self.problem(value) is None

    def cast(self, text: str) -> Any:
        """Turn a command-line string into this parameter's type (for `query NAME -p NAME VALUE`).

        Raises QueryParameterError, naming the query, when the text is not of the type or outside the bounds.
        """
        try:
            value = self._convert(text)
        except ValueError:
            raise QueryParameterError(
                self.query or "?", wrong_type=[f"{self.name} must be {self.type}, got {text!r:.40}"]
            ) from None
        if (problem := self.problem(value)) is not None:
            raise QueryParameterError(self.query or "?", wrong_type=[problem])
        return value

    def _convert(self, text: str) -> Any:
        if self.base == "int":
            return int(text)
        if self.base == "float":
            return float(text)
        if self.base == "bool":
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if self.base in ("list", "map"):
            return json.loads(text)  # a JSONDecodeError is a ValueError
        return text


class NamedQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    summary: str
    description: str
    mode: Mode
    params: tuple[QueryParam, ...]
    returns: str
    text: str

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate parameters against the header and fill defaults; returns the full parameter map."""
        declared = {p.name: p for p in self.params}
        missing = [p.name for p in self.params if p.name not in params and not p.has_default]
        unexpected = [k for k in params if k not in declared]
        wrong = [problem for k, v in params.items() if k in declared and (problem := declared[k].problem(v))]
        if missing or unexpected or wrong:
            raise QueryParameterError(self.name, missing, unexpected, wrong)
        full = {p.name: p.default for p in self.params if p.has_default}
        full.update(params)
        return full


def _parse_default(raw: str | None) -> tuple[Any, bool]:
    if raw is None:
        return None, False
    if raw == "null":
        return None, True
    if raw in ("true", "false"):
        return raw == "true", True
    for kind in (int, float):
        try:
            return kind(raw), True
        except ValueError:
            pass
    return raw.strip("'\""), True


def _param(query: str, line: str, match: re.Match[str]) -> QueryParam:
    kind = match.group(2).strip()
    default, has_default = _parse_default(match.group(3))
    minimum, maximum = _parse_bounds(query, line, kind, match.group(4))
    param = QueryParam(
        name=match.group(1),
        type=kind,
        default=default,
        has_default=has_default,
        doc=(match.group(5) or "").strip(),
        minimum=minimum,
        maximum=maximum,
        query=query,
    )
    if has_default and default is not None and (problem := param.problem(default)):
        raise QueryHeaderError(f"Query {query!r}: the default in {line!r} does not fit: {problem}.")
    return param


def _parse_bounds(query: str, line: str, kind: str, raw: str | None) -> tuple[Any, Any]:
    """``(>= 1)``, ``(<= 100)``, ``(>= 1, <= 100)`` or ``(1..100)``: inclusive bounds of an int or float."""
    if raw is None:
        return None, None
    number = int if kind == "int" else float
    if kind not in ("int", "float"):
        raise QueryHeaderError(f"Query {query!r}: only int and float parameters take bounds, in {line!r}.")
    minimum = maximum = None
    try:
        for part in raw.split(","):
            bound = _BOUND.match(part.strip())
            if bound is None:
                raise ValueError(part)
            if bound.group(1) == ">=":
                minimum = number(bound.group(2))
            elif bound.group(1) == "<=":
                maximum = number(bound.group(2))
            else:
                minimum, maximum = number(bound.group(3)), number(bound.group(4))
    except ValueError:
        raise QueryHeaderError(
            f"Query {query!r}: cannot read the bounds in {line!r}; write (>= 1), (<= 100), (>= 1, <= 100) or (1..100)."
        ) from None
    if minimum is not None and maximum is not None and minimum > maximum:
        raise QueryHeaderError(f"Query {query!r}: empty bounds in {line!r}.")
    return minimum, maximum


def parse(name: str, source: str) -> NamedQuery:
    """Parse one .cypher file's header and body."""
    header: list[str] = []
    body: list[str] = []
    for line in source.splitlines():
        if not body and line.startswith("//"):
            header.append(line[2:].strip())
        elif line.strip() or body:
            body.append(line)
    summary_lines, mode, params, returns = [], None, [], None
    for line in header:
        if line.startswith("mode:"):
            mode = line.split(":", 1)[1].strip()
        elif line.startswith("param "):
            match = _PARAM.match(line)
            if not match:
                raise QueryHeaderError(f"Query {name!r}: cannot read header line {line!r}.")
            params.append(_param(name, line, match))
        elif line.startswith("returns:"):
            returns = line.split(":", 1)[1].strip()
        elif mode is None:
            summary_lines.append(line)
    if mode not in ("read", "write", "autocommit", "system") or returns is None or not summary_lines:
        raise QueryHeaderError(
            f"Query {name!r} needs a summary, a 'mode:' (read, write, autocommit or system) "
            "and a 'returns:' line in its header."
        )
    text = "\n".join(body).strip()
    if not text:
        raise QueryHeaderError(f"Query {name!r} has a header but no statement.")
    description = "\n".join(summary_lines).strip()
    return NamedQuery(
        name=name,
        summary=summary_lines[0],
        description=description,
        mode=mode,
        params=tuple(params),
        returns=returns,
        text=text,
    )


@functools.cache
def _load() -> dict[str, NamedQuery]:
    queries: dict[str, NamedQuery] = {}
    root = resources.files(__package__).joinpath("queries")

    def walk(folder: Any, prefix: tuple[str, ...]) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.is_dir():
                walk(entry, prefix + (entry.name,))
            elif entry.name.endswith(".cypher"):
                name = ".".join(prefix + (entry.name[: -len(".cypher")],))
                queries[name] = parse(name, entry.read_text(encoding="utf-8"))

    walk(root, ())
    return queries


def get(name: str) -> NamedQuery:
    """The named query, or UnknownQueryError with the nearest names."""
    queries = _load()
    try:
        return queries[name]
    except KeyError:
        raise UnknownQueryError(name, queries) from None


def all_queries() -> list[NamedQuery]:
    return list(_load().values())


def path_of(name: str) -> str:
    """Filesystem path of a query's file (the local server's launcher reads one directly)."""
    get(name)
    root = resources.files(__package__).joinpath("queries")
    return str(root.joinpath(*name.split(".")[:-1], name.split(".")[-1] + ".cypher"))
