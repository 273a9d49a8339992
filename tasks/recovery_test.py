"""Steps of the quarterly full recovery test that the drill does not have: the configuration
found in what was restored (from its backups, or from git), and the performance check on the
restored databases."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.config import Config, load_config
from dr_runbooks.configversion import export_at, has_commit
from dr_runbooks.errors import RestoreVerificationFailed
from dr_runbooks.postgres import drills
from dr_runbooks.postgres.connection import ConnInfo
from tasks._runtime import logger

__all__ = ["config_find_commit", "config_restore_from_git", "postgres_performance"]


def _prove(repository: str | Path, version: dict[str, Any], destination: Path) -> dict[str, Any]:
    """Write the tree of the run's commit from ``repository`` into ``destination`` and prove
    it: dr.yaml is there, is the file the run read (unless it was changed and not committed),
    and is valid."""
    commit, file = str(version["commit"]), str(version["file"])
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
    config: Config = load_config(restored)
    return {
        "commit": commit,
        "directory": str(destination),
        "files": len(files),
        "systems": sorted(config.systems),
        "matches_the_run": same,
    }


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
    proven = _prove(repository, version, Path(tempfile.mkdtemp(prefix="dr-config-restore-")))
    logger().info(
        "configuration restored from git at %s: %d files; %s declares %d systems",
        commit[:12],
        proven["files"],
        file,
        len(proven["systems"]),
    )
    return proven


@task(cache_policy=NO_CACHE)
def config_find_commit(restored: dict[str, str], version: dict[str, Any]) -> dict[str, Any]:
    """Find the commit the run record names in the configuration restored from its backups
    (``restored``: each ``engine: git`` system's clone), and prove dr.yaml at that commit as
    :func:`config_restore_from_git` does, exported beside the clone that holds it. No
    retries: what was restored will not change."""
    commit, file = version.get("commit"), version.get("file")
    if not commit or not file:
        raise RestoreVerificationFailed(
            "dr.yaml is not in a git checkout: the run record names no commit to find in the "
            "configuration restored from its backups"
        )
    if not restored:
        raise RestoreVerificationFailed(
            f"no configuration backup was restored: commit {commit[:12]} was not looked for"
        )
    holder = next(
        (name for name, clone in sorted(restored.items()) if has_commit(clone, commit)), None
    )
    if holder is None:
        raise RestoreVerificationFailed(
            f"commit {commit[:12]}, which this run's {file} came from, is in none of the "
            f"configuration backups restored ({', '.join(sorted(restored))}): it was not "
            "backed up"
        )
    clone = Path(restored[holder])
    proven = _prove(clone, version, clone.with_name(f"{clone.name}-at-{commit[:12]}"))
    logger().info(
        "commit %s found in the configuration backup of %s: %d files; %s declares %d systems",
        commit[:12],
        holder,
        proven["files"],
        file,
        len(proven["systems"]),
    )
    return {"system": holder, **proven}


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
