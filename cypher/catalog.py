"""Every Cypher statement of neuronmap, parsed once from the named ``.cypher`` files under ``queries/``.

The path is the name (``queries/ingest/create_edges.cypher`` is ``ingest.create_edges``). The leading ``//``
comment is the query's typed header: a summary, then ``mode``, ``param NAME: TYPE [= DEFAULT]`` and ``returns``
lines, which the runner and the CLI rely on (docs/architecture.md shows one).
"""

from __future__ import annotations

import functools
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
    "any": (object,),
}
_PARAM = re.compile(r"^param\s+(\w+)\s*:\s*([\w\[\], ]+?)(?:\s*=\s*(\S+))?(?:\s{2,}(.*))?$")


class QueryParam(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: str  # str, int, float, bool, list[...], map, any
    default: Any = None
    has_default: bool = False
    doc: str = ""

    def accepts(self, value: Any) -> bool:
        base = self.type.split("[", 1)[0].strip()
        if value is None:
            return self.has_default and self.default is None
        if base in ("int",) and isinstance(value, bool):
            return False
        return isinstance(value, _TYPES.get(base, (object,)))

    def cast(self, text: str) -> Any:
        """Turn a command-line string into this parameter's type (for `query run -p NAME VALUE`)."""
        base = self.type.split("[", 1)[0].strip()
        try:
            if base == "int":
                return int(text)
            if base == "float":
                return float(text)
            if base == "bool":
                if text.lower() in ("true", "1", "yes"):
                    return True
                if text.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(text)
            if base in ("list", "map"):
                import json

                return json.loads(text)
        except ValueError as error:
            raise QueryParameterError("?", wrong_type=[f"{self.name} must be {self.type}, got {text!r}"]) from error
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
        wrong = [
            f"{k} must be {declared[k].type}, got {type(v).__name__} {v!r:.40}"
            for k, v in params.items()
            if k in declared and not declared[k].accepts(v)
        ]
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
            default, has_default = _parse_default(match.group(3))
            params.append(
                QueryParam(
                    name=match.group(1),
                    type=match.group(2).strip(),
                    default=default,
                    has_default=has_default,
                    doc=(match.group(4) or "").strip(),
                )
            )
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
