"""Memory stays flat: a database backed up and restored through the whole engine, at two
sizes; the bigger one must not cost more memory than buffers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.shared_data import REPO_ROOT


def _probe(size_mb: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.mongodb_engine.memory_probe", str(size_mb)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    assert result["documents"] == result["restored"] == size_mb * 1024
    assert result["data_mb"] > size_mb * 0.9  # the data really went through
    return result


@pytest.mark.slow
def test_backup_and_restore_run_in_flat_memory() -> None:
    small, large = _probe(100), _probe(300)
    # Three times the data, the same memory: zstd's workers and a server batch or two (their
    # buffers are what the first ~70 MB are), not the data.
    assert large["total_growth_mb"] - small["total_growth_mb"] < 30, (small, large)
    assert large["total_growth_mb"] < 120, large
