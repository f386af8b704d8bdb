"""Ad hoc Cypher through the Store: read-only unless asked, parameters typed from text, results in plain values."""

from __future__ import annotations

import doctest
import secrets

import pytest

from neuronmap.cypher import AdHocParameterError, AdHocStatement, AdHocStatementError, adhoc


@pytest.mark.parametrize(
    "text,value",
    [
        ("5", 5),
        ("-2", -2),
        ("0.5", 0.5),
        ("true", True),
        ("null", None),
        ("[1, 2.5]", [1, 2.5]),
        ('{"a": [1]}', {"a": [1]}),
        ('"5"', "5"),
        ("mnist-mlp-a", "mnist-mlp-a"),
        ("007", "007"),
        ("NaN", "NaN"),
        ("", ""),
    ],
)
def test_parameters_are_typed_from_their_text(text, value):
    assert adhoc.typed_value("x", text) == value and type(adhoc.typed_value("x", text)) is type(value)


def test_parameters_that_cannot_be_sent_are_refused_in_one_line():
    with pytest.raises(AdHocParameterError, match="64 bits"):
        adhoc.parse_params([("n", "99999999999999999999")])
    with pytest.raises(AdHocParameterError, match="64 bits"):
        adhoc.parse_params([("xs", "[1, 99999999999999999999]")])
    with pytest.raises(AdHocParameterError, match="not a Cypher identifier"):
        adhoc.parse_params([("min size", "3")])


def test_the_docstring_examples_run(store):
    for function in (adhoc.typed_value, adhoc.run_ad_hoc):
        tests = doctest.DocTestFinder(recurse=False).find(
            function, function.__name__, globs={**vars(adhoc), "store": store}
        )
        runner = doctest.DocTestRunner()
        for test in tests:
            runner.run(test)
        result = runner.summarize(verbose=False)
        assert result.attempted >= 1 and result.failed == 0


def test_reads_run_read_only_so_the_server_refuses_a_write(store):
    token = secrets.token_hex(4)
    with pytest.raises(AdHocStatementError, match=r"runs read-only; add --write .*AccessMode"):
        adhoc.run_ad_hoc(store, "CREATE (:AdHocProbe {token: $token})", {"token": token})
    count = "MATCH (n:AdHocProbe {token: $token}) RETURN count(n) AS n"
    assert adhoc.run_ad_hoc(store, count, {"token": token}).rows == [{"n": 0}]
    made = adhoc.run_ad_hoc(
        store,
        "CREATE (a:AdHocProbe {token: $token})-[r:PROBES {w: 0.5}]->(b:AdHocProbe {token: $token}) RETURN a, r",
        {"token": token},
        write=True,
    )
    assert made.columns == ["a", "r"]
    assert made.rows == [{"a": {"_labels": ["AdHocProbe"], "token": token}, "r": {"_type": "PROBES", "w": 0.5}}]
    assert made.counters["nodes_created"] == 2 and made.counters["relationships_created"] == 1
    gone = adhoc.run_ad_hoc(store, "MATCH (n:AdHocProbe {token: $token}) DETACH DELETE n", {"token": token}, write=True)
    assert gone.rows == [] and gone.columns == [] and gone.counters["nodes_deleted"] == 2


def test_a_refused_statement_is_one_line_with_the_servers_code(store):
    with pytest.raises(
        AdHocStatementError, match=r"^Neo4j refused the statement \(Neo.ClientError.Statement.SyntaxError\)"
    ) as caught:
        store.run_ad_hoc(AdHocStatement(text="MATCH (n RETURN n"))
    assert "\n" not in str(caught.value)


def test_columns_are_known_without_rows(store):
    result = adhoc.run_ad_hoc(
        store,
        "MATCH (m:Model {name: $name}) RETURN m.name AS name, m.status AS status",
        {"name": "no-such-model-" + secrets.token_hex(3)},
    )
    assert result.columns == ["name", "status"] and result.rows == []
