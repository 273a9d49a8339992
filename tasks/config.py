"""Loading what a run works on: dr.yaml, blocks and overrides, once, at the start of a flow."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.config import load_config
from dr_runbooks.resolve import Target, resolve_target
from tasks._runtime import logger

__all__ = ["dr_load_target"]


@task(cache_policy=NO_CACHE)
def dr_load_target(
    system: str | None,
    connection: str | None = None,
    database: str | None = None,
    repositories: list[str] | None = None,
    config_path: str | None = None,
) -> Target:
    """Resolve the system's connection, databases and repositories (no retries: bad input)."""
    config = load_config(config_path)
    target = resolve_target(config, system, connection, database, repositories)
    logger().info(
        "system %s: %s, databases %s, repositories %s",
        target.system,
        target.conninfo.describe(),
        ", ".join(target.databases),
        ", ".join(r.name for r in target.repositories),
    )
    return target
