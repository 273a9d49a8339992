"""Physical protection measured against the plan: restore time, WAL archiving throughput, RPO.

In one run, on the ~1 GB database of ``bench/postgres_backup.py`` (its generator) in a server
that archives its WAL with ``dr wal push`` into an Azurite container, as the server's OS user
through the shared installation (``make shared-install``):

(c)  the plan's restore: download the ``pg_dump | gzip`` blob, ``gunzip -c | psql`` into an
     empty database (the same commands as ``bench/postgres_backup.py``'s c);
(p)  ``dr restore postgres --at latest --start``: a new cluster from the physical base backup
     taken just before (and some work after it), recovered to the end of the archive and
     promoted. Target p/c ≤ 0.25. p and c alternate ``--repeat`` times (3); the ratio given
     is the median of the pairs' ratios.
(w)  WAL archiving against ``pgbench`` at full speed (``-c 4 -j 2``), first with one
     ``dr wal push`` per segment, then asynchronously (``--spool``): WAL generated and archived
     per second, and the ``archive_status/*.ready`` backlog sampled every 5 s;
(r)  the RPO: rows committed twice a second with their time and WAL position; the server
     ``kill -9``'d at a random moment; ``--at latest`` restored; the RPO is the kill time
     minus the newest row that came back. With ``archive_timeout = 60`` (target ≤ 60 s), the
     worst exposure of any row (from its commit to its segment's arrival in the repository)
     is given too; then with ``dr wal stream`` and no archive_command (target ≤ 5 s).

A benchmark, not a test: ratios are against a baseline measured in the same run, and it exits
0 whether or not a target is met (1 if a step failed)::

    python bench/physical_restore.py                        # ~1 GB, ~25 minutes
    python bench/physical_restore.py --size-mb 200 --pgbench-seconds 60 --rpo-seconds 90
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from azure.storage.blob import BlobClient, ContainerClient
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from bench.postgres_backup import _bash, _machine, code_version, generate_database  # noqa: E402
from dr_runbooks.postgres.connection import ConnInfo  # noqa: E402
from dr_runbooks.postgres.tools import pg_tool  # noqa: E402
from dr_runbooks.postgres.wal.archive import list_archive  # noqa: E402
from dr_runbooks.storage.azure import AzureBlobStore, parse_container_url  # noqa: E402
from tests.azurite import Azurite  # noqa: E402
from tests.postgres.archiving import (  # noqa: E402
    OS_USER,
    ArchivingServer,
    as_user,
    kill9,
    shared_dr,
    stop_cluster,
    world_dir,
)

DATABASE = "bench"
CONTAINER = "bench"
TARGET_RESTORE_RATIO = 0.25
TARGET_RPO_ARCHIVE = 60.0
TARGET_RPO_STREAM = 5.0
MB = 1024 * 1024


def _progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    database: dict[str, Any] = field(default_factory=dict)
    plan_backup: dict[str, Any] = field(default_factory=dict)
    plan_restores: list[dict[str, Any]] = field(default_factory=list)
    physical_backups: list[dict[str, Any]] = field(default_factory=list)
    physical_restores: list[dict[str, Any]] = field(default_factory=list)
    drains: list[dict[str, Any]] = field(default_factory=list)
    archiving: dict[str, Any] = field(default_factory=dict)
    rpo: dict[str, Any] = field(default_factory=dict)


class PhysicalBench:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.args = args
        self.work = root / "work"
        self.work.mkdir()
        self.azurite: Azurite | None = None
        self.servers: list[ArchivingServer] = []
        self.clusters: list[Path] = []
        self.background: list[subprocess.Popen[str]] = []
        self.repo = f"azure://{CONTAINER}"
        self.spool = world_dir("dr-bench-spool-")

    # -- services --------------------------------------------------------------------------

    def start(self) -> None:
        self.azurite = Azurite(REPO_ROOT).start()
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = self.azurite.connection_string
        ContainerClient.from_connection_string(
            self.azurite.connection_string, CONTAINER
        ).create_container()

    def server(self, system: str, archive_timeout: int = 60, **kwargs: Any) -> ArchivingServer:
        base = world_dir(f"dr-bench-{system}-")
        server = ArchivingServer(
            base, system, self.repo, archive_timeout=archive_timeout, **kwargs
        ).init()
        server.start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for process in self.background:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for path in self.clusters:
            stop_cluster(path)
        for server in self.servers:
            server.stop()
            shutil.rmtree(server.base, ignore_errors=True)
        for path in self.clusters:
            shutil.rmtree(path.parent, ignore_errors=True)
        if self.azurite is not None:
            self.azurite.stop()
        shutil.rmtree(self.spool, ignore_errors=True)

    @property
    def store(self) -> AzureBlobStore:
        return AzureBlobStore(parse_container_url(self.repo))

    def dr(self, *args: str) -> tuple[float, Any]:
        """Time one ``dr`` command from process start to exit: ``backup …`` is
        ``dr backup postgres --physical …``, ``restore …`` is ``dr restore postgres …``."""
        words = [args[0], "postgres"] + (["--physical"] if args[0] == "backup" else [])
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "cli", *words, *args[1:], "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "DR_CONFIG": "", "DR_WAL_PROGRAM": shared_dr()},
            stdin=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"dr {args[0]} exited {result.returncode}: {result.stderr[-2000:]}")
        return seconds, json.loads(result.stdout)

    def new_cluster_dir(self, name: str) -> Path:
        path = world_dir(f"dr-bench-{name}-") / "pgdata"
        self.clusters.append(path)
        return path

    # -- (c) and (p) ------------------------------------------------------------------------

    def plan_backup(self, server: ArchivingServer, results: Results) -> str:
        """(a): the plan's dump, uploaded; its blob's name."""
        assert self.azurite is not None
        path = self.work / "backup_plan.sql.gz"
        started = time.perf_counter()
        _bash(
            'set -o pipefail; "$PG_DUMP" -h "$HOST" -U postgres -d "$DB" | gzip > "$OUT"',
            PG_DUMP=pg_tool("pg_dump"),
            HOST=str(server.datadir),
            DB=DATABASE,
            OUT=str(path),
        )
        blob = BlobClient.from_connection_string(
            self.azurite.connection_string, CONTAINER, path.name
        )
        with open(path, "rb") as handle:
            blob.upload_blob(handle, overwrite=True, max_concurrency=2)
        results.plan_backup = {
            "seconds": round(time.perf_counter() - started, 2),
            "bytes": path.stat().st_size,
        }
        path.unlink()
        return path.name

    def plan_restore(
        self, server: ArchivingServer, blob_name: str, drain_command: str
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(c): download, ``gunzip -c | psql`` into an empty database; then the WAL it wrote,
        held back meanwhile, archived with ``drain_command``: how fast archiving can go."""
        assert self.azurite is not None
        # The plan's restore runs on a server without WAL archiving: the WAL this restore
        # writes is archived after the measurement, not during it.
        self.set_archive_command(server, "")
        self.settle(server)
        _progress("(c) the plan's restore: download, gunzip | psql")
        path = self.work / blob_name
        blob = BlobClient.from_connection_string(
            self.azurite.connection_string, CONTAINER, blob_name
        )
        started = time.perf_counter()
        with open(path, "wb") as handle:
            blob.download_blob(max_concurrency=2).readinto(handle)
        downloaded = time.perf_counter()
        with psycopg.connect(_uri(server), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE restore_plan TEMPLATE template0"))
        _bash(
            'set -o pipefail; gunzip -c "$IN" | "$PSQL" -X -q -v ON_ERROR_STOP=1 '
            '-h "$HOST" -U postgres -d restore_plan > /dev/null',
            PSQL=pg_tool("psql"),
            HOST=str(server.datadir),
            IN=str(path),
        )
        ended = time.perf_counter()
        path.unlink()
        with psycopg.connect(_uri(server), autocommit=True) as conn:
            conn.execute("DROP DATABASE restore_plan WITH (FORCE)")
            conn.execute("SELECT pg_switch_wal()")
        status = server.datadir / "pg_wal" / "archive_status"
        backlog = len([f for f in status.glob("*.ready") if len(f.name) == 30])
        drain_started = time.perf_counter()
        self.set_archive_command(server, drain_command)
        self.wait_archived(server, timeout=1800)
        drained = time.perf_counter() - drain_started
        self.set_archive_command(server, self.async_command(server))
        return {
            "seconds": round(ended - started, 2),
            "download": round(downloaded - started, 2),
            "create db + gunzip | psql": round(ended - downloaded, 2),
        }, {
            "segments": backlog,
            "seconds": round(drained, 1),
            "mb_s": round(backlog * 16 / drained, 1) if drained else 0.0,
        }

    def async_command(self, server: ArchivingServer) -> str:
        return f"{server.archive_command} --spool {self.spool} --parallel {self.args.parallel}"

    def set_archive_command(self, server: ArchivingServer, command: str) -> None:
        with psycopg.connect(_uri(server), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command))
            )
            conn.execute("SELECT pg_reload_conf()")

    def physical_backup_and_restore(
        self, server: ArchivingServer
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A base backup, some work after it, then (p): ``--at latest`` into a new cluster."""
        _progress("dr backup postgres --physical")
        self.wait_archived(server)
        self.settle(server)
        seconds, backup = self.dr(
            "backup", "--system", server.system, "--repo", self.repo, "--dsn", _uri(server)
        )
        taken = {
            "seconds": round(seconds, 2),
            "bytes": backup["size"],
            "raw_bytes": backup["raw_size"],
            "backup_id": backup["backup_id"],
        }
        # Some work after the backup, so that recovery replays archived WAL, as it always will.
        with psycopg.connect(_uri(server, DATABASE), autocommit=True) as conn:
            conn.execute("UPDATE customers SET balance = balance + 1 WHERE id % 20 = 0")
            conn.execute("SELECT pg_switch_wal()")
        self.wait_archived(server)
        self.settle(server)
        _progress("(p) dr restore postgres --at latest --start")
        pgdata = self.new_cluster_dir("physical")
        port = _free_port()
        seconds, restored = self.dr(
            "restore",
            "--system",
            server.system,
            "--repo",
            self.repo,
            "--at",
            "latest",
            "--pgdata",
            str(pgdata),
            "--start",
            "--port",
            str(port),
        )
        conninfo = ConnInfo(host=str(pgdata), port=port, user="postgres", dbname=DATABASE)
        with conninfo.connect() as conn:
            rows = conn.execute("SELECT count(*) FROM customers").fetchone()
        stop_cluster(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)
        self.clusters.remove(pgdata)
        return taken, {
            "seconds": round(seconds, 2),
            "steps": {s["step"]: s["seconds"] for s in restored["steps"]},
            "reached_lsn": restored["reached_lsn"],
            "customers": rows[0] if rows else None,
        }

    # -- (w) --------------------------------------------------------------------------------

    def archiving(self, server: ArchivingServer, results: Results) -> None:
        uri = _uri(server)
        _progress("pgbench -i")
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE pgbench")
        as_user(
            pg_tool("pgbench"),
            "-i",
            "-q",
            "-s",
            str(self.args.pgbench_scale),
            "-h",
            str(server.datadir),
            "-U",
            "postgres",
            "pgbench",
        )
        modes = {
            "one dr wal push per segment": "",
            f"asynchronous (--spool, --parallel {self.args.parallel})": (
                f" --spool {self.spool} --parallel {self.args.parallel}"
            ),
        }
        for label, options in modes.items():
            self.set_archive_command(server, server.archive_command + options)
            self.wait_archived(server, timeout=900)
            self.settle(server)
            _progress(f"(w) pgbench for {self.args.pgbench_seconds} s, archiving: {label}")
            results.archiving[label] = self.pgbench_run(server)
        self.set_archive_command(server, self.async_command(server))

    def pgbench_run(self, server: ArchivingServer) -> dict[str, Any]:
        uri = _uri(server)
        samples: list[tuple[float, int, int, int]] = []

        def sample() -> tuple[float, int, int, int]:
            with psycopg.connect(uri, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT pg_current_wal_lsn() - '0/0', archived_count FROM pg_stat_archiver"
                ).fetchone()
            assert row is not None
            ready = len(list((server.datadir / "pg_wal" / "archive_status").glob("*.ready")))
            return time.monotonic(), int(row[0]), int(row[1]), ready

        stop = threading.Event()

        def sampler() -> None:
            while not stop.wait(5):
                samples.append(sample())

        samples.append(sample())
        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        bench = as_user(
            pg_tool("pgbench"),
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            str(self.args.pgbench_seconds),
            "-n",
            "-h",
            str(server.datadir),
            "-U",
            "postgres",
            "pgbench",
        )
        stop.set()
        thread.join()
        samples.append(sample())
        ended = samples[-1]
        drain_started = time.monotonic()
        self.wait_archived(server, timeout=900)
        drain = time.monotonic() - drain_started
        first = samples[0]
        seconds = ended[0] - first[0]
        generated = (ended[1] - first[1]) / seconds
        archived = (ended[2] - first[2]) * 16 * MB / seconds
        backlog = [s[3] for s in samples]
        half = len(backlog) // 2
        tps = next(
            (
                line.split("=")[1].split()[0]
                for line in bench.stdout.splitlines()
                if line.startswith("tps")
            ),
            None,
        )
        return {
            "seconds": round(seconds, 1),
            "tps": float(tps) if tps else None,
            "wal_generated_mb_s": round(generated / MB, 2),
            "wal_archived_mb_s": round(archived / MB, 2),
            "ready_backlog": backlog,
            "ready_backlog_first_half_max": max(backlog[: half or 1]),
            "ready_backlog_second_half_max": max(backlog[half:]),
            "drain_seconds_after_pgbench": round(drain, 1),
        }

    # -- (r) --------------------------------------------------------------------------------

    def rpo_archive(self, results: Results) -> None:
        server = self.server("rpo-archive", archive_timeout=60)
        self.create_marks(server)
        self.wait_archived(server)
        self.dr("backup", "--system", server.system, "--repo", self.repo, "--dsn", _uri(server))
        seconds = self.args.rpo_seconds
        _progress(f"(r) RPO with archive_timeout = 60: writing for ~{seconds} s, then kill -9")
        rows, killed = self.write_then_kill(server, seconds)
        time.sleep(5)  # whatever the archiver was pushing when the server died
        newest = self.restore_latest(server.system, "rpo-archive")
        exposure = self.exposure(server.system, rows)
        results.rpo["archive_timeout = 60"] = {
            "rpo_seconds": round((killed - newest).total_seconds(), 1),
            "rows_written": len(rows),
            "worst_exposure_seconds": round(max(exposure), 1) if exposure else None,
            "median_exposure_seconds": round(sorted(exposure)[len(exposure) // 2], 1)
            if exposure
            else None,
        }

    def rpo_stream(self, results: Results) -> None:
        server = self.server("rpo-stream", settings={"archive_mode": "off", "archive_command": ""})
        directory = world_dir("dr-bench-stream-")
        argv = [
            shared_dr(),
            "wal",
            "stream",
            "--system",
            server.system,
            "--repo",
            self.repo,
            "--directory",
            str(directory),
            "--partial-interval",
            "1",
        ]
        streamer = subprocess.Popen(
            ["runuser", "-u", OS_USER, "--", *argv] if os.geteuid() == 0 else argv,
            env={**os.environ, "DR_DSN": _uri(server)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.background.append(streamer)
        time.sleep(3)
        self.create_marks(server)
        self.dr("backup", "--system", server.system, "--repo", self.repo, "--dsn", _uri(server))
        seconds = max(30, self.args.rpo_seconds // 3)
        _progress(f"(r) RPO with dr wal stream: writing for ~{seconds} s, then kill -9")
        _rows, killed = self.write_then_kill(server, seconds)
        time.sleep(3)
        os.killpg(streamer.pid, signal.SIGTERM)
        streamer.wait(30)
        newest = self.restore_latest(server.system, "rpo-stream")
        results.rpo["dr wal stream"] = {
            "rpo_seconds": round((killed - newest).total_seconds(), 1),
            "rows_written": len(_rows),
        }
        shutil.rmtree(directory, ignore_errors=True)

    def write_then_kill(
        self, server: ArchivingServer, seconds: float
    ) -> tuple[list[tuple[datetime, int]], datetime]:
        """Commit a row twice a second, recording its time and WAL position; kill -9 the
        server at a random moment after ``seconds`` / 2."""
        rows: list[tuple[datetime, int]] = []
        with psycopg.connect(_uri(server), autocommit=True) as conn:
            deadline = time.monotonic() + seconds / 2 + random.uniform(0, seconds / 2)
            while time.monotonic() < deadline:
                conn.execute("INSERT INTO marks VALUES (clock_timestamp())")
                row = conn.execute(
                    "SELECT clock_timestamp(), pg_current_wal_insert_lsn() - '0/0'"
                ).fetchone()
                assert row is not None
                rows.append((row[0], int(row[1])))
                time.sleep(0.5)
            killed = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        kill9(server.datadir)
        return rows, killed

    def create_marks(self, server: ArchivingServer) -> None:
        """The table the RPO rows go to, created before the base backup (which then holds it)."""
        with psycopg.connect(_uri(server), autocommit=True) as conn:
            conn.execute("CREATE TABLE marks (at timestamptz NOT NULL)")
            conn.execute("INSERT INTO marks VALUES (clock_timestamp())")

    def restore_latest(self, system: str, name: str) -> datetime:
        pgdata = self.new_cluster_dir(name)
        port = _free_port()
        self.dr(
            "restore",
            "--system",
            system,
            "--repo",
            self.repo,
            "--at",
            "latest",
            "--pgdata",
            str(pgdata),
            "--start",
            "--port",
            str(port),
        )
        conninfo = ConnInfo(host=str(pgdata), port=port, user="postgres", dbname="postgres")
        with conninfo.connect() as conn:
            row = conn.execute("SELECT max(at) FROM marks").fetchone()
        stop_cluster(pgdata)
        assert row is not None and row[0] is not None
        newest: datetime = row[0]
        return newest

    def exposure(self, system: str, rows: list[tuple[datetime, int]]) -> list[float]:
        """For each row, seconds from its commit until its segment reached the repository."""
        arrived = {
            f.wal.segno(): f.archived
            for f in list_archive(self.store, system)
            if f.wal.kind == "segment"
        }
        exposure = []
        for committed, lsn in rows:
            segment_arrival = arrived.get(lsn // (16 * MB))
            if segment_arrival is not None:
                exposure.append((segment_arrival - committed).total_seconds())
        return exposure

    # -- helpers ----------------------------------------------------------------------------

    def wait_archived(self, server: ArchivingServer, timeout: float = 600) -> None:
        """Until no WAL file waits for archive_command."""
        status = server.datadir / "pg_wal" / "archive_status"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not list(status.glob("*.ready")):
                return
            time.sleep(0.5)
        raise RuntimeError(f"archiving did not catch up within {timeout:.0f} s")

    def settle(self, server: ArchivingServer) -> None:
        with psycopg.connect(_uri(server), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        os.sync()


def _uri(server: ArchivingServer, database: str = "postgres") -> str:
    return f"postgresql://postgres@/{database}?host={server.datadir}"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(args: argparse.Namespace, results: Results) -> None:
    root = Path(tempfile.mkdtemp(prefix="dr-bench-physical-"))
    bench = PhysicalBench(root, args)
    try:
        bench.start()
        _progress("starting the archiving server and generating the database")
        main = bench.server("bench", archive_timeout=60)
        # Between measurements the server archives asynchronously, to catch up fast.
        bench.set_archive_command(main, bench.async_command(main))
        generated = generate_database(_uri(main), DATABASE, args.size_mb)
        results.database = {
            "size_bytes": generated.size_bytes,
            "rows": generated.rows,
            "seconds": round(generated.seconds, 1),
        }
        bench.wait_archived(main, timeout=1800)
        if not args.skip_restore:
            _progress("(a) the plan's backup: pg_dump | gzip, upload")
            blob = bench.plan_backup(main, results)
            for _ in range(args.repeat):
                taken, restored = bench.physical_backup_and_restore(main)
                results.physical_backups.append(taken)
                results.physical_restores.append(restored)
                # The first drain is one push per segment, the others through the spool.
                mode = "one dr wal push per segment" if not results.plan_restores else "spool"
                command = main.archive_command if mode != "spool" else bench.async_command(main)
                restored, drained = bench.plan_restore(main, blob, command)
                results.plan_restores.append(restored)
                results.drains.append({"mode": mode, **drained})
        if not args.skip_archiving:
            bench.archiving(main, results)
        if not args.skip_rpo:
            bench.rpo_archive(results)
            bench.rpo_stream(results)
    finally:
        bench.close()
        shutil.rmtree(root, ignore_errors=True)


def report(results: Results) -> None:
    for drain in results.drains:
        print(f"(w0) a backlog archived: {drain}")
    for label, figures in results.archiving.items():
        print(f"(w) {label}: {figures}")
    for label, figures in results.rpo.items():
        print(f"(r) {label}: {figures}")
    pairs = list(zip(results.plan_restores, results.physical_restores, strict=False))
    if not pairs:
        return
    print(f"\ndatabase: {results.database['size_bytes'] / MB:,.0f} MB ({results.database['rows']})")
    backups = ", ".join(f"{b['seconds']:.1f}" for b in results.physical_backups)
    print(
        f"(a) plan backup {results.plan_backup['seconds']:.1f} s; dr backup --physical "
        f"{backups} s ({results.physical_backups[0]['bytes'] / MB:,.0f} MB zstd)"
    )
    ratios = []
    for index, (c, p) in enumerate(pairs, 1):
        ratios.append(p["seconds"] / c["seconds"])
        print(f"#{index} (c) plan restore {c['seconds']:.1f} s  {c}")
        print(f"#{index} (p) dr restore --at latest {p['seconds']:.1f} s  {p['steps']}")
    ratio = statistics.median(ratios)
    verdict = "met" if ratio <= TARGET_RESTORE_RATIO else "missed"
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"p/c: median {ratio:.2f} ({listed}); target ≤ {TARGET_RESTORE_RATIO}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="Pairs of (p) and (c).")
    parser.add_argument("--pgbench-seconds", type=int, default=180)
    parser.add_argument("--pgbench-scale", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rpo-seconds", type=int, default=150)
    parser.add_argument("--skip-restore", action="store_true", help="Leave out c and p.")
    parser.add_argument("--skip-archiving", action="store_true")
    parser.add_argument("--skip-rpo", action="store_true")
    parser.add_argument("--output", help="Write the figures as JSON here.")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    results = Results(machine=_machine(), code=code_version())
    failed = None
    try:
        run(args, results)
    except Exception as exc:
        failed = exc
    report(results)
    if args.output:
        Path(args.output).write_text(
            json.dumps({"started": started.isoformat(), **results.__dict__}, indent=2, default=str)
        )
    if failed is not None:
        print(f"benchmark failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
