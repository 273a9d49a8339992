"""pg_dump as a stream of archive bytes.

The dump is pg_dump's custom format without compression (``-Fc -Z0``), compressed by us with
zstd on the way to the store. Written to a pipe, the archive lacks data offsets, but pg_restore
scans a seekable copy to find them, so a restore can still run in parallel (``pg_restore -j``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

from dr_runbooks.errors import DumpFailed
from dr_runbooks.postgres.connection import ConnInfo
from dr_runbooks.postgres.tools import StderrCollector, error_lines, pg_tool
from dr_runbooks.processes import die_with_parent

__all__ = ["DumpStream"]


class DumpStream:
    """``pg_dump -Fc -Z0 --snapshot`` as an iterator of raw archive chunks.

    Iterating yields stdout; at the end the exit status is checked and a non-zero status, or
    anything pg_dump reports as an error, raises :class:`DumpFailed` with pg_dump's own words,
    so a consumer (a store's ``put``) aborts and never commits a failed dump.
    """

    def __init__(self, conninfo: ConnInfo, database: str, snapshot_id: str | None) -> None:
        self.argv = [pg_tool("pg_dump"), "--format=custom", "--compress=0", "--no-password"]
        if snapshot_id:
            self.argv.append(f"--snapshot={snapshot_id}")
        self.env = conninfo.child_env(dbname=database)
        self.database = database
        self.process: subprocess.Popen[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        self.process = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        stderr = StderrCollector(self.process.stderr)
        stderr.start()
        # A consumer that stops early (its own failure) closes this generator; the owner then
        # calls kill() so pg_dump does not linger.
        while chunk := self.process.stdout.read(1 << 20):
            yield chunk
        code = self.process.wait()
        stderr.join(timeout=10)
        if code != 0:
            raise DumpFailed(f"pg_dump exited {code}: {error_lines(stderr.text())}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
