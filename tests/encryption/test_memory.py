"""Memory stays flat with encryption: 1 GB through the age streams, and a synthetic database
backed up encrypted and restored through the whole engine at two sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.shared_data import REPO_ROOT


def _probe(mode: str, size_mb: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.encryption.memory_probe", mode, str(size_mb)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


@pytest.mark.slow
def test_a_gigabyte_goes_through_encryption_and_back_in_a_few_megabytes() -> None:
    result = _probe("stream", 1024)
    assert result["data_mb"] == 1024
    # A few 1 MiB chunks queued on each side of the worker: memory is not the stream.
    assert result["total_growth_mb"] < 48, result


@pytest.mark.slow
def test_an_encrypted_backup_and_restore_run_in_flat_memory() -> None:
    small, large = _probe("engine", 100), _probe("engine", 300)
    for result, size in ((small, 100), (large, 300)):
        assert result["encrypted"] == 1.0
        assert result["documents"] == result["restored"] == size * 1024
        assert result["data_mb"] > size * 0.9
    # Three times the data, the same memory (the bound tests/mongodb_engine sets in clear).
    assert large["total_growth_mb"] - small["total_growth_mb"] < 30, (small, large)
    assert large["total_growth_mb"] < 120, large
