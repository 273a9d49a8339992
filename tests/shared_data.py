"""Where the third-party test data lives, and how a test skips when it is absent.

The data (Pagila, Chinook, real mongodump output) sits in ``../shared/data`` beside the
repository checkout; ``DR_SHARED_DATA`` overrides the location. A user's clone usually lacks
it, and the tests that need it skip with a reason that says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    override = os.environ.get("DR_SHARED_DATA")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Return a path under the shared data folder, or skip the test when it is not there."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"third-party test data not found at {path} "
            "(set DR_SHARED_DATA or place shared/data beside the checkout)"
        )
    return path
