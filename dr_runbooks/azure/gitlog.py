"""What changed in the configuration repository since the last known-good commit (the plan's
``git diff HEAD``, made useful: commits, files, and what is not committed at all)."""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dr_runbooks.errors import CommandFailed, ConfigError

__all__ = ["ConfigChanges", "changes_since"]


@dataclass
class ConfigChanges:
    repository: str
    known_good: str
    head: str
    commits: list[dict[str, str]] = field(default_factory=list)
    files: list[dict[str, str]] = field(default_factory=list)
    uncommitted: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def clean(self) -> bool:
        return not (self.commits or self.files or self.uncommitted)


def _git(repo: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise CommandFailed("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"git {args[0]} in {repo} did not finish within 120 s") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise CommandFailed(f"git {args[0]} in {repo} exited {result.returncode}: {reason}")
    return result.stdout


def changes_since(repository: str, known_good: str) -> ConfigChanges:
    """Commits after ``known_good`` up to HEAD, the files they changed, and uncommitted
    changes in the working tree."""
    repo = Path(repository).expanduser()
    if not (repo / ".git").exists():
        raise ConfigError(f"{repo} is not a git checkout")
    try:
        good = _git(repo, "rev-parse", "--verify", f"{known_good}^{{commit}}").strip()
    except CommandFailed:
        raise ConfigError(f"{known_good!r} is not a commit of {repo}") from None
    head = _git(repo, "rev-parse", "HEAD").strip()
    commits = []
    for line in _git(repo, "log", "--format=%H%x1f%an%x1f%aI%x1f%s", f"{good}..HEAD").splitlines():
        sha, author, date, subject = ([*line.split("\x1f"), "", "", ""])[:4]
        commits.append({"commit": sha[:12], "author": author, "date": date, "subject": subject})
    files = []
    for line in _git(repo, "diff", "--name-status", good, "HEAD").splitlines():
        status, _, path = line.partition("\t")
        files.append({"status": status, "path": path})
    uncommitted = [
        line for line in _git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    ]
    return ConfigChanges(str(repo), good[:12], head[:12], commits, files, uncommitted)
