"""A throwaway PostgreSQL server for the test session.

``PostgresServer`` runs ``initdb`` + ``pg_ctl start`` in a fresh directory under /tmp,
listening on 127.0.0.1 and a free port, with durability switched off for speed.
``stop()`` kills it and deletes the directory. ``PostgresServer.existing(url)`` wraps a
server someone else runs (``WHODID_TEST_PG_URL``) behind the same interface.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

__all__ = ["PostgresServer", "PostgresStartError", "find_pg_bin", "with_driver"]

_PG_TOOLS = ("initdb", "pg_ctl", "postgres")


class PostgresStartError(RuntimeError):
    """The throwaway server could not be set up or started."""


def find_pg_bin() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres: Debian's newest version first, then PATH."""

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin$", path)
        return tuple(int(p) for p in match.group(1).split(".") if p) if match else ()

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for candidate in candidates:
        if all(os.access(Path(candidate, tool), os.X_OK) for tool in _PG_TOOLS):
            return Path(candidate)
    return None


def with_driver(url: str, driver: str) -> str:
    """The same database URL for another driver, e.g. ``with_driver(url, "asyncpg")``."""
    parsed = make_url(url)
    return _render(parsed.set(drivername=f"{parsed.get_backend_name()}+{driver}"))


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server; see the module docstring."""

    def __init__(self, bin_dir: Path | None = None, *, durable: bool = False) -> None:
        """``durable=True`` keeps fsync and synchronous commits on, as production
        runs (the benchmarks' default); the tests' data is throwaway."""
        self.bin_dir = bin_dir
        self.durable = durable
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self.startup_seconds: float | None = None
        self._base: URL | None = None  # URL of the maintenance database "postgres"
        self._external = False

    @classmethod
    def existing(cls, url: str) -> PostgresServer:
        """Use a server that is already running; start() and stop() then do nothing."""
        server = cls()
        server._base = make_url(url)
        server._external = True
        return server

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self._external or self._base is not None:
            return
        bin_dir = self.bin_dir or find_pg_bin()
        if bin_dir is None:
            raise PostgresStartError("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.bin_dir = bin_dir
        began = time.monotonic()
        # /tmp explicitly: the postgres user must be able to reach it, and unix socket
        # paths are limited to ~100 bytes.
        self.tmpdir = Path(tempfile.mkdtemp(prefix="whodid-pg-", dir="/tmp"))
        atexit.register(self.stop)  # safety net if the fixture teardown never runs
        try:
            if os.geteuid() == 0:
                try:
                    shutil.chown(self.tmpdir, user="postgres", group="postgres")
                except LookupError as exc:
                    raise PostgresStartError(
                        "running as root needs a 'postgres' system user to run initdb "
                        "(apt-get install -y postgresql creates it)"
                    ) from exc
            # --no-sync: nothing here needs to survive a crash, so skip initdb's fsyncs.
            opts = ["-A", "trust", "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-sync"]
            self._run("initdb", "-D", str(self.datadir), *opts)
            # Another process may take the port between our probe and postgres binding it.
            for attempt in range(3):
                self.port = free_port()
                self.logfile.unlink(missing_ok=True)  # so errors show only this attempt
                try:
                    self._pg_ctl_start()
                    break
                except PostgresStartError as exc:
                    if attempt == 2 or "already in use" not in str(exc):
                        raise
        except BaseException:
            self.stop()
            raise
        self._base = make_url(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Kill the server (no clean shutdown needed) and delete its directory. Idempotent."""
        if self._external or self.tmpdir is None:
            return
        if (self.datadir / "postmaster.pid").exists():
            self._run(
                "pg_ctl", "stop", "-D", str(self.datadir), "-m", "immediate", "-w", check=False
            )
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None
        self._base = None

    # -- URLs and databases ---------------------------------------------------

    def url(self, driver: str = "psycopg", dbname: str = "postgres") -> str:
        """SQLAlchemy URL, e.g. ``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``."""
        base = self._require_base()
        return _render(base.set(drivername=f"postgresql+{driver}", database=dbname))

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (empty, or a copy of ``template``) and return its
        ``postgresql+psycopg://`` URL.

        A leftover of the same name (possible on a WHODID_TEST_PG_URL server reused
        across runs) is dropped first.
        """
        conninfo = _render(self._require_base().set(drivername="postgresql"))
        with psycopg.connect(conninfo, autocommit=True) as conn:
            ident = sql.Identifier(name)
            if self._external:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            if template is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
            else:
                copy = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
                conn.execute(copy.format(ident, sql.Identifier(template)))
        return self.url(dbname=name)

    # -- internals ------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "server.log"

    def _require_base(self) -> URL:
        if self._base is None:
            raise RuntimeError("PostgresServer is not started")
        return self._base

    def _pg_ctl_start(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.tmpdir),
        }
        if not self.durable:
            # Throwaway data: skip everything that only protects against crashes.
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        options = " ".join(f"-c {key}={shlex.quote(value)}" for key, value in settings.items())
        log = ["-l", str(self.logfile)]
        self._run("pg_ctl", "start", "-D", str(self.datadir), *log, "-w", "-t", "60", "-o", options)

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        assert self.bin_dir is not None and self.tmpdir is not None
        cmd = [str(self.bin_dir / tool), *args]
        # initdb refuses to run as root, so drop to the postgres system user.
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(
            cmd,
            cwd=self.tmpdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise PostgresStartError(
                f"{shlex.join(cmd)} failed with exit code {result.returncode}\n"
                f"--- output ---\n{result.stdout}{result.stderr}"
                f"--- server log (tail) ---\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"
