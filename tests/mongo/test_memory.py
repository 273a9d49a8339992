"""Memory stays flat: ~200 MB of documents through the archive writer and reader.

The work runs in a child process (``bench/mongo_archive.py``) so that its peak RSS, from
``resource.getrusage``, is its own and not the test runner's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.shared_data import REPO_ROOT

SIZE_MB = 200


@pytest.mark.slow
def test_a_200_mb_archive_is_written_and_read_in_flat_memory() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "mongo_archive.py"),
            "--size-mb",
            str(SIZE_MB),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["documents"] == result["expected_documents"] > 190_000
    assert result["data_mb"] >= SIZE_MB * 0.95
    assert result["compressed_mb"] > 10  # the data really went through zstd, not a no-op
    # One document at a time: the growth is buffers, not data (it measures ~6 MB).
    assert result["rss_growth_mb"] < 100, result
    assert result["rss_growth_mb"] < result["data_mb"] / 4, result
