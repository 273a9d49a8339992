"""The store contract (see :mod:`dr_runbooks.storage.base`), run on every backend, then what only
the Azure backend has: its ways in (connection string, SAS URL, ``--repo`` URLs), failing fast,
keeping tokens out of messages, the soft-delete policy and bounded memory.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

import pytest
from azure.core.credentials import AccessToken
from azure.identity import CredentialUnavailableError, DefaultAzureCredential
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    RetentionPolicy,
    generate_container_sas,
)

from dr_runbooks.errors import (
    AccessDenied,
    ConfigError,
    ObjectNotFound,
    OperationFailed,
    RepositoryNotFound,
)
from dr_runbooks.storage import Store
from dr_runbooks.storage.azure import (
    CONNECTION_STRING_ENV,
    DEFAULT_BLOCK_SIZE,
    AzureBlobStore,
    SoftDeletePolicy,
    container_client_from,
    parse_container_url,
)
from tests.azurite import ACCOUNT_KEY, ACCOUNT_NAME, REPO_ROOT, Azurite

if TYPE_CHECKING:
    from tests.store.conftest import Backend

MiB = 1024 * 1024
BLOCK = DEFAULT_BLOCK_SIZE
DATA = random.Random(20240601).randbytes(20 * MiB)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


class SourceFailed(Exception):
    """What a failing input (a dump that dies halfway) raises into ``put``."""


def failing_after(data: bytes) -> Iterator[bytes]:
    yield from chunked(data, MiB)
    raise SourceFailed("the dump died halfway")


def keys(store: Store, prefix: str = "") -> set[str]:
    return {info.key for info in store.list(prefix)}


# --- The contract, on every backend ------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunk_size"),
    [
        (0, 1),
        (1, 1),
        (BLOCK - 1, MiB),
        (BLOCK, BLOCK),
        (BLOCK + 1, 65_537),
        (len(DATA), 1000),
        (len(DATA), 65_537),
        (len(DATA), BLOCK),
        (len(DATA), len(DATA)),
    ],
    ids=lambda value: str(value),
)
def test_put_then_open_returns_the_same_bytes(store: Store, size: int, chunk_size: int) -> None:
    data = DATA[:size]

    assert store.put("pg/app/dump", chunked(data, chunk_size)) == size

    assert store.read_bytes("pg/app/dump") == data
    with store.open("pg/app/dump") as handle:
        pieces = []
        while piece := handle.read(1_000_003):
            pieces.append(piece)
    assert b"".join(pieces) == data
    assert store.stat("pg/app/dump").size == size
    assert [(info.key, info.size) for info in store.list()] == [("pg/app/dump", size)]


def test_put_takes_empty_chunks(store: Store) -> None:
    assert store.put("k", [b"", b"ab", b"", b"cde", b""]) == 5
    assert store.read_bytes("k") == b"abcde"
    assert store.put("empty", [b"", b""]) == 0
    assert store.read_bytes("empty") == b""


def test_a_reader_closed_early_does_not_hang(store: Store) -> None:
    store.put("dump", chunked(DATA, MiB))
    started = time.monotonic()
    with store.open("dump") as handle:
        assert handle.read(10) == DATA[:10]
    assert time.monotonic() - started < 5


def test_stat_reports_a_recent_utc_time(store: Store) -> None:
    store.put_bytes("manifest.json", b"{}")
    info = store.stat("manifest.json")
    assert info.key == "manifest.json"
    assert info.last_modified.tzinfo is not None
    assert abs(datetime.now(UTC) - info.last_modified) < timedelta(minutes=5)


def test_a_failed_put_leaves_no_object(store: Store) -> None:
    with pytest.raises(SourceFailed):
        store.put("pg/app/dump", failing_after(DATA[: BLOCK + 4 * MiB]))

    assert not store.has("pg/app/dump")
    assert keys(store) == set()
    with pytest.raises(ObjectNotFound):
        store.read_bytes("pg/app/dump")
    # The leftovers of the failed attempt do not get in the way of the next one.
    assert store.put("pg/app/dump", chunked(DATA, 3 * MiB)) == len(DATA)
    assert store.read_bytes("pg/app/dump") == DATA


@pytest.mark.parametrize("previous_size", [100, BLOCK + 100])
def test_a_failed_put_keeps_the_previous_object(store: Store, previous_size: int) -> None:
    previous = DATA[-previous_size:]
    store.put("pg/app/dump", chunked(previous, MiB))

    with pytest.raises(SourceFailed):
        store.put("pg/app/dump", failing_after(DATA[: 2 * BLOCK]))

    assert store.read_bytes("pg/app/dump") == previous
    assert [(info.key, info.size) for info in store.list()] == [("pg/app/dump", previous_size)]


@pytest.mark.parametrize("previous", [None, b"the previous backup"], ids=["new", "replacing"])
def test_an_object_being_written_is_invisible_until_complete(
    backend: Backend, store: Store, previous: bytes | None
) -> None:
    key = "pg/app/1/dump"
    store.put_bytes("pg/app/1/manifest.json", b"{}")
    if previous is not None:
        store.put_bytes(key, previous)
    paused, resume = threading.Event(), threading.Event()
    data = DATA[: BLOCK + MiB]

    def paused_source() -> Iterator[bytes]:
        yield data[: BLOCK + 1]
        paused.set()
        if not resume.wait(30):
            raise SourceFailed("the test never resumed the source")
        yield data[BLOCK + 1 :]

    outcome: list[int | BaseException] = []

    def write() -> None:
        try:
            outcome.append(store.put(key, paused_source()))
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert paused.wait(10), "put never consumed the first chunk"
        deadline = time.monotonic() + 10
        while not backend.has_partial_data(key):
            assert time.monotonic() < deadline, "the unfinished put stored nothing"
            time.sleep(0.02)

        listed = {info.key: info.size for info in store.list("pg/")}
        if previous is None:
            assert listed == {"pg/app/1/manifest.json": 2}
            assert not store.has(key)
            with pytest.raises(ObjectNotFound):
                store.open(key)
        else:
            assert listed == {"pg/app/1/manifest.json": 2, key: len(previous)}
            assert store.read_bytes(key) == previous
    finally:
        resume.set()
        writer.join(30)

    assert outcome == [len(data)]
    assert store.read_bytes(key) == data


def test_a_reader_sees_one_version_even_if_the_object_is_replaced(store: Store) -> None:
    store.put("dump", chunked(DATA, MiB))
    handle = store.open("dump")
    try:
        first = handle.read(10)
        store.put("dump", chunked(DATA[::-1], MiB))
        rest = handle.read()
    except OperationFailed:
        return  # refusing to mix versions is allowed
    finally:
        handle.close()
    assert first + rest == DATA


@pytest.mark.parametrize("key", ["absent", "pg/app", "pg/app/1/dump/deeper"])
def test_reading_a_missing_object_raises_object_not_found(store: Store, key: str) -> None:
    store.put_bytes("pg/app/1/dump", b"data")
    with pytest.raises(ObjectNotFound) as raised:
        store.open(key)
    assert raised.value.key == key
    with pytest.raises(ObjectNotFound):
        store.stat(key)
    with pytest.raises(ObjectNotFound):
        store.read_bytes(key)
    assert not store.has(key)


def test_list_yields_every_object_under_a_prefix_recursively(store: Store) -> None:
    objects = {
        "pg/app/1/manifest.json": b"{}",
        "pg/app/1/dump": b"x" * 1000,
        "pg/app/2/manifest.json": b"{ }",
        "pg/application/1/manifest.json": b"{  }",
        "pg/other/1/manifest.json": b"{   }",
        "mongo/shop/1/archive": b"y" * 10,
        "top": b"z",
    }
    for key, data in objects.items():
        store.put_bytes(key, data)

    assert {info.key: info.size for info in store.list()} == {
        key: len(data) for key, data in objects.items()
    }
    assert keys(store, "pg/") == {key for key in objects if key.startswith("pg/")}
    assert keys(store, "pg/app/") == {
        "pg/app/1/manifest.json",
        "pg/app/1/dump",
        "pg/app/2/manifest.json",
    }
    assert keys(store, "pg/app") == keys(store, "pg/app/") | {"pg/application/1/manifest.json"}
    assert keys(store, "pg/app/1/m") == {"pg/app/1/manifest.json"}
    assert keys(store, "pg/app/1/dump") == {"pg/app/1/dump"}
    assert keys(store, "t") == {"top"}
    assert keys(store, "nothing/") == set()
    assert keys(store, "pg/nothing") == set()


def test_delete_removes_the_named_objects_and_ignores_missing_ones(store: Store) -> None:
    for key in ("pg/app/1/dump", "pg/app/1/manifest.json", "pg/app/2/manifest.json"):
        store.put_bytes(key, b"data")

    store.delete(["pg/app/1/dump", "never/existed", "pg/app/1/manifest.json"])
    store.delete(["pg/app/1/dump"])
    store.delete([])

    assert keys(store) == {"pg/app/2/manifest.json"}
    assert not store.has("pg/app/1/dump")


def test_a_lock_is_exclusive_names_its_holder_and_is_free_again_once_released(
    store: Store,
) -> None:
    lease = store.try_lock("backup-app-shop", b"run one")
    assert lease is not None and lease.alive()
    assert store.try_lock("backup-app-shop", b"run two") is None
    assert store.lock_holder("backup-app-shop") == b"run one"
    other = store.try_lock("backup-app-other", b"run three")  # another name is another lock
    assert other is not None
    assert keys(store) == set()  # locks are not objects

    lease.release()
    lease.release()

    assert store.lock_holder("backup-app-shop") is None
    again = store.try_lock("backup-app-shop", b"run two")
    assert again is not None and store.lock_holder("backup-app-shop") == b"run two"
    again.release()
    other.release()


@pytest.mark.slow
def test_a_lock_dies_with_its_holder(backend: Backend, store: Store) -> None:
    script = backend.reopen(store) + (
        "\nlease = store.try_lock('backup-app-shop', b'the holder')"
        "\nprint('held' if lease else 'busy', flush=True)"
        "\nimport time; time.sleep(300)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **backend.child_env},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert store.try_lock("backup-app-shop", b"me") is None
        assert store.lock_holder("backup-app-shop") == b"the holder"
    finally:
        child.kill()  # kill -9: no code of the holder runs
        child.wait()
    deadline = time.monotonic() + 60  # a blob lease lapses within LEASE_SECONDS
    while (lease := store.try_lock("backup-app-shop", b"me")) is None:
        assert time.monotonic() < deadline, "the dead holder's lock was never freed"
        time.sleep(0.5)
    lease.release()


@pytest.mark.slow
def test_what_a_killed_writer_left_is_removed_on_request(backend: Backend, store: Store) -> None:
    script = backend.reopen(store) + (
        "\nimport time"
        "\ndef chunks():"
        "\n    yield b'x' * (9 * 1024 * 1024)"
        "\n    yield b'y' * (9 * 1024 * 1024)"
        "\n    print('written', flush=True)"
        "\n    time.sleep(300)"
        "\n    yield b'z'"
        "\nstore.put('pg/app/1/data', chunks())"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **backend.child_env},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "written"
        deadline = time.monotonic() + 30
        while not backend.has_partial_data("pg/app/1/data"):
            assert time.monotonic() < deadline, "the writer never stored anything"
            time.sleep(0.2)
    finally:
        child.kill()  # kill -9 mid-put: no clean-up code runs
        child.wait()
    assert keys(store) == set()

    store.delete_partials("pg/app/1/")

    assert not backend.has_partial_data("pg/app/1/data")
    assert keys(store) == set()


def test_every_operation_on_a_missing_store_raises_repository_not_found(
    backend: Backend, missing_store: Store
) -> None:
    store = missing_store
    operations = {
        "put": lambda: store.put("k", [b"data"]),
        "put_bytes": lambda: store.put_bytes("k", b""),
        "open": lambda: store.open("k"),
        "read_bytes": lambda: store.read_bytes("k"),
        "stat": lambda: store.stat("k"),
        "has": lambda: store.has("k"),
        "list": lambda: list(store.list()),
        "list prefix": lambda: list(store.list("pg/")),
        "delete": lambda: store.delete(["k"]),
        "delete nothing": lambda: store.delete([]),
    }
    for name, operation in operations.items():
        with pytest.raises(RepositoryNotFound) as raised:
            operation()
        message = str(raised.value)
        assert store.location in message, name
        assert not any(secret in message for secret in backend.secrets), name
    assert not store.exists()

    store.create()
    store.create()

    assert store.exists()
    assert keys(store) == set()
    store.put_bytes("k", b"data")
    assert store.read_bytes("k") == b"data"


def test_location_holds_no_secret(backend: Backend, store: Store) -> None:
    assert store.location
    for text in (store.location, repr(store)):
        assert not any(secret in text for secret in backend.secrets)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../escape", "a/./b"])
def test_malformed_keys_are_refused(store: Store, key: str) -> None:
    for operation in (
        lambda: store.put_bytes(key, b""),
        lambda: store.open(key),
        lambda: store.stat(key),
    ):
        with pytest.raises(ValueError):
            operation()


# --- Azure only ---------------------------------------------------------------------------------


def _sas(container: str, *, key: str = ACCOUNT_KEY) -> str:
    return generate_container_sas(
        ACCOUNT_NAME,
        container,
        account_key=key,
        permission=ContainerSasPermissions(read=True, write=True, delete=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def _signature(sas: str) -> str:
    return parse_qs(sas)["sig"][0]


def _assert_no_signature(sas: str, *texts: str) -> None:
    signature = _signature(sas)
    for text in texts:
        assert signature not in text
        assert quote(signature, safe="") not in text
        assert "sig=" not in text


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_azure_stages_blocks_of_the_configured_size(
    new_container: Callable[[], ContainerClient],
) -> None:
    client = new_container()
    store = AzureBlobStore(client, block_size=64 * 1024, concurrency=2)
    store.create()
    data = DATA[: 5 * MiB + 123]

    assert store.put("dump", chunked(data, 100_003)) == len(data)

    committed, _ = client.get_blob_client("dump").get_block_list("committed")
    assert len(committed) == -(-len(data) // (64 * 1024))
    assert {block.size for block in committed[:-1]} == {64 * 1024}
    assert store.read_bytes("dump") == data


def test_azure_reader_refuses_an_object_replaced_midway(
    new_container: Callable[[], ContainerClient],
) -> None:
    store = AzureBlobStore(new_container(), read_size=MiB, concurrency=2)
    store.create()
    store.put("dump", chunked(DATA, MiB))

    with store.open("dump") as handle:
        handle.read(10)
        store.put("dump", chunked(DATA[::-1], MiB))
        with pytest.raises(OperationFailed, match="replaced while it was being read"):
            handle.read()


def test_azure_sas_url_reaches_the_container_and_stays_out_of_sight(
    azurite: Azurite, new_container: Callable[[], ContainerClient]
) -> None:
    keyed = new_container()
    keyed.create_container()
    sas = _sas(keyed.container_name)
    url = f"{azurite.account_url}/{keyed.container_name}?{sas}"

    for client in (container_client_from(container_url=url), parse_container_url(url)):
        store = AzureBlobStore(client)
        store.create()  # a container SAS may list the container but not create it
        store.put("pg/app/dump", chunked(DATA, 3 * MiB))
        assert store.read_bytes("pg/app/dump") == DATA
        assert keys(store) == {"pg/app/dump"}
        store.delete(["pg/app/dump"])
        assert keys(store) == set()

        assert store.location == f"{azurite.account_url}/{keyed.container_name}"
        _assert_no_signature(sas, store.location, repr(store))


def test_azure_sas_stays_out_of_error_messages(
    azurite: Azurite, new_container: Callable[[], ContainerClient]
) -> None:
    missing = new_container().container_name
    forged = _sas(missing, key="QUJD" * 22 + "QQ==")
    for sas, error in [
        (_sas(missing), "container does not exist"),
        (forged, "denied"),
    ]:
        store = AzureBlobStore(
            container_client_from(container_url=f"{azurite.account_url}/{missing}?{sas}")
        )
        with pytest.raises(RepositoryNotFound, match=error) as raised:
            store.put("k", [b"data"])
        _assert_no_signature(
            sas, str(raised.value), "".join(traceback.format_exception(raised.value))
        )
        if error == "denied":  # refused credentials are said so, not taken for a missing store
            with pytest.raises(AccessDenied, match="denied"):
                store.exists()
        else:
            assert not store.exists()


@pytest.mark.slow
def test_azure_unreachable_endpoint_fails_fast_without_leaking_the_sas(azurite: Azurite) -> None:
    sas = _sas("backups")
    store = AzureBlobStore(
        parse_container_url(f"http://127.0.0.1:{_closed_port()}/{ACCOUNT_NAME}/backups?{sas}")
    )

    started = time.monotonic()
    with pytest.raises(RepositoryNotFound, match=r"cannot reach .*: Connection refused") as raised:
        store.put("k", [b"data"])
    elapsed = time.monotonic() - started

    assert elapsed < 20
    _assert_no_signature(sas, str(raised.value), "".join(traceback.format_exception(raised.value)))


class NoCredential:
    """A token credential with nothing to sign in with, as on a machine without ``az login``."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **options: object) -> AccessToken:
        self.calls += 1
        raise CredentialUnavailableError("no credential in this test")


def test_azure_missing_credential_fails_at_once() -> None:
    credential = NoCredential()
    store = AzureBlobStore(
        container_client_from(
            account_url="https://acct.blob.core.windows.net",
            container_name="backups",
            credential=credential,
        )
    )

    started = time.monotonic()
    with pytest.raises(RepositoryNotFound, match=r"cannot sign in to .*az login"):
        list(store.list())

    assert time.monotonic() - started < 2
    assert credential.calls == 1  # not retried like a network failure
    with pytest.raises(RepositoryNotFound, match="cannot sign in"):
        store.exists()  # a store we cannot sign in to is not a store that does not exist


def test_azure_soft_delete_policy_is_read_from_the_service(
    azurite: Azurite, new_container: Callable[[], ContainerClient]
) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    original = service.get_service_properties()["delete_retention_policy"]
    client = new_container()
    store = AzureBlobStore(client)
    try:
        service.set_service_properties(
            delete_retention_policy=RetentionPolicy(enabled=True, days=7)
        )
        assert store.soft_delete_policy() == SoftDeletePolicy(enabled=True, days=7)

        service.set_service_properties(delete_retention_policy=RetentionPolicy(enabled=False))
        assert store.soft_delete_policy() == SoftDeletePolicy(enabled=False, days=None)
    finally:
        service.set_service_properties(delete_retention_policy=original)

    client.create_container()
    sas = _sas(client.container_name)
    scoped = AzureBlobStore(
        container_client_from(container_url=f"{azurite.account_url}/{client.container_name}?{sas}")
    )
    assert scoped.soft_delete_policy() is None


def test_azure_repo_url_in_the_environment_connection_string(
    azurite: Azurite, new_container: Callable[[], ContainerClient]
) -> None:
    name = new_container().container_name
    environ = {CONNECTION_STRING_ENV: azurite.connection_string}

    store = AzureBlobStore(parse_container_url(f"azure://{name}", environ=environ))
    store.create()
    store.put_bytes("k", b"data")

    assert store.read_bytes("k") == b"data"
    assert store.location == f"{azurite.account_url}/{name}"
    with pytest.raises(ConfigError, match=CONNECTION_STRING_ENV):
        parse_container_url(f"azure://{name}", environ={})


def test_azure_repo_url_without_sas_signs_in_with_default_credential() -> None:
    client = parse_container_url("https://acct.blob.core.windows.net/backups/")

    assert isinstance(client.credential, DefaultAzureCredential)
    assert (client.account_name, client.container_name) == ("acct", "backups")
    assert AzureBlobStore(client).location == "https://acct.blob.core.windows.net/backups"


def test_azure_repo_url_with_sas_keeps_it_out_of_location() -> None:
    client = parse_container_url("https://acct.blob.core.windows.net/backups?sv=2024&sig=SECRET")

    assert AzureBlobStore(client).location == "https://acct.blob.core.windows.net/backups"
    assert "SECRET" not in repr(AzureBlobStore(client))


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/backups",
        "/var/backups",
        "azure://",
        "azure://Bad_Name",
        "azure://backups/prefix",
        "https://acct.blob.core.windows.net/",
        "https://acct.blob.core.windows.net/backups/prefix",
        "https://acct.blob.core.windows.net/ab",
        "http://acct.blob.core.windows.net/backups?sv=2024&sig=SECRET",
        "http://127.0.0.1:10000/backups",
    ],
)
def test_azure_repo_url_refuses_what_it_cannot_use(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_container_url(url, environ={CONNECTION_STRING_ENV: "AccountKey=SECRET"})
    assert "SECRET" not in str(raised.value)


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({}, "exactly one"),
        ({"connection_string": "AccountKey=SECRET", "account_url": "https://a"}, "exactly one"),
        ({"connection_string": "AccountName=a;AccountKey=SECRET"}, "container_name is required"),
        ({"connection_string": "SECRET", "container_name": "backups"}, "malformed"),
        (
            {
                "connection_string": "AccountKey=SECRET",
                "container_name": "backups",
                "credential": DefaultAzureCredential(),
            },
            "credential goes with account_url",
        ),
        ({"container_url": "https://a.blob.core.windows.net/backups"}, "no SAS token"),
        (
            {
                "container_url": "https://a.blob.core.windows.net/backups?sig=SECRET",
                "container_name": "backups",
            },
            "already names",
        ),
        ({"account_url": "http://a.blob.core.windows.net", "container_name": "backups"}, "https"),
        (
            {
                "account_url": "https://a.blob.core.windows.net?sig=SECRET",
                "container_name": "backups",
            },
            "SAS",
        ),
        ({"account_url": "https://a.blob.core.windows.net", "container_name": "B"}, "invalid"),
        ({"account_url": "https://a.blob.core.windows.net", "container_name": "a--b"}, "invalid"),
    ],
)
def test_azure_client_settings_are_checked(settings: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error) as raised:
        container_client_from(**settings)  # type: ignore[arg-type]
    assert "SECRET" not in str(raised.value)


_MEASURE_MEMORY = """
import hashlib, json, os, re, sys
from dr_runbooks.storage.azure import AzureBlobStore, container_client_from

def status_mib(field):
    with open("/proc/self/status") as status:
        return int(re.search(field + r":\\s+(\\d+) kB", status.read()).group(1)) / 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")

store = AzureBlobStore(container_client_from(
    connection_string=os.environ["CONNECTION_STRING"], container_name=os.environ["CONTAINER"]))
store.create()
store.put_bytes("warm-up", b"x")
store.read_bytes("warm-up")
piece = os.urandom(1024 * 1024)
written = hashlib.sha256()

def source():
    for index in range(int(sys.argv[1])):
        chunk = index.to_bytes(8, "big") + piece[8:]
        written.update(chunk)
        yield chunk

baseline = status_mib("VmRSS")
reset_peak()
size = store.put("big", source())
put_peak = status_mib("VmHWM")
reset_peak()
read = hashlib.sha256()
with store.open("big") as handle:
    while block := handle.read(1024 * 1024):
        read.update(block)
read_peak = status_mib("VmHWM")
print(json.dumps({
    "size": size, "put_growth": put_peak - baseline, "read_growth": read_peak - baseline,
    "same": read.hexdigest() == written.hexdigest(),
}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_azure_put_and_open_stream_in_bounded_memory(
    azurite: Azurite, new_container: Callable[[], ContainerClient]
) -> None:
    # Peak RSS comes from /proc (VmHWM, reset before each step), not from getrusage: on Linux
    # a child's ru_maxrss starts at its parent's peak, here pytest's, which dwarfs the steps.
    size_mib = 200
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE_MEMORY, str(size_mib)],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "CONNECTION_STRING": azurite.connection_string,
            "CONTAINER": new_container().container_name,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    print(measured)

    assert measured["size"] == size_mib * MiB
    assert measured["same"]
    # At the defaults a put holds 4 blocks in flight and fills a fifth (40 MiB), and a reader
    # fetches 4 ranges ahead; one that held the whole object would grow by 200 MiB.
    assert measured["put_growth"] < 80, measured
    assert measured["read_growth"] < 80, measured
