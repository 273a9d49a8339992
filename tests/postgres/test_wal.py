"""``dr wal push`` and ``dr wal fetch`` as PostgreSQL runs them: by the server's OS user, from
the shared installation, against a real server's WAL, on a local directory and on Azurite."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import pg_tool
from dr_runbooks.postgres.wal.archive import WalHeader, list_archive, push, read, read_header
from dr_runbooks.postgres.wal.names import parse_wal_name, wal_key
from dr_runbooks.storage import LocalStore
from tests.postgres.archiving import OS_USER, ArchivingServer, Writer, world_dir
from tests.postgres.conftest import dr_wal

SYSTEM = "wal-app"


def switch_segments(conninfo: ConnInfo, count: int) -> list[str]:
    """Write a little and switch segments ``count`` times; the names of the finished ones."""
    names = []
    with conninfo.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (v text)")
        for _ in range(count):
            conn.execute("INSERT INTO filler SELECT repeat('w', 500) FROM generate_series(1, 200)")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal() - 1)").fetchone()
            assert row is not None
            names.append(str(row[0]))
    return names


def wait_archived(store: LocalStore, names: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(store.has(wal_key(SYSTEM, n)) for n in names):
            return
        time.sleep(0.2)
    raise AssertionError(f"not archived within {timeout} s: {names}")


@pytest.fixture(scope="module")
def archived() -> Iterator[tuple[LocalStore, list[str], ArchivingServer]]:
    """A server archiving into a repository through ``dr wal push``, a few segments in. The
    tests share it: each one damages a different segment, if any."""
    base, repo = world_dir("dr-tests-wal-"), world_dir("dr-tests-wal-repo-")
    server = ArchivingServer(base, SYSTEM, str(repo)).init()
    server.start()
    try:
        names = switch_segments(server.conninfo, 3)
        store = LocalStore(repo)
        wait_archived(store, names)
        yield store, names, server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(repo, ignore_errors=True)


def test_the_server_archives_through_dr_wal_push_run_as_its_os_user(archived) -> None:
    store, names, server = archived
    files = {f.name: f for f in list_archive(store, SYSTEM)}
    assert set(names) <= set(files)
    for name in names:
        info = Path(store.root, files[name].key).stat()
        assert info.st_uid != 0  # written by the server's OS user, not root
        header = read_header(store, files[name].key)
        assert header.name == name and header.size == 16 * 1024 * 1024
        assert header.system_identifier and header.segment_size == 16 * 1024 * 1024
        assert files[name].size < header.size  # compressed
    with server.conninfo.connect() as conn:
        failed = conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
    assert failed == (0,)


def test_fetch_writes_the_segment_verified_and_pg_waldump_reads_it(archived, tmp_path) -> None:
    store, names, _ = archived
    target = world_dir("dr-tests-fetch-")
    try:
        result = dr_wal(
            "fetch",
            names[0],
            str(target / "RECOVERYXLOG"),
            "--system",
            SYSTEM,
            "--repo",
            str(store.root),
        )
        assert result.returncode == 0, result.stderr
        data = (target / "RECOVERYXLOG").read_bytes()
        header = read_header(store, wal_key(SYSTEM, names[0]))
        assert hashlib.sha256(data).hexdigest() == header.sha256
        shutil.copy(target / "RECOVERYXLOG", tmp_path / names[0])
        dump = subprocess.run(
            [pg_tool("pg_waldump"), f"--path={tmp_path}", names[0]],
            capture_output=True,
            text=True,
        )
        assert "rmgr: Heap" in dump.stdout
    finally:
        shutil.rmtree(target, ignore_errors=True)


def test_pushing_the_same_segment_again_succeeds(archived, tmp_path) -> None:
    store, names, _ = archived
    data, _ = read(names[0], SYSTEM, [store])
    copy = world_dir("dr-tests-again-") / names[0]
    copy.write_bytes(data)
    copy.chmod(0o644)
    before = Path(store.root, wal_key(SYSTEM, names[0])).stat().st_mtime_ns
    result = dr_wal("push", str(copy), "--system", SYSTEM, "--repo", str(store.root))
    assert result.returncode == 0, result.stderr
    assert "already archived" in result.stderr
    assert Path(store.root, wal_key(SYSTEM, names[0])).stat().st_mtime_ns == before
    shutil.rmtree(copy.parent)


def test_pushing_different_content_under_an_archived_name_fails_loudly(archived) -> None:
    store, names, _ = archived
    key = wal_key(SYSTEM, names[0])
    stored = Path(store.root, key).read_bytes()
    data, _ = read(names[0], SYSTEM, [store])
    changed = bytearray(data)
    changed[100_000] ^= 0xFF  # past the page header: still that segment, other content
    copy = world_dir("dr-tests-differ-") / names[0]
    copy.write_bytes(bytes(changed))
    copy.chmod(0o644)
    result = dr_wal("push", str(copy), "--system", SYSTEM, "--repo", str(store.root))
    assert result.returncode == 1
    assert "already archived" in result.stderr and "different content" in result.stderr
    assert Path(store.root, key).read_bytes() == stored
    shutil.rmtree(copy.parent)


def test_a_file_that_is_not_the_segment_it_is_named_is_refused(archived) -> None:
    store, names, _ = archived
    data, _ = read(names[0], SYSTEM, [store])
    wrong = parse_wal_name(names[-1]).name[:16] + "000000FE"  # another segment's name
    copy = world_dir("dr-tests-wrong-") / wrong
    copy.write_bytes(data)
    copy.chmod(0o644)
    result = dr_wal("push", str(copy), "--system", SYSTEM, "--repo", str(store.root))
    assert result.returncode == 1
    assert "refusing to archive it under this name" in result.stderr
    assert not store.has(wal_key(SYSTEM, wrong))
    shutil.rmtree(copy.parent)


def test_a_bit_flipped_segment_is_refused_on_fetch_and_stops_recovery(archived) -> None:
    store, names, _ = archived
    path = Path(store.root, wal_key(SYSTEM, names[1]))
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    target = world_dir("dr-tests-flip-")
    result = dr_wal(
        "fetch",
        names[1],
        str(target / "RECOVERYXLOG"),
        "--system",
        SYSTEM,
        "--repo",
        str(store.root),
    )
    # Above 125: PostgreSQL aborts recovery instead of taking it for the end of the archive.
    assert result.returncode == 126
    assert "damaged" in result.stderr and names[1] in result.stderr
    assert not (target / "RECOVERYXLOG").exists()
    assert os.listdir(target) == []
    shutil.rmtree(target)


def test_fetch_of_a_file_not_archived_says_so_with_status_1(archived) -> None:
    store, _, _ = archived
    target = world_dir("dr-tests-missing-")
    for name in ("0000000100000000000000FF", "00000009.history"):
        result = dr_wal(
            "fetch", name, str(target / "x"), "--system", SYSTEM, "--repo", str(store.root)
        )
        assert result.returncode == 1, result.stderr
    shutil.rmtree(target)


def test_a_misconfigured_restore_command_stops_recovery(tmp_path: Path) -> None:
    missing = dr_wal(
        "fetch",
        "000000010000000000000001",
        "/tmp/x",
        "--system",
        SYSTEM,
        "--repo",
        str(tmp_path / "no-such-repository"),
        as_server_user=False,
    )
    assert missing.returncode == 126, missing.stderr
    usage = dr_wal("fetch", "000000010000000000000001", as_server_user=False)
    assert usage.returncode == 126


def test_history_and_partial_files(tmp_path: Path, archived) -> None:
    store, names, _ = archived
    history = tmp_path / "00000002.history"
    history.write_text("1\t0/3000148\tno recovery target specified\n")
    push(history, SYSTEM, [store])
    assert read("00000002.history", SYSTEM, [store])[0] == history.read_bytes()
    # A segment archived only as .partial (the end of a timeline) is served padded.
    data, _ = read(names[-1], SYSTEM, [store])
    partial_name = names[-1][:16] + "000000F0.partial"
    fake = bytearray(data[: 3 * 8192])
    fake[8:16] = (parse_wal_name(partial_name).start_lsn()).to_bytes(8, "little")
    partial = tmp_path / partial_name
    partial.write_bytes(bytes(fake))
    push(partial, SYSTEM, [store])
    served, result = read(partial_name[:24], SYSTEM, [store])
    assert result.partial and len(served) == 16 * 1024 * 1024
    assert served[: len(fake)] == bytes(fake) and not any(served[len(fake) :])
    refused = dr_wal(
        "fetch",
        partial_name[:24],
        str(tmp_path / "x"),
        "--system",
        SYSTEM,
        "--repo",
        str(store.root),
        "--no-partial",
        as_server_user=False,
    )
    assert refused.returncode == 1


def test_asynchronous_archiving_through_a_spool(make_server, archive_dir: Path) -> None:
    spool = world_dir("dr-tests-spool-")
    server = make_server(SYSTEM, str(archive_dir), push_options=f"--spool {spool} --parallel 3")
    store = LocalStore(archive_dir)
    names = switch_segments(server.conninfo, 6)
    wait_archived(store, names)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with server.conninfo.connect() as conn:
            row = conn.execute(
                "SELECT last_archived_wal, failed_count FROM pg_stat_archiver"
            ).fetchone()
        if row is not None and row[0] == names[-1]:
            break
        time.sleep(0.2)
    assert row is not None and row[0] == names[-1] and row[1] == 0
    done = spool / SYSTEM / "done"
    assert not [n for n in os.listdir(done) if n in names]  # each record was acknowledged
    for name in names:
        assert read_header(store, wal_key(SYSTEM, name)).name == name
    assert (spool / SYSTEM / "pusher.lock").exists()
    shutil.rmtree(spool, ignore_errors=True)


def test_dr_wal_stream_pushes_segments_and_the_one_being_written(
    make_server, archive_dir: Path
) -> None:
    stream_repo = world_dir("dr-tests-stream-repo-")
    server = make_server(SYSTEM, str(archive_dir))
    directory = world_dir("dr-tests-stream-")
    env = {**os.environ, "DR_DSN": f"postgresql://postgres@/postgres?host={server.datadir}"}
    streamer = subprocess.Popen(
        ["runuser", "-u", OS_USER, "--", *_dr_stream(stream_repo, directory)]
        if os.geteuid() == 0
        else _dr_stream(stream_repo, directory),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = LocalStore(stream_repo)
    try:
        writer = Writer(server.conninfo, pause=0.01)
        writer.create()
        writer.start()
        time.sleep(1)
        with server.conninfo.connect() as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal() - 1)").fetchone()
        assert row is not None
        switched = str(row[0])
        time.sleep(1.5)
        rows_before = writer.rows
        time.sleep(4)  # two partial pushes at least
        writer.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not store.has(wal_key(SYSTEM, switched)):
            time.sleep(0.2)
        assert store.has(wal_key(SYSTEM, switched))
        partials = [f for f in list_archive(store, SYSTEM) if f.wal.kind == "partial"]
        assert partials, "the segment being written was never pushed"
        _, result = read(partials[-1].name[:24], SYSTEM, [store])
        assert result.partial
        header = WalHeader.decode(Path(store.root, partials[-1].key).read_bytes(), "x")[0]
        assert header.size == 16 * 1024 * 1024
        assert rows_before > 0
    finally:
        streamer.terminate()
        streamer.wait(30)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(stream_repo, ignore_errors=True)


def _dr_stream(repo: Path, directory: Path) -> list[str]:
    from tests.postgres.archiving import shared_dr

    return [
        shared_dr(),
        "wal",
        "stream",
        "--system",
        SYSTEM,
        "--repo",
        str(repo),
        "--directory",
        str(directory),
        "--partial-interval",
        "1",
    ]


def test_push_and_fetch_against_azure_blob_storage(
    azure_container: str, tmp_path, archived
) -> None:
    from dr_runbooks.storage.azure import AzureBlobStore, parse_container_url

    store, names, _ = archived
    data, _ = read(names[0], SYSTEM, [store])
    segment = tmp_path / names[0]
    segment.write_bytes(data)
    AzureBlobStore(parse_container_url(f"azure://{azure_container}")).create()
    repo = f"azure://{azure_container}"
    env = {"AZURE_STORAGE_CONNECTION_STRING": os.environ["AZURE_STORAGE_CONNECTION_STRING"]}
    pushed = dr_wal(
        "push", str(segment), "--system", SYSTEM, "--repo", repo, env=env, as_server_user=False
    )
    assert pushed.returncode == 0, pushed.stderr
    again = dr_wal(
        "push", str(segment), "--system", SYSTEM, "--repo", repo, env=env, as_server_user=False
    )
    assert again.returncode == 0 and "already archived" in again.stderr
    fetched = dr_wal(
        "fetch",
        names[0],
        str(tmp_path / "out"),
        "--system",
        SYSTEM,
        "--repo",
        repo,
        env=env,
        as_server_user=False,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out").read_bytes() == data
    missing = dr_wal(
        "fetch",
        "0000000100000000000000FF",
        str(tmp_path / "none"),
        "--system",
        SYSTEM,
        "--repo",
        repo,
        env=env,
        as_server_user=False,
    )
    assert missing.returncode == 1
    azure = AzureBlobStore(parse_container_url(repo))
    key = wal_key(SYSTEM, names[0])
    blob = bytearray(azure.read_bytes(key))
    blob[-100] ^= 0x10
    azure.put_bytes(key, bytes(blob))
    damaged = dr_wal(
        "fetch",
        names[0],
        str(tmp_path / "bad"),
        "--system",
        SYSTEM,
        "--repo",
        repo,
        env=env,
        as_server_user=False,
    )
    assert damaged.returncode == 126 and "damaged" in damaged.stderr
    assert not (tmp_path / "bad").exists()


def test_dr_wal_imports_nothing_heavy(tmp_path: Path) -> None:
    """archive_command must work while Prefect is down, and runs once per WAL file."""
    probe = (
        "import sys\n"
        "from cli.main import main\n"
        f"sys.argv = ['dr', 'wal', 'fetch', '000000010000000000000001', '{tmp_path}/x',\n"
        f"            '--system', 's', '--repo', '{tmp_path}/none']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    print(exc.code)\n"
        "heavy = ('prefect', 'typer', 'rich', 'click', 'psycopg', 'pydantic', 'azure')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["126", "[]"], result.stderr


def test_fetching_ahead_through_a_spool(archived) -> None:
    store, names, _ = archived
    spool, target = world_dir("dr-tests-prefetch-"), world_dir("dr-tests-prefetch-out-")
    common = ("--system", SYSTEM, "--repo", str(store.root), "--spool", str(spool))
    try:
        first = dr_wal("fetch", names[0], str(target / "a"), *common)
        assert first.returncode == 0, first.stderr
        assert read(names[0], SYSTEM, [store])[0] == (target / "a").read_bytes()
        fetched = spool / SYSTEM / "fetch"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (fetched / names[2]).exists():
            time.sleep(0.1)
        assert (fetched / names[2]).exists()  # fetched ahead, before anyone asked
        second = dr_wal("fetch", names[2], str(target / "c"), *common)
        assert second.returncode == 0, second.stderr
        assert not (fetched / names[2]).exists()  # moved into place, not copied
        assert read(names[2], SYSTEM, [store])[0] == (target / "c").read_bytes()
        beyond = parse_wal_name(names[-1])
        missing = f"{beyond.name[:16]}{beyond.seg + 40:08X}"
        gone = dr_wal("fetch", missing, str(target / "m"), *common)
        assert gone.returncode == 1 and not (target / "m").exists()
    finally:
        shutil.rmtree(spool, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
