"""The ``git`` commands the configuration backups need, with checked exit status.

A remote's credential never reaches a command line: a password or token written into the
URL (``https://user:token@host/repo.git``) is taken out of it and registered with
:mod:`dr_runbooks.redaction`; git asks for it through ``GIT_ASKPASS``, a script that prints
an environment variable of the child process. ``GIT_TERMINAL_PROMPT=0`` makes a missing or
refused credential fail at once instead of waiting for a person.

Errors are translated here: a host that cannot be reached is
:class:`~dr_runbooks.errors.ServerUnreachable` (worth a retry), refused credentials or a
repository that does not exist :class:`~dr_runbooks.errors.ConnectionFailed`, anything else
:class:`~dr_runbooks.errors.CommandFailed`, each with git's own words, redacted.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

from dr_runbooks.errors import CommandFailed, ConnectionFailed, ServerUnreachable
from dr_runbooks.processes import die_with_parent
from dr_runbooks.redaction import redact, register_secret

__all__ = [
    "DEFAULT_REFS",
    "GitRemote",
    "RemoteRefs",
    "bundle_heads",
    "clone_bundle",
    "create_bundle",
    "local_refs",
    "ls_remote",
    "push_refs",
    "run_git",
    "verify_bundle",
]

#: What a configuration backup holds unless dr.yaml says otherwise: branches and tags.
DEFAULT_REFS = ("refs/heads/*", "refs/tags/*")
_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$DR_GIT_USERNAME" ;;
  *) printf '%s\\n' "$DR_GIT_PASSWORD" ;;
esac
"""
_UNREACHABLE = (
    "could not resolve host",
    "connection refused",
    "connection timed out",
    "operation timed out",
    "failed to connect",
    "network is unreachable",
    "connection reset",
)
_REFUSED = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "permission denied",
    "does not appear to be a git repository",
    "repository not found",
)


@dataclass(frozen=True)
class GitRemote:
    """A git repository (a URL or a local path) and the credential to read or push it."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, password: str | None = None, username: str | None = None) -> GitRemote:
        """Take a credential out of ``url``; ``password`` (from the environment or a block)
        wins over one written into the URL."""
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and (parts.password or parts.username):
            register_secret(parts.password)
            host = parts.hostname or ""
            netloc = host + (f":{parts.port}" if parts.port else "")
            url = urlunsplit(SplitResult(parts.scheme, netloc, parts.path, parts.query, ""))
            username = username or parts.username
            password = password or parts.password
        register_secret(password)
        return cls(url, username, password)

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class RemoteRefs:
    """A remote's refs (name → commit or tag object) and the branch its HEAD names."""

    refs: dict[str, str]
    head: str | None = None


@contextlib.contextmanager
def _credentials(remote: GitRemote | None) -> Iterator[dict[str, str]]:
    """The environment a git child process runs with: no prompts, and the credential (if
    any) behind an askpass script that exists for the duration of the command."""
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.pop("DR_GIT_PASSWORD", None)
    if remote is None or remote.password is None:
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="dr-git-") as folder:
        script = Path(folder) / "askpass"
        script.write_text(_ASKPASS)
        script.chmod(stat.S_IRWXU)
        env["GIT_ASKPASS"] = str(script)
        env["DR_GIT_USERNAME"] = remote.username or "git"
        env["DR_GIT_PASSWORD"] = remote.password
        yield env


def run_git(
    args: Sequence[str],
    what: str,
    remote: GitRemote | None = None,
    cwd: Path | None = None,
) -> str:
    """Run ``git args`` and return its standard output; raise the translated error."""
    command = ["git", "-c", "credential.helper=", *args]
    with _credentials(remote) as env:
        try:
            # git dies with us: a killed restore leaves no push going on behind it.
            done = subprocess.run(
                command,
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                preexec_fn=die_with_parent,
            )
        except FileNotFoundError:
            raise CommandFailed("git is not installed (or not on PATH)") from None
    if done.returncode == 0:
        return done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    reason = redact(lines[-1] if lines else f"exit status {done.returncode}")
    message = f"git {what} exited {done.returncode}: {reason}"
    lowered = done.stderr.lower()
    if any(text in lowered for text in _UNREACHABLE):
        raise ServerUnreachable(message)
    if remote is not None and any(text in lowered for text in _REFUSED):
        raise ConnectionFailed(message)
    raise CommandFailed(message)


def _matches(ref: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(ref, pattern) for pattern in patterns)


def ls_remote(remote: GitRemote, patterns: Sequence[str] = DEFAULT_REFS) -> RemoteRefs:
    """The remote's refs matching ``patterns`` (one cheap request, no objects fetched)."""
    out = run_git(["ls-remote", "--symref", remote.url], "ls-remote", remote)
    refs: dict[str, str] = {}
    head = None
    for line in out.splitlines():
        value, _, name = line.partition("\t")
        if value.startswith("ref: ") and name == "HEAD":
            head = value[len("ref: ") :]
        elif name != "HEAD" and not name.endswith("^{}") and _matches(name, patterns):
            refs[name] = value
    return RemoteRefs(refs, head)


def local_refs(repository: Path) -> dict[str, str]:
    """Every ref of a local repository (name → object)."""
    out = run_git(
        ["for-each-ref", "--format=%(objectname) %(refname)"], "for-each-ref", cwd=repository
    )
    return dict(reversed(line.split(" ", 1)) for line in out.splitlines() if line)  # type: ignore[misc]


def create_bundle(
    remote: GitRemote, patterns: Sequence[str], head: str | None, mirror: Path, bundle: Path
) -> dict[str, str]:
    """Fetch the refs matching ``patterns`` into a bare repository ``mirror`` and bundle all
    of them into ``bundle``; return the refs the bundle holds (what it holds is the record,
    whatever the remote received meanwhile)."""
    run_git(["init", "--quiet", "--bare", str(mirror)], "init")
    refspecs = [f"+{pattern}:{pattern}" for pattern in patterns]
    run_git(["fetch", "--quiet", "--no-tags", remote.url, *refspecs], "fetch", remote, mirror)
    if head is not None:
        with contextlib.suppress(CommandFailed):
            run_git(["symbolic-ref", "HEAD", head], "symbolic-ref", cwd=mirror)
    if not local_refs(mirror):
        raise CommandFailed(f"{remote} holds no refs matching {', '.join(patterns)}")
    run_git(["bundle", "create", "--quiet", str(bundle), "--all"], "bundle create", cwd=mirror)
    return bundle_heads(bundle)


def bundle_heads(bundle: Path) -> dict[str, str]:
    """The refs a bundle holds (name → object), HEAD left out."""
    out = run_git(["bundle", "list-heads", str(bundle)], "bundle list-heads")
    heads: dict[str, str] = {}
    for line in out.splitlines():
        value, _, name = line.partition(" ")
        if name and name != "HEAD":
            heads[name] = value
    return heads


def verify_bundle(bundle: Path, scratch: Path) -> None:
    """``git bundle verify`` (it needs a repository: an empty one in ``scratch``)."""
    run_git(["init", "--quiet", "--bare", str(scratch)], "init")
    run_git(["bundle", "verify", "--quiet", str(bundle)], "bundle verify", cwd=scratch)


def clone_bundle(bundle: Path, path: Path, head: str | None) -> dict[str, str]:
    """A bare mirror of ``bundle`` at ``path`` with no remote left behind; its refs."""
    run_git(["clone", "--quiet", "--mirror", str(bundle), str(path)], "clone")
    run_git(["remote", "remove", "origin"], "remote remove", cwd=path)
    if head is not None:
        with contextlib.suppress(CommandFailed):
            run_git(["symbolic-ref", "HEAD", head], "symbolic-ref", cwd=path)
    return local_refs(path)


def push_refs(repository: Path, remote: GitRemote, refs: Mapping[str, str]) -> None:
    """Push ``refs`` of a local repository to ``remote``, never forcing: a ref the remote
    already holds at another commit makes git refuse, and that is reported."""
    refspecs = [f"{name}:{name}" for name in sorted(refs)]
    run_git(["push", "--quiet", "--porcelain", remote.url, *refspecs], "push", remote, repository)
