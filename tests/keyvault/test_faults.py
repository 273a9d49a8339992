"""``kill -9`` and a second copy at once, for the Key Vault runbooks as an operator runs them
(the real ``dr`` command, signed in at the loopback endpoint, the session's Prefect server).

The endpoint holds one request of the run under test (the n-th ``backup`` or ``restore`` it
receives; a restore is applied first, only its answer waits) until the test releases it: the
run is caught in the middle of its step for as long as the test needs, then killed, or kept
holding its lock while a second copy starts.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL

from dr_runbooks.keyvault import VaultCatalog, backup_vault
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from tests.azure_api import AzureApi
from tests.azure_api.core import Response
from tests.faults.conftest import Dr, kill_9, registered_runs, run_state
from tests.keyvault.conftest import SYSTEM, BackupActions, client_for
from tests.test_cli import one_error_line

pytestmark = pytest.mark.slow

#: The vault's secrets: some with several versions.
SECRETS = {f"secret-{i:02d}": [f"value-{i}-{v}" for v in range(1 + i % 3)] for i in range(12)}


@dataclass
class HeldRequest:
    """The vault's actions, with the ``at``-th request of ``kind`` (``backup``, ``restore``)
    held before it is answered, until :meth:`release`."""

    actions: BackupActions
    kind: str = ""
    at: int = 0
    seen: dict[str, int] = field(default_factory=lambda: {"backup": 0, "restore": 0})
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def hold(self, kind: str, at: int) -> None:
        self.kind, self.at = kind, at

    def release(self) -> None:
        self.released.set()

    def handle(self, method: str, parts: list[str], body: dict[str, Any]) -> Response:
        response = self.actions.handle(method, parts, body)
        kind = (
            "backup"
            if method == "POST" and parts[1:] == ["backup"]
            else "restore"
            if method == "POST" and parts == ["restore"]
            else None
        )
        if kind is not None:
            self.seen[kind] += 1
            if kind == self.kind and self.seen[kind] == self.at:
                self.reached.set()
                self.released.wait(120)
        return response


@dataclass
class Setup:
    api: AzureApi
    held: HeldRequest
    repo: Path
    state_dir: Path
    dr: Dr

    def catalog(self) -> VaultCatalog:
        return VaultCatalog(Repository(LocalStore(self.repo), "local"), SYSTEM)

    def folders(self) -> list[Path]:
        base = self.repo / "vault" / SYSTEM / "backups"
        return sorted(base.iterdir()) if base.is_dir() else []

    def values(self) -> dict[str, list[tuple[str, str]]]:
        """Every secret's versions in the vault now: (version id, value), oldest first."""
        return {
            name: [(v.version, v.value) for v in versions]
            for name, versions in self.api.vault.secrets.items()
            if versions
        }


@pytest.fixture
def setup(
    prefect_server: None, signed_in: AzureApi, actions: BackupActions, config: str, tmp_path: Path
) -> Iterator[Setup]:
    held = HeldRequest(actions)
    signed_in.register_data_plane("secrets", held.handle)
    for name, values in SECRETS.items():
        for value in values:
            signed_in.vault.set(name, value)
    env = {
        **os.environ,
        "DR_CONFIG": config,
        "DR_STATE_DIR": str(tmp_path / "state"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    yield Setup(signed_in, held, tmp_path / "backups", tmp_path / "state", Dr(env, tmp_path))
    held.release()


def _caught_and_killed(setup: Setup, *argv: str) -> str:
    """``dr argv`` killed while the endpoint holds the request it waits for; its Prefect run."""
    run = setup.dr.spawn(*argv)
    try:
        assert setup.held.reached.wait(120), "the run never reached the held request"
    finally:
        [killed] = registered_runs(setup.state_dir)
        kill_9(run)
        setup.held.release()
    return killed


def _promptly(setup: Setup, *argv: str) -> dict[str, Any]:
    begun = time.monotonic()
    done = setup.dr(*argv, "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - begun < 90  # no wait on what the dead run held
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _in_backup(setup: Setup, stored_key: str) -> list[str]:
    """The values a stored ``backup_secret`` output holds (this endpoint's format, which the
    runbooks never read)."""
    blob = json.loads((setup.repo / stored_key).read_bytes())
    return [str(v["value"]) for v in blob["versions"]]


def _backed_up(setup: Setup) -> str:
    """A backup taken the quick way (not the run under test)."""
    return backup_vault(client_for(setup.api), setup.catalog()).id


# -- kill -9 ---------------------------------------------------------------------------------


def test_a_backup_killed_mid_way_leaves_the_next_one_working(setup: Setup) -> None:
    setup.held.hold("backup", at=5)
    argv = ("backup", "keyvault", "--system", SYSTEM)
    killed = _caught_and_killed(setup, *argv)
    [dead] = setup.folders()
    assert not (dead / "manifest.json").exists()

    made = _promptly(setup, *argv)

    [backup] = setup.catalog().backups()
    assert backup.id == made["backup_id"] and backup.manifest is not None
    assert made["secrets"] == sorted(SECRETS)
    assert {n: _in_backup(setup, s.key) for n, s in backup.manifest.secrets.items()} == SECRETS
    assert [p.name for p in setup.folders()] == [backup.id]  # the dead run's folder went
    assert run_state(killed) == "CRASHED"


def test_a_restore_killed_mid_way_is_finished_by_the_next_run_and_overwrites_nothing(
    setup: Setup,
) -> None:
    _backed_up(setup)
    before = setup.values()
    for name in SECRETS:
        del setup.api.vault.secrets[name]  # the vault lost them
    setup.api.vault.set("secret-00", "set again since, by someone")
    setup.held.hold("restore", at=4)
    argv = ("restore", "keyvault", "--system", SYSTEM, "--yes")
    killed = _caught_and_killed(setup, *argv)
    restored_by_the_dead_run = sorted(SECRETS)[1:5]
    assert sorted(setup.values()) == ["secret-00", *restored_by_the_dead_run]

    result = _promptly(setup, *argv)

    assert result["already"] == restored_by_the_dead_run
    assert result["restored"] == sorted(SECRETS)[5:]
    assert list(result["existing"]) == ["secret-00"]  # reported, left as it is
    now = setup.values()
    assert now.pop("secret-00")[-1][1] == "set again since, by someone"
    assert now == {n: v for n, v in before.items() if n != "secret-00"}
    assert run_state(killed) == "CRASHED"


# -- two at once -----------------------------------------------------------------------------


def test_a_second_backup_refuses_while_the_first_holds_the_lock(setup: Setup) -> None:
    setup.held.hold("backup", at=3)
    argv = ("backup", "keyvault", "--system", SYSTEM, "--json")
    first = setup.dr.spawn(*argv)
    try:
        assert setup.held.reached.wait(120), "the first backup never reached the vault"
        second = setup.dr(*argv)
    finally:
        setup.held.release()
    out, err = first.communicate(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the vault backups of {SYSTEM}" in line and "locked by" in line
    assert first.returncode == 0, err
    [backup] = setup.catalog().backups()
    assert backup.id == json.loads(out)["backup_id"] and backup.manifest is not None
    assert sorted(backup.manifest.secrets) == sorted(SECRETS)
    assert [p.name for p in setup.folders()] == [backup.id]  # what one backup makes


def test_a_second_restore_into_the_vault_refuses_while_the_first_restores(setup: Setup) -> None:
    _backed_up(setup)
    before = setup.values()
    for name in SECRETS:
        del setup.api.vault.secrets[name]
    setup.held.hold("restore", at=2)
    argv = ("restore", "keyvault", "--system", SYSTEM, "--yes", "--json")
    first = setup.dr.spawn(*argv)
    try:
        assert setup.held.reached.wait(120), "the first restore never reached the vault"
        second = setup.dr(*argv)
    finally:
        setup.held.release()
    out, err = first.communicate(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the restore target {setup.api.url}" in line
    assert f"of {SYSTEM} is locked by run" in line and "keyvault-restore" in line
    assert first.returncode == 0, err
    assert json.loads(out)["restored"] == sorted(SECRETS)
    assert setup.values() == before
    assert setup.held.seen["restore"] == len(SECRETS)  # the second sent none
