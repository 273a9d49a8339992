"""Running a runbook in a thread of the test, and answering it when it pauses for approval
(as a person does in the Prefect UI)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

__all__ = ["Background", "answer", "paused_run"]


def paused_run(flow_name: str, deadline: float = 60, after: set[UUID] | None = None) -> UUID:
    """The id of a paused run of ``flow_name`` (waiting until there is one)."""
    end = time.monotonic() + deadline
    state_filter = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    while time.monotonic() < end:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=state_filter,
            )
        if runs:
            return runs[0].id
        time.sleep(0.3)
    raise AssertionError(f"{flow_name} never paused for approval")


def answer(flow_name: str, approve: bool, reason: str = "tested") -> UUID:
    """Answer the paused run of ``flow_name``."""
    run_id = paused_run(flow_name)
    resume_flow_run(run_id, run_input={"approve": approve, "approver": "On-call", "reason": reason})
    # Wait until it has left the paused state, so the next answer finds the next pause.
    end = time.monotonic() + 30
    while time.monotonic() < end:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state
        if state is None or state.type != StateType.PAUSED:
            break
        time.sleep(0.2)
    return run_id


class Background:
    """A runbook called in a thread; ``join`` returns its result or raises its error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = call()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 120) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the runbook did not finish"
        if self.error is not None:
            raise self.error
        return self.result
