"""``dr wal``: PostgreSQL's ``archive_command`` and ``restore_command``, and a WAL streamer::

    archive_command = '/opt/dr-runbooks/bin/dr wal push %p --system app-db --repo /backups/dr'
    restore_command = '/opt/dr-runbooks/bin/dr wal fetch %f %p --system app-db --repo /backups/dr'

PostgreSQL runs these once per WAL file, as the database server's OS user, whether or not
Prefect is up. So this module is dispatched to before anything else of the CLI is imported,
parses its arguments with argparse, and imports only what the command in hand needs.

``--repo`` takes a directory, an Azure container URL, or the name of a repository in dr.yaml
(repeatable); without it, ``--system`` must be declared in dr.yaml and its repositories are
used. ``--system`` names the system's folder in the repository either way.

Encryption: ``push`` and ``stream`` encrypt every file to the recipients of the repositories'
``encrypt_to`` in dr.yaml (for those named by ``--repo NAME``, or the system's) and of
``--encrypt-to age1…`` (public keys: safe on a command line); they never decrypt, so they need
no identity. ``fetch`` (and the fetcher ``--spool`` starts) decrypts with the identity in the
file ``--identity FILE`` (or ``--identity-file``) or ``DR_AGE_IDENTITY_FILE`` names, then those
of the repositories' ``identity: file:`` in dr.yaml: a file the database server's OS user can
read, named by its path. The key itself is never accepted on the command line (argv is visible
to every user in ``ps``); a Prefect Secret block or Key Vault secret is not read here (this
command imports neither): ``dr restore postgres --at`` hands the cluster it builds a file.

Exit statuses:

========  ======================================================================================
push      0 archived (or archived before with the same content); 1 not archived: PostgreSQL
          keeps the file and retries
fetch     0 written; 1 not in the archive; 126 damaged, unreadable, encrypted without an
          identity that decrypts it, or a misconfigured command: a status above 125 makes
          PostgreSQL stop the recovery, instead of taking the failure for the end of the
          archive and promoting a server that is missing data
stream    runs until stopped; 1 when it cannot start
========  ======================================================================================
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from dr_runbooks.crypto import Keyring
    from dr_runbooks.postgres.connection import ConnInfo
    from dr_runbooks.storage.base import Store

__all__ = ["FETCH_ABORT", "FETCH_NOT_FOUND", "main"]

FETCH_NOT_FOUND = 1
FETCH_ABORT = 126


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; a misconfigured restore_command must stop recovery."""

    usage_status = 2

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_status, f"dr wal: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dr wal", description="WAL archiving for PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--system", "-s", required=True, help="The system's folder name.")
        sub.add_argument(
            "--repo",
            "-r",
            action="append",
            default=[],
            help="Directory, container URL or dr.yaml repository (repeatable); default: the "
            "system's repositories in dr.yaml.",
        )
        sub.add_argument("--config", default=os.environ.get("DR_CONFIG"), help="dr.yaml to use.")
        sub.add_argument("--quiet", "-q", action="store_true", help="Print nothing on success.")

    def encrypting(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--encrypt-to",
            action="append",
            default=[],
            metavar="RECIPIENT",
            help="Also encrypt to this age recipient (age1…, a public key; repeatable).",
        )

    def decrypting(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--identity",
            "--identity-file",
            dest="identity",
            metavar="FILE",
            help="age identity file that decrypts encrypted WAL (or DR_AGE_IDENTITY_FILE); "
            "a path, never the key itself.",
        )

    push = commands.add_parser("push", help="archive_command: archive one WAL file (%%p).")
    push.add_argument("path", help="The file to archive (PostgreSQL's %%p).")
    common(push)
    encrypting(push)
    push.add_argument(
        "--spool",
        help="Archive asynchronously: a pusher uploads ready files in parallel and records each "
        "one archived in this directory; push returns once its file is recorded.",
    )
    push.add_argument("--parallel", type=int, default=4, help="Uploads at once (with --spool).")
    push.add_argument(
        "--timeout", type=float, default=120.0, help="Seconds to wait for the pusher (--spool)."
    )

    fetch = commands.add_parser("fetch", help="restore_command: fetch one WAL file (%%f %%p).")
    fetch.add_argument("name", help="The file PostgreSQL asks for (%%f).")
    fetch.add_argument("destination", help="Where to write it (%%p).")
    common(fetch)
    decrypting(fetch)
    fetch.add_argument(
        "--no-partial",
        action="store_true",
        help="Do not serve a segment archived only as .partial.",
    )
    fetch.add_argument(
        "--spool",
        help="Fetch ahead: a fetcher keeps the next segments downloaded and verified here.",
    )
    fetch.add_argument("--window", type=int, default=8, help="Segments fetched ahead (--spool).")

    stream = commands.add_parser(
        "stream", help="Stream WAL with pg_receivewal and push each segment (long-running)."
    )
    common(stream)
    encrypting(stream)
    stream.add_argument(
        "--dsn",
        default=None,
        help="Connection (prefer DR_DSN: argv is visible to ps); default: the system's.",
    )
    stream.add_argument("--directory", "-D", required=True, help="Local directory for the stream.")
    stream.add_argument("--slot", help="Replication slot (created if missing).")
    stream.add_argument(
        "--partial-interval",
        type=float,
        default=2.0,
        help="Seconds between pushes of the segment being written (the RPO).",
    )

    fetcher = commands.add_parser("spool-fetcher", help=argparse.SUPPRESS)
    common(fetcher)
    decrypting(fetcher)
    fetcher.add_argument("--spool", required=True)
    fetcher.add_argument("--window", type=int, default=8)

    pusher = commands.add_parser("spool-pusher", help=argparse.SUPPRESS)
    common(pusher)
    encrypting(pusher)
    pusher.add_argument("--spool", required=True)
    pusher.add_argument("--wal-dir", required=True)
    pusher.add_argument("--parallel", type=int, default=4)
    pusher.add_argument("--settings", help="Leave when pushes ask for other settings.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``dr wal`` command; return its exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if args_list[:1] == ["fetch"]:
        _Parser.usage_status = FETCH_ABORT
    args = parser.parse_args(args_list)
    command = {
        "push": _push,
        "fetch": _fetch,
        "stream": _stream,
        "spool-pusher": _pusher,
        "spool-fetcher": _fetcher,
    }
    return command[args.command](args)


def _say(message: str) -> None:
    from dr_runbooks.redaction import redact

    print(f"dr wal: {redact(message)}", file=sys.stderr, flush=True)


@dataclass
class _Archive:
    """Where a command's WAL goes: the stores, whom to encrypt to, where identities are."""

    stores: list[Store] = field(default_factory=list)
    encrypt_to: list[str] = field(default_factory=list)
    keyrings: list[Keyring] = field(default_factory=list)

    def keyring(self) -> Keyring:
        from dr_runbooks.crypto import Keyring

        return Keyring.merged(self.keyrings)


def _archive(args: argparse.Namespace) -> _Archive:
    """The stores ``--repo`` names, or the system's repositories in dr.yaml, with their
    encryption (dr.yaml's ``encrypt_to`` and ``identity``, and ``--encrypt-to``)."""
    specs: list[str] = args.repo
    found = _Archive()
    repositories = []
    config = None
    for spec in specs:
        if spec.startswith(("https://", "http://", "azure://")):
            from dr_runbooks.storage.azure import AzureBlobStore, parse_container_url

            found.stores.append(AzureBlobStore(parse_container_url(spec)))
        elif "/" in spec or spec.startswith(".") or Path(spec).exists():
            from dr_runbooks.storage.local import LocalStore

            found.stores.append(LocalStore(spec))
        else:
            from dr_runbooks.config import load_config
            from dr_runbooks.targets import repository_from_config

            config = config or load_config(args.config)
            repositories.append(repository_from_config(config, spec))
    if not specs:
        from dr_runbooks.config import load_config
        from dr_runbooks.targets import repositories_for

        config = load_config(args.config)
        repositories = repositories_for(config, config.system(args.system))
    for repository in repositories:
        found.stores.append(repository.store)
        found.encrypt_to.extend(repository.encrypt_to)
        found.keyrings.append(repository.keyring)
    found.encrypt_to.extend(getattr(args, "encrypt_to", None) or [])
    if found.encrypt_to:
        from dr_runbooks.crypto import parse_recipients

        found.encrypt_to = list(parse_recipients(found.encrypt_to, "--encrypt-to"))
    return found


def _use_identity(args: argparse.Namespace) -> None:
    """``--identity FILE``: checked, then read where a WAL file needs it, through this process's
    environment (which the fetcher it starts inherits); the key never travels."""
    path = getattr(args, "identity", None)
    if not path:
        return
    from dr_runbooks.crypto import IDENTITY_FILE_ENV
    from dr_runbooks.errors import BadInput

    if "AGE-SECRET-KEY-" in path.upper():
        from dr_runbooks.redaction import register_secret

        register_secret(path)  # whatever is printed from here on must not show it
        raise BadInput(
            "--identity takes the path of an identity file, never the key itself (a command "
            "line is visible to every user): write the key to a file only this OS user can read"
        )
    location = Path(path).expanduser()
    if not location.is_file() or not os.access(location, os.R_OK):
        raise BadInput(f"cannot read identity file {path} (as this OS user)")
    os.environ[IDENTITY_FILE_ENV] = str(location.absolute())


def _push(args: argparse.Namespace) -> int:
    from dr_runbooks.errors import DRError

    try:
        if args.spool:
            return _push_spooled(args)
        from dr_runbooks.postgres.wal.archive import push

        archive = _archive(args)
        result = push(args.path, args.system, archive.stores, encrypt_to=archive.encrypt_to)
    except DRError as exc:
        _say(f"push {Path(args.path).name} failed: {exc}")
        return 1
    except Exception as exc:  # anything unexpected: PostgreSQL keeps the file and retries
        _say(f"push {Path(args.path).name} failed: {type(exc).__name__}: {exc}")
        return 1
    if not args.quiet and result.already:
        _say(f"{result.name} was already archived in {', '.join(result.already)}")
    return 0


def _push_spooled(args: argparse.Namespace) -> int:
    from dr_runbooks.postgres.wal.spool import Spool, settings_of

    spool = Spool(Path(args.spool), args.system)
    path = Path(args.path).absolute()
    pusher = _helper_argv(
        args, "spool-pusher", "--wal-dir", str(path.parent), "--parallel", str(args.parallel)
    )
    # A pusher started with other repositories or recipients (on its command line, or in a
    # dr.yaml changed since) leaves for one with these.
    settings = settings_of([*pusher, _config_version(args.config)])
    spool.wait_archived(path, [*pusher, "--settings", settings], args.timeout, settings)
    return 0


def _config_version(config: str | None) -> str:
    """Which dr.yaml a pusher reads (its size and modification time), if one is named."""
    if not config:
        return ""
    try:
        info = os.stat(config)
    except OSError:
        return "unreadable"
    return f"{info.st_size} {info.st_mtime_ns}"


def _pusher(args: argparse.Namespace) -> int:
    from dr_runbooks.postgres.wal.spool import Spool, run_pusher

    spool = Spool(Path(args.spool), args.system)
    archive = _archive(args)
    run_pusher(
        spool,
        Path(args.wal_dir),
        archive.stores,
        parallel=args.parallel,
        encrypt_to=archive.encrypt_to,
        settings=args.settings,
    )
    return 0


def _helper_argv(args: argparse.Namespace, command: str, *extra: str) -> list[str]:
    """The hidden command a push or fetch starts in the background, with its repositories."""
    argv = [sys.executable, "-m", "cli", "wal", command, "--system", args.system, *extra]
    argv += ["--spool", str(Path(args.spool).absolute())]
    for spec in args.repo:
        argv += ["--repo", spec]
    for recipient in getattr(args, "encrypt_to", None) or []:
        argv += ["--encrypt-to", recipient]
    if args.config:
        argv += ["--config", str(Path(args.config).absolute())]
    return argv


def _fetcher(args: argparse.Namespace) -> int:
    from dr_runbooks.postgres.wal.prefetch import FetchSpool, run_fetcher

    _use_identity(args)
    archive = _archive(args)
    run_fetcher(
        FetchSpool(Path(args.spool), args.system),
        args.system,
        archive.stores,
        args.window,
        keyring=archive.keyring(),
    )
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from dr_runbooks.errors import DRError, ObjectNotFound

    try:
        _use_identity(args)
    except DRError as exc:
        _say(f"fetch {args.name} refused: {exc}")
        return FETCH_ABORT
    if args.spool and not args.no_partial:
        try:
            from dr_runbooks.postgres.wal.prefetch import FetchSpool

            spool = FetchSpool(Path(args.spool), args.system)
            fetcher = _helper_argv(args, "spool-fetcher", "--window", str(args.window))
            if spool.take(args.name, Path(args.destination), fetcher):
                return 0
        except Exception as exc:  # the spool is a shortcut; the repository still decides
            _say(f"fetch {args.name}: spool {args.spool} unusable ({exc}); fetching directly")
    try:
        from dr_runbooks.postgres.wal.archive import fetch

        archive = _archive(args)
        result = fetch(
            args.name,
            args.destination,
            args.system,
            archive.stores,
            allow_partial=not args.no_partial,
            keyring=archive.keyring(),
        )
    except ObjectNotFound as exc:
        if not args.quiet:
            _say(f"{exc}")
        return FETCH_NOT_FOUND
    except DRError as exc:
        _say(f"fetch {args.name} refused: {exc}")
        return FETCH_ABORT
    except Exception as exc:
        _say(f"fetch {args.name} failed: {type(exc).__name__}: {exc}")
        return FETCH_ABORT
    if result.partial and not args.quiet:
        _say(f"{args.name} is archived only as {args.name}.partial; served it padded")
    return 0


def _stream(args: argparse.Namespace) -> int:
    from dr_runbooks.errors import DRError

    try:
        from dr_runbooks.postgres.wal.stream import WalStreamer

        archive = _archive(args)
        streamer = WalStreamer(
            conninfo=_stream_connection(args),
            system=args.system,
            stores=archive.stores,
            encrypt_to=archive.encrypt_to,
            directory=Path(args.directory),
            slot=args.slot,
            partial_interval=args.partial_interval,
            log=_say,
        )
        streamer.run()
    except DRError as exc:
        _say(f"stream failed: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def _stream_connection(args: argparse.Namespace) -> ConnInfo:
    from dr_runbooks.postgres.connection import ConnInfo

    dsn = args.dsn or os.environ.get("DR_DSN")
    if dsn:
        return ConnInfo.from_dsn(dsn)
    from dr_runbooks.config import load_config
    from dr_runbooks.targets import resolve_target

    # A replication connection names no database; "postgres" keeps the resolver from asking.
    target = resolve_target(load_config(args.config), "postgres", args.system, database="postgres")
    conninfo: ConnInfo = target.conninfo
    return conninfo


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
