"""The managed local Neo4j: fetch the pinned jars with Maven, start a child JVM on 127.0.0.1, stop it, report it.

Layout under the data home (``NEURONMAP_HOME``, default ``~/.local/share/neuronmap``; owner-only, mode 700)::

    neo4j-<version>/lib/*.jar     the engine, fetched once from Maven Central and shared by every server
    neo4j-browser-<version>/      Neo4j Browser's web assets, fetched on the first ``db start --http``
    server/                       the user's server (mode 700): data/ (700), logs/debug.log (Neo4j's own log),
                                  neo4j.conf, password (0600), server.json, neo4j.log (the launcher's output)

The server listens on 127.0.0.1 only: Bolt always, HTTP (and Neo4j Browser, when its assets could be fetched)
only when started with ``http_port``.
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
BROWSER_VERSION = "5.24.0"  # the newest Neo4j Browser on Maven Central (org.neo4j.client:neo4j-browser)
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
    ready: bool = False  # running and answering; False while it starts (or recovers after an unclean stop)
    pid: int | None = None
    uri: str | None = None
    http_uri: str | None = None  # Neo4j's HTTP port (and Browser), when started with it
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


def browser_dir(home: Path) -> Path:
    return home / f"neo4j-browser-{BROWSER_VERSION}"


def private_dir(path: Path) -> Path:
    """Create ``path`` if needed and make it owner-only (700): the store files can be read around the password."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _maven(goal: str, *args: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalServerError(
            "Maven ('mvn') is not on PATH; neuronmap fetches the Neo4j jars with it. Install "
            "Maven, or run Neo4j yourself (docker compose up) and set NEO4J_URI."
        )
    pom = resources.files("neuronmap.service.store").joinpath("launcher", "pom.xml")
    with resources.as_file(pom) as pom_path:
        command = [mvn, "-B", *(["-q"] if quiet else []), "-f", str(pom_path), f"{DEPENDENCY_PLUGIN}:{goal}", *args]
        return subprocess.run(command, capture_output=True, text=True)


def _fetch_into(target: Path, what: str, goal: str, *args: str, quiet: bool = True) -> Path:
    """Run a Maven copy goal into a staging folder next to ``target``, then move it into place (all or nothing)."""
    if (target / ".complete").exists():
        return target
    private_dir(target.parent)
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=target.parent))
    done = _maven(goal, *args, f"-DoutputDirectory={staging}", quiet=quiet)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise LocalServerError(f"Maven could not fetch {what}:\n{tail}")
    (staging / ".complete").write_text(what)
    if target.exists():  # a half-finished earlier fetch
        shutil.rmtree(target)
    staging.rename(target)
    return target


def fetch_jars(home: Path, *, quiet: bool = True) -> Path:
    """Fetch the pinned Neo4j Community jars from Maven Central once; later calls return the cached folder."""
    private_dir(home)
    return _fetch_into(
        jar_dir(home), f"Neo4j {NEO4J_VERSION}", "copy-dependencies", f"-Dneo4j.version={NEO4J_VERSION}", quiet=quiet
    )


def fetch_browser(home: Path, *, quiet: bool = True) -> Path:
    """Fetch Neo4j Browser's assets (one jar, org.neo4j.client:neo4j-browser) from Maven Central once."""
    private_dir(home)
    return _fetch_into(
        browser_dir(home),
        f"Neo4j Browser {BROWSER_VERSION}",
        "copy",
        f"-Dartifact=org.neo4j.client:neo4j-browser:{BROWSER_VERSION}",
        quiet=quiet,
    )


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
    """One local Neo4j server: its folder, ports and memory settings.

    ``http_port`` (None: off) also serves Neo4j's HTTP API on 127.0.0.1, and Neo4j Browser when its assets could be
    fetched from Maven Central; Bolt is always on.
    """

    def __init__(
        self,
        home: Path,
        root: Path | None = None,
        *,
        port: int = 7687,
        heap: str = "1g",
        pagecache: str = "512m",
        http_port: int | None = None,
    ) -> None:
        self.home = home
        self.root = root or home / "server"
        self.port, self.heap, self.pagecache, self.http_port = port, heap, pagecache, http_port

    @classmethod
    def from_settings(cls, settings: Settings, *, http_port: int | None = None) -> LocalServer:
        return cls(
            settings.home,
            port=settings.local_port,
            heap=settings.local_heap,
            pagecache=settings.local_pagecache,
            http_port=http_port,
        )

    # -- files --------------------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "server.json"

    @property
    def log_file(self) -> Path:
        """The launcher's output: start-up, the ready line, and anything the JVM prints before Neo4j logs."""
        return self.root / "neo4j.log"

    @property
    def debug_log_file(self) -> Path:
        """Neo4j's own log: recovery, transactions that failed, memory, shutdown."""
        return self.root / "logs" / "debug.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def password(self) -> str:
        """The generated password, created owner-only on first use."""
        if not self.password_file.exists():
            private_dir(self.root)
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
        return _tail(self.log_file, lines)

    def debug_log_tail(self, lines: int = 40) -> str:
        return _tail(self.debug_log_file, lines)

    def _ready_since(self, offset: int | None) -> bool:
        """Whether the launcher printed its ready line after byte ``offset`` of its log (this start's output)."""
        if offset is None:
            return True  # a server started before neuronmap recorded the offset: it answered once
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                return READY_LINE.encode() in log.read()
        except FileNotFoundError:
            return False

    # -- lifecycle ----------------------------------------------------------------------------------------
    def status(self) -> ServerStatus:
        state = self._state()
        if state is None:
            return ServerStatus(running=False, home=str(self.root), detail="not started")
        if not _alive(state["pid"]):
            return ServerStatus(running=False, home=str(self.root), detail=f"stale pid file (pid {state['pid']})")
        ready = self._ready_since(state.get("log_offset"))
        return ServerStatus(
            running=True,
            ready=ready,
            pid=state["pid"],
            uri=state["uri"],
            http_uri=state.get("http"),
            home=str(self.root),
            detail="" if ready else "still starting (or recovering after an unclean stop)",
        )

    def connection(self) -> Connection:
        status = self.status()
        if not status.running:
            raise LocalServerError(
                f"The local Neo4j is not running ({status.detail}). Run 'neuronmap db start', or set NEO4J_URI."
            )
        assert status.uri is not None
        return Connection(uri=status.uri, user="neo4j", password=SecretStr(self.password()))

    def wait_ready(self, timeout: float = 300.0) -> ServerStatus:
        """Wait for a server that another command started (it may be recovering) until it answers."""
        status = self.status()
        if not status.running:
            raise LocalServerError(
                f"The local Neo4j is not running ({status.detail}). Run 'neuronmap db start', or set NEO4J_URI."
            )
        if not status.ready:
            assert status.pid is not None and status.uri is not None
            self._wait_ready(None, status.pid, status.uri, self.password(), timeout, stop_on_timeout=False)
        return self.status()

    def start(self, *, timeout: float = 120.0, exit_with_parent: bool = False) -> tuple[ServerStatus, bool]:
        """Start the server unless it runs already; returns (status, started_now).

        A server that another command started and that is still starting (recovering, say) is waited for.
        """
        status = self.status()
        if status.running:
            return (self.wait_ready(timeout) if not status.ready else status), False
        self.state_file.unlink(missing_ok=True)  # stale: the process is gone
        lib = fetch_jars(self.home)
        classpath = [str(lib / "*")]
        if self.http_port is not None:
            try:
                classpath.append(str(fetch_browser(self.home) / "*"))
            except LocalServerError:
                pass  # the HTTP API still works without Browser; `neuronmap db start --http` says so
        private_dir(self.home)
        private_dir(self.root)
        private_dir(self.root / "data")
        private_dir(self.root / "logs")
        password = self.password()
        conf = self.root / "neo4j.conf"
        uri = f"bolt://127.0.0.1:{self.port}"
        http = f"http://127.0.0.1:{self.http_port}" if self.http_port is not None else None
        conf.write_text("\n".join([*self._conf_lines(), ""]))
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
            os.pathsep.join(classpath),
            str(launcher),
            str(self.root),
            str(conf),
            str(self.password_file),
            catalog.path_of("admin.set_initial_password"),
        ]
        if exit_with_parent:
            command.append("--exit-on-stdin-close")
        if http is not None:
            command.append("--http")  # the full server (CommunityBootstrapper), which has the web server
        log = open(self.log_file, "ab")
        offset = log.tell()
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
        state = {"pid": process.pid, "uri": uri, "http": http, "version": NEO4J_VERSION, "log_offset": offset}
        self.state_file.write_text(json.dumps(state))
        self._wait_ready(process, process.pid, uri, password, timeout, stop_on_timeout=exit_with_parent)
        if not exit_with_parent:
            # Detached on purpose: the server outlives this command, so don't let Popen warn that it still runs.
            process.returncode = 0
        return self.status(), True

    def _conf_lines(self) -> list[str]:
        lines = [
            "server.default_listen_address=127.0.0.1",
            "server.default_advertised_address=127.0.0.1",
            "server.bolt.enabled=true",
            f"server.bolt.listen_address=127.0.0.1:{self.port}",
            f"server.bolt.advertised_address=127.0.0.1:{self.port}",
            f"server.memory.pagecache.size={self.pagecache}",
            # dbms.memory.transaction.total.max stays Neo4j's default, 70% of the heap (687 MiB of a 1g heap): every
            # write and delete transaction is sized by the relationships it touches, and the largest hold ~45 MiB
            # (an edge batch of 10,000, a delete batch of 20,000 relationships; bench/drop.py measures them).
            # Transaction logs are only needed back to the last checkpoint here (no incremental backups): Neo4j's
            # default keeps 2 days of them, 6.7 GB after ingesting and replacing ten 4M-edge models.
            "db.tx_log.rotation.retention_policy=512M size",
            "dbms.security.auth_enabled=true",
            "dbms.usage_report.enabled=false",
            "db.logs.query.enabled=OFF",
        ]
        if self.http_port is None:
            lines.append("server.http.enabled=false")
        else:
            lines += [
                "server.http.enabled=true",
                f"server.http.listen_address=127.0.0.1:{self.http_port}",
                f"server.http.advertised_address=127.0.0.1:{self.http_port}",
            ]
        lines += ["server.https.enabled=false"]
        return lines

    def _wait_ready(
        self,
        process: subprocess.Popen | None,
        pid: int,
        uri: str,
        password: str,
        timeout: float,
        *,
        stop_on_timeout: bool,
    ) -> None:
        # Readiness is a real query through the driver, not an open port: the port opens before auth is set.
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        state = self._state() or {}
        while time.monotonic() < deadline:
            exited = process.poll() is not None if process is not None else not _alive(pid)
            if exited:
                self.state_file.unlink(missing_ok=True)
                code = f"with code {process.returncode} " if process is not None else ""
                raise LocalServerError(
                    f"The local Neo4j exited {code}while starting. Its log ({self.log_file}):\n{self.log_tail()}"
                )
            if self._ready_since(state.get("log_offset", 0)):
                try:
                    with neo4j.GraphDatabase.driver(uri, auth=("neo4j", password)) as driver:
                        driver.verify_connectivity()
                        driver.execute_query("RETURN 1", database_="neo4j")
                    return
                except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError) as error:
                    last_error = str(error)
            time.sleep(0.5)
        if stop_on_timeout:
            self.stop()
            raise LocalServerError(
                f"The local Neo4j did not answer within {timeout:.0f} s ({last_error}). "
                f"Its log ({self.log_file}):\n{self.log_tail()}"
            )
        # A detached server that is still starting is left to finish: killing it mid-recovery would only make the
        # next start recover again.
        raise LocalServerError(
            f"The local Neo4j (pid {pid}) is still starting after {timeout:.0f} s; recovering a large store after an "
            "unclean stop can take minutes. It keeps going: `neuronmap db logs` shows its progress, and any command "
            "run later waits for it (or `neuronmap db stop` stops it)."
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


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log that may be large (read from its end)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max(lines, 1) * 400))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(text.splitlines()[-lines:])


def resolve_connection(
    settings: Settings,
    *,
    autostart: bool = True,
    on_start: Callable[[LocalServer], None] | None = None,
    on_wait: Callable[[LocalServer], None] | None = None,
) -> Connection:
    """NEO4J_URI if set; else the managed local server, started on first use.

    A local server that another command started and that is still starting (or recovering after an unclean stop)
    is waited for: ``on_wait(server)`` is called once first, so the caller can say so.
    """
    if settings.neo4j_uri:
        return Connection(
            uri=settings.neo4j_uri,
            user=settings.neo4j_user,
            password=settings.neo4j_password,
            database=settings.neo4j_database,
        )
    server = LocalServer.from_settings(settings)
    status = server.status()
    if status.running and not status.ready:
        if on_wait is not None:
            on_wait(server)
        server.wait_ready()
    elif autostart and not status.running:
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
