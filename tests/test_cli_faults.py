"""The command line under faults: concurrent ingests, Ctrl-C and SIGKILL during a drop, the server killed mid-ingest,
and the errors that must be one line (a driver error, a raising --arch factory, bad names, Ctrl-C at start-up).

The subprocess tests run real `neuronmap` processes against a managed local server of their own (a private home
and port, started with `neuronmap db start`), so that the server itself can be killed and autostarted.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import neo4j.exceptions
import pytest
import torch
from click.testing import CliRunner

from neuronmap.cypher import Store
from neuronmap.service.cli import cli, driver_error_line
from neuronmap.service.store import local_neo4j
from neuronmap.service.store.open import connect
from tests.service.test_local_neo4j import home_with_shared_jars

NEURONMAP = str(Path(sys.executable).parent / "neuronmap")
ARCH = "faults_net:build"  # written into the module's folder, on the subprocesses' PYTHONPATH
NET = """
import torch.nn as nn


def build():
    net = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    net.input_shape = (256,)
    return net
"""
EDGES = 256 * 128 + 128 * 128 + 128 * 10  # 50,432: ~100 write batches of 500, ~50 delete batches of 1,000
NEURONS = 256 + 128 + 128 + 10


@dataclass
class Managed:
    home: Path
    env: dict[str, str]
    server: local_neo4j.LocalServer
    checkpoint: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command run in this process (no start-up cost); ``start`` runs one as a process of its own."""
        overrides = {key: value for key, value in self.env.items() if os.environ.get(key) != value}
        result = CliRunner().invoke(cli, list(args), env=overrides)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))  # a bug: let one_line_error see it
        return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [NEURONMAP, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def ingest(self, name: str, *extra: str) -> list[str]:
        return ["ingest", str(self.checkpoint), "--arch", ARCH, "--name", name, *extra]

    def store(self) -> Store:
        return connect(self.server.connection())


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory, connection) -> Iterator[Managed]:
    tmp = tmp_path_factory.mktemp("faults")
    home = home_with_shared_jars(tmp)
    port = local_neo4j.free_port()
    env = {
        **os.environ,
        "NEURONMAP_HOME": str(home),
        "NEURONMAP_NEO4J_PORT": str(port),
        "NEURONMAP_NEO4J_HEAP": "512m",
        "NEURONMAP_NEO4J_PAGECACHE": "128m",
        "NEURONMAP_BATCH_SIZE": "500",  # many write and delete batches: time to interrupt one
        "NEO4J_URI": "",
        "PYTHONPATH": os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]),
    }
    (tmp / "faults_net.py").write_text(NET)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(NET, namespace)
    checkpoint = tmp / "net.pt"
    torch.save(namespace["build"]().state_dict(), checkpoint)
    managed = Managed(home, env, local_neo4j.LocalServer(home, port=port, heap="512m", pagecache="128m"), checkpoint)
    sys.path.insert(0, str(tmp))  # faults_net, for the commands run in this process
    started = managed.run("db", "start")
    assert started.returncode == 0, started.stderr
    try:
        yield managed
    finally:
        managed.run("db", "stop")
        sys.path.remove(str(tmp))


def state(managed: Managed, model: str) -> tuple[str | None, dict]:
    with managed.store() as store:
        rows = store.run("ingest.model_status", model=model)
        return (rows[0]["status"] if rows else None), store.run("admin.model_counts", model=model)[0]


def wait_for(predicate, timeout: float = 120, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    return errors[0]


FULL = {"n_layers": 4, "n_neurons": NEURONS, "n_edges": EDGES, "n_block_edges": EDGES}


def test_concurrent_replace_ingests_of_one_name_one_is_refused_and_of_two_names_both_finish(managed):
    assert managed.run(*managed.ingest("same")).returncode == 0
    runs = [managed.start(*managed.ingest("same", "--replace")) for _ in range(2)]
    other = managed.start(*managed.ingest("other", "--replace"))
    done = [run.communicate(timeout=300) for run in runs]
    assert other.communicate(timeout=300) and other.returncode == 0
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 1], done
    winner, loser = (0, 1) if runs[0].returncode == 0 else (1, 0)
    line = one_line_error(done[loser][1])
    assert f"Model 'same' is being ingested by another run (`neuronmap ingest`, pid {runs[winner].pid} on " in line
    with managed.store() as store:
        assert store.run("ingest.model_status", model="same") == [{"status": "ready", "failure": None}]
    assert state(managed, "same") == ("ready", FULL)
    assert state(managed, "other") == ("ready", FULL)


def test_ctrl_c_during_drop_is_prompt_and_sigkill_leaves_a_deleting_model_that_a_rerun_finishes(managed):
    ingest = managed.start(*managed.ingest("same", "--replace"))
    wait_for(lambda: state(managed, "same")[0] == "loading" and state(managed, "same")[1]["n_edges"] > 0)
    ingest.send_signal(signal.SIGINT)
    _, stderr = ingest.communicate(timeout=60)
    assert ingest.returncode == 1 and "Interrupted: model 'same' is not ready" in one_line_error(stderr)
    assert state(managed, "same")[0] == "failed"
    assert managed.run(*managed.ingest("same")).returncode == 0

    def part_gone() -> bool:
        return state(managed, "same")[1]["n_edges"] < EDGES

    drop = managed.start("drop", "same")
    wait_for(part_gone)
    interrupted = time.monotonic()
    drop.send_signal(signal.SIGINT)
    _, stderr = drop.communicate(timeout=60)
    assert time.monotonic() - interrupted < 10  # between batches, not after the whole drop
    assert drop.returncode != 0
    assert "Interrupted: model 'same' is left marked 'deleting'" in one_line_error(stderr)
    status, counts = state(managed, "same")
    assert status == "deleting" and 0 < counts["n_edges"] < EDGES
    refused = managed.run("cluster", "same", "-k", "2")
    assert refused.returncode == 1 and "'deleting'" in one_line_error(refused.stderr)

    drop = managed.start("drop", "same")
    before = state(managed, "same")[1]["n_edges"]
    wait_for(lambda: state(managed, "same")[1]["n_edges"] < before)
    drop.kill()
    drop.communicate(timeout=60)
    assert state(managed, "same")[0] == "deleting"  # its lease names a dead pid: the rerun takes over at once
    again = managed.run(*managed.ingest("same"))  # no --replace: a half-deleted model is finished, not kept
    assert again.returncode == 0, again.stderr
    assert state(managed, "same") == ("ready", FULL)


def test_the_server_killed_mid_ingest_is_one_line_and_an_autostart_recovers_and_a_rerun_heals(managed):
    ingest = managed.start(*managed.ingest("victim"))
    wait_for(lambda: state(managed, "victim")[1]["n_edges"] > 0)
    pid = managed.server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = ingest.communicate(timeout=120)
    assert time.monotonic() - killed < 30  # no minute of driver retries
    assert ingest.returncode != 0
    line = one_line_error(stderr)
    assert "neuronmap db start" in line and "neuronmap db logs" in line, line
    # The next command starts the server again (it recovers), and the half-written model is not ready.
    listed = managed.run("models", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert "Starting the local Neo4j" in listed.stderr
    assert state(managed, "victim")[0] in ("loading", "failed")
    logs = managed.run("db", "logs", "-n", "400").stdout
    assert "(Neo4j) ==" in logs and "Recovery" in logs  # Neo4j's own debug.log, which says it recovered
    for folder in (managed.home, managed.home / "server", managed.home / "server" / "data"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    healed = managed.run(*managed.ingest("victim"))
    assert healed.returncode == 0, healed.stderr
    assert state(managed, "victim") == ("ready", FULL)


# -- one line, no traceback ---------------------------------------------------------------------------------------


@pytest.fixture
def store_env(connection) -> dict[str, str]:
    return {
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
    }


def test_a_driver_error_reaching_the_cli_is_one_line_with_its_code_and_the_way_out(monkeypatch, store_env):
    error = neo4j.exceptions.Neo4jError._hydrate_neo4j(
        code="Neo.TransientError.General.MemoryPoolOutOfMemoryError",
        message="The allocation of an extra 2.0 MiB would use more than the limit 687.0 MiB.\nmore detail",
    )

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr("neuronmap.loaders.ingest.weights.delete_model", boom)  # the command imports it on use
    result = CliRunner().invoke(cli, ["drop", "anything"], env=store_env)
    assert result.exit_code == 1 and result.exception is not None
    line = one_line_error(result.output)
    assert "`neuronmap drop` failed: Neo4j Neo.TransientError.General.MemoryPoolOutOfMemoryError" in line
    assert "NEURONMAP_NEO4J_HEAP" in line and "neuronmap db logs" in line and "more detail" not in line
    lost = neo4j.exceptions.ServiceUnavailable("Failed to read from defunct connection")
    assert "neuronmap db start" in (driver_error_line(lost, "ingest") or "")
    assert driver_error_line(ValueError("a bug"), "ingest") is None  # anything else keeps its traceback


@pytest.mark.parametrize("exception", ["ValueError('bad width')", "RuntimeError('no GPU')", "1 / 0"])
def test_an_arch_factory_that_raises_anything_is_one_line(tmp_path, monkeypatch, store_env, exception):
    module = f"raising_factory_{abs(hash(exception))}"  # one module per case: imports are cached
    (tmp_path / f"{module}.py").write_text(
        "def build():\n    raise " + exception if "Error" in exception else f"def build():\n    return {exception}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    checkpoint = tmp_path / "w.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), checkpoint)
    result = CliRunner().invoke(cli, ["ingest", str(checkpoint), "--arch", f"{module}:build"], env=store_env)
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert f"Calling '{module}:build' raised" in line
    assert ("ZeroDivisionError" if exception == "1 / 0" else exception.split("(")[0]) in line


@pytest.mark.parametrize("name", ["x" * 12_000, "", "   ", "two\nlines", "nul\x00"])
def test_bad_names_are_one_line_before_anything_runs(tmp_path, name):
    checkpoint = tmp_path / "w.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), checkpoint)
    arch = "neuronmap.examples.nets:digits_mlp"
    result = CliRunner().invoke(cli, ["ingest", str(checkpoint), "--arch", arch, "--name", name], env={"NEO4J_URI": ""})
    assert result.exit_code == 1
    line = one_line_error(result.output)
    assert "The model name" in line and len(line) < 300


def test_ctrl_c_while_the_command_line_loads_is_one_line():
    # Deterministic stand-in for a SIGINT during the start-up imports: the import of click raises KeyboardInterrupt.
    code = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def hook(name, *args, **kwargs):\n"
        "    if name == 'click':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = hook\n"
        "from neuronmap.service.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130
    assert done.stderr.strip() == "Interrupted while neuronmap was starting; nothing was done."
