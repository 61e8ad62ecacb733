"""A throwaway PostgreSQL cluster for the tests: `initdb` into a fresh temp directory, the server on
127.0.0.1 only (a free port, its unix socket inside that directory), stopped and deleted afterwards.

PostgreSQL refuses to run as root: run as root (a container, CI), the cluster belongs to the
`postgres` user that Debian's package creates, in a directory made over to it (pytest's own temp
directories are root's alone). The binaries come from `tests/install-postgres.sh`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

#: The user PostgreSQL runs as when the tests run as root.
OWNER = "postgres"
#: The cluster's superuser (trust authentication, 127.0.0.1 only: a test cluster, never a shared one).
SUPERUSER = "postgres"
#: What the URIs name: the psycopg (3) driver, SQLAlchemy 2.1's default for postgresql:// and
#: named here so that SQLAlchemy 2.0 (whose default is psycopg2) takes it too.
DRIVER = "postgresql+psycopg"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bindir() -> Path:
    """Where `initdb` and `postgres` are: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # a link on PATH (/usr/local/bin/initdb) to the real bin directory
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    assert debian, "PostgreSQL's initdb is not installed: run tests/install-postgres.sh first"
    return Path(debian[-1]).parent


class PostgresCluster:
    """``start()`` makes and starts the cluster, ``uri(db)`` creates a database and names it,
    ``stop()`` stops the server's whole process group and deletes the directory (safe to call twice,
    and after a failed start)."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        self.log = self.root / "postgres.log"
        self.proc: Optional[subprocess.Popen] = None
        self._as: Dict[str, object] = {}
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(OWNER)
            except KeyError:
                shutil.rmtree(self.root)
                raise AssertionError(f"run as root, PostgreSQL needs the `{OWNER}` user: run tests/install-postgres.sh first") from None
            shutil.chown(self.root, OWNER, OWNER)
            self._as = {"user": OWNER, "group": OWNER, "extra_groups": []}

    def start(self, timeout: float = 60) -> "PostgresCluster":
        try:
            self._run("initdb", "--no-sync", "-D", str(self.root / "data"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale")
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.root)],
                    cwd=self.root, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, **self._as,
                )
            deadline = time.monotonic() + timeout
            while self._ready() != 0:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {self.log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def uri(self, database: str) -> str:
        """A new database in the cluster, as an SQLAlchemy URI (what `mlflow server` takes)."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, database)
        return f"{DRIVER}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """An immediate shutdown (SIGQUIT to the postmaster: it ends its backends at once and skips
        the checkpoint, as the cluster is deleted next), then SIGKILL to whatever of its process
        group is left; the directory removed."""
        if self.proc is not None:
            for signum, group in ((signal.SIGQUIT, False), (signal.SIGKILL, True)):
                try:
                    os.killpg(self.proc.pid, signum) if group else os.kill(self.proc.pid, signum)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def _ready(self) -> int:
        return subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True).returncode

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(self.bin / tool), *args], cwd=self.root, capture_output=True, text=True, timeout=120, **self._as)
        assert result.returncode == 0, f"{tool}: {result.stderr[-2000:]}"
