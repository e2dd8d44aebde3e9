"""A throwaway PostgreSQL for ``make run REPLICAS=N`` (N > 1), from Debian's binaries.

Several server processes on one SQLite file would queue behind its one writer and never
show what replicas share in production, so N > 1 replicas get PostgreSQL, as the tests do:
``initdb`` into a fresh temporary directory, ``pg_ctl start`` on a free port, everything
removed at stop. As root the cluster runs as the ``postgres`` user (initdb refuses root),
so it lives under /tmp rather than a data dir that user may not be able to reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from the0.devtools.embedded.processes import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class EmbeddedPostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self._base: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise FileNotFoundError(f"PostgreSQL 15 binaries not found in {PG_BIN}: apt-get install postgresql "
                                    "(or set DATABASE_URL)")
        as_root = os.geteuid() == 0
        self._base = Path(tempfile.mkdtemp(prefix="the0-dev-pg-"))
        if as_root:
            shutil.chown(self._base, "postgres", "postgres")
        data = self._base / "data"
        self._run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--no-locale"], as_root)
        options = f"-p {self.port} -k {self._base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self._base / "pg.log"), "-w",
                   "-o", options, "start"], as_root)

    def stop(self) -> None:
        if self._base is None:
            return
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self._base / "data"), "-m", "fast", "-w", "stop"],
                  os.geteuid() == 0, check=False)
        shutil.rmtree(self._base, ignore_errors=True)
        self._base = None

    @staticmethod
    def _run(args: list[str], as_postgres: bool, *, check: bool = True) -> None:
        argv = (["runuser", "-u", "postgres", "--"] if as_postgres else []) + args
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {(result.stderr or result.stdout).strip()[-500:]}")
