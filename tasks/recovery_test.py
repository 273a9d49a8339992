"""Steps of the quarterly full recovery test that the drill does not have: the configuration
restored from git, and the performance check on the restored databases."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.config import load_config
from dr_runbooks.configversion import export_at
from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.postgres import drills
from dr_runbooks.postgres.connection import ConnInfo
from tasks._runtime import logger

__all__ = ["config_restore_from_git", "postgres_performance"]


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def config_restore_from_git(version: dict[str, Any]) -> dict[str, Any]:
    """Restore the configuration at the commit the run record names, from git alone, into a
    new directory, and prove it: dr.yaml is there, is the file the run read (unless it was
    changed and not committed), and is valid. The caller removes ``directory``."""
    commit, repository, file = version.get("commit"), version.get("repository"), version.get("file")
    if not commit or not repository or not file:
        raise RestoreVerificationFailed(
            "dr.yaml is not in a git checkout: the configuration cannot be restored from git"
        )
    destination = Path(tempfile.mkdtemp(prefix="dr-config-restore-"))
    files = export_at(repository, commit, destination)
    restored = destination / file
    if not restored.is_file():
        raise RestoreVerificationFailed(f"{file} is not in commit {commit[:12]}")
    digest = hashlib.sha256(restored.read_bytes()).hexdigest()
    same = digest == version.get("sha256")
    if not same and not version.get("modified"):
        raise RestoreVerificationFailed(
            f"{file} at commit {commit[:12]} differs from the file the run read"
        )
    config = load_config(restored)
    logger().info(
        "configuration restored from git at %s: %d files; %s declares %d systems",
        commit[:12],
        len(files),
        file,
        len(config.systems),
    )
    return {
        "commit": commit,
        "directory": str(destination),
        "files": len(files),
        "systems": sorted(config.systems),
        "matches_the_run": same,
    }


@task(cache_policy=NO_CACHE)
def postgres_performance(
    conninfo: ConnInfo, database: str, seconds: float, script: str | None, scratch: str
) -> dict[str, Any]:
    """Time the restored ``database`` with the configured queries (a pgbench script), or,
    without one, ``pgbench --select-only`` on the scratch database ``scratch`` of the sandbox
    (made here). No retries: a second measurement would not be the same measurement."""
    if script:
        result = drills.pgbench(conninfo, database, seconds, script=script)
    else:
        drills.pgbench_init(conninfo, scratch)
        result = drills.pgbench(conninfo, scratch, seconds)
        result["database"] = f"{scratch} (for {database})"
    logger().info(
        "performance of %s: %.1f transactions/s (%s)", database, result["tps"], result["workload"]
    )
    return result
