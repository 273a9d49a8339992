"""Writing and reading run records (:mod:`dr_runbooks.runs`) in the backup repository.

Which repository: dr.yaml's ``runs.repository`` when set, else the run's system's first
repository; a runbook may name its own (the local drill: its work directory's). The skeleton
writes at every step, so saving is a plain function called from the flow (like artifacts),
not a task: a task run per write would bury the run's own steps in the UI. Storage hiccups are
retried here (tenacity); a record that still cannot be written is logged, and never stops the
runbook it describes.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from blocks import PREFECT_BLOCKS
from dr_runbooks.config import load_config
from dr_runbooks.errors import ServerUnreachable
from dr_runbooks.processes import alive_since
from dr_runbooks.redaction import redact
from dr_runbooks.repository import Repository
from dr_runbooks.runs import RunLog, RunRecord, abandon, clean_parameters
from dr_runbooks.targets import repository_from_config, repository_from_spec
from tasks._runtime import logger, transient_only

__all__ = [
    "run_context",
    "run_log_for",
    "run_log_of",
    "run_record_attach",
    "run_record_save",
    "run_records_close_abandoned",
    "run_records_read",
]

_store_retry = retry(
    retry=retry_if_exception_type(ServerUnreachable),
    stop=stop_after_attempt(3),
    wait=wait_exponential(min=1, max=5),
    reraise=True,
)


def run_log_for(config_path: str | None, system: str | None) -> RunLog | None:
    """The run records of ``system``'s runs: dr.yaml's ``runs.repository``, else the system's
    first repository; None when neither is declared."""
    config = load_config(config_path)
    if config.runs.repository:
        return run_log_of(repository_from_spec(config.runs.repository, config, PREFECT_BLOCKS))
    declared = config.systems.get(system or "")
    if declared is None or not declared.repositories:
        return None
    return run_log_of(repository_from_config(config, declared.repositories[0], PREFECT_BLOCKS))


def run_log_of(repository: Repository) -> RunLog:
    return RunLog(repository.store, repository.name)


@_store_retry
def run_record_save(log: RunLog, record: RunRecord) -> str:
    """Write ``record`` (see :meth:`RunLog.save`); returns its key."""
    return log.save(record)


@_store_retry
def run_record_attach(log: RunLog, record_id: str, suffix: str, data: bytes) -> str:
    """Keep a file (the post-mortem, a report, a chart) beside the record."""
    return log.attach(record_id, suffix, data)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
def run_records_read(log: RunLog, kind: str | None = None) -> list[RunRecord]:
    """Every record (of ``kind``) in the repository, oldest first (damaged ones skipped)."""
    records, _ = log.records(kind)
    return records


def run_records_close_abandoned(log: RunLog, own: str) -> list[str]:
    """Close the records in ``log`` still ``running`` whose run is over: its process on this
    machine is gone, or Prefect says its flow run ended (a ``kill -9``, a lost machine).
    Returns the ids closed. Bookkeeping: a failure is logged, never raised."""
    closed: list[str] = []
    try:
        records, _ = log.records()
        here = socket.gethostname()
        for record in records:
            if record.ended or record.id == own:
                continue
            why = _why_over(record, here)
            if why is None:
                continue
            run_record_save(log, abandon(record, why))
            closed.append(record.id)
            logger().warning("closed the run record %s of %s: %s", record.id, record.flow, why)
    except Exception as exc:
        logger().warning("stale run records could not be closed: %s", redact(str(exc)))
    return closed


def _why_over(record: RunRecord, here: str) -> str | None:
    started = record.started.timestamp()
    if record.host == here and record.pid and not alive_since(record.pid, started):
        return f"the process running it (pid {record.pid} on {here}) died"
    if not record.run_id:
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(record.run_id)).state
    except Exception:  # a run of another Prefect server, or none reachable: leave it
        return None
    if state is not None and state.is_final():
        return f"its Prefect run ended {state.name} without closing it"
    return None


def _launcher_process() -> str:
    words = [Path(sys.argv[0]).name] + [a for a in sys.argv[1:4] if not a.startswith("-")]
    return redact(" ".join(words[:3]))


def run_context() -> dict[str, Any]:
    """What Prefect knows of the current flow run: its id and name, the deployment, its
    parameters without secrets, and who or what launched it. Empty outside a flow run."""
    try:
        from prefect.runtime import deployment, flow_run

        run_id = flow_run.get_id()
    except Exception:  # outside a flow run
        run_id = None
    here = f"{getpass.getuser()}@{socket.gethostname()}"
    if not run_id:
        return {"launched_by": os.environ.get("DR_LAUNCHED_BY") or f"{here}: {_launcher_process()}"}
    context: dict[str, Any] = {
        "run_id": str(run_id),
        "flow_run_name": flow_run.get_name(),
        "parameters": clean_parameters(dict(flow_run.get_parameters() or {})),
        "deployment": deployment.get_name(),
    }
    context["launched_by"] = os.environ.get("DR_LAUNCHED_BY") or _launched_by(
        str(run_id), context["deployment"], here
    )
    return context


def _launched_by(run_id: str, deployment_name: str | None, here: str) -> str:
    if not deployment_name:
        return f"{here}: {_launcher_process()}"
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
    except Exception:  # the record must not wait on this
        return f"deployment {deployment_name}"
    if run.auto_scheduled:
        return f"the schedule of deployment {deployment_name}"
    creator = run.created_by
    if creator is not None and (creator.display_value or creator.id):
        kind = str(creator.type or "someone").lower()
        return f"{kind} {creator.display_value or creator.id} via deployment {deployment_name}"
    return f"deployment {deployment_name} (run from the Prefect UI or API)"
