"""Loading what a run works on: dr.yaml, blocks and overrides, once, at the start of a flow."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS
from blocks.age import AGE_SECRETS
from dr_runbooks.config import load_config
from dr_runbooks.targets import Connection, Target, resolve_target, verify_server_for
from tasks._runtime import logger

__all__ = ["dr_load_target", "dr_load_verify_server"]


@task(cache_policy=NO_CACHE)
def dr_load_target(
    engine: str | None,
    system: str | None,
    connection: str | None = None,
    database: str | None = None,
    repositories: list[str] | None = None,
    config_path: str | None = None,
    encrypt_to: list[str] | None = None,
) -> Target:
    """Resolve the system's connection, databases and repositories (no retries: bad input);
    ``encrypt_to`` adds age recipients to every repository's."""
    config = load_config(config_path)
    target = resolve_target(
        config,
        engine,
        system,
        connection,
        database,
        repositories,
        blocks=PREFECT_BLOCKS,
        secrets=AGE_SECRETS,
        encrypt_to=encrypt_to,
    )
    logger().info(
        "system %s (%s): %s, databases %s, repositories %s",
        target.system,
        target.engine,
        target.conninfo.describe(),
        ", ".join(target.databases) or "(all on the server)",
        ", ".join(
            r.name + (f" (encrypted to {len(r.encrypt_to)} recipients)" if r.encrypt_to else "")
            for r in target.repositories
        ),
    )
    return target


@task(cache_policy=NO_CACHE)
def dr_load_verify_server(target: Target, override: str | None = None) -> Connection:
    """Where the system's test restores go: ``override`` (a block or ``env:VAR``), else the
    system's ``verify_server_env``, else its own server."""
    server = verify_server_for(target, override, blocks=PREFECT_BLOCKS)
    logger().info("test restores of %s go to %s", target.system, server.describe())
    return server
