"""janus-logs: search, follow, summarize, export, prune and erase a janus log database from the shell.

A thin layer over :class:`janus_utils.store.LogStore` and
:mod:`janus_utils.retention`, one function per command.  Exit codes follow
grep: 0 something was found (or removed, or imported), 1 nothing was, 2 bad
usage or an error (one line on stderr, ``janus-logs: error: ...``, no
traceback).
"""

from __future__ import annotations

import argparse
import csv
import errno
import importlib
import importlib.util
import io
import json
import os
import re
import sys
import textwrap
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import apsw

from ._cli_output import OUTPUT_FORMATS, SOURCE_KEYS, format_time, json_pretty, pager, reader_gone, verbose_lines
from ._levels import LEVELS, level_name, parse_level
from ._schema import COLUMNS
from ._timeparse import format_ts, parse_time, ts_datetime
from .error_handling import JanusError
from .file_handler import atomic_output, sqlite_path
from .retention import PruneSummary, erase_path, import_archive, list_archives, prune_path, search_archives
from .security import logfmt_text, sanitize
from .store import DEFAULT_TIMEOUT, FieldValue, LogStore, Record, StoreStats
from .store import _record as _record_from_row  # the one place a stored row becomes a Record

__all__ = ["main"]

PROG = "janus-logs"
DEFAULT_DB = "./janus-logs.db"

# Exported in this column order; "fields" as JSON text in CSV.
EXPORT_COLUMNS = tuple(key for key in Record(0, 0, 0, "", "").to_dict())

_PROGRESS_EVERY = 10_000  # an export or prune shows progress (on a tty) once it is this large

# Ends the text line of a record found in an archive (in --json: "archived": true).
ARCHIVED_MARK = "[archived]"

# A prune lists at most this many archive files; --json lists them all.
_ARCHIVES_LISTED = 10

def _json_line(data: Any) -> str:
    # ensure_ascii escapes every control, separator and bidi character, so a
    # record is one line and nothing in it can drive a terminal.
    return json.dumps(data, ensure_ascii=True, default=str)


# ---------------------------------------------------------------- colours
_RESET = "\x1b[0m"
_LEVEL_COLOURS = {5: "\x1b[2m", 10: "\x1b[2m", 20: "\x1b[32m", 30: "\x1b[33m", 40: "\x1b[31m", 50: "\x1b[1;31m"}
_DIM = "\x1b[2m"
_BOLD = "\x1b[1m"


def _use_colour(stream: IO[str]) -> bool:
    """ANSI colours only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _paint(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{_RESET}" if colour and code else text


# ---------------------------------------------------------------- records as text
def _logfmt_value(value: object) -> str:
    """*value* as one logfmt value: bare when that is safe, else quoted as the console quotes.

    security.quote, not json.dumps: JSON leaves C1 controls and bidi characters
    raw, and sanitizing its output then wrote them as ``\\x9b``, which no logfmt
    or JSON reader decodes.
    """
    return logfmt_text(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))


def _format_record(record: Record, colour: bool, utc: bool = True) -> str:
    """``TIME LEVEL logger: message key=value ...``; every stored string sanitized."""
    level = f"{record.level_name:<8}"
    parts = [
        _paint(format_time(record.ts, utc=utc), _DIM, colour),
        _paint(level, _LEVEL_COLOURS.get(record.level, ""), colour),
        _paint(sanitize(record.logger) + ":", _BOLD, colour),
        sanitize(record.message),
    ]
    pairs: list[tuple[str, object]] = [
        (name, value)
        for name, value in (
            ("user", record.user_id),
            ("agent", record.agent_id),
            ("request", record.request_id),
        )
        if value is not None
    ]
    fields = record.fields
    if SOURCE_KEYS[0] in fields or SOURCE_KEYS[1] in fields:
        # Where it was logged, as one short pair: -o verbose and show give the whole path.
        where = os.path.basename(str(fields.get(SOURCE_KEYS[0], "")))
        line = fields.get(SOURCE_KEYS[1])
        pairs.append(("src", f"{where}:{line}" if line is not None else where))
        fields = {key: value for key, value in fields.items() if key not in SOURCE_KEYS}
    pairs.extend(fields.items())
    if record.exception:
        lines = [line for line in record.exception.splitlines() if line.strip()]
        if lines:
            pairs.append(("exc", lines[-1].strip()))
    for key, value in pairs:
        key_text = _logfmt_value(key).replace("=", "_")
        parts.append(_paint(key_text + "=", _DIM, colour) + _logfmt_value(value))
    return " ".join(parts)


class _Printer:
    """Records to a stream in one of OUTPUT_FORMATS (``-o``); ``as_json`` is ``-o json``."""

    def __init__(self, stream: IO[str], as_json: bool, fmt: str | None = None, *, utc: bool = True) -> None:
        self.stream = stream
        self.format = fmt or ("json" if as_json else "short")
        self.as_json = self.format in ("json", "json-pretty")
        self.colour = self.format in ("short", "verbose") and _use_colour(stream)
        self.utc = utc
        self.count = 0
        self._csv: Any = None

    def write(self, record: Record, *, archived: bool = False) -> None:
        """One record; *archived* marks one read from an archive rather than the database."""
        fmt = self.format
        if self.as_json:
            data = record.to_dict()
            if archived:
                data["archived"] = True
            line = _json_line(data) if fmt == "json" else json_pretty(data)
        elif fmt == "cat":
            line = sanitize(record.message)
        elif fmt == "verbose":
            lines = verbose_lines(record, utc=self.utc, archived=archived)
            lines[0] = _paint(lines[0], _LEVEL_COLOURS.get(record.level, ""), self.colour)
            line = ("\n" if self.count else "") + "\n".join(lines)  # a blank line between records
        elif fmt == "csv":
            if self._csv is None:
                self._csv = csv.writer(self.stream)
                self._csv.writerow(EXPORT_COLUMNS)
            self._csv.writerow(_csv_row(record, sanitize if _isatty(self.stream) else (lambda text: text)))
            self.count += 1
            return
        else:
            line = _format_record(record, self.colour, self.utc)
            if archived:
                # Last, so the time stays the first column for sort and cut.
                line += " " + _paint(ARCHIVED_MARK, _DIM, self.colour)
        self.stream.write(line + "\n")
        self.count += 1


# ---------------------------------------------------------------- arguments
def _field_arg(text: str) -> tuple[str, FieldValue]:
    """``key=value``; a value that reads as a JSON number, true, false or null is one."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, like status=500, not {_shown(text)}")
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to be a scalar
        return key, value
    if parsed is None or isinstance(parsed, (bool, int, float, str)):
        return key, parsed
    return key, value


# SQLite's integers are 64-bit: a count past this cannot be bound to a query.
_MAX_COUNT = 2**63 - 1
# The longest pause between polls: time.sleep() refuses much larger numbers.
_MAX_INTERVAL = 86_400.0


def _shown(text: str) -> str:
    """A value typed by the user, quoted and cut to fit one line of a message."""
    quoted = repr(text)
    return quoted if len(quoted) <= 40 else f"{quoted[:40]}... ({len(text)} chars)"


def _count_arg(text: str) -> int:
    digits = text.strip().lstrip("+-").lstrip("0")
    if digits.isdigit() and len(digits) > 19:  # before int() meets its 4300-digit limit
        wanted = "0 or more" if text.strip().startswith("-") else f"at most {_MAX_COUNT}"
        raise argparse.ArgumentTypeError(f"expected {wanted}, not {_shown(text)}")
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {_shown(text)}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not {_shown(text)}")
    if number > _MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected at most {_MAX_COUNT}, not {_shown(text)}")
    return number


def _positive_arg(text: str) -> int:
    number = _count_arg(text)
    if number < 1:
        raise argparse.ArgumentTypeError("expected 1 or more, not 0")
    return number


def _port_arg(text: str) -> int:
    number = _count_arg(text)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, not {_shown(text)}")
    return number


def _timeout_arg(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, like 30, not {_shown(text)}") from None
    if not 0 <= number <= _MAX_INTERVAL:  # nan and inf too
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) to {_MAX_INTERVAL:.0f} seconds, not {_shown(text)}")
    return number or None


def _level_age_arg(text: str) -> tuple[str, str]:
    """``LEVEL=AGE``; both are checked by the retention policy, which knows the levels."""
    level, sep, age = text.partition("=")
    if not sep or not level.strip() or not age.strip():
        raise argparse.ArgumentTypeError(f"expected LEVEL=AGE, like ERROR=365d, not {_shown(text)}")
    return level.strip(), age.strip()


def _seconds_arg(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, like 0.5, not {_shown(text)}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, not {_shown(text)}")
    if not number <= _MAX_INTERVAL:  # inf too
        raise argparse.ArgumentTypeError(f"expected at most {_MAX_INTERVAL:.0f} seconds (a day), not {_shown(text)}")
    return number


class _DefaultDb(str):
    """The --db a command gets when none is given after it: a --db before the command wins."""


def _db_option(group: argparse._ActionsContainer, db_default: str) -> None:
    group.add_argument(
        "--db",
        default=db_default,
        metavar="PATH",
        help=f"the log database (default: $JANUS_LOG_DB, else {DEFAULT_DB}; now {db_default})",
    )


def _common_options(db_default: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("which records")
    _db_option(group, db_default)
    group.add_argument("--since", metavar="TIME", help="from TIME: 15m, 2h, 7d, yesterday, 2024-05-01T12:00Z, epoch seconds")
    group.add_argument("--until", metavar="TIME", help="before TIME, same forms as --since")
    group.add_argument("--level", metavar="LEVEL", help="this level and above: DEBUG, INFO, WARNING, ERROR, CRITICAL or a number")
    group.add_argument("--logger", metavar="NAME", help="this logger and its children (app matches app and app.db)")
    group.add_argument("--user", metavar="ID", help="records of this user_id")
    group.add_argument("--agent", metavar="ID", help="records of this agent_id")
    group.add_argument("--request", metavar="ID", help="records of this request_id")
    group.add_argument("--service", metavar="NAME", help="records of this service (configure(service=...))")
    group.add_argument("--host", metavar="NAME", help="records logged on this host")
    group.add_argument(
        "--field",
        action="append",
        type=_field_arg,
        default=[],
        metavar="KEY=VALUE",
        help="a JSON field equals VALUE (repeatable); numbers, true, false, null compare "
        'as such, quote to compare as text: status=\'"500"\'',
    )
    group.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="read only within this scope (repeatable, all must hold): user_id, agent_id, "
        "logger (a prefix), level (a floor), service, host; no other option widens it",
    )
    group.add_argument("--json", action="store_true", help="one JSON object per line (-o json)")
    _time_options(group)
    group.add_argument(
        "--timeout",
        type=_timeout_arg,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"stop a query that runs longer than this (default {DEFAULT_TIMEOUT:g}; 0 for no limit)",
    )
    return common


def _time_options(group: argparse._ActionsContainer, dest: str = "") -> None:
    """--utc, --local and --no-pager: also accepted before the command (dest prefixed)."""
    zone = group.add_mutually_exclusive_group()
    zone.add_argument("--utc", dest=dest + "utc", action="store_true", help="times in UTC (the default when not on a terminal)")
    zone.add_argument("--local", dest=dest + "local", action="store_true", help="times in local time (the default on a terminal)")
    group.add_argument(
        "--no-pager",
        dest=dest + "no_pager",
        action="store_true",
        help="never page the output (default on a terminal: $PAGER, else less -FRSXK)",
    )


def _output_options() -> argparse.ArgumentParser:
    """How records are shown: -o FORMAT, -r, --grep (search, tail, show)."""
    output = argparse.ArgumentParser(add_help=False)
    group = output.add_argument_group("output")
    group.add_argument(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        metavar="FORMAT",
        help="short (default: one line each), verbose (every field, the full traceback), "
        "json (one object a line), json-pretty, cat (the message only), csv",
    )
    group.add_argument("-r", "--reverse", action="store_true", help="print in the opposite order (the same records)")
    group.add_argument(
        "--grep",
        metavar="REGEX",
        help="only records whose message matches REGEX (Python syntax; case-insensitive "
        "when REGEX has no capitals), applied after QUERY and the filters",
    )
    return output


def _examples(*lines: str) -> str:
    return "Example:\n" + "\n".join(f"  {line}" for line in lines)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, where the help is), exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        text = _one_line(message)
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("janus_utils")
    except Exception:  # not installed (run from a source tree)
        return "unknown"


def _build_parser() -> argparse.ArgumentParser:
    db_default = _DefaultDb(os.environ.get("JANUS_LOG_DB") or DEFAULT_DB)
    common = _common_options(db_default)
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Search, follow, summarize, export, prune and erase a janus log database.",
        epilog=_examples(
            f"{PROG} search 'timeout OR refused' --level WARNING --since 1h",
            f"{PROG} --db app.db tail -f --logger app.db",
            f"{PROG} search --request req-42 -o verbose",
            f"{PROG} count --level ERROR --since 1h --by logger",
            f"{PROG} show 1042",
            f"{PROG} stats",
            f"{PROG} export --format csv --since yesterday -o logs.csv",
            f"{PROG} prune --older-than 30d --archive-dir archive",
            f"{PROG} archive import archive --db restored.db",
            f"{PROG} ship --to clickhouse://127.0.0.1:8123/default.logs",
            f"{PROG} search timeout --source clickhouse://127.0.0.1:8123/default.logs",
            f"{PROG} erase --user 42 --archive-dir archive",
            f"{PROG} verify --db app.db --verify-key KEY --archives archive",
            "",
            "Exit status: 0 records found (removed, imported), 1 none, 2 bad usage or an error.",
        ),
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    globals_ = parser.add_argument_group("global options (also accepted after COMMAND)")
    globals_.add_argument("--db", dest="global_db", metavar="PATH", help=f"the log database (default: $JANUS_LOG_DB, else {DEFAULT_DB})")
    _time_options(globals_, "global_")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    output = _output_options()

    search = commands.add_parser(
        "search",
        parents=[common, output],
        help="full-text search with filters",
        description=textwrap.dedent(
            """\
            Full-text search over message, fields and exception, newest first.
            QUERY keeps AND, OR, NOT, "phrases", prefix* and NEAR(a b, 5);
            other punctuation is searched as words (db-01, user:42).  A column
            can be chosen: message:timeout.  --raw passes FTS5 syntax as is.
            Snippets (in --json) mark each hit as [hit].

            -word and NOT word leave out the records holding word: quote
            the query ('order -refunded').  A term holding CJK or emoji
            (日本語, 🚀) is found anywhere in the text, and is always
            required (or with -, excluded).  Pasted identifiers (k-7977,
            err_1838fa1042c0, UUIDs, app.db.pool) are searched as phrases.

            With --archives DIR the archives a prune wrote are searched too,
            after the database (or alone, when --db does not exist).  They
            have no index but QUERY means the same there (words and
            phrases, not substrings; AND, OR, NOT, prefix*), and their
            matches come in archive order, oldest first, each marked
            [archived] ("archived": true in --json).  --limit counts both."""
        ),
        epilog=_examples(
            f"{PROG} search timeout",
            f'{PROG} search \'"connection reset" OR refused\' --level ERROR --since 2h',
            f"{PROG} search 'pay*' --user u42 --field status=500 --json",
            f"{PROG} search timeout --archives archive --since 90d",
            f"{PROG} search 'payment timeout' --source clickhouse://127.0.0.1:8123/default.logs --user 42",
        ),
        formatter_class=formatter,
    )
    search.add_argument("query", nargs="?", metavar="QUERY", help="words to find; none to list by filters alone")
    search.add_argument(
        "-n",
        "--lines",
        "--limit",
        dest="limit",
        type=_count_arg,
        default=100,
        metavar="N",
        help="at most N records (default 100; 0 for all, streamed); a cut is said on stderr",
    )
    search.add_argument(
        "--order",
        choices=("newest", "oldest", "rank"),
        default="newest",
        help="newest first (default), oldest first, or best match first (needs QUERY)",
    )
    search.add_argument("--raw", action="store_true", help="QUERY is FTS5 syntax, passed unchanged")
    search.add_argument(
        "--source",
        metavar="URL",
        help="search the ClickHouse table hosts ship into instead of --db: "
        "clickhouse://HOST:8123/DATABASE.TABLE (same query, filters and output)",
    )
    search.add_argument(
        "--archives",
        metavar="DIR",
        help="also search the archives in DIR (written by prune --archive-dir); "
        "takes QUERY, --level, --logger, --since and --until",
    )
    search.set_defaults(handler=_search)

    tail = commands.add_parser(
        "tail",
        parents=[common, output],
        help="the last records; -f to follow new ones",
        description="The last N records, oldest first; with -f, every new record as it is committed.",
        epilog=_examples(f"{PROG} tail -n 50", f"{PROG} tail -f --level WARNING", "Ctrl-C stops -f."),
        formatter_class=formatter,
    )
    tail.add_argument("-n", "--lines", "--limit", dest="limit", type=_count_arg, default=20, metavar="N", help="how many records to show first (default 20)")
    tail.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new records until Ctrl-C; waits for a database that does not exist yet",
    )
    tail.add_argument("--interval", type=_seconds_arg, default=0.1, metavar="SECONDS", help="how often -f looks for new records (default 0.1)")
    tail.set_defaults(handler=_tail)

    count = commands.add_parser(
        "count",
        parents=[common],
        help="how many records match (by level or logger with --by)",
        description="How many records match QUERY and the filters, as search would find them, without a limit.",
        epilog=_examples(
            f"{PROG} count --level ERROR --since 1h",
            f"{PROG} count timeout --by level",
            f"{PROG} count --by logger --json",
        ),
        formatter_class=formatter,
    )
    count.add_argument("query", nargs="?", metavar="QUERY", help="only records matching QUERY (as in search)")
    count.add_argument("--raw", action="store_true", help="QUERY is FTS5 syntax, passed unchanged")
    count.add_argument("--by", choices=("level", "logger"), help="one count per level or per logger")
    count.add_argument(
        "--grep", metavar="REGEX", help="only records whose message matches REGEX (reads every matching record)"
    )
    count.set_defaults(handler=_count)

    show = commands.add_parser(
        "show",
        parents=[common, output],
        help="whole records by id: every field, the full traceback, where it was logged",
        description="Every field of the records with these ids (the id is in -o verbose and --json output), "
        "the full traceback and the source location (file, line, function).",
        epilog=_examples(f"{PROG} show 1042", f"{PROG} show 1042 1043 -o json-pretty"),
        formatter_class=formatter,
    )
    show.add_argument("ids", nargs="+", type=_count_arg, metavar="ID", help="record ids")
    show.set_defaults(handler=_show)

    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="counts by level and logger, records over time, size",
        description="Counts by level and logger, records over time, the database size and, "
        "when this process writes the database, the flusher's counters.",
        epilog=_examples(f"{PROG} stats", f"{PROG} stats --since 24h --logger app", f"{PROG} stats --json"),
        formatter_class=formatter,
    )
    stats.add_argument("--limit", type=_count_arg, default=10, metavar="N", help="how many loggers to list (default 10)")
    stats.set_defaults(handler=_stats)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="write matching records as NDJSON, CSV or JSON",
        description=textwrap.dedent(
            """\
            Every matching record, oldest first, streamed to stdout or a file.
            -o FILE writes a new file readable by its owner only (0600), through
            a temp file renamed into place once complete; an existing FILE is
            replaced only with --force, and a symlink never written through.
            CSV cells that begin with = + - @ or a tab or carriage return get a
            leading ' so that spreadsheets show them rather than run them as
            formulas (OWASP, CSV injection); ndjson and json keep every value
            exact."""
        ),
        epilog=_examples(
            f"{PROG} export > all.ndjson",
            f"{PROG} export --format csv --since 7d --level ERROR -o errors.csv",
            f"{PROG} export --since 1d -o today.ndjson --force",
            f"{PROG} export timeout --format json",
        ),
        formatter_class=formatter,
    )
    export.add_argument("query", nargs="?", metavar="QUERY", help="only records matching QUERY (as in search)")
    export.add_argument("--format", choices=("ndjson", "csv", "json"), default=None, help="ndjson (default), csv or json (one array)")
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE instead of stdout: a new file, 0600, that appears only once complete",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace FILE if it exists (a regular file only, atomically, never through a symlink)",
    )
    export.add_argument("--limit", type=_count_arg, default=None, metavar="N", help="at most N records (default all)")
    export.add_argument("--raw", action="store_true", help="QUERY is FTS5 syntax, passed unchanged")
    export.set_defaults(handler=_export)

    _add_recover(commands, db_default, formatter)
    _add_prune(commands, db_default, formatter)
    _add_erase(commands, db_default, formatter)
    _add_archive(commands, db_default, formatter)
    _add_serve(commands, db_default, formatter)
    from .ship import _cli as ship_cli  # the ship command lives with the shippers

    ship_cli.add_parser(commands, db_default, formatter, PROG)
    from . import _seal_cli  # seal init, verify

    _seal_cli.add_parsers(commands, db_default, formatter, PROG)

    from . import _flusher_process  # the flusher command lives with the flusher process

    _flusher_process.add_parser(commands, db_default, formatter, PROG)
    return parser


def _add_recover(commands: argparse._SubParsersAction[argparse.ArgumentParser], db_default: str, formatter: type[argparse.HelpFormatter]) -> None:
    recover = commands.add_parser(
        "recover",
        help="commit the records a crashed process left in the ring",
        description=textwrap.dedent(
            """\
            A record whose log call returned waits in the ring file beside the
            database (DB-ring) until a flusher commits it.  If every process
            that logs into the database died first, the records wait there
            until an application configures the database again; search, tail,
            stats and count say how many.  recover commits them now, with the
            flusher's own code under its lock: each record is stored once,
            even if an application starts meanwhile.  While an application
            runs, its flusher commits them and recover does nothing."""
        ),
        epilog=_examples(
            f"{PROG} recover --db app.db",
            "",
            "Exit status: 0 records committed, 1 none waited (or a running process commits them), 2 an error.",
        ),
        formatter_class=formatter,
    )
    _db_option(recover, db_default)
    recover.add_argument("--timeout", type=_timeout_arg, default=60.0, metavar="SECONDS", help="give up after this long (default 60; 0 for no limit)")
    recover.add_argument("--json", action="store_true", help="the counts as one JSON object")
    recover.set_defaults(run=_recover)


def _recover(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from ._recover import recover

    path = sqlite_path(args.db)
    if not os.path.exists(path) and not os.path.exists(path + "-ring"):
        raise _UsageError(f"no log database at {args.db} and no ring beside it: check the path")
    summary = recover(path, args.timeout)
    if args.json:
        out.write(_json_line({"db": args.db, "committed": summary.committed, "left": summary.left,
                              "flusher_running": summary.flusher_running}) + "\n")
    elif summary.flusher_running:
        out.write(f"a running process is the flusher of {sanitize(args.db)}: it commits what the ring holds\n")
    else:
        out.write(f"committed {_plural(summary.committed, 'record')} from {sanitize(summary.ring_path)} into {sanitize(args.db)}\n")
        if summary.left:
            out.write(f"{_plural(summary.left, 'record')} still wait (the timeout passed): run recover again\n")
    return 0 if summary.committed else 1


def _add_prune(commands: argparse._SubParsersAction[argparse.ArgumentParser], db_default: str, formatter: type[argparse.HelpFormatter]) -> None:
    prune = commands.add_parser(
        "prune",
        help="delete old records, archiving them first if asked",
        description=textwrap.dedent(
            """\
            Delete records oldest first: those older than --older-than (or the
            --level-age for their level), then the oldest others until at most
            --max-rows remain and the database is under --max-bytes.  With
            --archive-dir every record is written to a gzip NDJSON archive
            (one per UTC day, with a .sha256 file) before it is deleted;
            'archive import' loads archives back.  Runs in short transactions,
            so an application may keep logging meanwhile.  --dry-run shows
            what would go and changes nothing.

            A deleted record's text stays in the database file and its WAL
            until overwritten.  --secure erases it: deletes with secure_delete,
            then rewrites the full-text index and the whole database (VACUUM:
            the free space earlier prunes left goes too; the database is locked
            meanwhile and needs its size free on disk) and empties the WAL."""
        ),
        epilog=_examples(
            f"{PROG} prune --older-than 30d --level-age ERROR=365d --archive-dir archive",
            f"{PROG} prune --max-rows 1000000 --max-bytes 500MB --dry-run",
            f"{PROG} prune --level-age DEBUG=1d --json",
            f"{PROG} prune --older-than 90d --secure",
            "",
            "Exit status: 0 records removed (or would be), 1 nothing to prune, 2 an error.",
        ),
        formatter_class=formatter,
    )
    limits = prune.add_argument_group("what to remove (at least one)")
    limits.add_argument("--older-than", metavar="AGE", help="records older than AGE: 45s, 90m, 12h, 30d or 1w")
    limits.add_argument("--max-rows", type=_count_arg, metavar="N", help="then the oldest until at most N records remain")
    limits.add_argument(
        "--max-bytes",
        metavar="SIZE",
        help="then the oldest until the database is under SIZE: 500MB, 2GiB (approximate)",
    )
    limits.add_argument(
        "--level-age",
        action="append",
        type=_level_age_arg,
        default=[],
        metavar="LEVEL=AGE",
        help="keep LEVEL for AGE instead of --older-than (repeatable): ERROR=365d, DEBUG=1d",
    )
    options = prune.add_argument_group("how")
    _db_option(options, db_default)
    options.add_argument("--archive-dir", metavar="DIR", help="archive every record to DIR before deleting it")
    options.add_argument(
        "--chunk-rows",
        type=_positive_arg,
        metavar="N",
        help="records per transaction (default 5000): smaller keeps writers waiting less",
    )
    options.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    options.add_argument(
        "--no-ship-wait",
        action="store_true",
        help="also remove records a sink (janus-logs ship) has not shipped yet; by default they are kept",
    )
    options.add_argument(
        "--secure",
        action="store_true",
        help="erase the removed text from the database file and WAL, not only unlink it (slower)",
    )
    options.add_argument("--json", action="store_true", help="the summary as one JSON object")
    prune.set_defaults(run=_prune)


def _add_erase(commands: argparse._SubParsersAction[argparse.ArgumentParser], db_default: str, formatter: type[argparse.HelpFormatter]) -> None:
    erase = commands.add_parser(
        "erase",
        help="erase every record of one user, from the database and its archives",
        description=textwrap.dedent(
            """\
            Erase every record whose user_id is ID, for a user's right to
            erasure: deleted with secure_delete, then the full-text index and
            the whole database are rewritten and the WAL emptied, so the text
            is left nowhere in the database's files (this also clears what
            earlier ordinary prunes left).  With --archive-dir every archive
            there that holds such a record is rewritten without it (one left
            empty is deleted).  Archives in other directories, backups and
            other copies are not touched: erase from each separately.  Records
            that only mention the user in their text are not matched."""
        ),
        epilog=_examples(
            f"{PROG} erase --user 42 --archive-dir archive",
            f"{PROG} erase --user u-7f3a --db app.db --json",
            "",
            "Exit status: 0 records erased, 1 none found (the files are scrubbed all the same), 2 an error.",
        ),
        formatter_class=formatter,
    )
    erase.add_argument("--user", required=True, metavar="ID", help="the user_id whose records go")
    _db_option(erase, db_default)
    erase.add_argument("--archive-dir", metavar="DIR", help="also rewrite the archives in DIR without them")
    erase.add_argument("--json", action="store_true", help="the summary as one JSON object")
    erase.set_defaults(run=_erase)


def _add_archive(commands: argparse._SubParsersAction[argparse.ArgumentParser], db_default: str, formatter: type[argparse.HelpFormatter]) -> None:
    archive = commands.add_parser(
        "archive",
        help="work with the archives prune writes",
        description="Work with the gzip NDJSON archives that prune --archive-dir writes.",
        epilog=_examples(f"{PROG} archive import archive --db restored.db"),
        formatter_class=formatter,
    )
    archive.set_defaults(run=_no_subcommand(archive))
    actions = archive.add_subparsers(dest="archive_command", metavar="ACTION")
    load = actions.add_parser(
        "import",
        help="load archived records back into a database",
        description=textwrap.dedent(
            """\
            Load archived records back into the database, which is created
            if it does not exist.  A directory means every archive in it,
            oldest first.  Each archive is checked against its .sha256 file
            and imported whole or not at all; records already in the
            database are skipped, so importing twice inserts nothing."""
        ),
        epilog=_examples(
            f"{PROG} archive import archive --db restored.db",
            f"{PROG} archive import archive/janus-logs-2024-05-01.0123456789abcdef.web-1."
            "0000000000000001-0000000000005000.ndjson.gz",
            "",
            "Exit status: 0 records inserted, 1 none (all were there already), 2 an error.",
        ),
        formatter_class=formatter,
    )
    load.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="archive files, or directories of them")
    _db_option(load, db_default)
    load.add_argument("--json", action="store_true", help="the counts as one JSON object")
    load.set_defaults(run=_archive_import)


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser], db_default: str, formatter: type[argparse.HelpFormatter]) -> None:
    serve = commands.add_parser(
        "serve",
        help="a read-only web console and /metrics for Prometheus",
        description=textwrap.dedent(
            """\
            Serve a web console over the database: search (the query language
            of 'search'), filters, a histogram, a live tail and every field of
            a record; and /metrics for Prometheus.  Nothing it serves writes.
            It binds 127.0.0.1; a non-loopback --host needs --token-file, and
            with a token every request must carry it (open /?token=... once,
            or send 'Authorization: Bearer ...').  Needs the web extra:
            pip install 'janus_utils[web]'."""
        ),
        epilog=_examples(
            f"{PROG} serve --db app.db",
            f"{PROG} serve --db app.db --port 9000",
            f"{PROG} serve --db app.db --host 0.0.0.0 --token-file token",
            f"{PROG} serve --db app.db --token-scopes tokens.json",
        ),
        formatter_class=formatter,
    )
    _db_option(serve, db_default)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port_arg, default=8765, help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--token-file", metavar="FILE", help="a file holding the token every request must carry")
    serve.add_argument(
        "--token-scopes",
        metavar="FILE",
        help='a JSON file of more tokens, each reading only within a scope: {"<token>": {"user_id": "42"}}',
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.token_file and os.path.exists(args.token_file) and not os.path.isfile(args.token_file):
        # Opening a FIFO would wait for a writer, and a device would be read as a token.
        raise _UsageError(f"the token file {args.token_file} is not a regular file: put the token in a file")
    missing = [name for name in ("starlette", "uvicorn", "prometheus_client") if importlib.util.find_spec(name) is None]
    if missing:
        raise _UsageError(
            f"serve needs {', '.join(missing)}: install the web extra, pip install 'janus_utils[web]'"
        )
    from .web import check_bind, read_token, serve
    from .web._server import read_token_scopes

    token = read_token(args.token_file, warn=err) if args.token_file else None
    scopes = read_token_scopes(args.token_scopes) if args.token_scopes else None
    check_bind(args.host, token or ("scoped" if scopes else None))
    try:
        serve(args.db, host=args.host, port=args.port, token=token, out=out, token_scopes=scopes)
    except KeyboardInterrupt:
        pass
    return 0


def _no_subcommand(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace, IO[str], IO[str]], int]:
    def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
        parser.print_help(err)
        return 2

    return run


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "level": args.level,
        "logger": args.logger,
        "user_id": args.user,
        "agent_id": args.agent,
        "request_id": args.request,
        "service": args.service,
        "host": args.host,
        "since": args.since,
        "until": args.until,
        "fields": dict(args.field) or None,
    }


# ---------------------------------------------------------------- commands
def _grep(args: argparse.Namespace) -> Callable[[Record], bool] | None:
    """--grep REGEX as a test of a record's message; smart case, as journalctl -g."""
    pattern = getattr(args, "grep", None)
    if pattern is None:
        return None
    flags = 0 if any(char.isupper() for char in pattern) else re.IGNORECASE
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise _UsageError(f"--grep {_shown(pattern)} is not a regular expression: {exc}") from None
    return lambda record: compiled.search(record.message) is not None


def _printer(args: argparse.Namespace, out: IO[str]) -> _Printer:
    fmt = getattr(args, "output", None)
    if args.json:
        if fmt not in (None, "json"):
            raise _UsageError(f"--json means -o json; it cannot be used with -o {fmt}")
        fmt = "json"
    utc = args.utc or (not args.local and not _isatty(out))
    return _Printer(out, False, fmt, utc=utc)


def _search(store: LogStore | None, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """The database's matches, then (with --archives) the archives'; *store* is None for archives only.

    --limit N reads N + 1 records to know whether the limit cut anything, and
    says so on stderr whatever stdout is; --limit 0 (and --grep) stream the
    matches in batches, so memory stays that of one batch however many match.
    """
    if args.archives is not None:
        since_ns, until_ns = _check_archive_search(args)
    printer = _printer(args, out)
    keep = _grep(args)
    limit = args.limit or None
    wanted = None if limit is None else limit + 1  # one more tells whether the limit cut anything
    shown: list[tuple[Record, bool]] = []
    cut = False

    def emit(record: Record, archived: bool = False) -> bool:
        """Print (or hold, for -r) one record; False once the limit is passed."""
        nonlocal cut
        if keep is not None and not keep(record):
            return True
        if limit is not None and len(shown) + printer.count >= limit:
            cut = True
            return False
        if args.reverse and limit is not None:
            shown.append((record, archived))
        else:
            printer.write(record, archived=archived)
        return True

    if store is not None:
        records: Iterable[Record]
        if args.order == "rank":  # ranked in SQLite: with --limit 0 or --grep every match is read first
            records = store.search(
                args.query, limit=wanted if keep is None else None, order="rank", raw=args.raw, **_filters(args)
            )
            if args.reverse and limit is None:
                records = reversed(records)
        elif limit is not None and keep is None:
            records = store.search(args.query, limit=wanted, order=args.order, raw=args.raw, **_filters(args))
        else:
            # Streamed: every match, newest (or with -r, oldest) first, in batches.
            newest_first = (args.order == "newest") != (args.reverse and limit is None)
            records = store.export(args.query, raw=args.raw, newest_first=newest_first, **_filters(args))
        try:
            for record in records:
                if not emit(record):
                    break
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
    if args.archives is not None and not cut:
        out.flush()  # the database's matches show while the archives are read
        room = None if limit is None else limit + 1 - len(shown) - printer.count
        found = search_archives(args.archives, args.query, args.level, args.logger, since_ns, until_ns, room)
        for data in found:
            if not emit(_archived_record(data), archived=True):
                break
    for record, archived in reversed(shown):
        printer.write(record, archived=archived)
    if cut:
        out.flush()
        err.write(
            f"{PROG}: {printer.count:,} shown, more match: the limit (--limit {args.limit}); "
            "-n N for more, -n 0 for all\n"
        )
    return 0 if printer.count else 1


def _count(store: LogStore, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    keep = _grep(args)
    filters = _filters(args)
    counts: dict[str, int]
    if keep is not None:
        counts = {}
        for record in store.export(args.query, raw=args.raw, **filters):
            if keep(record):
                key = {"level": record.level_name, "logger": record.logger}.get(args.by or "", "total")
                counts[key] = counts.get(key, 0) + 1
        if args.by == "level":
            counts = dict(sorted(counts.items(), key=lambda item: -LEVELS.get(item[0], 0)))
    elif args.by is not None:
        stats = store.stats(args.query, raw=args.raw, **filters)
        counts = dict(stats.by_level if args.by == "level" else stats.by_logger)
    else:
        counts = {"total": store.count(args.query, raw=args.raw, **filters)}
    total = sum(counts.values())
    if args.by is None:
        if args.json:
            out.write(_json_line({"count": total}) + "\n")
        else:
            out.write(f"{total}\n")
        return 0 if total else 1
    if args.json:
        out.write(_json_line({"by": args.by, "counts": counts, "total": total}) + "\n")
        return 0 if total else 1
    width = max((len(f"{n}") for n in counts.values()), default=1)
    colour = _use_colour(out)
    for name, number in counts.items():
        label = _paint(sanitize(name), _LEVEL_COLOURS.get(LEVELS.get(name, 0), ""), colour and args.by == "level")
        out.write(f"{number:>{width}}  {label}\n")
    return 0 if total else 1


def _show(store: LogStore, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if getattr(args, "output", None) is None and not args.json:
        args.output = "verbose"
    printer = _printer(args, out)
    missing = []
    for record_id in reversed(args.ids) if args.reverse else args.ids:
        record = store.get(record_id)
        if record is None:
            missing.append(record_id)
        else:
            printer.write(record)
    if missing:
        out.flush()
        err.write(f"{PROG}: no record with id {', '.join(map(str, missing))} in {sanitize(store.path)} (never stored, or pruned)\n")
    return 0 if printer.count else 1


def _check_archive_search(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """Refuse what archives cannot be searched by, before anything is printed; (since, until) in ns."""
    if args.raw:
        raise _UsageError("--raw is FTS5 syntax, which archives have no index for: drop --raw or --archives")
    unsupported = [
        option
        for option, value in (
            ("--user", args.user), ("--agent", args.agent), ("--request", args.request),
            ("--service", args.service), ("--host", args.host), ("--field", args.field),
        )
        if value
    ]
    if unsupported:
        raise _UsageError(
            f"{', '.join(unsupported)} cannot be used with --archives: archives are searched by "
            "QUERY, --level, --logger, --since and --until only"
        )
    list_archives(args.archives)  # a missing directory is an error now, not after the database's matches
    now = datetime.now(timezone.utc)  # one clock reading for both, as the database search does
    since = parse_time(args.since, now=now) if args.since is not None else None
    until = parse_time(args.until, now=now) if args.until is not None else None
    if since is not None and until is not None and since >= until:
        raise _UsageError(f"--since ({format_ts(since)}) must be before --until ({format_ts(until)})")
    return since, until


def _archived_record(data: dict[str, Any]) -> Record:
    """An archive's record (every column, fields as JSON text) as the Record the printer takes."""
    return _record_from_row(tuple(data.get(column) for column in ("id", *COLUMNS)))


def _tail(store: LogStore, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.reverse and args.follow:
        raise _UsageError("-r prints the last records newest first, -f follows new ones as they come: give one of them")
    printer = _printer(args, out)
    keep = _grep(args)
    if keep is None:
        records = store.tail(args.limit, args.follow, poll_interval=args.interval, **_filters(args))
        first: list[Record] = []
    else:
        # The last N records that match the regex: read newest first until N are found.
        cursor = store.newest_id()
        first = []
        newest = store.export(newest_first=True, **_filters(args))
        try:
            for record in newest:
                if len(first) >= args.limit:
                    break
                if record.id <= cursor and keep(record):
                    first.append(record)
        finally:
            newest.close()
        first.reverse()
        records = store.tail(0, args.follow, poll_interval=args.interval, cursor=cursor, **_filters(args))
    try:
        if args.reverse:
            first = list(records) if keep is None else first
            first.reverse()
            records.close()
        for record in first:
            printer.write(record)
        out.flush()
        for record in records:
            if keep is None or keep(record):
                printer.write(record)
                out.flush()
    except KeyboardInterrupt:
        return 0
    finally:
        records.close()
    return 0 if printer.count or args.follow else 1


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _size(number: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if number < 1024 or unit == "GiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    raise AssertionError("unreachable")


_BUCKETS = ((60, "1m"), (3600, "1h"), (86400, "1d"))
_HISTOGRAM_ROWS = 24
_BAR_WIDTH = 40


def _over_time(store: LogStore, stats: StoreStats, args: argparse.Namespace) -> tuple[str, list[tuple[int, int]]]:
    """(bucket name, [(bucket start ts, count)]) for the last _HISTOGRAM_ROWS buckets, gaps as 0."""
    if stats.first_ts is None or stats.last_ts is None:
        return "1h", []
    span_s = (stats.last_ts - stats.first_ts) / 1e9
    seconds, name = next(((s, n) for s, n in _BUCKETS if span_s / s <= _HISTOGRAM_ROWS), _BUCKETS[-1])
    width = seconds * 1_000_000_000
    last_start = stats.last_ts - stats.last_ts % width
    first_start = max(stats.first_ts - stats.first_ts % width, last_start - (_HISTOGRAM_ROWS - 1) * width)
    filters = _filters(args)
    if first_start > stats.first_ts - stats.first_ts % width:
        # More history than rows: show the newest.  first_start is after
        # first_ts, itself after any --since, so this only narrows.
        filters["since"] = ts_datetime(first_start)
    counts = {
        int(start.timestamp()) * 1_000_000_000: sum(values.values())
        for start, values in store.histogram(name, "level", **filters)
    }
    rows = [(start, counts.get(start, 0)) for start in range(first_start, last_start + 1, width)]
    return name, rows


def _flusher_counters(db_path: str) -> dict[str, Any] | None:
    """This process's flusher counters when it writes *db_path*; None otherwise."""
    try:
        if importlib.util.find_spec("janus_utils.logger") is None:
            return None
        module = importlib.import_module("janus_utils.logger")
    except ImportError:  # a partial install: the counters are optional
        return None
    stats = getattr(module, "stats", None)
    if not callable(stats):
        return None
    counters = stats()
    if not isinstance(counters, dict) or not counters.get("configured"):
        return None
    configured = counters.get("db_path")
    if not isinstance(configured, str) or os.path.realpath(configured) != os.path.realpath(db_path):
        return None
    return {
        key: value
        for key, value in counters.items()
        if key not in ("configured", "db_path") and isinstance(value, (int, float, str)) and not isinstance(value, bool)
    }


def _stats(store: LogStore, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    filters = _filters(args)
    stats = store.stats(**filters)
    counters = _flusher_counters(store.path)
    bucket, rows = _over_time(store, stats, args)
    if args.json:
        data = stats.to_dict()
        data["by_logger"] = dict(list(stats.by_logger.items())[: args.limit])
        data["over_time"] = {"bucket": bucket, "counts": [{"ts": ts, "time": format_ts(ts, digits=0), "count": n} for ts, n in rows]}
        if counters is not None:
            data["flusher"] = counters
        out.write(_json_line(data) + "\n")
        return 0 if stats.records else 1
    colour = _use_colour(out)

    def heading(text: str) -> str:
        return _paint(f"{text:<10}", _BOLD, colour)

    lines = [
        f"{heading('database')}{sanitize(store.path)}  {_size(stats.db_bytes)} (+ WAL {_size(stats.wal_bytes)})",
    ]
    if stats.first_ts is not None and stats.last_ts is not None:
        lines.append(
            f"{heading('records')}{stats.records:,} from {format_ts(stats.first_ts, digits=0)} "
            f"to {format_ts(stats.last_ts, digits=0)}"
        )
    else:
        lines.append(f"{heading('records')}0")
    if stats.by_level:
        lines.append(heading("levels") + "  ".join(
            _paint(name, _LEVEL_COLOURS.get(LEVELS.get(name, 0), ""), colour) + f" {n:,}"
            for name, n in stats.by_level.items()
        ))
    if stats.by_logger:
        shown = list(stats.by_logger.items())[: args.limit]
        lines.append(heading("loggers") + f"(top {len(shown)} of {len(stats.by_logger)})")
        number_width = max(len(f"{n:,}") for _, n in shown) if shown else 0
        lines.extend(f"  {n:>{number_width},}  {sanitize(name)}" for name, n in shown)
    if rows:
        lines.append(heading("over time") + f"(per {bucket}, UTC)")
        peak = max(n for _, n in rows) or 1
        for start, n in rows:
            bar = "#" * (round(n / peak * _BAR_WIDTH) if n else 0)
            lines.append(f"  {format_ts(start, digits=0)[:16]}Z  {bar:<{_BAR_WIDTH}}  {n:,}")
    if counters:
        lines.append(heading("flusher") + " ".join(f"{k}={_logfmt_value(v)}" for k, v in counters.items()))
    out.write("\n".join(lines) + "\n")
    return 0 if stats.records else 1


class _Progress:
    """``exported N records`` on stderr, only on a terminal and once the work is large."""

    def __init__(self, err: IO[str], verb: str = "exported") -> None:
        self.err = err
        self.verb = verb
        self.enabled = _isatty(err)
        self.shown = False
        self.next_at = _PROGRESS_EVERY

    def update(self, count: int) -> None:
        # >= rather than ==: a prune's count grows a chunk at a time.
        if self.enabled and count >= self.next_at:
            self.err.write(f"\r{self.verb} {count:,} records")
            self.err.flush()
            self.shown = True
            self.next_at = count - count % _PROGRESS_EVERY + _PROGRESS_EVERY

    def done(self, count: int) -> None:
        if self.shown:
            self.err.write(f"\r{self.verb} {count:,} records\n")
            self.err.flush()


# A cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(text: str) -> str:
    """*text* as a CSV cell no spreadsheet runs: a leading ' before a formula's first character."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(record: Record, clean: Callable[[str], str]) -> list[str]:
    data = record.to_dict()
    data["fields"] = json.dumps(data["fields"], ensure_ascii=False) if data["fields"] else ""
    return ["" if data.get(c) is None else _csv_cell(clean(str(data[c]))) for c in EXPORT_COLUMNS]


def _write_export(records: Iterable[Record], fmt: str, stream: IO[str], progress: _Progress) -> int:
    count = 0
    if fmt == "csv":
        # On a terminal the cells are sanitized; in a file they stay exact but for formulas.
        clean: Callable[[str], str] = sanitize if _isatty(stream) else (lambda text: text)
        writer = csv.writer(stream)
        writer.writerow(EXPORT_COLUMNS)
        for record in records:
            writer.writerow(_csv_row(record, clean))
            count += 1
            progress.update(count)
    elif fmt == "json":
        stream.write("[")
        for record in records:
            stream.write(("\n" if count == 0 else ",\n") + _json_line(record.to_dict()))
            count += 1
            progress.update(count)
        stream.write("\n]\n" if count else "]\n")
    else:
        for record in records:
            stream.write(_json_line(record.to_dict()) + "\n")
            count += 1
            progress.update(count)
    progress.done(count)
    return count


def _export(store: LogStore, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    fmt = args.format or "ndjson"
    if args.json and args.format not in (None, "ndjson"):
        raise _UsageError(f"--json means --format ndjson; it cannot be used with --format {args.format}")
    if args.force and not args.output:
        raise _UsageError("--force replaces the file -o names: give -o FILE, or drop --force")
    records = store.export(args.query, raw=args.raw, limit=args.limit, **_filters(args))
    progress = _Progress(err)
    if args.output:
        _check_not_the_database(args.output, store.path)
        try:
            with atomic_output(args.output, overwrite=args.force, newline="") as stream:
                count = _write_export(records, fmt, stream, progress)
        except JanusError as exc:
            if exc.code == "file_exists":
                raise _UsageError(f"{args.output} already exists: choose another name, or pass --force to replace it") from exc
            raise
    else:
        count = _write_export(records, fmt, out, progress)
    return 0 if count else 1


def _check_not_the_database(output: str, db_path: str) -> None:
    """Refuse an -o that names the database or one of its files: --force would replace it."""
    database = os.path.realpath(db_path)
    names = {database, *(database + suffix for suffix in ("-wal", "-shm", "-journal", "-ring", "-flusher.lock"))}
    same = os.path.realpath(output) in names
    if not same and os.path.exists(output):
        same = os.path.samefile(output, db_path)
    if same:
        raise _UsageError(f"{output} is the log database or one of its files: export to another file")


# ---------------------------------------------------------------- retention
def _prune(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.older_than is None and args.max_rows is None and args.max_bytes is None and not args.level_age:
        raise _UsageError(
            "nothing to prune by: give --older-than AGE (e.g. 30d), --max-rows N, "
            "--max-bytes SIZE (e.g. 500MB) or --level-age LEVEL=AGE (e.g. DEBUG=1d)"
        )
    per_level: dict[int | str, str] = {}
    given: dict[int | str, str] = {}
    for level, age in args.level_age:
        try:
            key: int | str = parse_level(level)
        except ValueError:
            key = level  # the policy says what is wrong with it
        if key in given:
            twice = level if given[key] == level else f"{given[key]} and {level}"
            raise _UsageError(f"--level-age gives one level twice ({twice}): give each level once")
        given[key] = level
        per_level[level] = age
    options: dict[str, Any] = {}
    if args.chunk_rows is not None:  # else the library's default
        options["chunk_rows"] = args.chunk_rows
    progress = _Progress(err, "removed")
    summary = prune_path(
        args.db,
        older_than=args.older_than,
        max_rows=args.max_rows,
        max_bytes=args.max_bytes,
        per_level=per_level or None,
        archive_dir=args.archive_dir,
        dry_run=args.dry_run,
        ship_wait=not args.no_ship_wait,
        secure=args.secure,
        progress=lambda running: progress.update(running.rows),
        **options,
    )
    progress.done(summary.rows)
    if args.json:
        out.write(_json_line(summary.to_dict()) + "\n")
    else:
        out.write("\n".join(_prune_lines(summary, args.archive_dir, _use_colour(out))) + "\n")
    return 0 if summary.rows else 1


def _prune_lines(summary: PruneSummary, archive_dir: str | None, colour: bool) -> list[str]:
    """The summary as text: what went (or would go), by level, when from and to, where archived."""
    held = (
        [f"kept {summary.held_back:,} records not shipped yet (janus-logs ship --status; --no-ship-wait removes them)"]
        if summary.held_back
        else []
    )
    if not summary.rows:
        if summary.dry_run:
            return ["nothing would be removed", *held]
        scrubbed = " (the database was rewritten and its WAL emptied all the same)" if summary.secure else ""
        return ["nothing to prune: no record is past the limits" + scrubbed, *held]

    def heading(text: str) -> str:
        return _paint(f"{text:<14}", _BOLD, colour)

    verb = "would remove" if summary.dry_run else "removed"
    lines = [f"{heading(verb)}{_plural(summary.rows, 'record')} (about {_size(summary.bytes_estimate)})"]
    if summary.oldest_ts is not None and summary.newest_ts is not None:
        lines.append(f"{heading('from')}{format_ts(summary.oldest_ts, digits=3)} to {format_ts(summary.newest_ts, digits=3)}")
    lines.append(heading("levels") + "  ".join(
        _paint(level_name(level), _LEVEL_COLOURS.get(level, ""), colour) + f" {n:,}"
        for level, n in sorted(summary.per_level.items())
    ))
    if summary.secure:
        lines.append("(secure: deleted text overwritten, database rewritten, WAL emptied)")
    if summary.dry_run:
        lines.append("(dry run: nothing was changed)")
    elif archive_dir is not None:
        lines.append(heading("archived to") + f"{_plural(len(summary.archives), 'file')} in {sanitize(archive_dir)}")
        lines.extend(f"  {sanitize(path.name)}" for path in summary.archives[:_ARCHIVES_LISTED])
        if len(summary.archives) > _ARCHIVES_LISTED:
            lines.append(f"  ... and {len(summary.archives) - _ARCHIVES_LISTED:,} more (--json lists all)")
    return lines + held


def _erase(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    summary = erase_path(args.db, user_id=args.user, archive_dir=args.archive_dir)
    found = summary.rows + summary.archived_rows
    if args.json:
        out.write(_json_line(summary.to_dict()) + "\n")
        return 0 if found else 1
    colour = _use_colour(out)

    def heading(text: str) -> str:
        return _paint(f"{text:<10}", _BOLD, colour)

    user = sanitize(summary.user_id)
    lines = [
        f"{heading('erased')}{_plural(summary.rows, 'record')} of user {user} from {sanitize(args.db)} "
        "(deleted text overwritten, database rewritten, WAL emptied)"
    ]
    if args.archive_dir is None:
        lines.append(f"{heading('archives')}not searched: give --archive-dir DIR to erase from the archives prune wrote")
    else:
        lines.append(
            f"{heading('archives')}{_plural(summary.archived_rows, 'record')} erased in {sanitize(args.archive_dir)}: "
            f"{_plural(len(summary.archives_rewritten), 'archive')} rewritten, {len(summary.archives_removed):,} removed"
        )
        lines.extend(f"  {sanitize(path.name)}" for path in [*summary.archives_rewritten, *summary.archives_removed])
    out.write("\n".join(lines) + "\n")
    return 0 if found else 1


def _archives_to_import(paths: Sequence[str]) -> list[tuple[str, list[Path]]]:
    """Every argument checked before anything is imported: (argument, its archives)."""
    found: list[tuple[str, list[Path]]] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found.append((text, list_archives(path)))
        elif not path.is_file():
            raise _UsageError(f"no archive at {text}: give an archive file or the directory prune wrote")
        elif path.name.endswith(".sha256"):
            raise _UsageError(
                f"{text} is a checksum file, not an archive: give the .ndjson.gz file, "
                "or the directory instead of DIR/*"
            )
        else:
            found.append((text, [path]))
    return found


def _archive_import(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    db_path = sqlite_path(args.db)  # refused now rather than after the archives are listed
    groups = _archives_to_import(args.paths)
    archives = [archive for _, group in groups for archive in group]
    results: list[tuple[Path, int]] = []
    if archives:
        # Imported here: the logger (ring, flusher) is needed by this command only.
        from ._flusher import open_database

        db = open_database(db_path)
        try:
            for archive in archives:
                inserted = import_archive(db, archive)
                results.append((archive, inserted))
                if not args.json:
                    # Each archive is committed on its own: say so as it happens.
                    out.write(f"{sanitize(str(archive))}: {inserted:,} inserted\n")
                    out.flush()
        finally:
            db.close()
    total = sum(inserted for _, inserted in results)
    if args.json:
        data = {
            "db": args.db,
            "archives": [{"path": str(archive), "inserted": inserted} for archive, inserted in results],
            "inserted": total,
        }
        out.write(_json_line(data) + "\n")
    else:
        out.writelines(f"{sanitize(text)}: no archives in this directory\n" for text, group in groups if not group)
        out.write(f"{total:,} inserted from {_plural(len(results), 'archive')} into {sanitize(args.db)}\n")
    return 0 if total else 1


# ---------------------------------------------------------------- main
class _UsageError(Exception):
    """A combination of options that argparse cannot check by itself."""


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_MESSAGE_CHARS = 1000  # an error line is cut here: argparse echoes whole arguments, of any size


def _one_line(message: str) -> str:
    text = sanitize(" ".join(message.split())) or "failed"
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + f"... ({len(text):,} chars)"


def _error(err: IO[str], message: str) -> int:
    err.write(f"{PROG}: error: {_one_line(message)}\n")
    return 2


def _open_store(args: argparse.Namespace) -> AbstractContextManager[Any]:
    """The database a command reads; none when only archives are to be searched.

    With ``search --source`` a ClickHouseStore, which answers search() like a LogStore.
    """
    scope = _scope_arg(getattr(args, "scope", None) or [])
    if scope and getattr(args, "archives", None) is not None:
        raise _UsageError("--scope limits the database only: archives cannot be searched within a scope")
    if getattr(args, "source", None) is not None:
        if getattr(args, "archives", None) is not None:
            raise _UsageError("--source searches a ClickHouse table, --archives local archives: give one of them")
        from .clickhouse_store import ClickHouseStore

        return ClickHouseStore(args.source, scope=scope)
    if getattr(args, "archives", None) is not None and not os.path.exists(args.db):
        return nullcontext()
    return LogStore(args.db, timeout=args.timeout, scope=scope)


def _scope_arg(items: list[str]) -> dict[str, str] | None:
    """--scope KEY=VALUE options as LogStore's scope (it checks the keys and values)."""
    scope: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"--scope takes KEY=VALUE (user_id=42, logger=app, level=WARNING), not {item!r}")
        if key in scope and scope[key] != value:
            raise _UsageError(f"--scope {key} given twice with different values: a scope only narrows")
        scope[key] = value
    return scope or None


class _ClosedStream(io.StringIO):
    """Stands in for a standard stream the shell closed (``>&-``): writing to it is an OSError."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed: redirect it to a file, or use -o FILE")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``janus-logs`` with *argv* (default: sys.argv[1:]); returns the exit status."""
    # Python sets a stream the shell closed to None: output then fails with one
    # line on stderr, and with stderr closed too the exit status still tells.
    out = sys.stdout if sys.stdout is not None else _ClosedStream()
    err = sys.stderr if sys.stderr is not None else io.StringIO()
    try:
        return _main(argv, out, err)
    except JanusError as exc:
        return _error(err, exc.message)
    except _UsageError as exc:
        return _error(err, str(exc))
    except BrokenPipeError:
        reader_gone(out)
        return 0
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _error(err, f"{exc.strerror or exc}:{where}" if where else str(exc.strerror or exc))
    except apsw.Error as exc:
        return _error(err, f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        return 130
    except MemoryError:
        return _error(err, "out of memory: narrow the command (--since, --limit) or free memory")
    except Exception as exc:  # the promise is one line and exit 2, even for a bug
        return _error(
            err,
            f"unexpected {type(exc).__name__}: {str(exc)[:200]} "
            "(a bug in janus-logs: please report it with the command that caused it)",
        )


def _main(argv: Sequence[str] | None, out: IO[str], err: IO[str]) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2): already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(err)
        return 2
    _merge_global_options(args)
    if hasattr(args, "run"):  # a command that opens what it needs itself
        code: int = args.run(args, out, err)
        out.flush()
        return code
    if args.command == "tail" and args.follow:
        _wait_for_database(args, err)
    paged = args.command in _PAGED and not (args.command == "tail" and args.follow) and not args.no_pager
    notes = io.StringIO() if paged and _isatty(out) else err
    try:
        with pager(out, paged) as stream, _open_store(args) as store:
            code = args.handler(store, args, stream, notes)
            stream.flush()
        if getattr(args, "source", None) is None and os.path.exists(sqlite_path(args.db)):
            from ._recover import notice

            waiting = notice(sqlite_path(args.db))
            if waiting:
                notes.write(f"{PROG}: {sanitize(waiting)}\n")
    finally:
        if notes is not err:  # said once the pager is gone, so that it stays on the screen
            err.write(notes.getvalue())
    out.flush()
    return code


_PAGED = frozenset({"search", "tail", "show", "stats"})  # as journalctl: not -f, not exports


def _merge_global_options(args: argparse.Namespace) -> None:
    """Options given before the command: --db unless one follows it, and the flags."""
    if args.global_db is not None and isinstance(getattr(args, "db", None), _DefaultDb):
        args.db = args.global_db
    for name in ("utc", "local", "no_pager"):
        setattr(args, name, getattr(args, name, False) or getattr(args, "global_" + name))
    if args.utc and args.local:
        raise _UsageError("--utc and --local contradict each other: give one of them")


_WAIT_POLL = 0.2


def _wait_for_database(args: argparse.Namespace, err: IO[str]) -> None:
    """tail -f on a database not created yet waits for it, as tail -F waits for a file."""
    path = sqlite_path(args.db)
    if os.path.exists(path):
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _UsageError(f"cannot wait for {args.db}: its directory {directory} does not exist")
    err.write(f"{PROG}: waiting for {sanitize(args.db)} to be created (Ctrl-C to stop)\n")
    err.flush()
    while True:
        time.sleep(_WAIT_POLL)
        if not os.path.exists(path):
            continue
        # The logger creates the file, then its schema: wait until it opens.
        deadline = time.monotonic() + 10.0
        while True:
            try:
                LogStore(path).close()
                return
            except JanusError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(_WAIT_POLL)
