"""``dr backup config`` and ``dr restore config`` as an operator runs them: the real command
against a real git repository and the session's Prefect server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from tests.gitconfig.conftest import SYSTEM, commit, refs_of
from tests.test_cli import dr


@pytest.fixture
def env(prefect_server: None, tmp_path: Path, origin: Path) -> dict[str, str]:
    config = tmp_path / "dr.yaml"
    config.write_text(f"""
repositories:
  local: {{type: local, path: {tmp_path / "backups"}, retention_days: 7, min_keep: 1}}
systems:
  {SYSTEM}:
    engine: git
    git: {{url: {origin}}}
    repositories: [local]
  app-db:
    engine: postgres
    connection: {{dsn_env: NO_SUCH_DSN}}
    repositories: [local]
""")
    return {"DR_CONFIG": str(config), "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def test_backup_then_restore_by_clone_from_the_command_line(
    env: dict[str, str], origin: Path, tmp_path: Path
) -> None:
    first = dr("backup", "config", "--system", SYSTEM, "--json", env=env)
    assert first.returncode == 0, first.stderr
    backed_up = json.loads(first.stdout)
    assert backed_up["changed"] is True and backed_up["backup_id"]

    again = dr("backup", "config", "--system", SYSTEM, "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False

    commit(origin, "later.yaml", "after the backup\n")  # not in the backup
    clone = tmp_path / "restored"
    shown = dr("restore", "config", "--system", SYSTEM, "--path", str(clone), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "configuration restore of app-config" in shown.stdout
    restored = refs_of(clone)
    assert restored["refs/tags/v1"] and not (clone / "later.yaml").exists()
    log = subprocess.run(
        ["git", "-C", str(clone), "log", "--format=%H", "-1"], capture_output=True, text=True
    )
    assert log.stdout.strip() in restored.values()


def test_bad_requests_are_refused_in_one_line_before_anything_runs(
    env: dict[str, str], tmp_path: Path
) -> None:
    cases = [
        (("restore", "config", "--system", SYSTEM), "say where to restore"),
        (("backup", "config", "--system", "app-db"), "is a postgres system, not git"),
        (("backup", "files", "--system", SYSTEM), "is a git system, not blob"),
        (("restore", "keyvault", "--system", "nope", "--yes"), "unknown system 'nope'"),
        (
            ("restore", "config", "--system", SYSTEM, "--push-to", str(tmp_path / "x")),
            "confirm on a terminal or pass --yes",
        ),
    ]
    for argv, message in cases:
        result = dr(*argv, env=env)
        assert result.returncode == 2, (argv, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (argv, result.stderr)
    assert not (tmp_path / "backups").exists()  # nothing was written anywhere
