"""The Azure engine (``dr_runbooks.azure``) without Prefect: real SDK clients against the
loopback endpoint, a test ``TokenCredential``, local files."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.dns import DnsManagementClient
from pymongo.errors import OperationFailure

from dr_runbooks.azure import dns, flexible, network
from dr_runbooks.azure.commands import run_command
from dr_runbooks.azure.errors import translated
from dr_runbooks.azure.evidence import make_immutable, preserve, verify_evidence
from dr_runbooks.azure.gitlog import changes_since
from dr_runbooks.azure.passwords import new_password
from dr_runbooks.azure.records import RecordBook
from dr_runbooks.azure.rotation import set_mongodb_password
from dr_runbooks.errors import (
    AzureRequestFailed,
    CommandFailed,
    ConcurrentChange,
    ConfigError,
    ConnectionFailed,
    ServerUnreachable,
)
from dr_runbooks.mongo.connection import MongoConnInfo
from dr_runbooks.redaction import redact
from dr_runbooks.storage import LocalStore
from tests.azure.landscape import (
    DNS_RG,
    DR_RG,
    PRIMARY_RG,
    PRIMARY_SERVER,
    ZONE,
    record_id,
    seed,
    server_id,
    site,
)
from tests.azure_api import AzureApi, StaticTokenCredential


@pytest.fixture
def api() -> AzureApi:
    with AzureApi() as endpoint:
        seed(endpoint)
        yield endpoint


def _dns(api: AzureApi, credential: StaticTokenCredential | None = None) -> DnsManagementClient:
    return site(api, resource_group=DR_RG, region="westus2").get_dns_client(
        credential or api.credential()
    )


# -- the block's factories and the test seam ----------------------------------------------------


def test_factories_reach_the_endpoint_with_a_test_credential(api: AzureApi) -> None:
    credential = api.credential()
    dr_site = site(api, resource_group=DR_RG, region="westus2")
    assert not dr_site.get_resource_client(credential).resource_groups.check_existence(DR_RG)
    group = dr_site.get_resource_client(credential).resource_groups.get(PRIMARY_RG)
    assert group.location == "eastus"
    assert credential.scopes and all(s == api.arm_scope for s in credential.scopes)
    secrets = dr_site.get_secret_client(credential)
    secrets.set_secret("probe", "v")
    assert api.vault.latest("probe") is not None


def test_a_wrong_token_is_refused_as_bad_credentials(api: AzureApi) -> None:
    with pytest.raises(ConnectionFailed, match="AuthenticationFailed"), translated("reading"):
        _dns(api, StaticTokenCredential("not-the-token")).record_sets.get(DNS_RG, ZONE, "www", "A")


def test_errors_are_translated_with_azure_s_code(api: AzureApi) -> None:
    client = site(api, resource_group=DR_RG, region="westus2", retry_total=1).get_resource_client(
        api.credential()
    )
    with (
        pytest.raises(AzureRequestFailed, match="reading the group: ResourceGroupNotFound"),
        translated("reading the group"),
    ):
        client.resource_groups.get("rg-missing")
    api.fail("GET", "resourceGroups/rg-dot-copilot-prod$", 503, times=5)
    with (
        pytest.raises(ServerUnreachable, match="reading the group: ServiceUnavailable"),
        translated("reading the group"),
    ):
        client.resource_groups.get(PRIMARY_RG)


# -- DNS ------------------------------------------------------------------------------------------


def test_cutover_changes_a_record_only_as_the_plan_saw_it(api: AzureApi) -> None:
    client = _dns(api)
    planned = dns.read_a_record(client, DNS_RG, ZONE, "www")
    assert planned.addresses == ("20.50.1.10",) and planned.ttl == 300

    record, changed = dns.cut_over(client, DNS_RG, planned, ["20.60.2.10"], None)
    assert changed and record.addresses == ("20.60.2.10",) and record.ttl == 300
    # Again (a run started again): already done, nothing written.
    puts = len(api.calls_to("PUT", "/A/www$"))
    assert dns.cut_over(client, DNS_RG, planned, ["20.60.2.10"], None)[1] is False
    assert len(api.calls_to("PUT", "/A/www$")) == puts

    # Someone else moved it: the stale plan is refused, nothing overwritten.
    api.seed(
        record_id("www"), {"properties": {"TTL": 300, "ARecords": [{"ipv4Address": "1.2.3.4"}]}}
    )
    with pytest.raises(ConcurrentChange, match=r"www\.dotcopilot\.com changed since"):
        dns.cut_over(client, DNS_RG, planned, ["20.60.2.10"], None)
    assert dns.read_a_record(client, DNS_RG, ZONE, "www").addresses == ("1.2.3.4",)


def test_restore_puts_back_addresses_and_ttl_and_removes_a_record_that_was_not_there(
    api: AzureApi,
) -> None:
    client = _dns(api)
    planned = dns.read_a_record(client, DNS_RG, ZONE, "api")
    dns.cut_over(client, DNS_RG, planned, ["20.60.2.11"], 5)
    assert dns.restore_a_record(client, DNS_RG, planned) == ("20.50.1.11 TTL 60", True)
    assert dns.restore_a_record(client, DNS_RG, planned)[1] is False

    absent = dns.read_a_record(client, DNS_RG, ZONE, "status")
    assert not absent.exists
    dns.cut_over(client, DNS_RG, absent, ["20.60.2.12"], 60)
    assert dns.restore_a_record(client, DNS_RG, absent) == ("(no record)", True)
    assert not dns.read_a_record(client, DNS_RG, ZONE, "status").exists


# -- NSGs -----------------------------------------------------------------------------------------


def test_deny_all_rules_and_the_rule_they_displace(api: AzureApi) -> None:
    client = site(api, resource_group=PRIMARY_RG, region="eastus").get_network_client(
        api.credential()
    )
    rules = network.read_rules(client, PRIMARY_RG, "nsg-dot-copilot")
    blocker = network.rule_at_priority(rules, "Inbound")
    assert blocker is not None and blocker["name"] == "AllowHTTPS"
    assert network.rule_at_priority(rules, "Outbound") is None
    # Azure refuses a second rule at priority 100 in one direction.
    with pytest.raises(AzureRequestFailed, match="SecurityRuleConflict"):
        network.put_rule(
            client,
            PRIMARY_RG,
            "nsg-dot-copilot",
            "DenyAll-Inbound",
            network.deny_all_properties("Inbound"),
        )
    network.put_rule(
        client,
        PRIMARY_RG,
        "nsg-dot-copilot",
        "DenyAll-Outbound",
        network.deny_all_properties("Outbound"),
    )
    rules = network.read_rules(client, PRIMARY_RG, "nsg-dot-copilot")
    assert network.deny_all_in_place(rules, "Outbound")
    assert not network.deny_all_in_place(rules, "Inbound")
    network.delete_rule(client, PRIMARY_RG, "nsg-dot-copilot", "DenyAll-Outbound")
    network.delete_rule(client, PRIMARY_RG, "nsg-dot-copilot", "DenyAll-Outbound")  # gone: fine
    assert [r["name"] for r in network.read_rules(client, PRIMARY_RG, "nsg-dot-copilot")] == [
        "AllowHTTPS"
    ]


# -- flexible servers -----------------------------------------------------------------------------


def test_restores_are_checked_before_anything_is_created(api: AzureApi) -> None:
    client = site(api, resource_group=PRIMARY_RG, region="eastus").get_postgres_client(
        api.credential()
    )
    source = flexible.read_server(client, PRIMARY_RG, PRIMARY_SERVER)
    assert source is not None and source.geo_redundant_backup and source.ready
    assert flexible.latest_backup_time(client, PRIMARY_RG, PRIMARY_SERVER) == datetime(
        2026, 11, 28, 5, tzinfo=UTC
    )
    point = datetime(2026, 11, 27, 12, tzinfo=UTC)
    with pytest.raises(ConfigError, match="stays in eastus"):
        flexible.restore_server(
            client,
            PRIMARY_RG,
            "x",
            "PointInTimeRestore",
            source,
            "westus2",
            point,
            timeout=5,
            poll_seconds=0.01,
        )
    server, created = flexible.restore_server(
        client,
        PRIMARY_RG,
        "db-pitr",
        "PointInTimeRestore",
        source,
        "eastus",
        point,
        timeout=5,
        poll_seconds=0.01,
    )
    assert created and server.ready and server.source_server_id == source.id
    # Again: found, not created twice.
    assert flexible.restore_server(
        client,
        PRIMARY_RG,
        "db-pitr",
        "PointInTimeRestore",
        source,
        "eastus",
        point,
        timeout=5,
        poll_seconds=0.01,
    ) == (server, False)
    assert len(api.operations.on(server_id(PRIMARY_RG, "db-pitr"))) == 1
    # A server of that name restored from something else is refused.
    with pytest.raises(ConfigError, match="was not restored from"):
        flexible.restore_server(
            client,
            PRIMARY_RG,
            PRIMARY_SERVER,
            "PointInTimeRestore",
            server,
            "eastus",
            point,
            timeout=5,
            poll_seconds=0.01,
        )


# -- records --------------------------------------------------------------------------------------


def test_a_record_is_resumed_by_kind_and_refuses_another_kind(tmp_path: Path) -> None:
    book = RecordBook(LocalStore(tmp_path / "records"), "failover", "shop")
    record, resumed = book.begin("failover", "run-1")
    assert not resumed and record.untouched
    record.captured["dns"] = [{"name": "www"}]
    record.change("DNS www → 20.60.2.10")
    book.save(record)

    again, resumed = book.begin("failover", "run-2")
    assert resumed and again.runs == ["run-1", "run-2"]
    assert again.captured["dns"] == [{"name": "www"}] and not again.untouched
    with pytest.raises(ConfigError, match="unfinished failover of shop"):
        book.begin("failback", "run-3")

    key = book.finish(again, "completed")
    assert book.active() is None and key.startswith("failover/shop/history/")
    assert [r.status for r in book.history()] == ["completed"]
    assert book.begin("failback", "run-4")[1] is False


def test_an_unreadable_record_is_reported_not_overwritten(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "records")
    store.create()
    store.put_bytes("failover/shop/active.json", b"{not json")
    with pytest.raises(Exception, match="cannot be read"):
        RecordBook(store, "failover", "shop").begin("failover", None)
    assert store.read_bytes("failover/shop/active.json") == b"{not json"


# -- evidence -------------------------------------------------------------------------------------


def test_evidence_hashes_every_file_and_detects_tampering(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "nginx").mkdir(parents=True)
    (logs / "nginx" / "access.log").write_text("GET / 200\n" * 100)
    (logs / "app.log").write_text("login admin\n")
    store = LocalStore(tmp_path / "evidence")
    manifest = preserve(store, "shop", "case-1", [str(logs), str(tmp_path / "gone")])

    item, gone = manifest.items
    assert gone.missing and gone.archive is None
    assert {f["name"] for f in item.files} == {"logs/app.log", "logs/nginx/access.log"}
    assert item.archive is not None and item.sha256 is not None
    with tarfile.open(fileobj=io.BytesIO(store.read_bytes(item.archive))) as tar:
        assert tar.extractfile("logs/app.log").read() == b"login admin\n"  # type: ignore[union-attr]
    expected = {item.archive: item.sha256}
    assert [row["ok"] for row in verify_evidence(store, expected)] == [True]

    # A second run of the case keeps what is there (and reads its hash back).
    (logs / "app.log").write_text("changed after the first run\n")
    again = preserve(store, "shop", "case-1", [str(logs)])
    assert again.items[0].sha256 == item.sha256

    store.put_bytes(item.archive, b"tampered")
    [row] = verify_evidence(store, expected)
    assert not row["ok"] and "custody record" in row["detail"]


def test_local_evidence_is_made_read_only(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "evidence")
    store.create()
    store.put_bytes("shop/c/01-logs.tar.gz", b"x")
    assert make_immutable(store, ["shop/c/01-logs.tar.gz"]) == "1 file(s) made read-only"
    mode = (tmp_path / "evidence" / "shop/c/01-logs.tar.gz").stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


# -- passwords, commands, git ---------------------------------------------------------------------


def test_new_passwords_are_strong_distinct_and_redacted() -> None:
    values = {new_password() for _ in range(50)}
    assert len(values) == 50
    for value in values:
        assert len(value) == 32 and value.isalnum()
        assert any(c.isupper() for c in value) and any(c.isdigit() for c in value)
        assert redact(f"password is {value}") == "password is ***"
    with pytest.raises(ValueError):
        new_password(8)


def test_a_command_that_hangs_is_killed_at_its_timeout(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_command(["sh", "-c", "echo one; echo two"], 10, on_line=lines.append)
    assert result.returncode == 0 and lines == ["one", "two"]
    with pytest.raises(CommandFailed, match=r"exited 3 .*: bad"):
        run_command(["sh", "-c", "echo bad; exit 3"], 10)
    pidfile = tmp_path / "grandchild.pid"
    with pytest.raises(CommandFailed, match=r"did not finish within 1\.0 s and was killed"):
        # A grandchild would outlive a kill of the shell alone.
        run_command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 1)
    assert _gone(int(pidfile.read_text()))
    with pytest.raises(CommandFailed, match="cannot run"):
        run_command(["/nonexistent/deploy.sh"], 5)


def _gone(pid: int, deadline: float = 10.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except (ProcessLookupError, FileNotFoundError):
            return True
        if state == "Z":  # killed, waiting to be reaped by init
            return True
        time.sleep(0.05)
    return False


def test_git_changes_refuse_an_unknown_known_good(tmp_path: Path) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(ConfigError, match="is not a commit"):
        changes_since(str(tmp_path), "v9.9.9")
    with pytest.raises(ConfigError, match="not a git checkout"):
        changes_since(str(tmp_path / "nowhere"), "HEAD")


class _RecordingMongo:
    """A client that records the commands it is sent (the factory seam of MongoConnInfo)."""

    def __init__(self, fail_code: int | None = None) -> None:
        self.commands: list[tuple[str, str, Any, dict[str, Any]]] = []
        self.fail_code = fail_code

    def __getitem__(self, database: str) -> Any:
        client = self

        class Database:
            def command(self, name: str, value: Any, **options: Any) -> dict[str, Any]:
                client.commands.append((database, name, value, options))
                if client.fail_code is not None:
                    raise OperationFailure("User app@admin not found", code=client.fail_code)
                return {"ok": 1}

        return Database()

    def close(self) -> None:
        pass


def test_mongodb_users_get_their_new_password_through_update_user() -> None:
    password = new_password()
    fake = _RecordingMongo()
    info = MongoConnInfo(hosts=("m1:27017",), user="root").with_factory(lambda: fake)
    set_mongodb_password(info, "app", "admin", password)
    assert fake.commands == [("admin", "updateUser", "app", {"pwd": password})]

    missing = MongoConnInfo(hosts=("m1:27017",)).with_factory(lambda: _RecordingMongo(11))
    with pytest.raises(ConfigError, match="MongoDB user app does not exist in admin"):
        set_mongodb_password(missing, "app", "admin", password)


def test_what_azure_answered_for_good_is_not_retried() -> None:
    from prefect.states import Failed

    from tasks._runtime import transient_only

    for error, retried in (
        (ServerUnreachable("creating: ServiceUnavailable: try later"), True),
        (AzureRequestFailed("creating: InvalidTemplate: bad"), False),
        (ConcurrentChange("www changed since the plan"), False),
        (CommandFailed("./deploy.sh exited 1"), False),
        (ConnectionFailed("cannot sign in to Azure"), False),
    ):
        assert transient_only(None, None, Failed(data=error)) is retried, error
