"""What reading blobs several at a time buys a file backup: one at a time against ``parallel``.

Fills a container of a throwaway Azurite with ``--blobs`` blobs (mostly a few KiB, some tens
of KiB, as an application's uploads are), then times a full backup of it into a fresh local
repository through the engine (no Prefect), alternating (1) one blob at a time, the baseline,
and (N) ``--parallel`` at a time, so a drift of the machine hits both alike, and restores
each backup into a new container the same way (written, then every blob read back and
compared). Prints each time, the medians and the ratios N/1 (lower is better), and checks
every backup verifies::

    python bench/files_backup.py                          # 1000 blobs, 3 rounds; ~1 minute
    python bench/files_backup.py --blobs 3000 --parallel 16 --output results.json

Azurite answers from this machine in about a millisecond, where a storage account in another
datacentre takes tens: ``--latency-ms`` puts a TCP relay in front of Azurite that holds each
chunk of each direction that long, so each request costs about twice that in round trips, as
it would over a WAN. A benchmark, not a test: it exits 0 whether or not parallel reads help, 1
if a step failed.
See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from azure.storage.blob import BlobServiceClient  # noqa: E402

from dr_runbooks.files import (  # noqa: E402
    BlobAccount,
    FileCatalog,
    backup_files,
    plan_restore,
    restore_files,
)
from dr_runbooks.repository import Repository  # noqa: E402
from dr_runbooks.storage import LocalStore  # noqa: E402
from tests.azurite import Azurite  # noqa: E402

CONTAINER = "bench-files"


class _SlowRelay:
    """A TCP relay to ``port`` that holds every chunk ``latency`` seconds before passing it."""

    def __init__(self, port: int, latency: float) -> None:
        self.target, self.latency = ("127.0.0.1", port), latency
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                time.sleep(self.latency)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _fill(service: BlobServiceClient, count: int) -> int:
    rng = random.Random(7)
    client = service.get_container_client(CONTAINER)
    client.create_container()
    total = 0
    for i in range(count):
        size = rng.randint(10_000, 60_000) if i % 10 == 0 else rng.randint(500, 8_000)
        client.upload_blob(f"uploads/{i % 37:02d}/file-{i:05d}.bin", rng.randbytes(size))
        total += size
    return total


def _backup(account: BlobAccount, root: Path, parallel: int) -> tuple[float, list[str]]:
    catalog = FileCatalog(Repository(LocalStore(root)), "bench")
    begun = time.perf_counter()
    backup_files(account, catalog, [CONTAINER], parallel=parallel)
    elapsed = time.perf_counter() - begun
    return elapsed, catalog.verify(catalog.find())


def _restore(account: BlobAccount, root: Path, parallel: int, target: str) -> float:
    """Restore the backup in ``root`` into a new container (written, then read back)."""
    catalog = FileCatalog(Repository(LocalStore(root)), "bench")
    plan = plan_restore(account, catalog, catalog.find(), CONTAINER, target=target)
    begun = time.perf_counter()
    restore_files(account, catalog, plan, parallel=parallel)
    return time.perf_counter() - begun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    times: dict[str, list[float]] = {"1": [], str(args.parallel): []}
    restores: dict[str, list[float]] = {"1": [], str(args.parallel): []}
    with Azurite(REPO_ROOT) as azurite, tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        size = _fill(service, args.blobs)
        print(f"{args.blobs} blobs, {size / 1e6:.1f} MB in Azurite")
        if args.latency_ms:
            relay = _SlowRelay(azurite.port, args.latency_ms / 1000)
            service = BlobServiceClient.from_connection_string(
                azurite.connection_string.replace(f":{azurite.port}/", f":{relay.port}/")
            )
            print(f"through a relay adding {args.latency_ms:g} ms each way")
        account = BlobAccount(service)
        for round_ in range(args.rounds):
            for parallel in (1, args.parallel):
                root = Path(scratch) / f"repo-{round_}-{parallel}"
                elapsed, problems = _backup(account, root, parallel)
                if problems:
                    print(f"backup with parallel={parallel} does not verify: {problems[:3]}")
                    return 1
                times[str(parallel)].append(elapsed)
                target = f"bench-restore-{round_}-{parallel}"
                restored = _restore(account, root, parallel, target)
                restores[str(parallel)].append(restored)
                print(
                    f"round {round_ + 1}: parallel={parallel:<3} backup {elapsed:6.2f} s, "
                    f"restore {restored:6.2f} s"
                )
    base = statistics.median(times["1"])
    fast = statistics.median(times[str(args.parallel)])
    result: dict[str, Any] = {
        "blobs": args.blobs,
        "latency_ms": args.latency_ms,
        "megabytes": round(size / 1e6, 1),
        "median_seconds": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "ratio": round(fast / base, 2),
        "restore_median_seconds": {k: round(statistics.median(v), 2) for k, v in restores.items()},
    }
    restore_base = statistics.median(restores["1"])
    restore_fast = statistics.median(restores[str(args.parallel)])
    result["restore_ratio"] = round(restore_fast / restore_base, 2)
    print(
        f"backup median: one at a time {base:.2f} s, {args.parallel} at a time {fast:.2f} s; "
        f"ratio {result['ratio']:.2f} ({base / fast:.1f}x faster)"
    )
    print(
        f"restore median: one at a time {restore_base:.2f} s, {args.parallel} at a time "
        f"{restore_fast:.2f} s; ratio {result['restore_ratio']:.2f}"
    )
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
