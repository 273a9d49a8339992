"""``dr backup files`` and ``dr restore files`` as an operator runs them: the real command,
Azurite and the session's Prefect server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from azure.storage.blob import BlobServiceClient
from prefect.settings import PREFECT_API_URL

from tests.azurite import Azurite
from tests.files.conftest import Blob, State, generated_state, read, write
from tests.files.test_status import files_yaml
from tests.test_cli import dr


def test_backup_then_restore_a_prefix_from_the_command_line(
    prefect_server: None,
    azurite: Azurite,
    service: BlobServiceClient,
    source: Callable[[State], str],
    tmp_path: Path,
) -> None:
    first = generated_state(12)
    container = source(first)
    config = tmp_path / "dr.yaml"
    config.write_text(files_yaml(tmp_path, container))
    env = {
        "DR_CONFIG": str(config),
        "DR_TEST_FILES": azurite.connection_string,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }

    backed_up = dr("backup", "files", "--system", "app-files", "--json", env=env)
    assert backed_up.returncode == 0, backed_up.stderr
    backup_id = json.loads(backed_up.stdout)["backup_id"]
    write(service, container, {"docs/file-0000.bin": Blob(b"overwritten", {}, "text/plain")})

    restore = ("restore", "files", "--system", "app-files", "--container", container)
    planned = dr(*restore, "--prefix", "docs/", "--dry-run", env=env)
    assert planned.returncode == 0, planned.stderr
    assert "docs/" in planned.stdout
    unconfirmed = dr(*restore, "--prefix", "docs/", env=env)
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr

    done = dr(*restore, "--prefix", "docs/", "--backup-id", backup_id, "--yes", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    docs = {name: blob for name, blob in first.items() if name.startswith("docs/")}
    assert read(service, result["target"]) == docs  # a new container, at the backup's state
    assert read(service, container)["docs/file-0000.bin"].data == b"overwritten"
