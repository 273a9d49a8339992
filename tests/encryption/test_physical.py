"""Encrypted physical backups on a real server that archives its WAL through the shared
``dr wal push``, as its own OS user: WAL and base backups stored as age files (the standard
tools decrypt them, and recover the cluster to a point in time as docs/encryption.md says),
stored checksums checked without any key, a point-in-time restore with the identity and one
without it, a copy from a clear repository into an encrypting one, the daily verification
and ``dr status``, and the identity never in argv, the environment, a log or
``postgresql.auto.conf``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard
from prefect.settings import PREFECT_API_URL

from dr_runbooks import crypto
from dr_runbooks.errors import ChecksumMismatch, RestoreVerificationFailed
from dr_runbooks.postgres import basebackup, pitr
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import pg_tool
from dr_runbooks.postgres.wal.archive import WalHeader, list_archive, read_header, verify
from dr_runbooks.postgres.wal.names import wal_key
from dr_runbooks.postgres.wal.spool import Spool, run_pusher
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore
from flows.backup_postgres import backup_postgres
from flows.backup_postgres_physical import backup_postgres_physical
from flows.verify_backups import verify_backups
from tests.encryption.conftest import MARKER, ROWS, Key, count, make_key, seed
from tests.postgres.archiving import OS_USER, ArchivingServer, Writer, as_user, shared_dr, world_dir
from tests.postgres.conftest import Clusters, dr_wal, free_port, json_of
from tests.shared_data import REPO_ROOT

SYSTEM = "enc-db"
DOCS = REPO_ROOT / "docs" / "encryption.md"


@dataclass
class World:
    server: ArchivingServer
    base: Path
    vault: Path
    plain: Path
    config: Path
    main: Key
    offline: Key
    full: str
    incremental: str
    copied: str
    target: datetime
    rows_at_target: int
    #: A segment as it was in pg_wal, copied once archived.
    segment: Path

    @property
    def repository(self) -> Repository:
        """The encrypting repository, as a reader without any identity sees it."""
        return Repository(LocalStore(self.vault), "vault")


def config_text(
    vault: Path, plain: Path, datadir: Path, main: Key, offline: Key, identity: bool = True
) -> str:
    """``vault`` encrypts to both keys (and, with ``identity``, decrypts with ``main``'s file);
    ``plain`` stores in clear."""
    lines = [
        "objectives:",
        "  rpo:",
        "    database: 1h",
        "repositories:",
        "  vault:",
        "    type: local",
        f"    path: {vault}",
        f"    encrypt_to: [{main.recipient}, {offline.recipient}]",
    ]
    if identity:
        lines += ["    identity:", f"      file: {main.path}"]
    lines += [
        "  plain:",
        "    type: local",
        f"    path: {plain}",
        "systems:",
        f"  {SYSTEM}:",
        "    engine: postgres",
        "    physical: true",
        "    connection:",
        f"      host: {datadir}",
        "      user: postgres",
        "      dbname: postgres",
        "    repositories: [vault]",
    ]
    return "\n".join(lines) + "\n"


def dr(*args: str, config: Path | str = "", env: dict[str, str] | None = None):
    full = {k: v for k, v in os.environ.items() if k != crypto.IDENTITY_FILE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        env={
            **full,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "DR_CONFIG": str(config),
            "DR_WAL_PROGRAM": shared_dr(),
            "COLUMNS": "200",
            **(env or {}),
        },
    )


@pytest.fixture(scope="module")
def world(prefect_server: None) -> Iterator[World]:
    """A server archiving into ``vault`` (encrypt_to in dr.yaml: the push takes its recipients
    from there) and ``plain``; a full and an incremental base backup into ``vault``; rows
    written around a target time; then a full backup into ``plain``, in clear, copied into
    ``vault`` (encrypted on the way), and a logical one. The server keeps running."""
    os.environ.pop(crypto.IDENTITY_FILE_ENV, None)
    base = world_dir("dr-tests-encphys-")
    vault, plain = world_dir("dr-tests-encphys-vault-"), world_dir("dr-tests-encphys-plain-")
    keys = base / "keys"
    keys.mkdir(mode=0o700)  # root's: the cluster's OS user cannot read these
    main, offline = make_key(keys, "main"), make_key(keys, "offline")
    config = base / "dr.yaml"
    server = ArchivingServer(
        base, SYSTEM, "vault", archive_timeout=1, push_options=f"--repo plain --config {config}"
    )
    config.write_text(config_text(vault, plain, server.datadir, main, offline))
    config.chmod(0o644)
    previous = os.environ.get("DR_WAL_PROGRAM")
    os.environ["DR_WAL_PROGRAM"] = shared_dr()
    server.init()
    conninfo = server.start()
    writer = Writer(conninfo)
    try:
        seed(conninfo, "postgres")
        writer.create()
        full = json_of(
            dr("backup", "postgres", "--physical", "--system", SYSTEM, "--json", config=config)
        )
        time.sleep(0.5)
        incremental = backup_postgres_physical(
            system=SYSTEM, incremental=True, config_path=str(config), retention=False
        )
        assert incremental["kind"] == "physical-incremental", incremental
        # Rows before and after the target, written only now: archive_timeout = 1 switches
        # segments every second while anything is written, and the archiver must keep up.
        writer.start()
        time.sleep(1)
        mark = writer.mark()
        time.sleep(1)
        writer.stop()
        copied = backup_postgres_physical(
            system=SYSTEM, repositories=["plain", "vault"], config_path=str(config), retention=False
        )
        backup_postgres(system=SYSTEM, kind="full", config_path=str(config), retention=False)
        time.sleep(2.5)  # archive_timeout = 1: the last writes reach the archive
        segment = base / "saved-segment"
        for archived in reversed(list_archive(LocalStore(vault), SYSTEM)):
            live = server.datadir / "pg_wal" / archived.name
            if archived.wal.kind == "segment" and live.exists():
                segment = segment.with_name(archived.name)
                shutil.copyfile(live, segment)
                break
        else:
            raise AssertionError("no archived segment is still in pg_wal")
        yield World(
            server,
            base,
            vault,
            plain,
            config,
            main,
            offline,
            full["backup_id"],
            incremental["backup_id"],
            copied["backup_id"],
            mark.time,
            mark.rows,
            segment,
        )
    finally:
        writer.stop()
        server.stop()
        if previous is None:
            os.environ.pop("DR_WAL_PROGRAM", None)
        else:
            os.environ["DR_WAL_PROGRAM"] = previous
        for path in (base, vault, plain):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clusters() -> Iterator[Clusters]:
    """Restored clusters, stopped and removed after the test."""
    made = Clusters(world_dir("dr-tests-encphys-clusters-"))
    yield made
    made.stop_all()
    shutil.rmtree(made.base, ignore_errors=True)


def _stored(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def _readable_by_the_server(world: World, key: Key, name: str) -> Path:
    """A copy of ``key``'s identity file that only the server's OS user can read."""
    folder = world_dir("dr-tests-encphys-key-")
    copy = folder / name
    shutil.copyfile(key.path, copy)
    copy.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(copy, OS_USER)
    return copy


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# -- WAL ---------------------------------------------------------------------------------------


def test_archived_wal_is_encrypted_to_the_recipients_of_dr_yaml_and_checks_without_a_key(
    world: World,
) -> None:
    store = LocalStore(world.vault)
    archived = list_archive(store, SYSTEM)
    assert len(archived) > 5
    for found in archived:
        header = verify(store, found.key)  # the stored bytes against their sha256: no key
        assert header.recipients == [world.main.recipient, world.offline.recipient], found.key
        assert header.stored_sha256 is not None
        assert Path(store.root, found.key).stat().st_uid != 0  # the server's OS user pushed it
    # One push, one object for both of its repositories, encrypted to all their recipients.
    in_plain = read_header(LocalStore(world.plain), wal_key(SYSTEM, world.segment.name))
    assert in_plain.recipients == [world.main.recipient, world.offline.recipient]
    for path, content in _stored(world.vault):
        assert MARKER.encode() not in content, path
        assert world.main.identity.encode() not in content, path

    # Damage is told from a wrong key before any decryption, still without a key.
    victim = world.base / "damaged.zst"
    raw = bytearray(Path(store.root, wal_key(SYSTEM, world.segment.name)).read_bytes())
    raw[-100] ^= 0x01
    victim.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatch, match="damaged"):
        verify(LocalStore(world.base), "damaged.zst")


def test_the_standard_tools_decrypt_an_archived_segment(world: World) -> None:
    stored = world.vault / wal_key(SYSTEM, world.segment.name)
    if shutil.which("age") and shutil.which("zstd"):
        decrypted = subprocess.run(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                'tail -n +2 "$1" | age --decrypt --identity "$2" | zstd --decompress --stdout',
                "decrypt",
                str(stored),
                str(world.offline.path),
            ],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    else:  # without make standard-tools: the same format through pyrage
        raw = stored.read_bytes()
        body = raw[raw.index(b"\n") + 1 :]
        identity = crypto.Identity(world.offline.path.read_text(), "offline")
        decrypted = zstandard.ZstdDecompressor().decompress(
            crypto.decrypt_bytes(body, identity, "segment"), max_output_size=1 << 26
        )
    assert decrypted == world.segment.read_bytes()


def test_dr_wal_fetch_decrypts_only_with_an_identity_file(world: World) -> None:
    name = world.segment.name
    out = world_dir("dr-tests-encphys-fetch-")
    common = ("--system", SYSTEM, "--repo", str(world.vault))
    try:
        refused = dr_wal("fetch", name, str(out / "none"), *common)
        assert refused.returncode == 126  # stops a recovery instead of ending it early
        line = one_line(refused)
        assert world.main.recipient in line and world.offline.recipient in line
        assert not (out / "none").exists()

        as_key = dr_wal("fetch", name, str(out / "key"), *common, "--identity", world.main.identity)
        assert as_key.returncode == 126 and "never the key itself" in as_key.stderr
        assert world.main.identity not in as_key.stdout + as_key.stderr
        assert not (out / "key").exists()

        identity = _readable_by_the_server(world, world.offline, "offline.txt")
        try:
            fetched = dr_wal(
                "fetch", name, str(out / "ok"), *common, "--identity-file", str(identity)
            )
            assert fetched.returncode == 0, fetched.stderr
            assert (out / "ok").read_bytes() == world.segment.read_bytes()
        finally:
            shutil.rmtree(identity.parent, ignore_errors=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_an_ad_hoc_push_encrypts_to_its_own_recipients(world: World) -> None:
    repo, work = world_dir("dr-tests-encphys-adhoc-"), world_dir("dr-tests-encphys-seg-")
    try:
        segment = work / world.segment.name
        shutil.copyfile(world.segment, segment)
        segment.chmod(0o644)
        push = ("push", str(segment), "--system", "ad-hoc", "--repo", str(repo))
        pushed = dr_wal(*push, "--encrypt-to", world.offline.recipient)
        assert pushed.returncode == 0, pushed.stderr
        header = read_header(LocalStore(repo), wal_key("ad-hoc", segment.name))
        assert header.recipients == [world.offline.recipient]
        assert header.sha256 == hashlib.sha256(segment.read_bytes()).hexdigest()
        # PostgreSQL repeats a push whose outcome it did not see: no key needed to tell.
        again = dr_wal(*push, "--encrypt-to", world.offline.recipient)
        assert again.returncode == 0 and "already archived" in again.stderr
    finally:
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def test_a_push_in_clear_imports_no_cipher(tmp_path: Path) -> None:
    """``dr wal push`` runs once per segment: encryption costs nothing until it is asked for."""
    probe = (
        "import sys\n"
        "from cli.main import main\n"
        "sys.argv = ['dr', 'wal', 'push', sys.argv[1], '--system', 's', '--repo', sys.argv[2]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    print(exc.code)\n"
        "print('pyrage' in sys.modules, 'prefect' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "000000010000000000000001"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["1", "False", "False"], result.stderr


def test_a_pusher_leaves_for_one_with_new_recipients(tmp_path: Path) -> None:
    """A spool's pusher, busy for ever under load, must not keep pushing in clear once
    archive_command asks for encryption."""
    spool, wal_dir = Spool(tmp_path / "spool", "s"), tmp_path / "pg_wal"
    (wal_dir / "archive_status").mkdir(parents=True)
    (wal_dir / "000000010000000000000001").write_bytes(b"wal")
    (wal_dir / "archive_status" / "000000010000000000000001.ready").touch()
    pushed: list[Any] = []

    def push(path: Path, system: str, stores: Any, **options: Any) -> None:
        pushed.append((path.name, options.get("encrypt_to")))

    spool.prepare()
    spool.publish_settings("in clear")
    pusher = threading.Thread(
        target=run_pusher,
        args=(spool, wal_dir, []),
        kwargs={"push": push, "settings": "in clear", "idle_exit": 60},
    )
    pusher.start()
    deadline = time.monotonic() + 10
    while not (spool.done / "000000010000000000000001").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pushed == [("000000010000000000000001", None)]
    time.sleep(1.5)
    assert pusher.is_alive()  # the same settings: it stays
    spool.publish_settings("encrypted")
    pusher.join(timeout=5)
    assert not pusher.is_alive()


# -- base backups ------------------------------------------------------------------------------


def test_base_backups_are_encrypted_and_keep_no_file_checksums_in_clear(world: World) -> None:
    backups = {b.id: b for b in basebackup.base_backups(world.repository, SYSTEM)}
    assert set(backups) == {world.full, world.incremental, world.copied}
    assert backups[world.incremental].manifest.chain == [world.full, world.incremental]
    for backup in backups.values():
        manifest = backup.manifest
        data = manifest.object(basebackup.DATA)
        assert data.name == "base.tar.zst.age"
        assert data.encryption is not None
        assert data.encryption.recipients == [world.main.recipient, world.offline.recipient]
        assert not any(o.name == basebackup.PG_MANIFEST for o in manifest.objects)
        for entry in manifest.objects:  # the stored bytes against the manifest: no key
            stored = (world.vault / (backup.prefix + entry.name)).read_bytes()
            assert hashlib.sha256(stored).hexdigest() == entry.sha256, entry.name
        stripped = (world.vault / (backup.prefix + basebackup.INCREMENTAL_MANIFEST)).read_bytes()
        files = json.loads(stripped)["Files"]
        assert files and not any("Checksum" in f for f in files)
    for path, content in _stored(world.vault / "postgres" / SYSTEM / "base"):
        assert MARKER.encode() not in content, path


def test_a_backup_copied_from_a_clear_repository_is_encrypted_on_the_way(world: World) -> None:
    [clear] = [
        b
        for b in basebackup.base_backups(Repository(LocalStore(world.plain)), SYSTEM)
        if b.id == world.copied
    ]
    [sealed] = [
        b for b in basebackup.base_backups(world.repository, SYSTEM) if b.id == world.copied
    ]
    plain_tar = clear.manifest.object(basebackup.DATA)
    assert plain_tar.name == "base.tar.zst" and plain_tar.encryption is None
    assert clear.manifest.has(basebackup.PG_MANIFEST)  # in clear where nothing is encrypted
    sealed_tar = sealed.manifest.object(basebackup.DATA)
    # The same tar, encrypted: decrypted, it is byte for byte what the clear repository holds.
    identity = crypto.Identity(world.main.path.read_text(), "main")
    with open(world.vault / (sealed.prefix + sealed_tar.name), "rb") as handle:
        chunks = iter(lambda: handle.read(1 << 20), b"")
        digest = hashlib.sha256()
        for chunk in crypto.decrypt(chunks, identity, "copy"):
            digest.update(chunk)
    assert digest.hexdigest() == plain_tar.sha256


def _standard_tools_block() -> str:
    text = DOCS.read_text()
    marker = text.index("<!-- standard-tools-physical")
    match = re.search(r"```sh\n(.*?)```", text[marker:], re.DOTALL)
    assert match is not None, "docs/encryption.md lost its physical standard-tools block"
    return match.group(1)


def test_the_documented_standard_tools_recover_a_base_backup_to_the_target_time(
    world: World, clusters: Clusters
) -> None:
    if shutil.which("age") is None or shutil.which("zstd") is None:
        pytest.skip("age and zstd are not installed (make standard-tools)")
    [full] = [b for b in basebackup.base_backups(world.repository, SYSTEM) if b.id == world.full]
    pgdata, port = clusters.path("standard-tools"), free_port()
    values = {
        "BACKUP": str(world.vault / full.prefix),
        "WAL": str(world.vault / "postgres" / SYSTEM / "wal"),
        "IDENTITY": str(world.offline.path),
        "PGDATA": str(pgdata),
        "TARGET_TIME": f"'{world.target.isoformat()}'",
    }
    script = _standard_tools_block()
    for name, value in values.items():
        script, found = re.subn(rf"^{name}=.*$", f"{name}={value}", script, flags=re.MULTILINE)
        assert found == 1, name
    wal = Path(f"{pgdata}.wal")
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=300,
            env={"PATH": "/usr/bin:/bin", "HOME": str(world.base)},
            cwd=world.base,
        )
        assert done.returncode == 0, done.stderr
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", OS_USER, str(pgdata), str(wal)], check=True)
        as_user(pg_tool("pg_verifybackup"), "--no-parse-wal", "--quiet", str(pgdata))
        options = f"-p {port} -k {pgdata} -c listen_addresses=''"
        log = pgdata / "standard-tools.log"
        as_user(pg_tool("pg_ctl"), "-D", str(pgdata), "-l", str(log), "-o", options, "-w", "start")
        conninfo = ConnInfo(host=str(pgdata), port=port, user="postgres", dbname="postgres")
        deadline = time.monotonic() + 120
        while True:
            with conninfo.connect() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row == (False,):
                break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        with conninfo.connect() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM ticks ORDER BY id")]
        assert ids == list(range(1, world.rows_at_target + 1))
        assert count(conninfo, "postgres") == ROWS
    finally:
        shutil.rmtree(wal, ignore_errors=True)


# -- point-in-time recovery ---------------------------------------------------------------------


def _restore(world: World, pgdata: Path, port: int, *extra: str):
    return dr(
        "restore",
        "postgres",
        "--system",
        SYSTEM,
        "--repo",
        str(world.vault),
        "--at",
        world.target.isoformat(),
        "--pgdata",
        str(pgdata),
        "--start",
        "--port",
        str(port),
        "--json",
        *extra,
    )


def _private(pgdata: Path) -> Path:
    return pgdata.parent / f".{pgdata.name}.dr-wal-fetch"


def test_without_the_identity_a_restore_stops_in_one_line_naming_the_recipients(
    world: World, clusters: Clusters, tmp_path: Path
) -> None:
    pgdata = clusters.path("no-identity")
    refused = _restore(world, pgdata, free_port())
    assert refused.returncode == 2, refused.stderr
    line = one_line(refused)
    assert world.main.recipient in line and world.offline.recipient in line
    assert "--identity FILE" in line
    assert not pgdata.exists() and not _private(pgdata).exists()

    stranger = make_key(tmp_path, "stranger")
    wrong = _restore(world, pgdata, free_port(), "--identity", str(stranger.path))
    assert wrong.returncode == 2
    line = one_line(wrong)
    assert "no identity given matches" in line and stranger.recipient in line
    assert stranger.identity not in wrong.stdout + wrong.stderr
    assert not pgdata.exists() and not _private(pgdata).exists()


class _ProcessWatch(threading.Thread):
    """Reads every process's argv and environment while a command runs: a secret there is
    visible to ``ps`` (argv: every user) or to the process's owner. Notes too how the
    identity file handed to ``restore_command`` was kept (its mode and owner)."""

    def __init__(self, secret: str, identity_file: Path) -> None:
        super().__init__(daemon=True)
        self.secret = secret.encode()
        self.identity_file = identity_file
        self.stopping = threading.Event()
        self.seen: set[str] = set()
        self.looked = 0
        self.identity_stat: os.stat_result | None = None

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.identity_stat is None:
                with contextlib.suppress(FileNotFoundError):
                    self.identity_stat = self.identity_file.stat()
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                for part in ("cmdline", "environ"):
                    try:
                        content = (entry / part).read_bytes()
                    except OSError:
                        continue
                    if self.secret in content:
                        self.seen.add(content.replace(b"\0", b" ").decode(errors="replace")[:80])
                    if part == "cmdline" and b"wal" in content and b"fetch" in content:
                        self.looked += 1
            time.sleep(0.05)


def test_a_point_in_time_restore_with_the_identity_brings_back_every_row_and_no_secret_leaks(
    world: World, clusters: Clusters
) -> None:
    pgdata, port = clusters.path("pitr"), free_port()
    watch = _ProcessWatch(world.main.identity, _private(pgdata) / "identity")
    watch.start()
    try:
        # --archive: the recovered cluster archives its new timeline, encrypted, into vault.
        result = _restore(world, pgdata, port, "--identity", str(world.main.path), "--archive")
    finally:
        watch.stopping.set()
        watch.join()
    summary = json_of(result)
    assert summary["backups"] == [world.full, world.incremental]  # combined, then replayed
    conninfo = ConnInfo(host=str(pgdata), port=port, user="postgres", dbname="postgres")
    with conninfo.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM ticks ORDER BY id")]
    assert ids == list(range(1, world.rows_at_target + 1))
    assert count(conninfo, "postgres") == ROWS

    # The identity reached restore_command as a file, gone once the cluster was promoted.
    private = _private(pgdata)
    conf = (pgdata / "postgresql.auto.conf").read_text()
    assert f"--identity {private}/identity" in conf
    assert watch.identity_stat is not None, "the identity file was never seen"
    assert watch.identity_stat.st_mode & 0o777 == 0o600
    if os.geteuid() == 0:  # the cluster's OS user's, not root's
        assert watch.identity_stat.st_uid == pwd.getpwnam(OS_USER).pw_uid
    assert not private.exists()
    assert watch.looked > 0, "no dr wal fetch was seen running"
    assert not watch.seen, watch.seen
    for text in (result.stdout, result.stderr, conf, (pgdata / "dr-recovery.log").read_text()):
        assert world.main.identity not in text
    for _, content in _stored(pgdata):
        assert world.main.identity.encode() not in content

    # The new timeline is archived encrypted; its branch point is readable without a key.
    history = wal_key(SYSTEM, "00000002.history")
    deadline = time.monotonic() + 30
    while not (world.vault / history).exists():
        assert time.monotonic() < deadline, "the recovered cluster did not archive timeline 2"
        time.sleep(0.2)
    header: WalHeader = read_header(LocalStore(world.vault), history)
    assert header.recipients == [world.main.recipient, world.offline.recipient]
    assert header.branches is not None and [b[0] for b in header.branches] == [1]
    window = pitr.recovery_window(world.repository, SYSTEM, precise=False)
    assert window.timeline == 2 and window.base_backups >= 2 and window.gap is None


# -- verification and status -------------------------------------------------------------------


def test_verification_recovers_with_the_repository_identity_and_status_needs_no_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DR_WAL_PROGRAM", shared_dr())
    results = verify_backups(systems=[SYSTEM], config_path=str(world.config), notify=False)
    [physical] = [r for r in results if r["database"].startswith("(cluster")]
    assert physical["outcome"] == "ok", physical
    assert physical["detail"].startswith("recovered"), physical
    assert all(r["outcome"] == "ok" for r in results), results

    keyless = world.base / "dr-no-identity.yaml"
    keyless.write_text(
        config_text(
            world.vault, world.plain, world.server.datadir, world.main, world.offline, False
        )
    )
    status = dr("status", "--json", config=keyless)
    assert status.stdout, status.stderr
    [cluster] = [r for r in json.loads(status.stdout)["systems"] if r["database"] == "(cluster)"]
    assert cluster["state"] == "OK", cluster

    with pytest.raises(RestoreVerificationFailed) as failed:
        verify_backups(systems=[SYSTEM], config_path=str(keyless), notify=False)
    assert "(cluster" in str(failed.value) and world.main.recipient in str(failed.value)
