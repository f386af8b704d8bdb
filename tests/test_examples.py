"""The examples in the main entry points' docstrings run, against the real server and a real (small) model."""

from __future__ import annotations

import doctest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import neuronmap as nm
from neuronmap.cypher import Store
from neuronmap.examples import nets

ENTRY_POINTS = ["load_graph", "ingest", "cluster", "importance", "run_query"]


def run_examples(function: Callable[..., Any], globs: dict[str, Any]) -> doctest.TestResults:
    tests = doctest.DocTestFinder(recurse=False).find(function, function.__name__, globs=globs)
    assert tests and tests[0].examples, f"{function.__name__} has no docstring examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "digits-mlp.safetensors"
    save_file(nets.digits_mlp().state_dict(), str(path))
    return path


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_docstring_examples_run(name: str, store: Store, model_id: str, checkpoint: Path) -> None:
    # Each example starts from a fresh model: the ones after load_graph find it already ingested.
    if name != "ingest" and name != "load_graph":
        nm.ingest(store, model_id, nm.load_graph(checkpoint, arch="neuronmap.examples.nets:digits_mlp"))
    globs = {"nm": nm, "store": store, "model": model_id, "path": str(checkpoint)}
    result = run_examples(getattr(nm, name), globs)
    assert result.failed == 0
    assert result.attempted >= 2
