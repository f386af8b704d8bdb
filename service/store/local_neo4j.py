"""The managed local Neo4j: fetch the pinned jars with Maven, start a child JVM on 127.0.0.1, stop it, report it.

Layout under the data home (``NEURONMAP_HOME``, default ``~/.local/share/neuronmap``)::

    neo4j-<version>/lib/*.jar     the engine, fetched once from Maven Central and shared by every server
    server/                       the user's server: data/, neo4j.conf, password (0600), server.json, neo4j.log
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

import neo4j
import neo4j.exceptions
from pydantic import BaseModel, SecretStr

from neuronmap.cypher import catalog
from neuronmap.service.config import Settings
from neuronmap.service.errors import LocalServerError

NEO4J_VERSION = "5.26.30"  # the one place the engine version is pinned
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.11.0"  # Maven 3.8's default is too old
READY_LINE = "neuronmap: neo4j ready"
_ADD_OPENS = [
    "java.base/java.nio",
    "java.base/java.io",
    "java.base/sun.nio.ch",
    "java.base/java.lang",
    "java.base/java.util",
    "java.base/java.util.concurrent",
    "java.base/java.lang.invoke",
    "java.base/java.net",
    "java.base/java.util.concurrent.atomic",
    "java.base/jdk.internal.misc",
]


class ServerStatus(BaseModel):
    running: bool
    pid: int | None = None
    uri: str | None = None
    home: str
    version: str = NEO4J_VERSION
    detail: str = ""


class Connection(BaseModel):
    """Where to find a Neo4j and how to log in."""

    uri: str
    user: str
    password: SecretStr
    database: str = "neo4j"


def jar_dir(home: Path) -> Path:
    return home / f"neo4j-{NEO4J_VERSION}" / "lib"


def fetch_jars(home: Path, *, quiet: bool = True) -> Path:
    """Fetch the pinned Neo4j Community jars from Maven Central once; later calls return the cached folder."""
    lib = jar_dir(home)
    if (lib / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalServerError(
            "Maven ('mvn') is not on PATH; neuronmap fetches the Neo4j jars with it. Install "
            "Maven, or run Neo4j yourself (docker compose up) and set NEO4J_URI."
        )
    lib.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
    pom = resources.files("neuronmap.service.store").joinpath("launcher", "pom.xml")
    with resources.as_file(pom) as pom_path:
        command = [
            mvn,
            "-B",
            *(["-q"] if quiet else []),
            "-f",
            str(pom_path),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-Dneo4j.version={NEO4J_VERSION}",
            f"-DoutputDirectory={staging}",
        ]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise LocalServerError(f"Maven could not fetch Neo4j {NEO4J_VERSION}:\n{tail}")
    (staging / ".complete").write_text(NEO4J_VERSION)
    if lib.exists():  # a half-finished earlier fetch
        shutil.rmtree(lib)
    staging.rename(lib)
    return lib


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise LocalServerError(
            "Java 17 or 21 is needed to run the local Neo4j, and 'java' is not on PATH "
            "(nor in JAVA_HOME). Install a JDK, or set NEO4J_URI to a server of your own."
        )
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    # A recycled pid belongs to some other program: only our launcher counts.
    return not cmdline.exists() or b"Launcher.java" in cmdline.read_bytes()


class LocalServer:
    """One local Neo4j server: its folder, port and memory settings."""

    def __init__(
        self, home: Path, root: Path | None = None, *, port: int = 7687, heap: str = "1g", pagecache: str = "512m"
    ) -> None:
        self.home = home
        self.root = root or home / "server"
        self.port, self.heap, self.pagecache = port, heap, pagecache

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalServer:
        return cls(
            settings.home, port=settings.local_port, heap=settings.local_heap, pagecache=settings.local_pagecache
        )

    # -- files --------------------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "server.json"

    @property
    def log_file(self) -> Path:
        return self.root / "neo4j.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def password(self) -> str:
        """The generated password, created owner-only on first use."""
        if not self.password_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log yet)"

    # -- lifecycle ----------------------------------------------------------------------------------------
    def status(self) -> ServerStatus:
        state = self._state()
        if state is None:
            return ServerStatus(running=False, home=str(self.root), detail="not started")
        if not _alive(state["pid"]):
            return ServerStatus(running=False, home=str(self.root), detail=f"stale pid file (pid {state['pid']})")
        return ServerStatus(running=True, pid=state["pid"], uri=state["uri"], home=str(self.root))

    def connection(self) -> Connection:
        status = self.status()
        if not status.running:
            raise LocalServerError(
                f"The local Neo4j is not running ({status.detail}). Run 'neuronmap db start', or set NEO4J_URI."
            )
        return Connection(uri=status.uri, user="neo4j", password=SecretStr(self.password()))

    def start(self, *, timeout: float = 120.0, exit_with_parent: bool = False) -> tuple[ServerStatus, bool]:
        """Start the server unless it runs already; returns (status, started_now)."""
        status = self.status()
        if status.running:
            return status, False
        self.state_file.unlink(missing_ok=True)  # stale: the process is gone
        lib = fetch_jars(self.home)
        self.root.mkdir(parents=True, exist_ok=True)
        password = self.password()
        conf = self.root / "neo4j.conf"
        uri = f"bolt://127.0.0.1:{self.port}"
        conf.write_text(
            "\n".join(
                [
                    "server.bolt.enabled=true",
                    f"server.bolt.listen_address=127.0.0.1:{self.port}",
                    f"server.bolt.advertised_address=127.0.0.1:{self.port}",
                    f"server.memory.pagecache.size={self.pagecache}",
                    "dbms.security.auth_enabled=true",
                    "db.logs.query.enabled=OFF",
                    "",
                ]
            )
        )
        launcher = resources.files("neuronmap.service.store").joinpath("launcher", "Launcher.java")
        # The parallel (throughput) collector: bulk writes allocate fast, and on a 1-2 GB heap its pauses stay short;
        # measured ~10% more edges/s on ingest than G1, for both fat and one-row-per-edge writes.
        command = [
            _java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseParallelGC",
            "-Dfile.encoding=UTF-8",
            *[f"--add-opens={p}=ALL-UNNAMED" for p in _ADD_OPENS],
            "-cp",
            str(lib / "*"),
            str(launcher),
            str(self.root),
            str(conf),
            str(self.password_file),
            catalog.path_of("admin.set_initial_password"),
        ]
        if exit_with_parent:
            command.append("--exit-on-stdin-close")
        log = open(self.log_file, "ab")
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            stdin=subprocess.PIPE if exit_with_parent else subprocess.DEVNULL,
            start_new_session=not exit_with_parent,
        )
        log.close()
        self._process = process  # keeps the stdin pipe open for exit_with_parent
        self.state_file.write_text(json.dumps({"pid": process.pid, "uri": uri, "version": NEO4J_VERSION}))
        self._wait_ready(process, uri, password, timeout)
        if not exit_with_parent:
            # Detached on purpose: the server outlives this command, so don't let Popen warn that it still runs.
            process.returncode = 0
        return self.status(), True

    def _wait_ready(self, process: subprocess.Popen, uri: str, password: str, timeout: float) -> None:
        # Readiness is a real query through the driver, not an open port: the port opens before auth is set.
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.state_file.unlink(missing_ok=True)
                raise LocalServerError(
                    f"The local Neo4j exited with code {process.returncode} while starting. "
                    f"Its log ({self.log_file}):\n{self.log_tail()}"
                )
            if READY_LINE in self.log_tail(5):
                try:
                    with neo4j.GraphDatabase.driver(uri, auth=("neo4j", password)) as driver:
                        driver.verify_connectivity()
                        driver.execute_query("RETURN 1", database_="neo4j")
                    return
                except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError) as error:
                    last_error = str(error)
            time.sleep(0.5)
        self.stop()
        raise LocalServerError(
            f"The local Neo4j did not answer within {timeout:.0f} s ({last_error}). "
            f"Its log ({self.log_file}):\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the server; returns False when it was not running."""
        state = self._state()
        if state is None or not _alive(state["pid"]):
            self.state_file.unlink(missing_ok=True)
            return False
        pid = state["pid"]
        process = getattr(self, "_process", None)
        if process is not None and process.pid == pid and process.stdin is not None:
            process.stdin.close()  # the launcher exits when its stdin closes
        os.kill(pid, signal.SIGTERM)  # the launcher's shutdown hook closes the databases cleanly
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if process is not None and process.pid == pid:
            process.wait()
        self.state_file.unlink(missing_ok=True)
        return True


def resolve_connection(
    settings: Settings, *, autostart: bool = True, on_start: Callable[[LocalServer], None] | None = None
) -> Connection:
    """NEO4J_URI if set; else the managed local server, started on first use."""
    if settings.neo4j_uri:
        return Connection(
            uri=settings.neo4j_uri,
            user=settings.neo4j_user,
            password=settings.neo4j_password,
            database=settings.neo4j_database,
        )
    server = LocalServer.from_settings(settings)
    if autostart and not server.status().running:
        if on_start is not None:
            on_start(server)
        server.start()
    return server.connection()


@contextlib.contextmanager
def running(settings: Settings, root: Path | None = None) -> Iterator[Connection]:
    """A Neo4j for the duration of the block: NEO4J_URI if set, else a fresh private server on a free port.

    The test suite uses this: the private server lives in ``root`` (a temporary folder by default), ends with the
    block, and also ends by itself if this process dies (it exits when its stdin closes).
    """
    if settings.neo4j_uri:
        yield resolve_connection(settings, autostart=False)
        return
    with tempfile.TemporaryDirectory(prefix="neuronmap-neo4j-") as scratch:
        server = LocalServer(
            settings.home,
            Path(root or scratch),
            port=free_port(),
            heap=settings.local_heap,
            pagecache=settings.local_pagecache,
        )
        server.start(exit_with_parent=True)
        try:
            yield server.connection()
        finally:
            server.stop()
