"""``kill -9`` and a second copy at once, for the file storage runbooks as an operator runs
them (the real ``dr`` command, Azurite, the session's Prefect server).

The ``dr`` runs under test reach Azurite through a proxy that can hold every request where it
is: a run is caught in the middle of its work (content objects appearing in the repository,
blobs appearing in the target container) for as long as the test needs, then killed, or kept
holding its lock while a second copy starts. A second copy goes to Azurite directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL

from dr_runbooks.errors import BadInput
from dr_runbooks.files import (
    BlobAccount,
    FileCatalog,
    FileManifest,
    backup_files,
    plan_restore,
    restore_files,
)
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.file_storage_failure import file_storage_failure
from tests.azurite import Azurite
from tests.faults.conftest import Dr, kill_9, registered_runs, run_state, wait_for
from tests.faults.proxy import CuttableProxy
from tests.files.conftest import Blob, State, generated_state, read, write
from tests.files.test_status import files_yaml
from tests.flows.test_approval import _paused_run, paused_runs
from tests.test_cli import one_error_line

pytestmark = pytest.mark.slow

SYSTEM = "app-files"


@dataclass
class Setup:
    """A file storage system in dr.yaml, its container filled, and two ways to run ``dr``."""

    container: str
    state: State
    repo: Path
    config: Path
    #: ``dr`` through the proxy (the run a test holds, kills, or keeps holding its lock).
    held: Dr
    #: ``dr`` straight to Azurite (the next run, the second copy).
    direct: Dr
    #: The runs' ``DR_STATE_DIR``: the runs in progress recorded there.
    state_dir: Path
    proxy: CuttableProxy

    def catalog(self) -> FileCatalog:
        return FileCatalog(Repository(LocalStore(self.repo), name="files"), SYSTEM)

    def content_objects(self) -> int:
        folder = self.repo / "files" / SYSTEM / "content"
        return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    def folders_without_manifest(self) -> list[str]:
        folder = self.repo / "files" / SYSTEM / "backups"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not (p / "manifest.json").exists())


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[CuttableProxy]:
    port = int(azurite.account_url.rsplit(":", 1)[1].split("/")[0])
    proxied = CuttableProxy(port)
    yield proxied
    proxied.close()


@pytest.fixture
def setup(
    prefect_server: None,
    azurite: Azurite,
    proxy: CuttableProxy,
    source: Callable[[State], str],
    tmp_path: Path,
) -> Setup:
    state = generated_state(300)
    container = source(state)
    config = tmp_path / "dr.yaml"
    config.write_text(files_yaml(tmp_path, container))
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "DR_CONFIG": str(config),
        "DR_WORK_DIR": str(work),
        "DR_STATE_DIR": str(tmp_path / "state"),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    direct = azurite.account_url
    through = direct.replace(f":{azurite.port}/", f":{proxy.port}/", 1)
    via_proxy = azurite.connection_string.replace(direct, through)
    return Setup(
        container=container,
        state=state,
        repo=tmp_path / "repo",
        config=config,
        held=Dr({**env, "DR_TEST_FILES": via_proxy}, tmp_path),
        direct=Dr({**env, "DR_TEST_FILES": azurite.connection_string}, tmp_path),
        state_dir=tmp_path / "state",
        proxy=proxy,
    )


def _as_backed_up(state: State) -> dict[str, tuple[str, dict[str, str], str]]:
    return {
        name: (hashlib.sha256(blob.data).hexdigest(), blob.metadata, blob.content_type)
        for name, blob in state.items()
    }


def _in_manifest(manifest: FileManifest, container: str) -> dict[str, Any]:
    return {
        b.name: (b.sha256, b.metadata, b.content_type) for b in manifest.container(container).blobs
    }


def _backup_now(service: BlobServiceClient, setup: Setup) -> str:
    """A backup taken the quick way (not the run under test)."""
    return backup_files(BlobAccount(service), setup.catalog(), [setup.container]).id


def _killed_mid_way(setup: Setup, argv: tuple[str, ...], working: Callable[[], bool]) -> str:
    """Start ``dr argv`` through the proxy, hold it once ``working()``, ``kill -9`` it; return
    its Prefect run."""
    before = registered_runs(setup.state_dir)
    run = setup.held.spawn(*argv)
    try:
        wait_for(working, 120, "the run to be at work")
    finally:
        setup.proxy.hold()
        [killed] = registered_runs(setup.state_dir) - before
        kill_9(run)
        setup.proxy.release()
    return killed


def _promptly(dr: Dr, *argv: str) -> dict[str, Any]:
    begun = time.monotonic()
    done = dr(*argv, "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - begun < 90  # no wait on what the dead run held
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _restore(setup: Setup, *more: str) -> tuple[str, ...]:
    return ("restore", "files", "--system", SYSTEM, "--container", setup.container, *more)


# -- kill -9 ---------------------------------------------------------------------------------


def test_a_backup_killed_while_copying_blobs_leaves_the_next_one_working(setup: Setup) -> None:
    argv = ("backup", "files", "--system", SYSTEM)
    killed = _killed_mid_way(setup, argv, lambda: setup.content_objects() >= 20)
    assert setup.content_objects() < len(setup.state)
    [dead] = setup.folders_without_manifest()

    made = _promptly(setup.direct, *argv)

    [backup] = setup.catalog().backups()
    assert backup.id == made["backup_id"] != dead and backup.manifest is not None
    assert _in_manifest(backup.manifest, setup.container) == _as_backed_up(setup.state)
    assert setup.catalog().verify(backup) == []
    assert setup.folders_without_manifest() == []  # the dead run's folder went with this one
    assert run_state(killed) == "CRASHED"


def test_a_restore_into_a_new_container_killed_mid_way_is_finished_by_the_next_run(
    setup: Setup, service: BlobServiceClient
) -> None:
    backup_id = _backup_now(service, setup)
    argv = _restore(setup, "--backup-id", backup_id, "--yes")
    target = f"{setup.container}-restore-{backup_id.lower()}"

    def writing() -> bool:
        client = service.get_container_client(target)
        return client.exists() and sum(1 for _ in client.list_blobs()) >= 20

    killed = _killed_mid_way(setup, argv, writing)
    assert 0 < len(read(service, target)) < len(setup.state)

    result = _promptly(setup.direct, *argv)

    assert result["target"] == target and result["verified"] == len(setup.state)
    assert read(service, target) == setup.state
    assert run_state(killed) == "CRASHED"


def test_a_restore_in_place_killed_mid_way_is_finished_by_the_next_run_and_loses_nothing(
    setup: Setup, service: BlobServiceClient
) -> None:
    backup_id = _backup_now(service, setup)
    damaged = {name: Blob(b"damaged " + name.encode(), {}, "text/plain") for name in setup.state}
    write(service, setup.container, damaged)
    client = service.get_container_client(setup.container)
    damaged_etags = {b.etag for b in client.list_blobs()}
    argv = _restore(setup, "--in-place", "--backup-id", backup_id, "--yes")

    def writing() -> bool:
        return sum(1 for b in client.list_blobs() if b.etag not in damaged_etags) >= 20

    killed = _killed_mid_way(setup, argv, writing)
    assert 0 < sum(1 for b in client.list_blobs() if b.etag not in damaged_etags) < len(damaged)

    result = _promptly(setup.direct, *argv)

    assert read(service, setup.container) == setup.state
    # What the dead run overwrote is kept, in the pre-restore backup it made first.
    kept = [b for b in setup.catalog().backups() if b.manifest and b.manifest.kind == "pre-restore"]
    assert len(kept) == 2 and result["kept_in"] == kept[0].id
    assert result["earlier_kept_in"] == [kept[-1].id]  # the killed run's, named to the operator
    assert kept[-1].manifest is not None
    assert _in_manifest(kept[-1].manifest, setup.container) == _as_backed_up(damaged)
    assert setup.folders_without_manifest() == []
    assert run_state(killed) == "CRASHED"


def test_a_restore_goes_on_only_over_blobs_exactly_as_the_backup_has_them(
    service: BlobServiceClient, source: Callable[[State], str], local_repository: Repository
) -> None:
    state = generated_state(12)
    container = source(state)
    account = BlobAccount(service)
    catalog = FileCatalog(local_repository, SYSTEM)
    backup = catalog.find(backup_id=backup_files(account, catalog, [container]).id)
    target = f"{container}-restore-{backup.id.lower()}"
    service.create_container(target)
    done = dict(sorted(state.items())[:3])  # what a killed restore wrote
    write(service, target, done)

    plan = plan_restore(account, catalog, backup, container)
    result = restore_files(account, catalog, plan)

    assert plan.present == sorted(done) and result.restored == len(state)
    assert result.bytes == sum(len(b.data) for n, b in state.items() if n not in done)
    assert read(service, target) == state
    name, blob = sorted(state.items())[0]
    write(service, target, {name: Blob(blob.data + b"!", blob.metadata, blob.content_type)})
    write(service, target, {"extra.txt": Blob(b"not from the backup", {}, "text/plain")})
    refused = f"holds 2 blobs under its root that differ from backup {backup.id} or are not in it"
    with pytest.raises(BadInput, match=re.escape(f"{refused} ({name}, extra.txt)")):
        plan_restore(account, catalog, backup, container)
    assert read(service, target)[name].data == blob.data + b"!"  # left as it was


# -- two at once -----------------------------------------------------------------------------


def test_a_second_backup_refuses_while_the_first_holds_the_lock(setup: Setup) -> None:
    argv = ("backup", "files", "--system", SYSTEM, "--json")
    first = setup.held.spawn(*argv)
    try:
        wait_for(lambda: setup.content_objects() >= 1, 120, "the first backup to be copying")
        setup.proxy.hold()
        second = setup.direct(*argv)
    finally:
        setup.proxy.release()
    out, err = first.communicate(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the file backups of {SYSTEM}" in line and "locked by" in line
    assert first.returncode == 0, err
    [backup] = setup.catalog().backups()
    assert backup.id == json.loads(out)["backup_id"] and backup.manifest is not None
    assert _in_manifest(backup.manifest, setup.container) == _as_backed_up(setup.state)
    assert setup.folders_without_manifest() == []
    distinct = {hashlib.sha256(b.data).hexdigest() for b in setup.state.values()}
    assert setup.content_objects() == len(distinct)  # what one backup makes, nothing more


def test_a_second_restore_into_a_new_container_refuses_while_the_first_writes(
    setup: Setup, service: BlobServiceClient
) -> None:
    backup_id = _backup_now(service, setup)
    argv = _restore(setup, "--backup-id", backup_id, "--yes", "--json")
    target = service.get_container_client(f"{setup.container}-restore-{backup_id.lower()}")
    first = setup.held.spawn(*argv)
    try:
        wait_for(
            lambda: target.exists() and any(True for _ in target.list_blobs()),
            120,
            "the first restore to be writing",
        )
        setup.proxy.hold()
        second = setup.direct(*argv)
    finally:
        setup.proxy.release()
    _, err = first.communicate(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the restore target {target.container_name} of {SYSTEM}" in line
    assert "is locked by run" in line and "file-storage-failure" in line
    assert first.returncode == 0, err
    assert read(service, target.container_name) == setup.state


def test_an_in_place_restore_waiting_for_approval_keeps_a_second_one_out(
    setup: Setup,
    service: BlobServiceClient,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backup_id = _backup_now(service, setup)
    write(service, setup.container, {"docs/file-0000.bin": Blob(b"damaged", {}, "text/plain")})
    monkeypatch.setenv("DR_TEST_FILES", azurite.connection_string)
    outcome: dict[str, Any] = {}

    def restore_awaiting_approval() -> None:
        try:
            outcome["result"] = file_storage_failure(
                system=SYSTEM,
                account="env:DR_TEST_FILES",
                repository="files",
                container=setup.container,
                in_place=True,
                backup_id=backup_id,
                config_path=str(setup.config),
            )
        except BaseException as exc:
            outcome["error"] = exc

    known = paused_runs()
    thread = threading.Thread(target=restore_awaiting_approval)
    thread.start()
    run_id = _paused_run(known=known)

    try:
        second = setup.direct(*_restore(setup, "--in-place", "--backup-id", backup_id, "--yes"))
    finally:  # approved whatever happened: nothing stays paused
        resume_flow_run(run_id, run_input={"approve": True, "approver": "Ada", "reason": "tested"})
        thread.join(timeout=300)

    assert second.returncode == 1
    line = one_error_line(second)
    assert f"the restore target {setup.container} of {SYSTEM}" in line
    assert f"is locked by run {run_id}" in line
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["approval"] == "approved in the UI by Ada: tested"
    assert read(service, setup.container) == setup.state
    kinds = sorted(b.manifest.kind for b in setup.catalog().backups() if b.manifest)
    assert kinds == ["files", "pre-restore"]  # one restore's pre-restore backup, not two
