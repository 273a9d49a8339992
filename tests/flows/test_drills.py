"""The monthly drill and the quarterly recovery test, as real flows on the session's
PostgreSQL and Prefect server: the sandbox is a name prefix on production's own server, so
every test also proves production is left bit-for-bit as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.settings import PREFECT_API_URL

from dr_runbooks.configversion import config_version
from dr_runbooks.errors import ConfigError, LockHeld, RestoreVerificationFailed, VerificationFailed
from dr_runbooks.gitconfig import DEFAULT_REFS, ConfigCatalog, GitRemote, restore_clone
from dr_runbooks.gitconfig import backup_config as bundle_config
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import Repository
from dr_runbooks.runs import RunLog, RunRecord
from dr_runbooks.storage import LocalStore
from flows.backup_config import backup_config
from flows.backup_postgres import backup_postgres
from flows.monthly_drill import monthly_drill
from flows.quarterly_recovery_test import quarterly_recovery_test
from tasks.recovery_test import config_find_commit
from tests.pg_helpers import database_names, table_fingerprints

ROOT = Path(__file__).resolve().parents[2]


class Shop:
    """A protected system ``shop`` with one backed-up database, and the dr.yaml of a drill
    whose sandbox is the prefix ``drill_`` on the same server."""

    def __init__(self, pg: ConnInfo, database: str, base: Path) -> None:
        self.pg, self.database, self.base = pg, database, base
        self.sandboxed = f"drill_{database}"

    def config(
        self, integration: list[str] | None = None, prefix: str = "drill_", name: str = "dr.yaml"
    ) -> str:
        test = (
            f"  integration_test: {{command: {json.dumps(integration)}, timeout: 600s}}\n"
            if integration
            else ""
        )
        path = self.base / name
        path.write_text(
            f"""
objectives:
  rto: {{critical: 1h}}
  rpo: {{database: 1h}}
repositories:
  primary: {{type: local, path: {self.base / "primary"}}}
systems:
  shop:
    engine: postgres
    connection: {{dsn_env: DR_TEST_DRILL_PROD_DSN}}
    databases: [{self.database}]
    repositories: [primary]
sandbox:
  postgres:
    connection: {{dsn_env: DR_TEST_DRILL_SANDBOX_DSN}}
    prefix: "{prefix}"
drills:
  markers: 4
{test}"""
        )
        return str(path)

    @property
    def log(self) -> RunLog:
        return RunLog(LocalStore(self.base / "primary"))

    def records(self, kind: str | None = None) -> list[RunRecord]:
        return self.log.records(kind)[0]

    def fingerprints(self) -> dict[str, tuple[int, str]]:
        return table_fingerprints(self.pg, self.database)

    def sandbox_databases(self) -> list[str]:
        return database_names(self.pg, "drill\\_%")


@pytest.fixture
def shop(
    pg_server: ConnInfo, make_database: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shop]:
    database = make_database("shop")
    with pg_server.connect(dbname=database) as conn:
        conn.execute(
            "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS ref, g * 1.5 AS total "
            "FROM generate_series(1, 3000) g"
        )
        conn.execute("ALTER TABLE orders ADD PRIMARY KEY (id)")
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 200) g")
    dsn = f"postgresql://postgres@/postgres?host={pg_server.host}"
    monkeypatch.setenv("DR_TEST_DRILL_PROD_DSN", dsn)
    monkeypatch.setenv("DR_TEST_DRILL_SANDBOX_DSN", dsn)
    system = Shop(pg_server, database, tmp_path)
    backup_postgres(system="shop", config_path=system.config(), retention=False)
    yield system
    from tasks.drill import postgres_teardown_sandbox

    postgres_teardown_sandbox.fn(pg_server, [system.sandboxed, f"drill_shop_{database}"])


def _artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(  # the newest: other tests' drills publish the key too
            limit=1,
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
        )
    assert found, f"no artifact {key}"
    return found[0]


def _dr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


def test_a_drill_in_the_sandbox_recovers_proves_the_rpo_and_leaves_production_unchanged(
    shop: Shop,
) -> None:
    before = shop.fingerprints()
    config = shop.config(["sh", "-c", 'echo "testing $DR_DRILL_DATABASES"; exit 0'])

    result = monthly_drill(config_path=config, severity="Medium")

    assert shop.fingerprints() == before  # production, bit for bit
    assert shop.sandbox_databases() == []  # the sandbox is gone
    assert result["verified"] and result["target"] == "sandbox"
    assert result["markers_written_after_backup"] == 4 and result["markers_lost"] == 4
    assert 0 < result["rpo_seconds"] < result["rpo_objective_seconds"] and result["rpo_met"]
    assert 0 < result["rto_seconds"] < result["rto_objective_seconds"] and result["rto_met"]

    [drill] = shop.records("drill")
    assert drill.id == result["record"] and drill.status == "completed"
    assert drill.severity == "Medium" and drill.parameters["severity"] == "Medium"
    assert drill.config["sha256"] and drill.launched_by
    steps = [s.name for s in drill.steps]
    assert steps.index("announce") < steps.index(f"stage shop/{shop.database} in the sandbox")
    assert steps[-2:] == ["verdict", "tear down the sandbox"]
    assert all(s.outcome == "ok" and s.finished for s in drill.steps)
    m = drill.measurements
    assert m["data_lost"]["rows_written"] == m["data_lost"]["rows_lost"] == 4
    assert m["backup"]["repository"] == "primary" and m["rpo_met"] is True
    test = drill.results["integration_test"]
    assert test["exit_status"] == 0 and f"testing shop/{shop.database}=drill_" in test["tail"]
    # The real runbook recovered it, under a name of its own, with a record of its own.
    [inner] = shop.records("scenario")
    assert inner.flow == "database-failure" and inner.parent == drill.id
    assert inner.parameters["restore_as"] == shop.sandboxed

    files = {p.name for p in (shop.base / "primary" / "runs").iterdir()}
    for suffix in ("json", "postmortem.md", "report.md", "trend.png"):
        assert f"{drill.id}.{suffix}" in files
    report = (shop.base / "primary" / "runs" / f"{drill.id}.report.md").read_text()
    assert "recovery VERIFIED" in report and "**4 lost**" in report
    assert f"![RTO and RPO of the last drills]({drill.id}.trend.png)" in report
    trend = json.loads(_artifact("monthly-drill-trend").data)
    assert trend[-1]["run"] == drill.id and trend[-1]["rto_objective_minutes"] == 60.0
    assert (
        "# Incident Post-Mortem"
        in _artifact(
            "postmortem-monthly-drill-shop-" + shop.database.replace("_", "-") + "-report"
        ).data
    )

    listed = _dr("--config", config, "runs", "list", "--kind", "drill", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["id"] == drill.id and row["rows_lost"] == 4
    shown = _dr("--config", config, "runs", "show", drill.id[:22])
    assert shown.returncode == 0 and "tear down the sandbox" in shown.stdout, shown.stderr
    again = _dr("--config", config, "postmortem", drill.id)
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout.strip()
        == (shop.base / "primary" / "runs" / f"{drill.id}.postmortem.md").read_text().strip()
    )


def test_a_sandbox_on_productions_server_without_a_prefix_is_refused(shop: Shop) -> None:
    before = shop.fingerprints()
    with pytest.raises(ConfigError, match="is the server of system 'shop'"):
        monthly_drill(config_path=shop.config(prefix=""))
    assert shop.fingerprints() == before
    [drill] = shop.records("drill")
    assert drill.status == "failed" and drill.failed_step == "load"


def test_a_failed_drill_still_tears_its_sandbox_down_and_says_why(shop: Shop) -> None:
    before = shop.fingerprints()
    config = shop.config(["sh", "-c", "echo 'checkout flow broken' >&2; exit 3"])

    with pytest.raises(VerificationFailed, match=r"integration test sh -c .* exited 3"):
        monthly_drill(config_path=config)

    assert shop.sandbox_databases() == [] and shop.fingerprints() == before
    [drill] = shop.records("drill")
    assert drill.status == "failed" and drill.failed_step == "verdict"
    assert drill.steps[-1].name == "tear down the sandbox" and drill.steps[-1].outcome == "ok"
    assert drill.results["integration_test"]["exit_status"] == 3
    assert "checkout flow broken" in drill.results["integration_test"]["tail"]
    assert any("integration test" in f for f in drill.results["review"])
    postmortem = (shop.base / "primary" / "runs" / f"{drill.id}.postmortem.md").read_text()
    assert "FAILED at step 'verdict'" in postmortem


def _wait(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _sleepers(marker: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]]


def test_kill_9_mid_drill_leaves_its_record_and_a_second_drill_waits_its_turn(
    shop: Shop,
) -> None:
    before = shop.fingerprints()
    hanging = shop.config(["sleep", "307"], name="hanging.yaml")
    quick = shop.config(["true"], name="quick.yaml")
    code = f"from flows.monthly_drill import monthly_drill; monthly_drill(config_path={hanging!r})"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    first = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def in_the_test() -> RunRecord | None:
            records = shop.records("drill")
            if records and records[-1].steps and records[-1].steps[-1].name == "integration test":
                return records[-1]
            return None

        killed = _wait("the first drill to reach its integration test", in_the_test)
        # A second drill of the same sandbox refuses at once, naming the first.
        with pytest.raises(LockHeld, match=f"the sandbox .* is locked by .*{killed.run_id}"):
            monthly_drill(config_path=quick)
        os.kill(first.pid, 9)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    _wait("the integration test to die with the drill", lambda: not _sleepers("307"), 30)

    [record] = [r for r in shop.records("drill") if r.id == killed.id]
    assert record.status == "running"  # not closed yet: the process died
    assert record.steps[-1].name == "integration test" and record.steps[-1].outcome == "running"
    assert shop.sandbox_databases() == [shop.sandboxed]  # what the killed drill left

    result = monthly_drill(config_path=quick)

    assert result["markers_lost"] == 4
    assert shop.sandbox_databases() == [] and shop.fingerprints() == before
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(str(killed.run_id))).state
    assert state is not None and state.type.value == "CRASHED"
    # The next drill closed the killed one's record: failed, at the step it died in.
    [record] = [r for r in shop.records("drill") if r.id == killed.id]
    assert record.status == "failed" and record.failed_step == "integration test"
    assert f"pid {record.pid}" in (record.error or "") and "died" in (record.error or "")
    assert record.steps[-1].outcome == "failed"


def _git_config(shop: Shop, also: dict[str, Any] | None = None) -> str:
    """dr.yaml committed in a git checkout of its own (the recovery test restores it), with
    the systems ``also`` declared beside the shop's."""
    base = shop.base / "cfg"
    base.mkdir()
    declared = yaml.safe_load(Path(shop.config()).read_text())
    declared["systems"].update(also or {})
    (base / "dr.yaml").write_text(yaml.safe_dump(declared))
    for args in (["init", "-q"], ["add", "dr.yaml"]):
        subprocess.run(["git", "-C", str(base), *args], check=True)
    subprocess.run(
        ["git", "-C", str(base), "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "c"],
        check=True,
    )
    return str(base / "dr.yaml")


def _refs(checkout: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "show-ref", "--head"], capture_output=True, text=True
    ).stdout


def _restore_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("dr-config-restore-*"))


def test_the_quarterly_test_restores_everything_from_backups_and_compares_with_last_quarter(
    shop: Shop,
) -> None:
    before = shop.fingerprints()
    # The configuration's own system: restored from its newest bundle, not from the checkout
    # (and refused when named, at the end: the test restores databases by name).
    settings = {"engine": "git", "git": {"url": str(shop.base / "cfg")}}
    config = _git_config(shop, {"settings": {**settings, "repositories": ["primary"]}})
    checkout = shop.base / "cfg"
    head = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    bundled = backup_config(system="settings", config_path=config, retention=False)
    production, work_dirs = _refs(checkout), _restore_dirs()

    first = quarterly_recovery_test(config_path=config, performance_seconds=1)
    second = quarterly_recovery_test(config_path=config, performance_seconds=1)

    assert shop.sandbox_databases() == [] and shop.fingerprints() == before
    assert _refs(checkout) == production and _restore_dirs() == work_dirs
    rows = {r["system"]: r for r in first["restored"]}
    assert (
        rows["shop"]["outcome"] == "ok" and "3200 rows as in the manifest" in rows["shop"]["detail"]
    )
    assert rows["settings"]["outcome"] == "ok" and rows["settings"]["engine"] == "git"
    assert rows["settings"]["backup"] == bundled["backup_id"]
    assert "consistent_point" not in rows["settings"]  # not a database: no part of the RPO
    [measured] = first["performance"]
    assert measured["tps"] > 0 and measured["workload"] == "pgbench --select-only"
    assert measured["previous_tps"] is None
    assert second["performance"][0]["previous_tps"] == measured["tps"]
    records = shop.records("recovery-test")
    assert [r.status for r in records] == ["completed", "completed"]
    steps = {s.name: s for s in records[-1].steps}
    restore = steps["restore the configuration of settings from its newest backup"]
    assert restore.outcome == "ok" and bundled["backup_id"] in restore.detail
    found = steps["find the run's commit in the restored configuration"]
    assert found.outcome == "ok" and f"commit {head[:12]} in the backup of settings" in found.detail
    assert "restore the configuration from git" not in steps
    assert records[-1].steps[-1].name == "tear down the sandbox"
    configuration = records[-1].results["configuration"]
    assert configuration["source"] == "backup" and configuration["found_in"] == "settings"
    assert configuration["commit"] == head == records[-1].config["commit"]
    assert 0 < configuration["seconds"] <= records[-1].measurements["rto_seconds"]
    report = (shop.base / "primary" / "runs" / f"{records[-1].id}.report.md").read_text()
    assert "Full recovery test" in report and "previous quarter" in report
    assert "the configuration too, from its newest backup" in report
    found_in = f"Commit {head[:12]}, which this run's dr.yaml came from, is in the backup of"
    assert f"{found_in} settings" in report and "dr.yaml there is the file the run read" in report
    assert "The configuration took " in report and " RTO." in report
    with pytest.raises(ConfigError, match="'settings' is not a database"):
        quarterly_recovery_test(systems=["settings"], config_path=config, performance_seconds=1)


def test_a_damaged_configuration_bundle_fails_the_quarterly_test_saying_why(shop: Shop) -> None:
    before = shop.fingerprints()
    settings = {
        "engine": "git",
        "git": {"url": str(shop.base / "cfg")},
        "repositories": ["primary"],
    }
    config = _git_config(shop, {"settings": settings})
    backup_config(system="settings", config_path=config, retention=False)
    catalog = ConfigCatalog(Repository(LocalStore(shop.base / "primary")), "settings")
    stored = shop.base / "primary" / catalog.find().manifest.bundle.key  # type: ignore[union-attr]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    with pytest.raises(RestoreVerificationFailed, match=r"configuration of settings: .*sha256"):
        quarterly_recovery_test(config_path=config, performance_seconds=1)

    assert shop.sandbox_databases() == [] and shop.fingerprints() == before
    [record] = shop.records("recovery-test")
    assert record.status == "failed"
    steps = {s.name: s for s in record.steps}
    restore = steps["restore the configuration of settings from its newest backup"]
    assert restore.outcome == "failed" and "sha256" in restore.detail
    assert steps["find the run's commit in the restored configuration"].outcome == "failed"
    assert steps["restore shop/" + shop.database].outcome == "ok"  # the databases still were
    assert record.steps[-1].name == "tear down the sandbox" and record.steps[-1].outcome == "ok"
    report = (shop.base / "primary" / "runs" / f"{record.id}.report.md").read_text()
    assert "FAILED" in report
    assert "**The configuration was not recovered from its backups**" in report
    failed = "step 'restore the configuration of settings from its newest backup' failed: "
    assert failed in report
    assert restore.detail in report  # the checksum the bundle failed, in the report's own words


def test_a_commit_made_after_the_newest_configuration_backup_is_not_found_in_it(
    tmp_path: Path,
) -> None:
    checkout = tmp_path / "cfg"
    checkout.mkdir()
    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@x"]
    (checkout / "dr.yaml").write_text("systems: {}\n")
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "add", "dr.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    catalog = ConfigCatalog(Repository(LocalStore(tmp_path / "backups")), "settings")
    bundle_config(GitRemote.parse(str(checkout)), catalog, DEFAULT_REFS)
    clone = tmp_path / "work" / "settings"
    restore_clone(catalog, catalog.find(), clone)

    found = config_find_commit.fn({"settings": str(clone)}, config_version(checkout / "dr.yaml"))
    assert found["system"] == "settings" and found["matches_the_run"] and found["files"] == 1

    (checkout / "dr.yaml").write_text("systems: {}\n# changed after the backup\n")
    subprocess.run([*git, "commit", "-qam", "later"], check=True)
    later = config_version(checkout / "dr.yaml")
    with pytest.raises(RestoreVerificationFailed, match=f"commit {later['commit'][:12]}.* none"):
        config_find_commit.fn({"settings": str(clone)}, later)


def test_a_failed_quarterly_test_still_tears_the_sandbox_down(shop: Shop) -> None:
    before = shop.fingerprints()
    checks = shop.base / "checks.sql"
    checks.write_text("SELECT id FROM orders WHERE id < 3;\n")  # rows: the check fails
    config = Path(shop.config())
    config.write_text(
        config.read_text().replace(
            "    repositories: [primary]\n",
            f"    repositories: [primary]\n    checks_file: {checks}\n",
        )
    )

    with pytest.raises(RestoreVerificationFailed, match="shop/"):
        quarterly_recovery_test(config_path=str(config), performance_seconds=1)

    assert shop.sandbox_databases() == [] and shop.fingerprints() == before
    [record] = shop.records("recovery-test")
    assert record.status == "failed"
    # No engine: git system: the configuration comes from the checkout, and the report says so
    # (this dr.yaml is in none, so that fails too).
    assert record.results["configuration"]["source"] == "checkout"
    report = (shop.base / "primary" / "runs" / f"{record.id}.report.md").read_text()
    assert "declares no `engine: git` system" in report and "not from a backup" in report
    assert record.steps[-1].name == "tear down the sandbox" and record.steps[-1].outcome == "ok"
    assert "removed drill_shop_" in record.steps[-1].detail
