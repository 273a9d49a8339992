"""The approval gate: a runbook launched without pre-approval pauses until a person answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.exceptions import CancelledRun
from prefect.flow_runs import resume_flow_run

from dr_runbooks.postgres.connection import ConnInfo
from flows.backup_postgres import backup_postgres
from flows.database_failure import database_failure
from tests.flows.conftest import use_database
from tests.pg_helpers import table_fingerprints


def _paused_run(deadline: float = 60, known: frozenset[UUID] = frozenset()) -> UUID:
    """The run paused for approval that is not one of ``known`` (the server is shared by the
    whole session: runs other tests left paused are passed as ``known``)."""
    end = time.monotonic() + deadline
    state_filter = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    while time.monotonic() < end:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=state_filter)
        fresh = [run for run in runs if run.id not in known]
        if fresh:
            return fresh[0].id
        time.sleep(0.5)
    raise AssertionError("the runbook never paused for approval")


def paused_runs() -> frozenset[UUID]:
    """The runs paused now (before a test starts its own)."""
    state_filter = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    with get_client(sync_client=True) as client:
        return frozenset(run.id for run in client.read_flow_runs(flow_run_filter=state_filter))


def _run_in_thread(**kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = database_failure(**kwargs)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
def test_restore_waits_for_a_person(
    pg_server: ConnInfo, make_database, system_config: Path, approve: bool
) -> None:
    database = make_database("gate")
    with pg_server.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    config = use_database(system_config, database)
    backup_postgres(system="shop", config_path=config, retention=False)
    with pg_server.connect(dbname=database) as conn:
        conn.execute("DELETE FROM t WHERE id > 50")
    before = table_fingerprints(pg_server, database)

    known = paused_runs()
    thread, outcome = _run_in_thread(system="shop", config_path=config)
    run_id = _paused_run(known=known)
    assert table_fingerprints(pg_server, database) == before  # nothing happened while paused
    resume_flow_run(run_id, run_input={"approve": approve, "approver": "Ada", "reason": "tested"})
    thread.join(timeout=120)

    if approve:
        assert outcome["result"]["approval"] == "approved in the UI by Ada: tested"
        with pg_server.connect(dbname=database) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)
    else:
        # A decision, not a failure: the run ends Cancelled, nobody is paged.
        assert isinstance(outcome.get("error"), CancelledRun)
        assert "plan rejected by Ada: tested" in str(outcome["error"])
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run_id).state.is_cancelled()
        assert table_fingerprints(pg_server, database) == before
