"""Backups and restores on a real PostgreSQL 18 server, compared row by row."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dr_runbooks.errors import ChecksumMismatch, DumpFailed
from dr_runbooks.postgres import backup as pg_backup
from dr_runbooks.postgres import checks, drill_data, restore
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.repository import MANIFEST, MARKER, Repository
from dr_runbooks.storage import LocalStore
from tests.pg_helpers import database_names, run_sql_file, table_fingerprints
from tests.shared_data import shared_data


def _restore(
    conninfo: ConnInfo,
    repo: Repository,
    backup_id: str | None,
    system: str,
    database: str,
    target: str,
) -> pg_backup.FetchedBackup:
    backup = repo.find("postgres", system, database, backup_id=backup_id)
    fetched = pg_backup.fetch_backup(repo, backup)
    restore.ensure_roles(conninfo, fetched.roles)
    assert fetched.settings is not None
    restore.prepare_database(conninfo, target, fetched.settings)
    restore.pg_restore(conninfo, target, fetched.dump, jobs=2)
    restore.finish_database(conninfo, target, fetched.settings)
    fetched.cleanup()
    return fetched


def test_generated_database_round_trip(pg_server: ConnInfo, make_database, tmp_path: Path) -> None:
    source = make_database("gen")
    with pg_server.connect(dbname="postgres") as conn:
        conn.execute(f"DROP DATABASE {source}")
    drill_data.seed_application(pg_server, source, rows=6000)
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = pg_backup.backup_database(pg_server, source, "sys", repo)

    assert manifest.tables == {
        "public.dr_drill_markers": 1,
        "public.order_items": 2400,
        "public.orders": 2400,
        "public.users": 1200,
    }
    assert [o.name for o in manifest.objects] == ["data.dump.zst", "roles.json"]
    assert manifest.started <= manifest.consistent_point <= manifest.finished
    assert manifest.server_version and manifest.server_version.startswith("18")
    assert manifest.details["database_settings"]["settings"] == [
        {"role": None, "config": ["statement_timeout=5min"]}
    ]
    assert repo.verify_objects(repo.find("postgres", "sys", source)) == []

    target = f"{source}__copy"
    _restore(pg_server, repo, manifest.id, "sys", source, target)
    assert table_fingerprints(pg_server, target) == table_fingerprints(pg_server, source)
    assert drill_data.database_setting(pg_server, target, "statement_timeout") == "5min"
    with pg_server.connect(dbname="postgres") as conn:
        granted = conn.execute(
            "SELECT has_database_privilege('app_reader', %s, 'CONNECT')", (target,)
        ).fetchone()
    assert granted == (True,)


def test_pagila_round_trip(pg_server: ConnInfo, make_database, tmp_path: Path) -> None:
    schema = shared_data("devrimgunduz-pagila", "pagila-schema.sql")
    data = shared_data("devrimgunduz-pagila", "pagila-data.sql")
    source = make_database("pagila")
    run_sql_file(pg_server, source, schema)
    run_sql_file(pg_server, source, data)
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = pg_backup.backup_database(pg_server, source, "pagila", repo)
    assert manifest.tables["public.rental"] == 16044
    assert manifest.tables["public.film"] == 1000

    target = f"{source}__copy"
    _restore(pg_server, repo, None, "pagila", source, target)
    before, after = table_fingerprints(pg_server, source), table_fingerprints(pg_server, target)
    assert len(before) >= 21
    assert after == before


def test_counts_come_from_the_dumps_snapshot(
    pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    """Writers keep inserting during the backup; the manifest's counts are the dump's."""
    source = make_database("busy")
    with pg_server.connect(dbname=source) as conn:
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, payload text)")
        conn.execute(
            "INSERT INTO events (payload) SELECT md5(g::text) || repeat('x', 200) "
            "FROM generate_series(1, 200000) g"
        )
    stop = threading.Event()
    inserted = [0]

    def writer() -> None:
        with pg_server.connect(dbname=source) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO events (payload) VALUES ('concurrent')")
                inserted[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        repo = Repository(LocalStore(tmp_path / "repo"))
        manifest = pg_backup.backup_database(pg_server, source, "busy", repo)
    finally:
        stop.set()
        thread.join()
    assert inserted[0] > 0
    target = f"{source}__copy"
    _restore(pg_server, repo, manifest.id, "busy", source, target)
    assert checks.table_counts(pg_server, target) == manifest.tables
    assert manifest.tables["public.events"] < 200000 + inserted[0]


def test_dump_of_unreadable_table_fails_and_leaves_nothing(
    pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    source = make_database("perm")
    with pg_server.connect(dbname=source) as conn:
        conn.execute("DROP ROLE IF EXISTS dr_limited")
        conn.execute("CREATE ROLE dr_limited LOGIN")
        conn.execute("CREATE TABLE open_data (id int)")
        conn.execute("CREATE TABLE secret_data (id int)")
        conn.execute("GRANT SELECT ON open_data TO dr_limited")
    limited = ConnInfo(host=pg_server.host, port=pg_server.port, user="dr_limited", dbname=source)
    repo = Repository(LocalStore(tmp_path / "repo"))
    with pytest.raises(
        DumpFailed, match=r"pg_dump exited 1: .*permission denied for table secret_data"
    ):
        pg_backup.backup_database(limited, source, "perm", repo)
    assert repo.backups("postgres") == []
    leftovers = [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]
    assert leftovers == []


def test_dump_killed_mid_way_fails_and_leaves_nothing(
    pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    source = make_database("killed")
    with pg_server.connect(dbname=source) as conn:
        conn.execute("CREATE TABLE big (id bigint, payload text)")
        conn.execute(
            "INSERT INTO big SELECT g, md5(g::text) || repeat(md5((g*3)::text), 20) "
            "FROM generate_series(1, 400000) g"
        )
    repo = Repository(LocalStore(tmp_path / "repo"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pg_backup.backup_database(pg_server, source, "killed", repo)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    killed = False
    deadline = time.monotonic() + 30
    with pg_server.connect(dbname="postgres") as conn:
        while not killed and time.monotonic() < deadline and thread.is_alive():
            row = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'pg_dump' AND datname = %s AND query LIKE 'COPY%%'",
                (source,),
            ).fetchone()
            killed = bool(row and row[0])
            time.sleep(0.01)
    thread.join()
    assert killed, "the test never saw pg_dump's COPY to terminate it"
    assert len(errors) == 1 and isinstance(errors[0], DumpFailed)
    message = str(errors[0])
    assert message.startswith("pg_dump exited 1: ")
    # libpq reports the termination either with the server's FATAL or as a closed connection.
    assert (
        "terminating connection due to administrator command" in message
        or "server closed the connection unexpectedly" in message
    ), message
    assert repo.backups("postgres") == []
    assert [p for p in (tmp_path / "repo").rglob("*") if p.is_file()] == []


def test_corrupted_object_is_refused_before_anything_is_restored(
    pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    source = make_database("corrupt")
    with pg_server.connect(dbname=source) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g")
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = pg_backup.backup_database(pg_server, source, "corrupt", repo)
    data = next((tmp_path / "repo").rglob("data.dump.zst"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    backup = repo.find("postgres", "corrupt", source)
    with pytest.raises(ChecksumMismatch, match=r"data\.dump\.zst is corrupt"):
        pg_backup.fetch_backup(repo, backup)
    assert repo.verify_objects(backup) and "data.dump.zst" in repo.verify_objects(backup)[0]
    assert manifest.id == backup.id


def test_roles_are_recreated_on_a_server_that_lacks_them(
    pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    source = make_database("roles")
    with pg_server.connect(dbname=source) as conn:
        conn.execute("DROP ROLE IF EXISTS dr_owner_role")
        conn.execute("DROP ROLE IF EXISTS dr_group_role")
        conn.execute("CREATE ROLE dr_group_role NOLOGIN")
        conn.execute("CREATE ROLE dr_owner_role LOGIN CREATEDB IN ROLE dr_group_role")
        conn.execute("CREATE TABLE owned (id int)")
        conn.execute("ALTER TABLE owned OWNER TO dr_owner_role")
    repo = Repository(LocalStore(tmp_path / "repo"))
    pg_backup.backup_database(pg_server, source, "roles", repo)
    with pg_server.connect(dbname="postgres") as conn:
        conn.execute(f"DROP DATABASE {source} WITH (FORCE)")
        conn.execute("DROP ROLE dr_owner_role")
        conn.execute("DROP ROLE dr_group_role")
    target = f"{source}__copy"
    _restore(pg_server, repo, None, "roles", source, target)
    with pg_server.connect(dbname=target) as conn:
        owner = conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'"
        ).fetchone()
        attrs = conn.execute(
            "SELECT rolcanlogin, rolcreatedb, rolpassword IS NULL FROM pg_authid "
            "WHERE rolname = 'dr_owner_role'"
        ).fetchone()
        member = conn.execute(
            "SELECT pg_has_role('dr_owner_role', 'dr_group_role', 'MEMBER')"
        ).fetchone()
    assert owner == ("dr_owner_role",)
    assert attrs == (True, True, True)
    assert member == (True,)


def test_a_folder_without_manifest_is_not_a_backup(
    pg_server: ConnInfo, make_database, tmp_path: Path
) -> None:
    source = make_database("nomani")
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = pg_backup.backup_database(pg_server, source, "s", repo)
    prefix = repo.prefix("postgres", "s", source, manifest.id)
    assert not repo.store.has(prefix + MARKER)
    repo.store.delete([prefix + MANIFEST])
    assert repo.backups("postgres") == []
    assert database_names(pg_server, f"{source}\\_\\_%") == []
