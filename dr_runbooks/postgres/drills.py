"""What the drills do to PostgreSQL sandbox databases: marker rows that prove the RPO by data,
the teardown, and the performance check (pgbench).

Marker rows live in ``dr_drill_markers`` (created when missing, in a sandbox database only).
Rows labelled ``after-backup-*`` are written after the backup the recovery will restore: each
one found missing afterwards is a write the failure lost. A database restored from a backup
taken before the table existed has lost them all.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import psycopg
from psycopg import sql

from dr_runbooks.errors import ConfigError, OperationFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.server import list_databases
from dr_runbooks.postgres.tools import pg_tool
from dr_runbooks.processes import die_with_parent
from dr_runbooks.redaction import redact

__all__ = [
    "count_markers",
    "drop_sandbox_databases",
    "pgbench",
    "pgbench_init",
    "write_markers_after_backup",
]

_MARKERS = """
CREATE TABLE IF NOT EXISTS dr_drill_markers (
    id bigserial PRIMARY KEY,
    label text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def write_markers_after_backup(
    conninfo: ConnInfo, database: str, count: int
) -> list[dict[str, Any]]:
    """Write ``count`` marker rows into ``database`` (a sandbox copy), one transaction each."""
    written = []
    with conninfo.connect(dbname=database) as conn:
        conn.execute(_MARKERS)
        for index in range(count):
            row = conn.execute(
                "INSERT INTO dr_drill_markers (label) VALUES (%s) RETURNING id, written_at",
                (f"after-backup-{index + 1}",),
            ).fetchone()
            assert row is not None
            written.append({"id": int(row[0]), "written_at": row[1].isoformat()})
    return written


def count_markers(conninfo: ConnInfo, database: str) -> dict[str, int]:
    """Marker rows in ``database``: written before the backup, and after it (0 for both when
    the table is not there)."""
    with conninfo.connect(dbname=database) as conn:
        try:
            rows = conn.execute(
                "SELECT label LIKE 'after-backup-%', count(*) FROM dr_drill_markers GROUP BY 1"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {"before_backup": 0, "after_backup": 0, "table": 0}
    counts = {bool(r[0]): int(r[1]) for r in rows}
    return {"before_backup": counts.get(False, 0), "after_backup": counts.get(True, 0), "table": 1}


def drop_sandbox_databases(conninfo: ConnInfo, names: list[str]) -> list[str]:
    """Drop each sandbox database of ``names`` and its side databases (``<name>__*``: the
    restore's, the verification's, a kept pre-restore copy); return what was dropped."""
    dropped = []
    for name in names:
        escaped = name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
        found = list_databases(conninfo, escaped) + list_databases(conninfo, escaped + "\\_\\_%")
        for database in found:
            with conninfo.connect(dbname="postgres") as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )
            dropped.append(database)
    return dropped


_TPS = re.compile(r"^tps = ([0-9.]+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_TRANSACTIONS = re.compile(r"number of transactions actually processed: (\d+)")


def _run(argv: list[str], env: dict[str, str], timeout: float) -> str:
    try:
        result = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"{argv[0]} did not finish within {timeout:.0f} s") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise OperationFailed(
            f"{argv[0].rsplit('/', 1)[-1]} exited {result.returncode}: {redact(reason)}"
        )
    return result.stdout


def pgbench(
    conninfo: ConnInfo,
    database: str,
    seconds: float,
    script: str | None = None,
    clients: int = 2,
) -> dict[str, Any]:
    """Time ``database`` with pgbench for ``seconds``: the queries of ``script`` (a pgbench
    script file) or, without one, ``--select-only`` on pgbench's own tables (which the caller
    made with :func:`pgbench_init`). Returns transactions per second and mean latency."""
    argv = [
        pg_tool("pgbench"),
        "--no-vacuum",
        f"--client={clients}",
        f"--jobs={clients}",
        f"--time={max(int(seconds), 1)}",
    ]
    argv += ["--file", script] if script else ["--select-only"]
    begun = time.monotonic()
    output = _run(argv, conninfo.child_env(database), timeout=seconds + 120)
    tps, latency = _TPS.search(output), _LATENCY.search(output)
    transactions = _TRANSACTIONS.search(output)
    if tps is None:
        raise OperationFailed(f"pgbench printed no throughput for {database}")
    return {
        "database": database,
        "workload": f"script {script}" if script else "pgbench --select-only",
        "seconds": round(time.monotonic() - begun, 1),
        "clients": clients,
        "tps": round(float(tps.group(1)), 1),
        "latency_ms": round(float(latency.group(1)), 3) if latency else None,
        "transactions": int(transactions.group(1)) if transactions else None,
    }


def pgbench_init(conninfo: ConnInfo, database: str, scale: int = 1) -> None:
    """Create ``database`` on the sandbox with pgbench's tables at ``scale``."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise ConfigError(f"{database!r} cannot name the performance check's database")
    with conninfo.connect(dbname="postgres") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    _run(
        [pg_tool("pgbench"), "--initialize", f"--scale={scale}", "--quiet"],
        conninfo.child_env(database),
        timeout=600,
    )
