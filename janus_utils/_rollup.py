"""Record counts per minute, level and logger: how count() and histogram() avoid reading every row.

The table and the triggers that keep it exact are defined in _schema (the
``janus_rollup`` migration).  It counts the rows with an id up to
``covered_upto``; the flusher moves that mark with each batch (:func:`advance`,
one GROUP BY over the batch, in the batch's transaction), and rows above it
(committed by something else, or by a flusher of an older version) are counted
from the logs table by the reader, so a count is exact at any moment.  Below
the mark, retention's deletes are counted by :func:`count_deleted` and an
archive restored with its ids by :func:`count_inserted` (as both tell the
full-text index), and an edit of a row by a trigger.

The same mark covers the spans (the ts range of each run of at most
SPAN_IDS ids, table ``janus_spans``): the flusher writes a batch's span with
its counts, an import its restored rows' spans, and :meth:`Rollup.id_range`
turns a time range into the ids a search walks.

A reader answers from it when the selection is made only of a minimum level,
a logger (and its children) and a time range; a range that does not fall on
whole minutes has its partial first and last minutes counted from the rows.
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import apsw

from . import _termbits
from ._record import native_enabled, speedups
from ._schema import COLUMNS, ROLLUP_STATE_TABLE, ROLLUP_TABLE, SPAN_IDS, SPAN_TABLE, TABLE

__all__ = ["MINUTE_NS", "Rollup", "advance", "advance_batch", "bucket_floor_sql", "count_deleted", "count_inserted"]

MINUTE_NS = 60_000_000_000
# A host filter reads at most this many runs of spans (Rollup.host_ranges).
MAX_HOST_RANGES = 32
_T = f'"{TABLE}"'
_R = f'"{ROLLUP_TABLE}"'
_S = f'"{ROLLUP_STATE_TABLE}"'
_REGULAR = (
    f"""typeof({_T}."ts") = 'integer' AND typeof({_T}."level") = 'integer' AND typeof({_T}."logger") = 'text'"""
)
_MINUTE = f'({_T}."ts" / {MINUTE_NS} - ({_T}."ts" % {MINUTE_NS} < 0))'

_P = f'"{SPAN_TABLE}"'
# Widen a span to hold more ids and ts (min() and max() order any stored
# value as a comparison with a bound does: numbers, then text, then blobs);
# its host stays only if the new rows have the same one (NULL: several).
_WIDEN = (
    'ON CONFLICT DO UPDATE SET "max_id" = max("max_id", excluded."max_id"), '
    '"min_ts" = min("min_ts", excluded."min_ts"), "max_ts" = max("max_ts", excluded."max_ts"), '
    '"host" = CASE WHEN "host" = excluded."host" THEN "host" END'
)
_SPAN_UPSERT = f'INSERT INTO {_P}("min_id", "max_id", "min_ts", "max_ts", "host") VALUES (?, ?, ?, ?, ?) {_WIDEN}'
# The spans of the rows chosen by the WHERE clause, one per run of ids (binds the
# WHERE clause's parameters, then the run's length, SPAN_IDS).  min() and max()
# skip NULL: a row without a host never passes a host filter.
_SPANS_OF = (
    f'INSERT INTO {_P}("min_id", "max_id", "min_ts", "max_ts", "host") '
    f'SELECT min("id"), max("id"), min("ts"), max("ts"), CASE WHEN min("host") = max("host") THEN min("host") END '
    f'FROM {_T} WHERE {{where}} GROUP BY "id" / ? {_WIDEN}'
)
_NEWEST_SPAN = f'SELECT "min_id", "max_id", "host" FROM {_P} ORDER BY "min_id" DESC LIMIT 1'
_EXTEND_SPAN = (
    f'UPDATE {_P} SET "max_id" = ?, "min_ts" = min("min_ts", ?), "max_ts" = max("max_ts", ?) WHERE "min_id" = ?'
)
_HOST = operator.itemgetter(COLUMNS.index("host"))


def _add_span(db: apsw.Connection, first_id: int, last_id: int, low_ts: Any, high_ts: Any, host: Any) -> None:
    """Ids first_id..last_id (a batch just committed after every older id) have ts from low_ts
    to high_ts and the one *host* (None: several or none): the newest span takes them while
    it stays under SPAN_IDS ids and has that host, else a new one."""
    newest = db.execute(_NEWEST_SPAN).fetchall()
    if (
        newest and newest[0][1] == first_id - 1 and last_id - newest[0][0] < SPAN_IDS
        and host is not None and newest[0][2] == host
    ):
        db.execute(_EXTEND_SPAN, (last_id, low_ts, high_ts, newest[0][0]))
    else:
        db.execute(_SPAN_UPSERT, (first_id, last_id, low_ts, high_ts, host))


_ADVANCE = (
    f'INSERT INTO {_R}("minute", "level", "logger", "n", "min_id", "max_id") '
    f'SELECT {_MINUTE}, "level", "logger", count(*), min("id"), max("id") FROM {_T} '
    f'WHERE "id" > ? AND {_REGULAR} GROUP BY 1, 2, 3 '
    'ON CONFLICT DO UPDATE SET "n" = "n" + excluded."n", '
    '"min_id" = min("min_id", excluded."min_id"), "max_id" = max("max_id", excluded."max_id")',
    f'UPDATE {_S} SET "value" = "value" + (SELECT count(*) FROM {_T} WHERE "id" > ? AND NOT ({_REGULAR})) '
    "WHERE \"key\" = 'irregular'",
    f"UPDATE {_S} SET \"value\" = ? WHERE \"key\" = 'covered_upto'",
)


def advance(db: apsw.Connection) -> None:
    """Count the rows committed past the mark and move it; inside the writer's transaction."""
    covered = db.execute(f"SELECT \"value\" FROM {_S} WHERE \"key\" = 'covered_upto'").fetchall()
    newest = db.execute(f'SELECT max("id") FROM {_T}').fetchall()[0][0]
    if not covered or newest is None or newest <= covered[0][0]:
        return
    mark = covered[0][0]
    db.execute(_ADVANCE[0], (mark,))
    db.execute(_ADVANCE[1], (mark,))
    db.execute(_SPANS_OF.format(where='"id" > ?'), (mark, SPAN_IDS))
    db.execute(_ADVANCE[2], (newest,))


_UPSERT = (
    f'INSERT INTO {_R}("minute", "level", "logger", "n", "min_id", "max_id") VALUES (?, ?, ?, ?, ?, ?) '
    'ON CONFLICT DO UPDATE SET "n" = "n" + excluded."n", '
    '"min_id" = min("min_id", excluded."min_id"), "max_id" = max("max_id", excluded."max_id")'
)
_KEY = operator.itemgetter(0, 1, 2)  # ts, level, logger in a row of _schema.COLUMNS
_TS = operator.itemgetter(0)
_LEVEL_LOGGER = operator.itemgetter(1, 2)


def bucket_floor_sql(ts: str) -> str:
    """SQL for the start of the bucket holding the nanosecond time *ts*; binds the width three times.

    Python's floor division: a time before the epoch still falls in its bucket.
    """
    return f"({ts} - (({ts} % ?) + ?) % ?)"


def _grouped(
    table: str, ts: str, key: str | None, total: str, where: list[str], width: int | None
) -> tuple[str, list[Any]]:
    """SELECT (bucket, *key* value, *total*) FROM *table* WHERE *where* GROUP BY both, and the
    parameters the bucket binds (put them before *where*'s).  No *width*: one bucket, NULL;
    no *key*: one value, NULL."""
    bucket, bound = ("NULL", []) if width is None else (bucket_floor_sql(ts), [width, width, width])
    value = f'{table}."{key}"' if key else "NULL"
    sql = f"SELECT {bucket}, {value}, {total} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " GROUP BY 1, 2", bound


def _count(rows: Sequence[Sequence[Any]]) -> Counter[tuple[Any, ...]] | None:
    """The rows per (minute, level, logger), or None when a row cannot be counted so."""
    try:
        stamps = list(map(_TS, rows))
        low, high = min(stamps) // MINUTE_NS, max(stamps) // MINUTE_NS
        if low == high:  # the usual batch, within one minute: counted at C speed
            return Counter({(low, *key): n for key, n in Counter(map(_LEVEL_LOGGER, rows)).items()})
        return Counter((ts // MINUTE_NS, level, logger) for ts, level, logger in map(_KEY, rows))
    except (TypeError, ValueError):
        return None


def advance_batch(db: apsw.Connection, rows: Sequence[Sequence[Any]], first_id: int, last_id: int) -> None:
    """:func:`advance` for a batch the flusher has in hand: counted as it is (in C when the
    module is built, else in Python), not re-read; its span written from its ts.

    Measured on 2,000-row batches: 0.5 ms instead of 3 ms for the GROUP BY
    (which would add a fifth to each commit).  Every row of the batch gets
    the batch's id range as its group's bounds, which only widens them.
    Falls back to :func:`advance` when rows were committed past the mark by
    something else, or when a row is not regular.
    """
    if not rows:
        return  # a batch of announcements only: no record to count
    covered = db.execute(f"SELECT \"value\" FROM {_S} WHERE \"key\" = 'covered_upto'").fetchall()
    if not covered or covered[0][0] != first_id - 1 or last_id - first_id + 1 != len(rows):
        advance(db)
        return
    # In C: a dict lookup per run of rows of one key, not per row.
    groups = speedups.rollup_groups(rows, MINUTE_NS) if native_enabled() and type(rows) is list else None  # type: ignore[union-attr]
    if groups is None:
        groups = _count(rows)
    if groups is None or not all(
        type(minute) is int and type(level) is int and type(logger) is str for minute, level, logger in groups
    ):
        advance(db)
        return
    stamps = list(map(_TS, rows))  # every minute an int: every ts one
    db.executemany(_UPSERT, [(*key, n, first_id, last_id) for key, n in groups.items()])
    try:
        hosts = set(map(_HOST, rows)) - {None}  # a row without a host passes no host filter
    except (IndexError, TypeError):
        hosts = set()  # rows this cannot read: the span says "any host"
    host = hosts.pop() if len(hosts) == 1 else None
    _add_span(db, first_id, last_id, min(stamps), max(stamps), host if type(host) is str else None)
    db.execute(_ADVANCE[2], (last_id,))


def count_inserted(db: apsw.Connection, ids: list[int]) -> None:
    """Count rows just inserted with these ids (kept from an archive) that lie below the mark.

    Rows above the mark need nothing: the flusher's next batch counts them,
    and readers count them from the rows until then.  Inside the inserting
    transaction.
    """
    if ids:
        ids_json = json.dumps(ids)
        _termbits.forget(db, ids_json)  # their blocks' bitmaps are built again, with them
        _change(db, ids_json, "+")
        covered = db.execute(f"SELECT \"value\" FROM {_S} WHERE \"key\" = 'covered_upto'").fetchall()
        if covered:
            where = '"id" IN (SELECT "value" FROM json_each(?)) AND "id" <= ?'
            db.execute(_SPANS_OF.format(where=where), (ids_json, covered[0][0], SPAN_IDS))


def count_deleted(db: apsw.Connection, ids_json: str) -> None:
    """Take away the rows with these ids (a JSON list) that are about to be deleted.

    Called before the DELETE, in its transaction, wherever the library
    deletes records (retention), as the full-text index is told of them.
    Their spans stay (a bound only widens); spans wholly below the oldest
    row left by earlier deletes go.
    """
    _termbits.forget(db, ids_json)  # their blocks' bitmaps are built again, without them
    _change(db, ids_json, "-")
    db.execute(f'DELETE FROM {_P} WHERE "max_id" < (SELECT min("id") FROM {_T})')


def _change(db: apsw.Connection, ids_json: str, sign: str) -> None:
    covered = db.execute(f"SELECT \"value\" FROM {_S} WHERE \"key\" = 'covered_upto'").fetchall()
    if not covered:
        return
    chosen = f'"id" IN (SELECT "value" FROM json_each(?)) AND "id" <= ?'
    params = (ids_json, covered[0][0])
    db.execute(
        f'INSERT INTO {_R}("minute", "level", "logger", "n", "min_id", "max_id") '
        f'SELECT {_MINUTE}, "level", "logger", {sign}count(*), min("id"), max("id") FROM {_T} '
        f'WHERE {chosen} AND {_REGULAR} GROUP BY 1, 2, 3 '
        'ON CONFLICT DO UPDATE SET "n" = "n" + excluded."n", '
        '"min_id" = min("min_id", excluded."min_id"), "max_id" = max("max_id", excluded."max_id")',
        params,
    )
    db.execute(
        f'UPDATE {_S} SET "value" = "value" {sign} (SELECT count(*) FROM {_T} WHERE {chosen} AND NOT ({_REGULAR})) '
        "WHERE \"key\" = 'irregular'",
        params,
    )


class Rollup:
    """The reader's side: counts from the rollup plus the rows it does not cover.

    *rows* runs a read-only statement (LogStore._rows).  Each method returns
    None when the rollup cannot answer (no rollup table, or rows it cannot
    count by value), and the caller counts the rows instead.
    """

    def __init__(self, rows: Callable[[str, list[Any]], list[tuple[Any, ...]]]) -> None:
        self._rows = rows

    def _state(self) -> int | None:
        """covered_upto, or None when the rollup cannot be used."""
        try:
            found = dict(self._rows(f'SELECT "key", "value" FROM {_S}', []))
        except Exception:
            return None
        if found.get("irregular", 1) != 0 or type(found.get("covered_upto")) is not int:
            return None
        return int(found["covered_upto"])

    def usable(self) -> bool:
        """Whether the rollup can answer (it exists and every row below the mark is regular)."""
        return self._state() is not None

    @staticmethod
    def _conditions(
        level: int | None, logger: tuple[str, str, str] | None, table: str
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if level is not None:
            where.append(f'+{table}."level" >= ?')
            params.append(level)
        if logger is not None:
            where.append(f'(+{table}."logger" = ? OR (+{table}."logger" >= ? AND +{table}."logger" < ?))')
            params.extend(logger)
        return where, params

    def groups(
        self,
        key: str,
        *,
        level: int | None,
        logger: tuple[str, str, str] | None,
        since: int | None,
        until: int | None,
        width: int | None,
    ) -> list[tuple[int | None, Any, int]] | None:
        """(bucket start or None, value of *key*, count) of the selection; None if it cannot answer.

        *key* is "level", "logger" or "" (no grouping); *width* the bucket in
        ns (a whole number of minutes), or None for one bucket.
        """
        if width is not None and (width <= 0 or width % MINUTE_NS):
            return None
        covered = self._state()
        if covered is None:
            return None
        results: list[tuple[int | None, Any, int]] = []
        # Whole minutes from the rollup; the partial first and last minute and
        # the rows past the mark from the logs table.
        first_minute = None if since is None else -((-since) // MINUTE_NS)  # ceil
        end_minute = None if until is None else until // MINUTE_NS  # exclusive
        where, params = self._conditions(level, logger, _R)
        if first_minute is not None:
            where.append(f'{_R}."minute" >= ?')
            params.append(first_minute)
        if end_minute is not None:
            where.append(f'{_R}."minute" < ?')
            params.append(end_minute)
        sql, bound = _grouped(_R, f'({_R}."minute" * {MINUTE_NS})', key, f'sum({_R}."n")', where, width)
        results.extend(row for row in self._rows(sql, [*bound, *params]) if row[2])
        # The rows themselves: id past the mark, or ts in a partial minute.
        edges: list[tuple[int, int]] = []
        if first_minute is not None and end_minute is not None and first_minute >= end_minute:
            assert since is not None and until is not None
            edges.append((since, until))  # within one or two minutes: all of it from the rows
        else:
            if first_minute is not None and since is not None and since < first_minute * MINUTE_NS:
                edges.append((since, first_minute * MINUTE_NS))
            if end_minute is not None and until is not None and end_minute * MINUTE_NS < until:
                edges.append((end_minute * MINUTE_NS, until))
        pieces: list[tuple[str, list[Any]]] = [(f'{_T}."id" > ?', [covered])]
        pieces.extend(
            (f'+{_T}."id" <= ? AND {_T}."ts" >= ? AND {_T}."ts" < ?', [covered, low, high]) for low, high in edges
        )
        for n, (condition, extra) in enumerate(pieces):
            where, params = self._conditions(level, logger, _T)
            where.insert(0, condition)
            params[:0] = extra
            if n == 0:
                if since is not None:
                    where.append(f'+{_T}."ts" >= ?')
                    params.append(since)
                if until is not None:
                    where.append(f'+{_T}."ts" < ?')
                    params.append(until)
            sql, bound = _grouped(_T, f'{_T}."ts"', key, "count(*)", where, width)
            results.extend(self._rows(sql, [*bound, *params]))
        return results

    def id_range(self, since: int | None, until: int | None) -> tuple[int, int | None] | None:
        """Ids that every row with since <= ts < until lies between: (low, high or None for no bound).

        From the spans (to within SPAN_IDS ids at each end), or on a database
        without them from the rollup's minutes; None when neither can say.
        Rows past the mark may have any ts, so a range that reaches them has
        no upper bound.
        """
        if since is None and until is None:
            return None
        try:
            covered = self._rows(f"SELECT \"value\" FROM {_S} WHERE \"key\" = 'covered_upto'", [])
        except Exception:
            return None
        if not covered or type(covered[0][0]) is not int:
            return None
        where, params = [], []
        if since is not None:
            where.append('"max_ts" >= ?')
            params.append(since)
        if until is not None:
            where.append('"min_ts" < ?')
            params.append(until)
        try:
            found = self._rows(f'SELECT min("min_id"), max("max_id") FROM {_P} WHERE ' + " AND ".join(where), params)
        except Exception:
            return self._minute_id_range(since, until)
        return self._bounded(found[0], int(covered[0][0]))

    def host_ranges(self, host: str) -> tuple[int, list[tuple[int, int]] | None] | None:
        """Where the rows with this host may lie: (covered_upto, id ranges at or below it), the
        ranges None when every span may hold it; past covered_upto, anywhere.  None when the
        spans cannot say (a database from before their hosts).  At most MAX_HOST_RANGES
        ranges: beyond, the closest are joined (a host filter checks every row anyway)."""
        try:
            # Asked first: SQLite reads an unknown "host" as the string 'host'.
            if not any(row[1] == "host" for row in self._rows(f"PRAGMA table_info({_P})", [])):
                return None
            covered = self._rows(f"SELECT \"value\" FROM {_S} WHERE \"key\" = 'covered_upto'", [])
            spans = self._rows(
                f'SELECT "min_id", "max_id", "host" IS NULL OR "host" = ? FROM {_P} ORDER BY "min_id"', [host]
            )
        except Exception:
            return None
        if not covered or type(covered[0][0]) is not int:
            return None
        ranges: list[list[int]] = []
        joined = False  # whether the last span read may hold the host
        for low, high, may in spans:
            if may and joined:
                ranges[-1][1] = max(ranges[-1][1], high)
            elif may:
                ranges.append([low, high])
            joined = bool(may)
        if all(may for _, _, may in spans):
            return int(covered[0][0]), None
        if len(ranges) > MAX_HOST_RANGES:
            gaps = sorted(range(len(ranges) - 1), key=lambda i: ranges[i + 1][0] - ranges[i][1])
            for i in sorted(gaps[: len(ranges) - MAX_HOST_RANGES], reverse=True):  # join i + 1 into i
                ranges[i][1] = max(ranges[i][1], ranges[i + 1][1])
                del ranges[i + 1]
        return int(covered[0][0]), [(low, high) for low, high in ranges]

    def _minute_id_range(self, since: int | None, until: int | None) -> tuple[int, int | None] | None:
        """id_range() from the rollup's minutes (a database from before the spans)."""
        covered = self._state()
        if covered is None:
            return None
        where, params = [], []
        if since is not None:
            where.append('"minute" >= ?')
            params.append(since // MINUTE_NS)
        if until is not None:
            where.append('"minute" <= ?')
            params.append((until - 1) // MINUTE_NS)
        found = self._rows(f'SELECT min("min_id"), max("max_id") FROM {_R} WHERE ' + " AND ".join(where), params)
        return self._bounded(found[0], covered)

    def _bounded(self, found: tuple[Any, ...], covered: int) -> tuple[int, int | None]:
        low, high = found
        newest = self._rows(f'SELECT coalesce(max("id"), 0) FROM {_T}', [])[0][0]
        if newest > covered:
            # Rows past the mark are not in the rollup: they may be anywhere in time.
            return (covered + 1 if low is None else min(low, covered + 1)), None
        if low is None:
            return (newest + 1, newest)  # nothing stored in that range
        return low, high
