"""The layering rule as a test: the pure packages (numerics, tracing) never reach the database.

Two checks, because each misses what the other sees: every import statement in a pure module, lazy ones inside
functions included, is read from its source; and each pure package is imported in a fresh interpreter, which
catches a forbidden module pulled in through another project module.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

PURE = [
    "neuronmap.loaders.tracing",
    "neuronmap.loaders.activations",
    "neuronmap.loaders.transformers",
    "neuronmap.loaders.tokens",
    "neuronmap.service.clustering",
    "neuronmap.service.assessment",
    "neuronmap.service.stats",
    "neuronmap.device",
    "neuronmap.options",
]
FORBIDDEN = ("neo4j", "neuronmap.cypher", "neuronmap.service.store", "neuronmap.loaders.ingest")


def forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def modules_of(package: str) -> list[str]:
    spec = importlib.util.find_spec(package)
    assert spec is not None, package
    if spec.submodule_search_locations is None:
        return [package]
    return [package] + [m.name for m in pkgutil.walk_packages(spec.submodule_search_locations, package + ".")]


def imported_names(module: str) -> list[str]:
    """Absolute names of everything a module's source imports, anywhere in the file."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    package = module if spec.submodule_search_locations is not None else module.rpartition(".")[0]
    return names_in(Path(spec.origin).read_text(), package)


def names_in(source: str, package: str) -> list[str]:
    tree = ast.parse(source)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("package", PURE)
def test_pure_sources_import_no_store(package: str) -> None:
    offenders = {m: [n for n in imported_names(m) if forbidden(n)] for m in modules_of(package)}
    assert len(offenders) >= 1
    assert {m: names for m, names in offenders.items() if names} == {}


def test_pure_packages_load_no_store() -> None:
    # One interpreter for all (torch loads once): after each package's import the loaded modules are listed, so the
    # first package that pulls the store in is the one named, whatever loaded before it.
    plan = {package: modules_of(package) for package in PURE}
    code = (
        "import importlib, json, sys\nseen = {}\n"
        f"for package, modules in {plan!r}.items():\n"
        "    for m in modules:\n        importlib.import_module(m)\n"
        "    seen[package] = sorted(sys.modules)\n"
        "print(json.dumps(seen))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    seen = json.loads(done.stdout)
    assert list(seen) == list(PURE)
    for package, loaded in seen.items():
        assert package in loaded
        assert [name for name in loaded if forbidden(name)] == [], package


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    from ...store.open import open_store\n",
        "import neo4j.exceptions\n",
        "from neuronmap import cypher\n",
    ],
)
def test_the_check_sees_a_forbidden_import(source: str) -> None:
    """The rule is not vacuous: lazy, relative and package-level imports of the store are all found."""
    assert any(forbidden(name) for name in names_in(source, "neuronmap.service.clustering.x"))


def test_the_check_passes_a_pure_import() -> None:
    assert not any(
        forbidden(name) for name in names_in("from ..blockgraph import BlockGraph\n", "neuronmap.service.clustering")
    )


def test_only_the_store_rooms_run_named_queries() -> None:
    """Above store/ and loaders/ingest/, code holds a Store and hands it on; it never runs a query itself."""
    root = Path(__file__).resolve().parents[1]
    allowed = (root / "service" / "store", root / "loaders" / "ingest")
    runners = {"run", "run_values", "run_batched", "run_concurrently", "transaction"}
    offenders = []
    for folder in ("service", "loaders", "neuronmap"):
        for path in (root / folder).rglob("*.py"):
            if any(path.is_relative_to(a) for a in allowed):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in runners
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and "." in node.args[0].value
                ):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} {node.args[0].value}")
    assert offenders == []
