"""``kill -9`` and a second copy at once, for the configuration runbooks as an operator runs
them (the real ``dr`` command, real git repositories, the session's Prefect server).

The ``dr`` run under test finds on its ``PATH`` a ``git`` that stops at the command a test
names (before it runs, or after it did its work) until the test opens a gate: the run is
caught in the middle of its step for as long as the test needs, then killed, or kept holding
its lock while a second copy (with the real ``git``) starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL

from dr_runbooks.gitconfig import DEFAULT_REFS, ConfigCatalog, GitRemote, backup_config
from dr_runbooks.gitconfig.backup import SCRATCH_PREFIX
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.config_restore import config_restore
from tests.faults.conftest import Dr, descendants, kill_9, registered_runs, run_state, wait_for
from tests.flows.test_approval import _paused_run, paused_runs
from tests.gitconfig.conftest import SYSTEM, git, refs_of
from tests.test_cli import one_error_line

pytestmark = pytest.mark.slow

_GATED_GIT = """#!/bin/sh
# The real git, except that the command named by DR_TEST_GIT_STOP (" bundle create ") waits
# for the test's gate before it runs, and the one named by DR_TEST_GIT_AFTER after it ran.
real={real}
gate={gate}
wait_for_gate() {{
    touch "$gate/reached"
    while [ ! -e "$gate/open" ]; do sleep 0.05; done
}}
case "$*" in
  *"${{DR_TEST_GIT_STOP:-no such command}}"*) wait_for_gate ;;
  *"${{DR_TEST_GIT_AFTER:-no such command}}"*)
    "$real" "$@"; status=$?; wait_for_gate; exit $status ;;
esac
exec "$real" "$@"
"""


@dataclass
class Gate:
    """Where the gated ``git`` waits: :meth:`reached` once a run stopped there."""

    folder: Path

    def reached(self) -> bool:
        return (self.folder / "reached").exists()

    def open(self) -> None:
        (self.folder / "open").touch()


@dataclass
class Setup:
    repo: Path
    work: Path
    config: Path
    state_dir: Path
    #: ``dr`` with the real git (the next run, the second copy).
    direct: Dr
    #: ``dr`` with the gated git; ``stop``/``after`` name the git command it is caught at.
    gated_env: dict[str, str]
    gate: Gate

    def gated(self, *, stop: str = "", after: str = "") -> Dr:
        env = {**self.gated_env, "DR_TEST_GIT_STOP": stop, "DR_TEST_GIT_AFTER": after}
        return Dr({k: v for k, v in env.items() if v}, self.direct.cwd)

    def catalog(self) -> ConfigCatalog:
        return ConfigCatalog(Repository(LocalStore(self.repo), "local"), SYSTEM)

    def folders(self) -> list[Path]:
        base = self.repo / "config" / SYSTEM / "backups"
        return sorted(base.iterdir()) if base.is_dir() else []

    def scratch_left(self) -> list[Path]:
        return sorted(self.work.glob(f"{SCRATCH_PREFIX}*"))


@pytest.fixture
def setup(prefect_server: None, origin: Path, tmp_path: Path) -> Iterator[Setup]:
    config = tmp_path / "dr.yaml"
    config.write_text(f"""
repositories:
  local: {{type: local, path: {tmp_path / "backups"}, retention_days: 7, min_keep: 1}}
systems:
  {SYSTEM}:
    engine: git
    git: {{url: {origin}}}
    repositories: [local]
""")
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "DR_CONFIG": str(config),
        "DR_WORK_DIR": str(work),
        "DR_STATE_DIR": str(tmp_path / "state"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    gate = Gate(tmp_path / "gate")
    gate.folder.mkdir()
    bin_folder = tmp_path / "gated-bin"
    bin_folder.mkdir()
    real = shutil.which("git")
    assert real is not None
    (bin_folder / "git").write_text(_GATED_GIT.format(real=real, gate=gate.folder))
    (bin_folder / "git").chmod(0o755)
    gated_env = {**env, "PATH": f"{bin_folder}{os.pathsep}{env['PATH']}"}
    yield Setup(
        tmp_path / "backups",
        work,
        config,
        tmp_path / "state",
        Dr(env, tmp_path),
        gated_env,
        gate,
    )
    gate.open()  # nothing stays waiting, whatever happened


def _origin_refs(origin: Path) -> dict[str, str]:
    return {n: o for n, o in refs_of(origin).items() if n.startswith(("refs/heads/", "refs/tags/"))}


def _backed_up(setup: Setup, origin: Path) -> str:
    """A backup taken the quick way (not the run under test)."""
    return backup_config(
        GitRemote.parse(str(origin)), setup.catalog(), DEFAULT_REFS, head="refs/heads/main"
    ).id


def _killed_at_the_gate(setup: Setup, run: subprocess.Popen[str]) -> tuple[str, list[Any]]:
    """``kill -9`` of ``run`` once its git stopped at the gate; its Prefect run and the git
    processes it had."""
    try:
        wait_for(setup.gate.reached, 120, "git to reach the gate")
    finally:
        children = descendants(run)
        [killed] = registered_runs(setup.state_dir)
        kill_9(run)
    wait_for(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
        10,
        "git to die with dr",
    )
    return killed, children


def _promptly(setup: Setup, *argv: str) -> dict[str, Any]:
    begun = time.monotonic()
    done = setup.direct(*argv, "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - begun < 90  # no wait on what the dead run held
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- kill -9 ---------------------------------------------------------------------------------


def test_a_backup_killed_in_git_bundle_create_leaves_the_next_one_working(
    setup: Setup, origin: Path, tmp_path: Path
) -> None:
    argv = ("backup", "config", "--system", SYSTEM)
    run = setup.gated(stop=" bundle create ").spawn(*argv)
    killed, children = _killed_at_the_gate(setup, run)
    assert children  # git was at work, and died with dr
    [dead] = setup.folders()
    assert not (dead / "manifest.json").exists() and setup.scratch_left()

    made = _promptly(setup, *argv)

    assert made["changed"] is True and made["refs"] == _origin_refs(origin)
    [backup] = setup.catalog().backups()
    assert backup.id == made["backup_id"] and [p.name for p in setup.folders()] == [backup.id]
    clone = tmp_path / "check"
    restored = _promptly(setup, "restore", "config", "--system", SYSTEM, "--path", str(clone))
    assert restored["cloned"]["refs"] == refs_of(clone) == _origin_refs(origin)
    assert setup.scratch_left() == []  # the dead run's scratch mirror went too
    assert run_state(killed) == "CRASHED"


def test_a_clone_restore_killed_mid_way_is_finished_by_the_next_run(
    setup: Setup, origin: Path, tmp_path: Path
) -> None:
    _backed_up(setup, origin)
    clone = tmp_path / "restored.git"
    argv = ("restore", "config", "--system", SYSTEM, "--path", str(clone))
    run = setup.gated(after=" clone --quiet ").spawn(*argv)
    killed, _ = _killed_at_the_gate(setup, run)
    assert not clone.exists()  # a clone half made is never in the path
    assert list(tmp_path.glob(".restored.git.dr-partial-*"))

    result = _promptly(setup, *argv)

    assert result["cloned"]["refs"] == refs_of(clone) == _origin_refs(origin)
    assert git(clone, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(clone, "remote") == ""
    assert list(tmp_path.glob(".restored.git.dr-partial-*")) == []
    assert run_state(killed) == "CRASHED"


def test_a_push_restore_killed_before_it_verified_is_finished_by_the_next_run(
    setup: Setup, origin: Path, tmp_path: Path
) -> None:
    _backed_up(setup, origin)
    new = tmp_path / "new.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(new)], check=True)
    argv = ("restore", "config", "--system", SYSTEM, "--push-to", str(new), "--yes")
    run = setup.gated(after=" push --quiet ").spawn(*argv)
    killed, _ = _killed_at_the_gate(setup, run)
    assert refs_of(new) == _origin_refs(origin)  # the dead run had pushed them

    result = _promptly(setup, *argv)

    assert result["pushed"]["refs"] == refs_of(new) == _origin_refs(origin)
    assert run_state(killed) == "CRASHED"


# -- two at once -----------------------------------------------------------------------------


def test_a_second_backup_refuses_while_the_first_holds_the_lock(setup: Setup, origin: Path) -> None:
    argv = ("backup", "config", "--system", SYSTEM, "--json")
    first = setup.gated(stop=" bundle create ").spawn(*argv)
    try:
        wait_for(setup.gate.reached, 120, "the first backup to be bundling")
        second = setup.direct(*argv)
    finally:
        setup.gate.open()
    out, err = first.communicate(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the configuration backups of {SYSTEM}" in line and "locked by" in line
    assert first.returncode == 0, err
    [backup] = setup.catalog().backups()
    assert backup.id == json.loads(out)["backup_id"]
    assert backup.manifest is not None and backup.manifest.refs == _origin_refs(origin)
    assert [p.name for p in setup.folders()] == [backup.id]  # what one backup makes


def test_a_second_clone_into_the_path_refuses_while_the_first_clones(
    setup: Setup, origin: Path, tmp_path: Path
) -> None:
    _backed_up(setup, origin)
    clone = tmp_path / "restored.git"
    argv = ("restore", "config", "--system", SYSTEM, "--path", str(clone))
    first = setup.gated(stop=" clone --quiet ").spawn(*argv)
    try:
        wait_for(setup.gate.reached, 120, "the first restore to be cloning")
        second = setup.direct(*argv)
    finally:
        setup.gate.open()
    _, err = first.communicate(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the restore target {clone} of {SYSTEM} is locked by run" in line
    assert "config-restore" in line
    assert first.returncode == 0, err
    assert refs_of(clone) == _origin_refs(origin)


def test_a_push_restore_waiting_for_approval_keeps_a_second_one_out(
    setup: Setup, origin: Path, tmp_path: Path
) -> None:
    _backed_up(setup, origin)
    new = tmp_path / "new.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(new)], check=True)
    outcome: dict[str, Any] = {}

    def restore_awaiting_approval() -> None:
        try:
            outcome["result"] = config_restore(
                system=SYSTEM, push_to=str(new), config_path=str(setup.config)
            )
        except BaseException as exc:
            outcome["error"] = exc

    known = paused_runs()
    thread = threading.Thread(target=restore_awaiting_approval)
    thread.start()
    run_id = _paused_run(known=known)

    try:
        second = setup.direct(
            "restore", "config", "--system", SYSTEM, "--push-to", str(new), "--yes"
        )
        pushed_meanwhile = refs_of(new)
    finally:  # approved whatever happened: nothing stays paused
        resume_flow_run(run_id, run_input={"approve": True, "approver": "Ada", "reason": "tested"})
        thread.join(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the restore target {new} of {SYSTEM} is locked by run {run_id}" in line
    assert pushed_meanwhile == {}  # the second pushed nothing
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["pushed"]["refs"] == refs_of(new) == _origin_refs(origin)
