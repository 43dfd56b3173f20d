"""Which side drives a LogStore query, chosen per query from cheap estimates.

A search is a full-text query and filters; the newest *limit* of the rows
that pass both are wanted.  Three ways to get them, with very different costs
on a database of ten million rows:

* walk the full-text matches newest first (by id: no sort) and check the
  filters on each row: about ``limit / (fraction of matches passing the
  filters)`` rows, at most every match;
* walk a narrow filter's rows through its index newest first and check each
  against the full-text index: about ``limit / (fraction of them matching)``
  lookups, at most every row of the filter; a lookup in the full-text index
  costs some twenty times a step of the first walk;
* without a full-text query, read each value of the narrowest filter (each
  level at or above the minimum, each logger under the name) from its
  ``(value, ts)`` index newest first, ``limit`` at most from each, and keep
  the newest: SQLite alone would read every row of the filter and sort them.

The estimates: a filter's rows counted through its index up to a cap; how
often the full-text query and each broad filter match among the newest few
thousand ids; a time range turned into bounds on the id through the rollup
(janus_utils._rollup), so that the first walk starts and stops where the
range does.  Each estimate reads at most a few thousand index entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._schema import EVERY_USER_BUCKET, ID_SPAN_SQL, LEVEL_INDEX_FLOOR, USER_BUCKET_BITS, user_buckets_within

__all__ = ["WALK_TS", "FtsPlan", "Planner", "Streams"]

# A filter's rows are counted through its index up to this many, starting at
# FIRST_PROBE_CAP (see Planner._probes).
PROBE_CAP = 20_000
FIRST_PROBE_CAP = 256
# How often the query and the broad filters match is measured on the newest this-many ids.
SAMPLE_IDS = 4_000
# A user's rows, for a full-text search led by the user alone, are counted in
# the newest SAMPLE_BUCKETS buckets of the user index and scaled to all ids,
# when that finds at least SAMPLE_ROWS (see Planner._sampled).
SAMPLE_BUCKETS = 8
SAMPLE_ROWS = 64
# Relative cost of one full-text lookup of a given row, against one step of a walk
# (next match, its row, the filters): a lookup seeks every term in every segment
# of the index.  Measured on 2,000,000 rows: ~20 µs with one segment, ~85 µs
# with three, ~230 µs with thirteen, against ~1.5 µs a step.
LOOKUP_COST_BASE = 6.0
LOOKUP_COST_PER_SEGMENT = 10.0
STEP_COST = 1.0
# One of a narrow filter's rows read and tested against the query's words
# (LogStore._prefilter) before any lookup: only rows that pass are looked up.
PREFILTER_COST = 1.5
# One of a narrow filter's rows matched in a small in-memory full-text table
# (LogStore._confirmed) instead of looked up in the index: copied, tokenized,
# matched.  Measured on 10M rows: a user's 2,000 rows with ~200 to match cost
# about what reading them costs.
MEMORY_MATCH_COST = 10.0
# At most this many values of one filter are read as separate streams.
MAX_STREAMS = 32
# Planner.streams(): walk the time index newest first, checking the filters on each row.
WALK_TS = "walk_ts"

Rows = Callable[[str, list[Any]], list[tuple[Any, ...]]]


@dataclass
class FtsPlan:
    """How a full-text search runs: from the matches ("fts") or from a narrow filter ("logs")."""

    driver: str = "fts"
    narrow: tuple[str, list[Any]] | None = None
    low_id: int | None = None  # every matching row has an id in [low_id, high_id]
    high_id: int | None = None
    estimates: dict[str, float] = field(default_factory=dict)


@dataclass
class Streams:
    """A filter-only search read as one stream per value of one filter, then merged."""

    index: str  # the (column, ts) index every stream reads
    column: str
    values: list[Any]


@dataclass
class _Probe:
    name: str  # the filter's name in the selection's facts
    condition: str
    params: list[Any]
    rows: int  # counted through the index, up to PROBE_CAP
    density: float = 0.0  # the fraction of all rows it passes (estimated)


# The (value, ts) index a filter-only search streams per stored value, by the
# facts' name: the filters with few values and many rows each.
INDEXES = {
    "level": ("logs_level_ts", "level"),
    "logger": ("logs_logger_ts", "logger"),
}


class Planner:
    """The estimates of one LogStore, read through *rows* (each call one short read)."""

    def __init__(self, rows: Rows, table: str, fts_table: str) -> None:
        self._rows = rows
        self._t = f'"{table}"'
        self._f = f'"{fts_table}"'
        self._f_idx = f'"{fts_table}_idx"'

    def _lookup_cost(self) -> float:
        """What one full-text lookup costs in walk steps, from the index's segment count."""
        try:
            segments = self._rows(f'SELECT count(DISTINCT "segid") FROM {self._f_idx}', [])[0][0]
        except Exception:
            segments = 8
        return LOOKUP_COST_BASE + LOOKUP_COST_PER_SEGMENT * max(int(segments), 1)

    # ------------------------------------------------------------ estimates
    def _span(self) -> tuple[int, int]:
        """(oldest id, newest id): the id range the rows lie in, from two lookups."""
        low, high = self._rows(ID_SPAN_SQL, [])[0]
        return (low or 0), (high or 0)

    def _count(self, condition: str, params: list[Any], cap: int) -> int:
        return int(
            self._rows(f"SELECT count(*) FROM (SELECT 1 FROM {self._t} WHERE {condition} LIMIT ?)", [*params, cap])[0][0]
        )

    def _fts_density(self, fts: str, newest: int, span: int) -> float:
        window = min(SAMPLE_IDS, max(span, 1))
        found = self._rows(
            f'SELECT count(*) FROM (SELECT 1 FROM {self._f} WHERE {self._f} MATCH ? AND "rowid" > ? LIMIT ?)',
            [fts, newest - window, window],
        )[0][0]
        return max(found, 0.5) / window

    def _filter_density(self, condition: str, params: list[Any], newest: int, span: int) -> float:
        window = min(SAMPLE_IDS, max(span, 1))
        found = self._rows(
            # NOT INDEXED: the newest ids by the primary key, not the filter's index.
            f'SELECT count(*) FROM {self._t} NOT INDEXED WHERE "id" > ? AND {condition}', [newest - window, *params]
        )[0][0]
        return max(found, 0.5) / window

    def _sampled(self, condition: str, params: list[Any]) -> int | None:
        """A user filter's rows, estimated from its newest SAMPLE_BUCKETS id buckets; None when
        it is not a user filter, the buckets are few, or the sample too small to scale.

        Counting a user's rows reads every one of them, a bucket at a time:
        4,000 rows and a millisecond at ten million rows, more than the search
        it plans.  The newest buckets tell the same share of all ids."""
        if EVERY_USER_BUCKET not in condition:
            return None
        oldest, newest = self._span()
        bits = USER_BUCKET_BITS
        if (newest >> bits) - (oldest >> bits) < 4 * SAMPLE_BUCKETS:
            return None
        low = ((newest >> bits) - SAMPLE_BUCKETS + 1) << bits
        found = self._count(user_buckets_within(condition, low, newest), params, PROBE_CAP)
        if found < SAMPLE_ROWS:
            return None
        return round(found * (newest - oldest + 1) / (newest - low + 1))

    def _probes(self, probes: list[tuple[str, list[Any]]], names: list[str]) -> list[_Probe]:
        """Each filter's rows counted up to a cap that grows sixteenfold until one filter
        stays under it: the narrowest is found exactly, the broad ones are read
        about as far as it is (a logger's 20,000 rows are not counted to learn
        that a user has 4,000), and a probe's rows are exact when below PROBE_CAP
        only for the narrowest.  A lone filter is counted to PROBE_CAP at once."""
        cap = min(FIRST_PROBE_CAP, PROBE_CAP) if len(probes) > 1 else PROBE_CAP
        while True:
            counted = [
                _Probe(name, condition, params, self._count(condition, params, cap))
                for name, (condition, params) in zip(names, probes)
            ]
            if cap >= PROBE_CAP or min(probe.rows for probe in counted) < cap:
                return counted
            cap = min(cap * 16, PROBE_CAP)

    # ------------------------------------------------------------ full-text searches
    def fts(
        self,
        fts: str,
        probes: list[tuple[str, list[Any]]],
        probe_names: list[str],
        limit: int | None,
        id_range: tuple[int, int | None] | None,
        prefiltered: bool = False,
        in_memory: bool = False,
    ) -> FtsPlan:
        """*prefiltered*: a filter's rows are tested against the query's words before
        each is looked up in the index, so only about the matching share is.
        *in_memory*: they are matched in a small in-memory table (MEMORY_MATCH_COST),
        not looked up in the index."""
        plan = FtsPlan()
        if id_range is not None:
            plan.low_id, plan.high_id = id_range
        if not probes:
            return plan
        sampled = self._sampled(*probes[0]) if len(probes) == 1 else None
        if sampled is not None and sampled < PROBE_CAP:
            counted = [_Probe(probe_names[0], probes[0][0], probes[0][1], sampled)]
        else:
            counted = self._probes(probes, probe_names)
        best = min(counted, key=lambda probe: probe.rows)
        if best.rows == 0:
            plan.driver, plan.narrow = "logs", (best.condition, best.params)
            return plan
        oldest, newest = self._span()
        span = max(newest - oldest + 1, 1)
        rows = float(best.rows)
        if best.rows >= PROBE_CAP:
            # Every filter has more rows than are counted: how many, from how
            # often each passes among the newest ids.  One far rarer than the
            # query's matches still leads (a quiet user of fifty million rows has
            # more than PROBE_CAP, and walking matches that never pass it would
            # read every one of them).  Not a time window: its rows are not
            # spread over the ids (the newest may hold none), and the walk of
            # the matches is already bounded to its ids (id_range).
            spread = [probe for probe in counted if probe.name != "time"]
            if not spread:
                return plan
            rows, best = min(
                ((max(float(PROBE_CAP), self._filter_density(p.condition, p.params, newest, span) * span), p)
                 for p in spread),
                key=lambda estimate: estimate[0],
            )
        try:
            density = self._fts_density(fts, newest, span)
        except Exception:
            return plan  # a query SQLite refuses: the search itself says why
        matches = density * span
        share = rows / span  # of the matches, this many pass the filter (independence)
        if limit is None:
            walk, lookups = matches, rows
        else:
            # Halfway between the expectation (independent filters) and the
            # worst case (no row passes both: every match, every filter row):
            # a user whose records never hold the words is the common surprise.
            walk = (min(matches, limit / share) + matches) / 2
            lookups = (min(rows, limit / density) + rows) / 2
        lookup_cost = MEMORY_MATCH_COST if in_memory else self._lookup_cost()
        plan.estimates = {
            "rows": span, "matches": matches, "filter": rows, "walk": walk, "lookups": lookups,
            "lookup_cost": lookup_cost,
        }
        if prefiltered:
            # The filter's rows pass the words about as often as the query matches
            # (substrings a little more), unless the two go together (every ERROR
            # carries the rare word): halfway between, as above.
            passing = (min(1.0, 2 * density) + 1.0) / 2
            from_filter = lookups * (PREFILTER_COST + passing * lookup_cost)
        else:
            from_filter = lookups * lookup_cost
        if from_filter < walk * STEP_COST:
            plan.driver, plan.narrow = "logs", (best.condition, best.params)
        return plan

    # ------------------------------------------------------------ filter-only searches
    def streams(
        self, facts: dict[str, Any], probes: list[tuple[str, list[Any]]], probe_names: list[str], limit: int,
        indexes: set[str],
    ) -> Streams | str | None:
        """Streams over the narrowest multi-valued filter, or WALK_TS (the time index newest
        first), for broad filters; None when a narrow filter leads (SQLite reads its few rows)."""
        candidates = [name for name in INDEXES if name in facts and INDEXES[name][0] in indexes]
        if facts.get("level", LEVEL_INDEX_FLOOR) < LEVEL_INDEX_FLOOR and "level" in candidates:
            candidates.remove("level")  # the level index holds no such level
        if not candidates or not probes:
            return None
        # One broad filter alone is no exception: for a small LIMIT SQLite
        # reads the filter's whole index and sorts (level >= ERROR, LIMIT 1:
        # 450,000 rows, ~1 s on 10M rows), where one seek per value is enough.
        counted = self._probes(probes, probe_names)
        if min(probe.rows for probe in counted) < PROBE_CAP:
            return None  # a narrow filter: SQLite reads its few rows and sorts them
        oldest, newest = self._span()
        span = max(newest - oldest + 1, 1)
        for probe in counted:
            probe.density = self._filter_density(probe.condition, probe.params, newest, span)
        together = 1.0
        for probe in counted:
            together *= probe.density
        best: tuple[float, Streams] | None = None
        for name in candidates:
            values = self._values(name, facts[name])
            if values is None or not values:
                continue
            others = 1.0
            for probe in counted:
                if probe.name != name:
                    others *= probe.density
            cost = len(values) * limit / others
            index, column = INDEXES[name]
            if best is None or cost < best[0]:
                best = (cost, Streams(index, column, values))
        walk = STEP_COST * limit / together  # the ts index newest first, every filter checked on each row
        if best is None or best[0] >= walk:
            # Broad filters that pass often: walk the time index.  Left to
            # itself SQLite may read a broad filter's whole index and sort
            # (logger "svc", 5.6M of 10M rows: 1.5 s for LIMIT 5).
            return WALK_TS if "logs_ts" in indexes else None
        return best[1]

    def _values(self, name: str, wanted: Any) -> list[Any] | None:
        """The stored values a level or logger filter admits, one index seek each; None if too many."""
        column = INDEXES[name][1]
        values: list[Any] = []
        if name == "level":
            low, strict = wanted, False
            high = None
        else:
            exact, low, high = wanted
            if self._rows(f'SELECT 1 FROM {self._t} WHERE "{column}" = ? LIMIT 1', [exact]):
                values.append(exact)
            strict = False
        while len(values) <= MAX_STREAMS:
            op = ">" if strict else ">="
            sql = f'SELECT min("{column}") FROM {self._t} WHERE "{column}" {op} ?'
            params: list[Any] = [low]
            if high is not None:
                sql += f' AND "{column}" < ?'
                params.append(high)
            if name == "level":
                sql += f' AND "level" >= {LEVEL_INDEX_FLOOR}'  # the partial index's term, as written
            found = self._rows(sql, params)[0][0]
            if found is None:
                return values
            values.append(found)
            low, strict = found, True
        return None
