"""Every named query's header tells the truth, and the runner holds queries to it."""

from __future__ import annotations

import ast
import re

import pytest

from neuronmap.cypher import catalog
from neuronmap.cypher.errors import QueryHeaderError, QueryParameterError, UnknownQueryError


@pytest.mark.parametrize("query", catalog.all_queries(), ids=lambda q: q.name)
def test_declared_params_are_the_ones_used(query):
    used = set(re.findall(r"\$(\w+)", query.text))
    assert {p.name for p in query.params} == used


@pytest.mark.parametrize("query", catalog.all_queries(), ids=lambda q: q.name)
def test_every_query_says_what_it_returns_and_does(query):
    assert query.summary and query.returns
    if query.returns != "nothing":
        columns = [part.split(":")[0].strip() for part in query.returns.split(",") if ":" in part]
        for column in columns:
            assert re.search(rf"\bAS {column}\b|\b{column}\b", query.text), column


def test_unknown_name_suggests_the_near_ones():
    with pytest.raises(UnknownQueryError, match="ingest.create_edges"):
        catalog.get("ingest.create_edge")


def test_parameters_are_checked_against_the_header():
    query = catalog.get("ingest.mark_ready")
    with pytest.raises(QueryParameterError, match="missing n_edges.*unexpected colour"):
        query.check({"model": "m", "n_neurons": 3, "colour": "red"})
    with pytest.raises(QueryParameterError, match="n_neurons must be int"):
        query.check({"model": "m", "n_neurons": "3", "n_edges": 1})
    assert query.check({"model": "m", "n_neurons": 3, "n_edges": 1}) == {"model": "m", "n_neurons": 3, "n_edges": 1}


def test_defaults_fill_in_and_casts_follow_the_declared_type():
    query = catalog.parse(
        "t.q",
        "// Sum.\n//\n// mode: read\n// param a: int = 3   first\n"
        "// param b: float\n// returns: s: float\nRETURN $a + $b AS s\n",
    )
    assert query.check({"b": 1.5}) == {"a": 3, "b": 1.5}
    assert query.params[1].cast("2.5") == 2.5
    with pytest.raises(QueryParameterError, match="a must be int"):
        query.params[0].cast("three")


@pytest.mark.parametrize(
    "source",
    [
        "MATCH (n) RETURN n",  # no header
        "// Summary.\n// returns: x: int\nRETURN 1 AS x",  # no mode
        "// Summary.\n// mode: sometimes\n// returns: x\nRETURN 1",  # bad mode
        "// Summary.\n// mode: read\n// returns: x: int\n",  # no statement
    ],
)
def test_malformed_headers_are_refused(source):
    with pytest.raises(QueryHeaderError):
        catalog.parse("bad.query", source)


def _code_strings(source: str) -> list[str]:
    """Every string constant of a module except docstrings (a command's help may show a statement as an example)."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_cypher_lives_outside_the_cypher_package():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"^\s*(MATCH|MERGE|CREATE|UNWIND|CALL|OPTIONAL MATCH) ")
    offenders = [
        str(p.relative_to(root))
        for folder in ("loaders", "service", "examples", "bench", "neuronmap")
        for p in (root / folder).rglob("*.py")
        if any(pattern.search(text) for text in _code_strings(p.read_text()))
    ]
    assert offenders == []


def test_the_check_for_cypher_in_python_sees_a_statement_but_not_a_docstring():
    pattern = re.compile(r"^\s*(MATCH|MERGE|CREATE|UNWIND|CALL|OPTIONAL MATCH) ")
    source = 'def f():\n    """neuronmap cypher "MATCH (n) RETURN n"."""\n    return run("MATCH (n) RETURN n")\n'
    assert [text for text in _code_strings(source) if pattern.search(text)] == ["MATCH (n) RETURN n"]


def test_integer_parameters_keep_to_their_bounds_and_to_64_bits():
    query = catalog.parse(
        "t.bounded",
        "// Bounded.\n//\n// mode: read\n// param limit: int = 50 (>= 1)   at most this many\n"
        "// param share: float (0..1)   a fraction\n// returns: x: int\nRETURN $limit AS x, $share AS y\n",
    )
    limit, share = query.params
    assert (limit.minimum, limit.maximum, limit.doc) == (1, None, "at most this many")
    assert (share.minimum, share.maximum) == (0.0, 1.0)
    assert limit.describe() == "limit: int = 50 (>= 1)"
    assert query.check({"share": 0.5}) == {"limit": 50, "share": 0.5}
    with pytest.raises(QueryParameterError, match=r"Query 't.bounded' got bad parameters: limit must be >= 1, got -5"):
        query.check({"limit": -5, "share": 0.5})
    with pytest.raises(QueryParameterError, match="share must be 0.0..1.0, got 1.5"):
        query.check({"share": 1.5})
    with pytest.raises(QueryParameterError, match="limit must be an integer of 64 bits"):
        query.check({"limit": 99999999999999999999, "share": 0.5})
    # From the command line: the same checks, and the error names the query (it said 'Query '?'' before)
    with pytest.raises(QueryParameterError, match=r"Query 't.bounded'.*limit must be >= 1, got -5"):
        limit.cast("-5")
    with pytest.raises(QueryParameterError, match=r"Query 't.bounded'.*64 bits.*99999999999999999999"):
        limit.cast("99999999999999999999")
    with pytest.raises(QueryParameterError, match=r"Query 't.bounded'.*limit must be int, got 'many'"):
        limit.cast("many")
    assert limit.cast("7") == 7


def test_every_int_parameter_fits_64_bits_even_without_bounds():
    with pytest.raises(QueryParameterError, match="n_edges must be an integer of 64 bits"):
        catalog.get("ingest.mark_ready").check({"model": "m", "n_neurons": 3, "n_edges": 2**63})


@pytest.mark.parametrize(
    "line",
    [
        "param x: str (>= 1)",  # bounds on a string
        "param x: int (>= one)",  # not a number
        "param x: int (5..1)",  # empty
        "param x: int = 0 (>= 1)",  # the default lies outside
    ],
)
def test_bad_bounds_are_refused(line):
    with pytest.raises(QueryHeaderError):
        catalog.parse("bad.bounds", f"// Summary.\n// mode: read\n// {line}\n// returns: x: int\nRETURN $x AS x")


@pytest.mark.parametrize(
    "name,params",
    [("jobs.list", {}), ("library.module_core", {"partition": "p"}), ("library.neuron", {"model": "m", "ordinal": 0})],
)
def test_limits_of_the_shipped_queries_refuse_negative_values(name, params):
    with pytest.raises(QueryParameterError, match=f"^Query '{name}' got bad parameters: limit must be >= [01], got -5"):
        catalog.get(name).check({**params, "limit": -5})
