"""``janus-logs seal init`` and ``janus-logs verify``: make a seal key, check a sealed database."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import time
from typing import IO, Any

from . import seal
from .error_handling.utils.errors import ConfigError

__all__ = ["add_parsers"]


def add_parsers(commands: Any, db_default: str, formatter: type[argparse.HelpFormatter], prog: str) -> None:
    sealer = commands.add_parser(
        "seal",
        help="make the key that seals a database's batches (configure(seal_key_file=...))",
        description=textwrap.dedent(
            """\
            init writes a new seal key file (0600) and prints the verification
            key.  Give the key file to configure(seal_key_file=...): every
            batch committed from then on is sealed, and the key is replaced by
            a new one each --period.  Keep the verification key elsewhere
            (not beside the database): verify needs it, and it cannot seal.
            Needs the seal extra: pip install 'janus_utils[seal]'."""
        ),
        epilog="\n".join(
            [
                "Example:",
                f"  {prog} seal init --key-file /etc/janus/seal.key",
                f"  {prog} seal init --key-file seal.key --period 1h",
                "",
                "Exit status: 0 key written, 2 an error.",
            ]
        ),
        formatter_class=formatter,
    )
    actions = sealer.add_subparsers(dest="seal_command", metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="write a new seal key file and print its verification key",
        description="Write a new seal key file (0600; refused if it exists) and print the verification key on stdout.",
        epilog="\n".join(
            [
                "Example:",
                f"  {prog} seal init --key-file /etc/janus/seal.key > verify-key.txt",
                "",
                "Exit status: 0 key written, 2 an error.",
            ]
        ),
        formatter_class=formatter,
    )
    init.add_argument("--key-file", required=True, metavar="PATH", help="where to write the key (0600; must not exist)")
    init.add_argument("--period", default="15min", metavar="TIME", help="how long each key seals before it is replaced (default 15min)")
    init.add_argument("--force", action="store_true", help="replace an existing key file (its chain cannot be continued)")
    init.set_defaults(run=_init)
    sealer.set_defaults(run=_seal_usage(sealer))

    verify = commands.add_parser(
        "verify",
        help="check a sealed database (and its archives) for tampering",
        description=textwrap.dedent(
            """\
            Check the seal chain of --db against the verification key, every
            stored column of every sealed row, and the exported seal head
            (<db>-seal.head).  With --archives DIR the rows a prune moved into
            DIR's archives are checked too, end to end.  Every problem is
            printed with its kind (changed, deleted, inserted, reordered,
            truncated, dropped batch, signature) and where (ids, batches)."""
        ),
        epilog="\n".join(
            [
                "Example:",
                f"  {prog} verify --db app.db --verify-key 3f1c...",
                f"  {prog} verify --db app.db --verify-key-file vk.txt --archives archive/",
                "",
                "Exit status: 0 intact, 1 tampering found, 2 bad usage or an error.",
            ]
        ),
        formatter_class=formatter,
    )
    from .cli import _db_option  # one wording of --db for every command

    _db_option(verify, db_default)
    verify.add_argument("--verify-key", metavar="HEX", help="the verification key seal init printed")
    verify.add_argument("--verify-key-file", metavar="PATH", help="a file holding the verification key")
    verify.add_argument("--archives", metavar="DIR", help="also check the archives a prune wrote into DIR")
    verify.add_argument("--head", metavar="PATH", help="the exported seal head (default <db>-seal.head)")
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    verify.set_defaults(run=_verify)


def _seal_usage(parser: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
        parser.print_help(err)
        return 2

    return run


def _init(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    key = seal.init_key(args.key_file, period=args.period, force=args.force)
    out.write(f"{key}\n")
    err.write(
        f"seal key written to {args.key_file} (0600); the line above is the verification key: "
        "keep it somewhere the database's host cannot change\n"
    )
    return 0


def _verify(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    key = args.verify_key
    if args.verify_key_file:
        if key:
            raise ConfigError("give --verify-key or --verify-key-file, not both")
        with open(args.verify_key_file) as f:
            key = f.read().strip()
    if not key:
        raise ConfigError("verify needs the verification key: --verify-key HEX or --verify-key-file PATH")
    if args.archives is not None and not os.path.isdir(args.archives):
        raise ConfigError(f"--archives {args.archives!r} is not a directory")
    started = time.perf_counter()
    report = seal.verify(args.db, key, archives=args.archives, head=args.head)
    seconds = time.perf_counter() - started
    if args.json:
        out.write(json.dumps({**report.to_dict(), "seconds": round(seconds, 3)}) + "\n")
    else:
        for finding in report.findings:
            out.write(f"{finding}\n")
        summary = (
            f"{report.batches} batches, {report.rows} rows in the database"
            + (f", {report.archived_rows} in archives" if report.archived_rows else "")
            + f", {report.periods + 1} key periods"
            + (f" ({report.unsealed_before} rows from before sealing began are not covered)" if report.unsealed_before else "")
        )
        verdict = "intact" if report.ok else f"TAMPERING FOUND ({len(report.findings)} findings)"
        (out if report.ok else err).write(f"{verdict}: {summary}; {seconds:.2f} s\n")
    return 0 if report.ok else 1

