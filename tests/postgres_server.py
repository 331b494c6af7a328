"""A throwaway PostgreSQL server for tests and benchmarks: Debian's postgresql binaries, initdb and pg_ctl in a
temp dir, listening on 127.0.0.1 at a free port (and a socket in that dir); no system service.

    with postgres_server() as url:      # postgresql://bertctl@127.0.0.1:PORT/sweeps
        ...

PostgreSQL refuses to run as root: as root (CI's container) the server runs as the user `nobody`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


def postgres_bin() -> Path | None:
    """The dir of initdb and pg_ctl (Debian keeps them out of PATH, under /usr/lib/postgresql/N/bin), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # a symlink in PATH: createdb & co lie beside the real one
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def why_not() -> str | None:
    """Why no server can start here (None: one can)."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return 'psycopg is not installed (pip install -e ".[postgres]")'
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server(database: str = "sweeps") -> Iterator[str]:
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="bertctl-pg-"))
    as_root = os.geteuid() == 0

    def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        # runuser keeps the environment's PATH out of it; the server's files belong to nobody
        full = ["runuser", "-u", "nobody", "--", *cmd] if as_root else list(cmd)
        return subprocess.run(full, check=check, capture_output=True, text=True, timeout=120)

    if as_root:
        os.chmod(root, 0o777)
    data, port = root / "data", _free_port()
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "bertctl", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=50"
        started = run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60", "start", check=False)
        if started.returncode != 0:
            log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stdout}{started.stderr}\n{log}")
        import psycopg

        with psycopg.connect(f"postgresql://bertctl@127.0.0.1:{port}/postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{database}"')
        yield f"postgresql://bertctl@127.0.0.1:{port}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
