"""Looking after runs that ended without saying so: Prefect runs left RUNNING by a process that
was killed, and the work directories such runs left on this machine."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from dr_runbooks.postgres.backup import work_base
from dr_runbooks.processes import (
    MONGODB_WORKDIR_PREFIX,
    POSTGRES_WORKDIR_PREFIX,
    remove_stale_workdirs,
)
from tasks._runtime import logger

__all__ = ["prefect_mark_crashed", "workdir_remove_stale"]


@task(retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def prefect_mark_crashed(run_id: str, flow: str, host: str, pid: int) -> bool:
    """Mark a flow run whose process died Crashed (Prefect would show it RUNNING forever);
    return whether it needed marking."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(run_id))
        except (ObjectNotFound, ValueError):
            return False  # a run of another Prefect server, or one already deleted
        if run.state is not None and run.state.is_final():
            return False
        message = f"the process running it (pid {pid} on {host}) died before it ended"
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    logger().warning("marked run %s of %s Crashed: %s", run_id, flow, message)
    return True


@task(retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def workdir_remove_stale() -> list[str]:
    """Remove restore work directories (unpacked dumps) whose owner process died."""
    removed: list[Path] = []
    for prefix, base in ((POSTGRES_WORKDIR_PREFIX, work_base()), (MONGODB_WORKDIR_PREFIX, None)):
        removed += remove_stale_workdirs(prefix, base)
    for path in removed:
        logger().warning("removed %s, left by a restore whose process died", path)
    return [str(path) for path in removed]
