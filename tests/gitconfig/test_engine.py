"""The configuration engine against real git repositories: backup, the cheap check, status,
restore by clone and by push, verification, credentials, retention and a killed backup."""

from __future__ import annotations

import base64
import functools
import http.server
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dr_runbooks import crypto
from dr_runbooks.config import Config
from dr_runbooks.errors import (
    BadInput,
    ChecksumMismatch,
    ConnectionFailed,
    IdentityRequired,
    ServerUnreachable,
)
from dr_runbooks.gitconfig import (
    DEFAULT_REFS,
    ConfigCatalog,
    GitRemote,
    backup_config,
    compare,
    push_backup,
    remote_from_config,
    restore_clone,
    verify_backup,
)
from dr_runbooks.gitconfig.git import ls_remote
from dr_runbooks.repository import Repository
from dr_runbooks.status import DatabaseStatus, system_status
from dr_runbooks.storage import LocalStore
from tests.encryption.conftest import make_key
from tests.gitconfig.conftest import SYSTEM, commit, git, refs_of


def config_for(origin: Path, backups: Path, password_env: str | None = None) -> Config:
    git_section: dict[str, object] = {"url": str(origin)}
    if password_env:
        git_section["password_env"] = password_env
    return Config.model_validate(
        {
            "repositories": {"local": {"type": "local", "path": str(backups)}},
            "systems": {SYSTEM: {"engine": "git", "git": git_section, "repositories": ["local"]}},
        }
    )


def status_row(
    config: Config, repository: Repository, now: datetime | None = None
) -> DatabaseStatus:
    (row,) = system_status(config, SYSTEM, config.systems[SYSTEM], repository, now)
    return row


def test_backup_holds_every_branch_and_tag(
    origin: Path, remote: GitRemote, catalog: ConfigCatalog
) -> None:
    manifest = backup_config(remote, catalog, DEFAULT_REFS, head="refs/heads/main")

    assert manifest.refs == refs_of(origin)
    assert set(manifest.refs) == {"refs/heads/main", "refs/heads/release", "refs/tags/v1"}
    assert catalog.latest() is not None and catalog.latest().id == manifest.id  # type: ignore[union-attr]
    assert compare(remote, catalog, DEFAULT_REFS).same


def test_a_change_is_stale_until_the_next_backup(
    origin: Path, remote: GitRemote, catalog: ConfigCatalog, repository: Repository, tmp_path: Path
) -> None:
    config = config_for(origin, tmp_path / "backups")
    assert status_row(config, repository).state == "MISSING"
    first = backup_config(remote, catalog, DEFAULT_REFS)
    row = status_row(config, repository)
    assert (row.state, row.newest_backup, row.age_seconds) == ("OK", first.id, 0.0)

    git(origin, "checkout", "--quiet", "release")
    commit(origin, "app.yaml", "replicas: 4\n")
    git(origin, "branch", "hotfix")
    git(origin, "tag", "-d", "v1")
    drift = compare(remote, catalog, DEFAULT_REFS)
    assert (drift.added, drift.changed, drift.removed) == (
        ["refs/heads/hotfix"],
        ["refs/heads/release"],
        ["refs/tags/v1"],
    )
    later = first.started + timedelta(minutes=20)
    row = status_row(config, repository, later)
    assert row.state == "STALE"
    assert "refs/heads/release" in row.detail and "refs/tags/v1" in row.detail
    assert row.age_seconds == pytest.approx(20 * 60)

    # A check that saw the remote matching narrows the age to after it.
    catalog.record_check(catalog.find(first.id), first.started + timedelta(minutes=15))
    assert status_row(config, repository, later).age_seconds == pytest.approx(5 * 60)

    second = backup_config(remote, catalog, DEFAULT_REFS)
    assert second.refs == refs_of(origin)
    row = status_row(config, repository)
    assert (row.state, row.newest_backup) == ("OK", second.id)


def test_restore_by_clone_has_the_same_refs_and_content(
    origin: Path, remote: GitRemote, catalog: ConfigCatalog, tmp_path: Path
) -> None:
    backup_config(remote, catalog, DEFAULT_REFS, head="refs/heads/main")
    backup = catalog.find()
    commit(origin, "app.yaml", "replicas: 9\n")  # after the backup: not in the restore

    target = tmp_path / "restored.git"
    refs = restore_clone(catalog, backup, target)

    assert refs == refs_of(target) == backup.manifest.refs  # type: ignore[union-attr]
    assert git(target, "show", "release:app.yaml") == "replicas: 3"
    assert git(target, "show", "main:network.yaml") == "vnet: 10.0.0.0/16"
    assert git(target, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(target, "remote") == ""
    with pytest.raises(BadInput, match="not empty"):
        restore_clone(catalog, backup, target)


def test_push_goes_only_to_a_remote_holding_nothing_but_the_backups_own_refs(
    origin: Path, remote: GitRemote, catalog: ConfigCatalog, tmp_path: Path
) -> None:
    backup_config(remote, catalog, DEFAULT_REFS)
    backup = catalog.find()
    new = tmp_path / "new.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(new)], check=True)

    pushed = push_backup(catalog, backup, GitRemote.parse(str(new)))

    assert pushed == refs_of(new) == refs_of(origin)
    # Pushed already (a restore killed before it verified): going on changes nothing.
    assert push_backup(catalog, backup, GitRemote.parse(str(new))) == pushed
    moved = commit(origin, "app.yaml", "replicas: 5\n")  # a ref the backup holds otherwise
    with pytest.raises(BadInput, match=r"already holds 1 ref.*refs/heads/main"):
        push_backup(catalog, backup, GitRemote.parse(str(origin)))
    assert refs_of(origin)["refs/heads/main"] == moved


def test_verification_finds_a_damaged_bundle(
    origin: Path, remote: GitRemote, catalog: ConfigCatalog, repository: Repository, tmp_path: Path
) -> None:
    backup_config(remote, catalog, DEFAULT_REFS)
    backup = catalog.find()
    assert verify_backup(catalog, backup)["ok"]
    config = config_for(origin, tmp_path / "backups")
    assert status_row(config, repository).verified_backup == backup.id

    stored = tmp_path / "backups" / backup.manifest.bundle.key  # type: ignore[union-attr]
    data = bytearray(stored.read_bytes())
    data[-30] ^= 0xFF
    stored.write_bytes(bytes(data))

    record = verify_backup(catalog, backup)
    assert not record["ok"] and "sha256" in record["problems"][0]
    row = status_row(config, repository)
    assert row.state == "FAILED" and "sha256" in row.detail
    with pytest.raises(ChecksumMismatch):
        restore_clone(catalog, backup, tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.fixture
def traced_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``git`` first on PATH that appends its argv to a log and runs the real one."""
    real = subprocess.run(["which", "git"], capture_output=True, text=True, check=True)
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "argv.log"
    wrapper = folder / "git"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real.stdout.strip()} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return log


def test_a_credential_never_reaches_argv_or_messages(
    traced_git: Path, catalog: ConfigCatalog, caplog: pytest.LogCaptureFixture
) -> None:
    token = "ghp_s3cretT0kenValue"
    remote = GitRemote.parse(f"https://ops:{token}@127.0.0.1:9/config.git")
    assert remote.url == "https://127.0.0.1:9/config.git"
    assert (remote.username, remote.password) == ("ops", token)
    assert token not in repr(remote)

    with caplog.at_level(logging.DEBUG), pytest.raises(ServerUnreachable) as caught:
        ls_remote(remote)
    with pytest.raises(ServerUnreachable):
        backup_config(remote, catalog, DEFAULT_REFS)

    argv = traced_git.read_text()
    assert "ls-remote" in argv and "fetch" in argv and "127.0.0.1:9" in argv
    assert token not in argv
    assert token not in str(caught.value) and token not in caplog.text
    assert (
        catalog.backups() == [] and catalog.abandoned(datetime.now(UTC) + timedelta(days=2)) == []
    )


def test_a_credential_from_the_environment(
    origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(origin, tmp_path / "backups", password_env="DR_TEST_GIT_TOKEN")
    git_config = config.systems[SYSTEM].git
    assert git_config is not None
    with pytest.raises(BadInput, match="DR_TEST_GIT_TOKEN is not set"):
        remote_from_config(git_config, environ={})
    remote = remote_from_config(git_config, environ={"DR_TEST_GIT_TOKEN": "tok-12345"})
    assert remote.password == "tok-12345" and "tok-12345" not in remote.url
    assert ls_remote(remote).refs == {
        k: v for k, v in refs_of(origin).items() if k.startswith(("refs/heads/", "refs/tags/"))
    }


def test_engine_git_goes_with_git_section(tmp_path: Path) -> None:
    base = {"repositories": {"local": {"type": "local", "path": str(tmp_path)}}}
    with pytest.raises(ValueError, match="engine: git goes with git:"):
        Config.model_validate({**base, "systems": {"c": {"engine": "git"}}})
    with pytest.raises(ValueError, match="refs are patterns under refs/"):
        Config.model_validate(
            {**base, "systems": {"c": {"engine": "git", "git": {"url": "x", "refs": ["main"]}}}}
        )
    text = yaml.safe_dump({**base, "systems": {"c": {"engine": "git", "git": {"url": "/srv/c"}}}})
    loaded = Config.model_validate(yaml.safe_load(text))
    assert loaded.systems["c"].git is not None
    assert loaded.systems["c"].git.refs == list(DEFAULT_REFS)


def _fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def test_retention_keeps_the_newest(remote: GitRemote, catalog: ConfigCatalog) -> None:
    now = datetime.now(UTC)
    ids = [
        backup_config(remote, catalog, DEFAULT_REFS, now=_fixed(now - timedelta(days=days))).id
        for days in (30, 20, 10, 1)
    ]
    expired = catalog.expired(now, retention_days=7, min_keep=2)
    assert [b.id for b in expired] == [ids[1], ids[0]]
    catalog.delete(expired)
    assert [b.id for b in catalog.backups()] == [ids[3], ids[2]]


def test_a_backup_killed_mid_way_leaves_nothing_in_the_way(
    origin: Path, catalog: ConfigCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = subprocess.run(["which", "git"], capture_output=True, text=True, check=True)
    folder = tmp_path / "killer"
    folder.mkdir()
    (folder / "git").write_text(
        "#!/bin/sh\n"
        'case "$*" in *"bundle create"*) kill -9 $PPID; sleep 5 ;; esac\n'
        f'exec {real.stdout.strip()} "$@"\n'
    )
    (folder / "git").chmod(0o755)
    script = textwrap.dedent(
        f"""
        from dr_runbooks.gitconfig import ConfigCatalog, GitRemote, backup_config, DEFAULT_REFS
        from dr_runbooks.repository import Repository
        from dr_runbooks.storage import LocalStore
        catalog = ConfigCatalog(Repository(LocalStore({str(tmp_path / "backups")!r})), {SYSTEM!r})
        backup_config(GitRemote.parse({str(origin)!r}), catalog, DEFAULT_REFS)
        """
    )
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=Path.cwd(), check=False)
    assert done.returncode == -signal.SIGKILL

    base = tmp_path / "backups" / "config" / SYSTEM / "backups"
    (left,) = list(base.iterdir())
    assert (left / "_in_progress.json").exists() and not (left / "manifest.json").exists()
    assert catalog.backups() == [] and catalog.latest() is None

    # The next backup holds the lock, so the dead run's folder is nobody's: it goes at once.
    manifest = backup_config(GitRemote.parse(str(origin)), catalog, DEFAULT_REFS)
    assert [b.id for b in catalog.backups()] == [manifest.id]
    assert manifest.leftovers_removed == [left.name]
    assert [p.name for p in base.iterdir()] == [manifest.id]


class _BasicAuthGit(http.server.SimpleHTTPRequestHandler):
    """git's "dumb" HTTP protocol (plain files of a bare repository) behind basic auth."""

    expected = ""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="config"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(origin: Path, tmp_path: Path) -> Iterator[str]:
    """``origin`` as a bare repository over HTTP that wants user ``ops``, token ``TOKEN``."""
    bare = tmp_path / "served" / "config.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(origin), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    credential = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    handler = functools.partial(_BasicAuthGit, directory=str(tmp_path / "served"))
    _BasicAuthGit.expected = f"Basic {credential}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/config.git"
    server.shutdown()
    server.server_close()


TOKEN = "tok-Zq81sEcReT"


def test_the_credential_reaches_git_through_askpass_only(
    served: str, origin: Path, catalog: ConfigCatalog, traced_git: Path
) -> None:
    host = served.split("//", 1)[1]
    remote = GitRemote.parse(f"http://ops:{TOKEN}@{host}")

    manifest = backup_config(remote, catalog, DEFAULT_REFS)

    assert manifest.refs == refs_of(origin)
    assert TOKEN not in traced_git.read_text() and TOKEN not in manifest.model_dump_json()
    assert manifest.source == served
    wrong = GitRemote.parse(f"http://ops:not-the-token@{host}")
    with pytest.raises(ConnectionFailed) as caught:
        ls_remote(wrong)
    assert "not-the-token" not in str(caught.value)


def test_an_encrypted_repository_stores_the_bundle_sealed(
    origin: Path, remote: GitRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DR_AGE_IDENTITY_FILE", raising=False)
    key = make_key(tmp_path, "config")
    store = LocalStore(tmp_path / "sealed")
    ring = crypto.Keyring([crypto.FileIdentity(str(key.path))])
    sealed = ConfigCatalog(Repository(store, encrypt_to=[key.recipient], keyring=ring), SYSTEM)

    manifest = backup_config(remote, sealed, DEFAULT_REFS)

    assert manifest.bundle.key.endswith(".bundle.age")
    assert manifest.bundle.encryption is not None
    assert b"refs/heads/main" not in store.read_bytes(manifest.bundle.key)
    assert restore_clone(sealed, sealed.find(), tmp_path / "clone") == refs_of(origin)
    assert verify_backup(sealed, sealed.find())["ok"]
    keyless = ConfigCatalog(Repository(store, encrypt_to=[key.recipient]), SYSTEM)
    with pytest.raises(IdentityRequired):
        restore_clone(keyless, keyless.find(), tmp_path / "never")
    assert not (tmp_path / "never").exists()
