"""Which dr.yaml a run read, by git commit, and the configuration restored from git.

The plan's RPO for configuration is 0 because it is version controlled: a run records the
commit its dr.yaml came from (and whether the file differed from it), and the quarterly
recovery test restores the configuration from its newest backup (an ``engine: git`` system's
bundle) and finds that commit there; without such a system, from the checkout itself.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from dr_runbooks.errors import CommandFailed, ConfigError

__all__ = ["config_version", "export_at", "has_commit"]


def _git(directory: Path, *args: str, binary: bool = False) -> Any:
    try:
        result = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise CommandFailed("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"git {args[0]} in {directory} did not finish within 120 s") from None
    if result.returncode != 0:
        reason = (result.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise CommandFailed(f"git {args[0]} in {directory} exited {result.returncode}: {reason}")
    return result.stdout if binary else result.stdout.decode().strip()


def config_version(path: str | Path | None) -> dict[str, Any]:
    """dr.yaml's path, sha256, git commit (HEAD of its checkout) and whether the file
    differs from that commit; ``commit`` is None outside git (never an error: a run does not
    stop for its bookkeeping)."""
    if path is None:
        return {"path": None, "sha256": None, "commit": None, "modified": None}
    file = Path(path).resolve()
    version: dict[str, Any] = {"path": str(file), "commit": None, "modified": None}
    try:
        version["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    except OSError:
        version["sha256"] = None
    try:
        root = Path(_git(file.parent, "rev-parse", "--show-toplevel"))
        version["commit"] = _git(root, "rev-parse", "HEAD")
        version["repository"] = str(root)
        version["file"] = str(file.relative_to(root))
        status = _git(root, "status", "--porcelain", "--", version["file"])
        version["modified"] = bool(status)
    except (CommandFailed, ValueError):
        pass
    return version


def export_at(repository: str | Path, commit: str, destination: Path) -> list[str]:
    """Write the tree of ``commit`` in the git checkout ``repository`` into ``destination``
    (``git archive``: committed content only, nothing of the working tree); return the files."""
    repo = Path(repository)
    if not (repo / ".git").exists() and not repo.joinpath("HEAD").exists():
        raise ConfigError(f"{repo} is not a git repository")
    data = _git(repo, "archive", "--format=tar", commit, binary=True)
    destination.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            if member.isfile():
                names.append(member.name)
        archive.extractall(destination, filter="data")
    return sorted(names)


def has_commit(repository: str | Path, commit: str) -> bool:
    """Whether the git repository (a checkout or a bare clone) holds ``commit``."""
    try:
        _git(Path(repository), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except CommandFailed:
        return False
    return True
