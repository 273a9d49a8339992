"""The configuration runbooks as real Prefect flows: the 15-minute backup (a bundle only when
the refs changed), verify-backups, and the restore by clone and by an approved push (refused
on a dry run and on rejection)."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.exceptions import CancelledRun
from prefect.flow_runs import resume_flow_run

from dr_runbooks.config import load_config
from dr_runbooks.errors import ConfigError
from dr_runbooks.gitconfig import ConfigCatalog
from dr_runbooks.targets import repository_from_config, resolve_target
from flows.backup_config import backup_config
from flows.config_restore import config_restore
from flows.verify_backups import verify_backups
from tests.gitconfig.conftest import SYSTEM, commit, refs_of


@pytest.fixture(autouse=True)
def _prefect(prefect_server: None) -> None:
    """Every flow test runs against the session's Prefect test server."""


@pytest.fixture
def config(tmp_path: Path, origin: Path) -> str:
    path = tmp_path / "dr.yaml"
    path.write_text(f"""
repositories:
  local: {{type: local, path: {tmp_path / "backups"}, retention_days: 7, min_keep: 1}}
systems:
  {SYSTEM}:
    engine: git
    git: {{url: {origin}}}
    repositories: [local]
""")
    return str(path)


def _empty_remote(path: Path) -> Path:
    subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True)
    return path


def test_backup_only_when_the_refs_changed_then_verify(config: str, origin: Path) -> None:
    first = backup_config(system=SYSTEM, config_path=config)
    assert first["changed"] and first["refs"] == refs_of(origin)

    same = backup_config(system=SYSTEM, config_path=config)
    assert same == {"system": SYSTEM, "changed": False, "backup_id": first["backup_id"]}

    moved = commit(origin, "app.yaml", "replicas: 5\n")
    second = backup_config(system=SYSTEM, config_path=config)
    assert second["changed"] and second["backup_id"] != first["backup_id"]
    assert second["changes"] == [{"change": "moved", "ref": "refs/heads/main"}]
    assert second["refs"]["refs/heads/main"] == moved

    [result] = verify_backups(systems=[SYSTEM], config_path=config, notify=False)
    assert (result["outcome"], result["backup_id"]) == ("ok", second["backup_id"])

    loaded = load_config(config)
    with pytest.raises(ConfigError, match="engine: git"):
        resolve_target(loaded, None, SYSTEM)
    repository = repository_from_config(loaded, "local")
    assert len(ConfigCatalog(repository, SYSTEM).backups()) == 2


def test_restore_by_clone_needs_no_approval_push_does(
    config: str, origin: Path, tmp_path: Path
) -> None:
    backup_config(system=SYSTEM, config_path=config)
    clone = tmp_path / "clone.git"
    new = _empty_remote(tmp_path / "new.git")

    result = config_restore(
        system=SYSTEM, path=str(clone), push_to=str(new), dry_run=True, config_path=config
    )
    assert result["dry_run"] and result["cloned"]["refs"] == refs_of(origin) == refs_of(clone)
    assert refs_of(new) == {}

    pushed = config_restore(system=SYSTEM, push_to=str(new), approved=True, config_path=config)
    assert pushed["pushed"]["refs"] == refs_of(new) == refs_of(origin)


def _paused_since(since: datetime) -> UUID:
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=paused)
        mine = [r for r in runs if r.created is not None and r.created >= since]
        if mine:
            return mine[0].id
        time.sleep(0.5)
    raise AssertionError("the restore never paused for approval")


def test_a_rejected_push_changes_nothing(config: str, tmp_path: Path) -> None:
    backup_config(system=SYSTEM, config_path=config)
    new = _empty_remote(tmp_path / "new.git")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = config_restore(system=SYSTEM, push_to=str(new), config_path=config)
        except BaseException as exc:
            outcome["error"] = exc

    begun = datetime.now(UTC)
    thread = threading.Thread(target=run)
    thread.start()
    run_id = _paused_since(begun)
    resume_flow_run(run_id, run_input={"approve": False, "approver": "Bo", "reason": "not now"})
    thread.join(timeout=120)

    assert isinstance(outcome.get("error"), CancelledRun)
    assert "plan rejected by Bo: not now" in str(outcome["error"])
    assert refs_of(new) == {}
