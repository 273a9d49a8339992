"""Fixtures for the configuration engine: real git repositories made with ``git init`` in
temporary folders (two branches, an annotated tag), and a local backup repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dr_runbooks.gitconfig import ConfigCatalog, GitRemote
from dr_runbooks.repository import Repository
from dr_runbooks.storage import LocalStore

SYSTEM = "app-config"


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ops",
        "GIT_AUTHOR_EMAIL": "ops@example.com",
        "GIT_COMMITTER_NAME": "Ops",
        "GIT_COMMITTER_EMAIL": "ops@example.com",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    """Write a file, commit it on the current branch; return the commit."""
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "--quiet", "-m", f"change {name}")
    return git(repo, "rev-parse", "HEAD")


def refs_of(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(objectname) %(refname)")
    return {name: obj for obj, name in (line.split(" ", 1) for line in out.splitlines())}


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A configuration repository: main and a release branch, an annotated tag."""
    repo = tmp_path / "origin"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(repo)], check=True)
    commit(repo, "app.yaml", "replicas: 2\n")
    git(repo, "tag", "-a", "v1", "-m", "release 1")
    git(repo, "checkout", "--quiet", "-b", "release")
    commit(repo, "app.yaml", "replicas: 3\n")
    git(repo, "checkout", "--quiet", "main")
    commit(repo, "network.yaml", "vnet: 10.0.0.0/16\n")
    return repo


@pytest.fixture
def remote(origin: Path) -> GitRemote:
    return GitRemote.parse(str(origin))


@pytest.fixture
def repository(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "backups"), "local", retention_days=7, min_keep=2)


@pytest.fixture
def catalog(repository: Repository) -> ConfigCatalog:
    return ConfigCatalog(repository, SYSTEM)
