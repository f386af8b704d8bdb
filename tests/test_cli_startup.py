"""Commands that do no numerical work start fast: help never loads torch, the driver or the numerics.

Start-up time itself is measured by bench/startup.py; here we check its cause, which does not depend on how busy
the machine is: which heavy packages a help page imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click

from neuronmap.service.cli import cli

HEAVY = ("torch", "neo4j", "numpy", "scipy", "sklearn", "transformers", "matplotlib", "safetensors", "ray", "fastapi")

_PROBE = """
import json, sys
from click.testing import CliRunner
from neuronmap.service.cli import cli
probes = []
for path in json.loads(sys.argv[1]):  # in order: the first help page that loads a package is the one named
    result = CliRunner().invoke(cli, [*path, "-h"])
    loaded = sorted({m.split(".")[0] for m in sys.modules})
    probes.append({"path": path, "exit": result.exit_code, "output": result.output, "loaded": loaded})
print(json.dumps(probes))
"""


def _help_pages(paths: list[tuple[str, ...]]) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(paths)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
    return paths


def test_top_level_help_loads_no_heavy_package_and_not_pydantic() -> None:
    (probe,) = _help_pages([()])
    assert probe["exit"] == 0 and "Usage: " in probe["output"]
    for command in cli.commands:
        assert command in probe["output"]
    assert set(probe["loaded"]) & {*HEAVY, "pydantic"} == set()


def test_every_command_help_loads_no_heavy_package() -> None:
    paths = _command_paths(cli)
    assert {("cluster",), ("db", "start"), ("query",), ("ingest",)} <= set(paths)
    for probe in _help_pages(paths):
        assert probe["exit"] == 0, (probe["path"], probe["output"])
        assert set(probe["loaded"]) & set(HEAVY) == set(), probe["path"]
