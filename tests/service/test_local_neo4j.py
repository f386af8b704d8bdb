"""The managed local server through the CLI: start (and a command that finds it still starting), a second start,
status, logs (Neo4j's debug.log too), owner-only folders, stop, a stale pid file, --http."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
        # `db start` in another process; a command run while the server still starts waits for it, with a message,
        # instead of failing to reach it.
        first = subprocess.Popen(
            [str(Path(sys.executable).parent / "neuronmap"), "db", "start"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        local = local_neo4j.LocalServer(home, port=port)
        deadline = time.monotonic() + 120
        while not local.status().running:
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()[0]
            time.sleep(0.05)
        assert not local.status().ready
        assert run("db", "status").output.startswith("starting")
        waited = run("models")
        assert waited.exit_code == 0, waited.output
        assert "still starting" in waited.output and "Cannot reach" not in waited.output
        output, _ = first.communicate(timeout=120)
        assert first.returncode == 0, output
        assert f"bolt://127.0.0.1:{port}" in output
        password_mode = stat.S_IMODE((server_dir / "password").stat().st_mode)
        assert password_mode == 0o600
        for folder in (home, server_dir, server_dir / "data"):  # the store can be read around the password
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        second = run("db", "start")
        assert second.exit_code == 0 and "already running" in second.output
        assert run("db", "status").output.startswith("running")
        logs = run("db", "logs").output
        assert "neo4j ready" in logs
        assert "logs/debug.log (Neo4j) ==" in logs and "INFO" in logs.split("(Neo4j) ==")[1]
        # The server really answers, with auth on, through the store every command uses.
        assert run("db", "init").exit_code == 0
        assert run("models").exit_code == 0
        assert run("db", "password").output.strip() == (server_dir / "password").read_text().strip()
    finally:
        stopped = run("db", "stop")
    assert "Stopped" in stopped.output
    status = run("db", "status")
    assert status.exit_code == 3 and status.output.startswith("stopped")
    # A pid file left by a killed server: status says so, and start recovers. This second start on the same data
    # finds the password already the generated one, which Neo4j refuses to "change" to itself; the launcher takes
    # that refusal as done. It also serves HTTP (and Browser) on 127.0.0.1.
    (server_dir / "server.json").write_text(json.dumps({"pid": 2**22 - 1, "uri": "bolt://127.0.0.1:1"}))
    assert "stale pid file" in run("db", "status").output
    http_port = local_neo4j.free_port()
    try:
        again = run("db", "start", "--http", "--http-port", str(http_port))
        assert again.exit_code == 0, again.output
        assert f"http://127.0.0.1:{http_port}" in again.output
        assert run("db", "status").output.startswith("running")
        assert run("models").exit_code == 0
        assert f"http http://127.0.0.1:{http_port}" in run("db", "status").output
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/", timeout=30) as answer:
            discovery = json.loads(answer.read())
        assert discovery["bolt_direct"] == f"bolt://127.0.0.1:{port}"
        if (local_neo4j.browser_dir(home) / ".complete").exists():  # fetched from Maven Central when reachable
            assert "Neo4j Browser" in again.output
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/browser/", timeout=30) as answer:
                assert b"<title>Neo4j Browser</title>" in answer.read()
    finally:
        run("db", "stop")
    assert run("db", "stop").output.startswith("The local Neo4j was not running")


def test_a_server_that_fails_to_start_exits_at_once_with_its_error(tmp_path, monkeypatch, connection):
    home = home_with_shared_jars(tmp_path)
    broken = tmp_path / "broken.cypher"
    broken.write_text("THIS IS NOT CYPHER $password")
    monkeypatch.setattr(local_neo4j.catalog, "path_of", lambda name: str(broken))
    server = local_neo4j.LocalServer(home, port=local_neo4j.free_port(), heap="512m", pagecache="128m")
    started = time.monotonic()
    with pytest.raises(LocalServerError, match="exited with code 1"):
        server.start(timeout=120)
    assert time.monotonic() - started < 110  # the launcher exits; it does not wait out the 120 s timeout
    assert not server.status().running
