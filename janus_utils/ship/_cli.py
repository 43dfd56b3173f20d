"""``janus-logs ship``: run the shippers of a database from outside the application, or show their state."""

from __future__ import annotations

import argparse
import json
import signal
import textwrap
import threading
import time
from typing import IO, Any

from .. import _schema
from ..error_handling.utils.errors import ConfigError, ShipError
from ..security import sanitize
from ._shipper import Shipper, open_for_shipping, sink_status

# ship --once gives up on a sink that has failed this long without a break, so
# that a run from cron ends while a sink is down (the next goes on from its cursor).
ONCE_GIVE_UP = 60.0

__all__ = ["add_parser"]


def add_parser(commands: Any, db_default: str, formatter: type[argparse.HelpFormatter], prog: str) -> argparse.ArgumentParser:
    ship = commands.add_parser(
        "ship",
        help="ship committed records to OTLP or ClickHouse (a daemon), or show how far shipping got",
        description=textwrap.dedent(
            """\
            Ship the database's committed records to each --to sink, in id
            order, and keep doing so as records are committed (until Ctrl-C
            or SIGTERM).  Each sink's position is kept in the database, so a
            restarted shipper goes on where the last one stopped; when an
            application ships the same sink (configure(ship=...)) only one of
            them ships at a time.  Sinks:
              otlp+http://HOST:4318        OTLP/HTTP protobuf (otlp+https:// for TLS;
                                           OTEL_EXPORTER_OTLP_HEADERS for auth)
              clickhouse://[USER:PASS@]HOST:8123[,HOST2:8123]/DATABASE.TABLE[?cluster=NAME]
                                           the table is created when missing;
                                           with cluster=, ReplicatedMergeTree ON CLUSTER
            --status shows every sink the database has shipped to, from any process."""
        ),
        epilog="\n".join(
            [
                "Example:",
                f"  {prog} ship --db app.db --to otlp+http://127.0.0.1:4318 --to clickhouse://127.0.0.1:8123/default.logs",
                f"  {prog} ship --db app.db --to clickhouse://127.0.0.1:8123/default.logs --once",
                f"  {prog} ship --db app.db --status",
                "",
                "Exit status: 0 shipped (or status shown), 1 no sink to show, 2 an error or a sink refused for good.",
            ]
        ),
        formatter_class=formatter,
    )
    from ..cli import _db_option  # one wording of --db for every command

    _db_option(ship, db_default)
    ship.add_argument("--to", action="append", default=[], metavar="URL", help="a sink (repeatable): otlp+http://... or clickhouse://...")
    ship.add_argument("--status", action="store_true", help="show each sink's shipped id, lag and last error, then exit")
    ship.add_argument("--once", action="store_true", help="ship what is committed now, then exit")
    ship.add_argument("--host", metavar="NAME", help="the host of rows stored without one (default: the one stored in the database, first $JANUS_HOST or the machine's name)")
    ship.add_argument("--batch-size", type=int, metavar="N", help="records per request (default: 50000 for ClickHouse, 2000 for OTLP)")
    ship.add_argument("--forget", metavar="SINK", help="delete SINK's cursor (as --status names it): retention stops keeping rows for it")
    ship.add_argument("--timeout", type=float, metavar="SECONDS", help="with --once: give up after SECONDS")
    ship.add_argument(
        "--give-up-after", type=float, default=ONCE_GIVE_UP, metavar="SECONDS",
        help=f"with --once: give up on a sink that has failed without a break for SECONDS (default {ONCE_GIVE_UP:g}); "
        "the next run goes on from where it stopped",
    )
    ship.add_argument("--json", action="store_true", help="--status as one JSON object")
    ship.set_defaults(run=run)
    return ship


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.status or args.forget:
        if args.to:
            raise ConfigError("--status and --forget read the database; they take no --to")
        return _status(args, out) if args.status else _forget(args, out)
    if not args.to:
        raise ConfigError("nothing to ship to: give --to otlp+http://HOST:4318 or --to clickhouse://HOST:8123/DB.TABLE")
    from . import exporter_from_url

    options: dict[str, Any] = {}
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    exporters = [exporter_from_url(url, **options) for url in args.to]
    open_for_shipping(args.db).close()  # a missing or foreign database is an error now
    shippers = [Shipper(args.db, exporter, host=args.host, stream=err) for exporter in exporters]
    if args.once:
        return _once(shippers, args, out)
    return _daemon(shippers, out, err)


def _once(shippers: list[Shipper], args: argparse.Namespace, out: IO[str]) -> int:
    """Ship every sink until caught up, side by side: a sink that is down delays none of the others."""
    results: dict[int, bool | ShipError] = {}

    def ship(n: int, shipper: Shipper) -> None:
        try:
            results[n] = shipper.run_until_caught_up(args.timeout, give_up_after=args.give_up_after)
        except ShipError as exc:
            results[n] = exc

    threads = [threading.Thread(target=ship, args=(n, s), name=f"janus-ship-once-{n}") for n, s in enumerate(shippers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    code = 0
    for n, shipper in enumerate(shippers):
        done = results.get(n, False)
        if isinstance(done, ShipError):
            out.write(f"{sanitize(shipper.sink)}: refused: {sanitize(done.message)}\n")
            code = 2
        elif not done:
            why = f"; last error: {sanitize(shipper.last_error)}" if shipper.last_error else ""
            out.write(
                f"{sanitize(shipper.sink)}: not caught up, up to id {shipper.shipped_upto} (another shipper holds it, "
                f"--timeout passed, or it failed for --give-up-after {args.give_up_after:g} s{why})\n"
            )
            code = 2
        else:
            out.write(f"{sanitize(shipper.sink)}: {shipper.shipped:,} records shipped, up to id {shipper.shipped_upto}\n")
    return code


def _daemon(shippers: list[Shipper], out: IO[str], err: IO[str]) -> int:
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        for shipper in shippers:
            shipper.start()
            err.write(f"janus-logs: shipping {sanitize(shipper.db_path)} to {sanitize(shipper.sink)}\n")
        err.flush()
        while not stop.wait(0.5):
            if all(shipper.state == "stopped" for shipper in shippers):
                return 2
        return 0
    finally:
        for shipper in shippers:
            shipper.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _status(args: argparse.Namespace, out: IO[str]) -> int:
    db = open_for_shipping(args.db)
    try:
        found = sink_status(db)
    finally:
        db.close()
    if args.json:
        out.write(json.dumps({"db": args.db, "sinks": [s.to_dict() for s in found]}, ensure_ascii=True) + "\n")
        return 0 if found else 1
    if not found:
        out.write(f"no sink has shipped from {sanitize(args.db)}\n")
        return 1
    for s in found:
        age = f"{(time.time_ns() - s.updated_ns) / 1e9:.0f} s ago" if s.updated_ns else "never"
        line = (
            f"{sanitize(s.sink)}  {s.state}  shipped up to id {s.shipped_upto:,} of {s.max_id:,}  "
            f"lag {s.lag_rows:,} rows / {s.lag_seconds:.1f} s  (updated {age})"
        )
        if s.last_error:
            line += f"\n  last error: {sanitize(s.last_error)}"
        out.write(line + "\n")
    return 0


def _forget(args: argparse.Namespace, out: IO[str]) -> int:
    db = open_for_shipping(args.db)
    try:
        db.execute(f'DELETE FROM "{_schema.SHIP_CURSOR_TABLE}" WHERE "sink" = ?', (args.forget,))
        removed = db.changes()
    finally:
        db.close()
    out.write(f"{sanitize(args.forget)}: " + ("forgotten\n" if removed else "no such sink (see --status)\n"))
    return 0 if removed else 1
