"""The managed local server through the CLI: start, a second start, status, logs, stop, a stale pid file."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from click.testing import CliRunner

from neuronmap.service.cli import cli
from neuronmap.service.config import Settings
from neuronmap.service.errors import LocalServerError
from neuronmap.service.store import local_neo4j


def home_with_shared_jars(tmp_path):
    """A fresh neuronmap home that reuses the jars the suite already fetched."""
    shared = local_neo4j.fetch_jars(Settings.from_env().home)
    home = tmp_path / "home"
    local_neo4j.jar_dir(home).parent.mkdir(parents=True)
    os.symlink(shared, local_neo4j.jar_dir(home))
    return home


def test_db_lifecycle(tmp_path, connection):
    home = home_with_shared_jars(tmp_path)
    port = local_neo4j.free_port()
    env = {
        "NEURONMAP_HOME": str(home),
        "NEURONMAP_NEO4J_PORT": str(port),
        "NEURONMAP_NEO4J_HEAP": "512m",
        "NEURONMAP_NEO4J_PAGECACHE": "128m",
        "NEO4J_URI": "",
    }
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    server_dir = home / "server"
    try:
        first = run("db", "start")
        assert first.exit_code == 0, first.output
        assert f"bolt://127.0.0.1:{port}" in first.output
        password_mode = stat.S_IMODE((server_dir / "password").stat().st_mode)
        assert password_mode == 0o600
        second = run("db", "start")
        assert second.exit_code == 0 and "already running" in second.output
        assert run("db", "status").output.startswith("running")
        assert "neo4j ready" in run("db", "logs").output
        # The server really answers, with auth on, through the store every command uses.
        assert run("db", "init").exit_code == 0
        assert run("models").exit_code == 0
        assert run("db", "password").output.strip() == (server_dir / "password").read_text().strip()
    finally:
        stopped = run("db", "stop")
    assert "Stopped" in stopped.output
    status = run("db", "status")
    assert status.exit_code == 3 and status.output.startswith("stopped")
    # A pid file left by a killed server: status says so, and start recovers.
    (server_dir / "server.json").write_text(json.dumps({"pid": 2**22 - 1, "uri": "bolt://127.0.0.1:1"}))
    assert "stale pid file" in run("db", "status").output
    try:
        assert run("db", "start").exit_code == 0
        assert run("db", "status").output.startswith("running")
    finally:
        run("db", "stop")
    assert run("db", "stop").output.startswith("The local Neo4j was not running")
    # A third start on the same data: the password is already the generated one, which Neo4j refuses to "change"
    # to itself; the launcher takes that refusal as done.
    try:
        third = run("db", "start")
        assert third.exit_code == 0, third.output
        assert run("models").exit_code == 0
    finally:
        run("db", "stop")


def test_a_server_that_fails_to_start_exits_at_once_with_its_error(tmp_path, monkeypatch, connection):
    home = home_with_shared_jars(tmp_path)
    broken = tmp_path / "broken.cypher"
    broken.write_text("THIS IS NOT CYPHER $password")
    monkeypatch.setattr(local_neo4j.catalog, "path_of", lambda name: str(broken))
    server = local_neo4j.LocalServer(home, port=local_neo4j.free_port(), heap="512m", pagecache="128m")
    started = time.monotonic()
    with pytest.raises(LocalServerError, match="exited with code 1"):
        server.start(timeout=120)
    assert time.monotonic() - started < 100  # the launcher exits; it does not hang until the timeout
    assert not server.status().running
