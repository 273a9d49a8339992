"""The sandbox of dr.yaml, resolved and checked apart from production (see
:mod:`dr_runbooks.sandbox`)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from blocks import PREFECT_BLOCKS
from dr_runbooks.config import load_config
from dr_runbooks.drills import production_servers
from dr_runbooks.sandbox import Sandbox, check_apart, resolve
from tasks._runtime import logger

__all__ = ["sandbox_load"]


@task(cache_policy=NO_CACHE)
def sandbox_load(config_path: str, engine: str) -> Sandbox | None:
    """The ``engine`` sandbox of dr.yaml (None when it declares none), refused when it is a
    protected system's server without a prefix."""
    config = load_config(config_path)
    sandbox = resolve(config, engine, PREFECT_BLOCKS)
    if sandbox is None:
        return None
    check_apart(sandbox, production_servers(config, engine, PREFECT_BLOCKS))
    logger().info("%s sandbox: %s", engine, sandbox.describe())
    return sandbox
