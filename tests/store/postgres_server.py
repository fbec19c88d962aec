"""
A real PostgreSQL server for the tests: ``initdb`` into a temporary directory, ``pg_ctl start``
on a free loopback port with its Unix socket in that directory, stopped and deleted after.

PostgreSQL refuses to run as root (CI runs as root): then the server runs as an unprivileged
system user, ``paychan-pg``, created if missing, who owns the directory. The binaries are found
on PATH (``/usr/local/bin`` here) or in Debian's ``/usr/lib/postgresql/N/bin`` (``.ci/run``
installs the ``postgresql`` package when neither has them). Nothing here skips: a server that
cannot start fails the tests that need it, with the reason.

Each pytest-xdist worker starts its own server (a second or two): nothing shared between
workers, so nothing to coordinate. Each test gets a schema of its own in one database
(``fresh_database``): a new schema costs a catalogue row, a new database a copy of template1.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterator

import psycopg

USER = "paychan-pg"
_counter = itertools.count(1)


def find_bin_dir() -> str:
    """The directory holding ``initdb`` and ``pg_ctl``."""
    found = shutil.which("initdb")
    if found is not None and os.path.exists(os.path.join(os.path.dirname(found), "pg_ctl")):
        return os.path.dirname(found)

    def version(path: str) -> float:
        try:
            return float(path.split("/")[-3])
        except ValueError:
            return 0.0

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True):
        return os.path.dirname(initdb)
    raise RuntimeError("PostgreSQL's initdb was found neither on PATH nor in /usr/lib/postgresql/*/bin: "
                       "install Debian's postgresql package (.ci/run does)")


def _server_user() -> list[str]:
    """The command prefix that runs a server binary as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True, capture_output=True)
    return ["runuser", "-u", USER, "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


@dataclass
class PostgresServer:
    directory: str
    port: int
    bin_dir: str
    prefix: list[str]

    @property
    def data(self) -> str:
        return os.path.join(self.directory, "data")

    def conninfo(self, schema: str = "") -> str:
        """To the ``postgres`` database; with ``schema``, as the only one on the search path."""
        options = f" options='-c search_path={schema}'" if schema else ""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres{options}"

    def start(self) -> None:
        _run(self.prefix + [os.path.join(self.bin_dir, "pg_ctl"), "start", "-w", "-t", "60", "-D", self.data,
                            "-l", os.path.join(self.directory, "log"),
                            "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"])

    def stop(self, mode: str = "fast") -> None:
        _run(self.prefix + [os.path.join(self.bin_dir, "pg_ctl"), "stop", "-w", "-m", mode, "-D", self.data])

    def log(self) -> str:
        try:
            with open(os.path.join(self.directory, "log")) as f:
                return f.read()
        except OSError:
            return ""

    def fresh_database(self) -> str:
        """The conninfo of a new empty schema, seen by the store as a database of its own."""
        name = f"t{next(_counter)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")  # type: ignore[arg-type]
        return self.conninfo(name)


def start_server() -> PostgresServer:
    bin_dir = find_bin_dir()
    prefix = _server_user()
    directory = tempfile.mkdtemp(prefix="paychan-pg-")
    if prefix:
        shutil.chown(directory, USER)
    data = os.path.join(directory, "data")
    _run(prefix + [os.path.join(bin_dir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
                   "--no-sync", "-E", "UTF8", "--locale=C"])
    last = ""
    for _ in range(3):  # another process may take the free port before the server binds it
        server = PostgresServer(directory, _free_port(), bin_dir, prefix)
        try:
            server.start()
            return server
        except RuntimeError as e:
            last = f"{e}\n{server.log()}"
    shutil.rmtree(directory, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start:\n{last}")


def running_server() -> Iterator[PostgresServer]:
    """Body of the session fixture: a started server, stopped and deleted after."""
    server = start_server()
    try:
        yield server
    finally:
        try:
            # The cluster is thrown away: no shutdown checkpoint to wait for.
            server.stop("immediate")
        finally:
            shutil.rmtree(server.directory, ignore_errors=True)
