"""The planner's choices never change a result: searches and counts against a brute-force scan."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import janus_utils as ju
from janus_utils import _planner, _rollup, _speedups, _words
from janus_utils._flusher import open_database
from janus_utils._timeparse import ts_datetime

WORDS = ("alpha", "bravo", "cache", "delta", "echo", "quokka")
LOGGERS = ("svc", "svc.api", "svc.api.auth", "svc.db", "svcx", "worker")
USERS = ("u1", "u2", "u3", "rare", None)
LEVELS = (10, 20, 20, 20, 30, 40, 50)
BASE = 1_700_000_000 * 10**9
STEP = 10**9  # one record a second: the rollup's minutes hold 60


def _row(rng: random.Random, n: int) -> tuple[Any, ...]:
    words = rng.choices(WORDS[:5], k=4)
    if n % 97 == 0:
        words.append("quokka")
    user = "rare" if n % 150 == 0 else rng.choice(USERS[:3] + (None,))
    # ts mostly in id order, some records late by up to two minutes (another process's clock),
    # a few logged with an explicit ts anywhere in the database's time.
    ts = BASE + n * STEP - (rng.randrange(120) * STEP if rng.random() < 0.05 else 0)
    if n % 53 == 5:
        ts = BASE + rng.randrange(0, 3300) * STEP
    return (ts, rng.choice(LEVELS), rng.choice(LOGGERS), " ".join(words), user)


# Rows of user "odd" whose text tries the prefilter of a filter-driven search
# (LogStore._prefilter): case, folded diacritics, NUL, invalid UTF-8, a blob,
# words inside longer words, words in fields or the exception.  Values are SQL.
ODD_TEXTS = (
    ("'ALPHA Bravo'", "NULL", "NULL"),
    ("'Álpha bravo'", "NULL", "NULL"),
    ("'x' || char(0) || 'Álpha bravo'", "NULL", "NULL"),
    ("x'616c70686120627261766f'", "NULL", "NULL"),
    ("'alphabet bravos'", "NULL", "NULL"),
    ("'plain'", """'{"note": "alpha Bravo"}'""", "NULL"),
    ("'plain'", "NULL", "'Traceback' || char(10) || '  ALPHA' || char(9) || 'bravo'"),
    ("'ＡＬＰＨＡ bravo'", "NULL", "NULL"),
    ("'alpha'", "42", "NULL"),
    # ... and its word signature (janus_utils._words): underscores and punctuation split
    # tokens, digits join them, a word inside a longer one is not its token.
    ("'alpha_bravo'", "NULL", "NULL"),
    ("'alpha2 bravo'", "NULL", "NULL"),
    ("'xalpha bravo'", "NULL", "NULL"),
    ("'(Alpha).[BRAVO]'", "NULL", "NULL"),
    ("'plain'", """'{"ALPHA": ["bravo"]}'""", "NULL"),
    ("'plain'", "NULL", "'Error: alpha' || char(10) || 'Bravo_x'"),
)


# Records restored below the rollup's mark (an import of an archive): ids in the
# middle of the database, ts before every other record.
IMPORTED_IDS = range(701, 741)


@pytest.fixture(scope="module", params=["rows past the rollup", "all in the rollup"])
def db_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("planner") / "logs.db"
    rng = random.Random(1915)
    db = open_database(str(path))
    insert = 'INSERT INTO "logs"("ts", "level", "logger", "message", "user_id") VALUES (?, ?, ?, ?, ?)'
    index = 'INSERT INTO "logs_fts"(rowid, message, fields, exception) SELECT id, message, fields, exception FROM "logs" WHERE id > ?'
    span_ids, _rollup.SPAN_IDS = _rollup.SPAN_IDS, 64  # many spans: a time range bounds a walk closely
    try:
        done = 0
        for batch in range(6):  # batches as the flusher commits them, several FTS segments
            rows = [_row(rng, done + k) for k in range(500)]
            with db:
                db.executemany(insert, rows)
                if batch == 1:  # pruned since (archived): their ids are free
                    db.execute('DELETE FROM "logs" WHERE id BETWEEN ? AND ?', (IMPORTED_IDS[0], IMPORTED_IDS[-1]))
                db.execute(index, (done,))
                if batch % 2:  # both ways the flusher moves the mark
                    _rollup.advance(db)
                else:
                    for first in range(0, 500, 100):  # a span per 100-row commit, joined up to SPAN_IDS
                        _rollup.advance_batch(db, rows[first:first + 100], done + first + 1, done + first + 100)
            done += 500
        with db:  # an archive's records restored with their ids, older than every other record
            for row_id in IMPORTED_IDS:
                ts, level, logger, message, user = _row(rng, row_id)
                db.execute(
                    'INSERT INTO "logs"("id", "ts", "level", "logger", "message", "user_id") VALUES (?, ?, ?, ?, ?, ?)',
                    (row_id, BASE - rng.randrange(200, 300) * STEP, level, logger, message, user),
                )
            _rollup.count_inserted(db, list(IMPORTED_IDS))
            for n, (message, fields, exception) in enumerate(ODD_TEXTS):
                db.execute(
                    'INSERT INTO "logs"("id", "ts", "level", "logger", "message", "fields", "exception", "user_id") '
                    f"VALUES (?, ?, 20, 'svc', {message}, {fields}, {exception}, 'odd')",
                    (done + n + 1, BASE + (done + n) * STEP),
                )
            # One statement, in rowid order: one full-text segment, as for any batch.
            db.execute(
                index.replace("WHERE id > ?", "WHERE id > ? OR id BETWEEN ? AND ? ORDER BY id"),
                (done, IMPORTED_IDS[0], IMPORTED_IDS[-1]),
            )
            _rollup.advance(db)
            done += len(ODD_TEXTS)
        with db:  # past the rollup's mark, or not; some of them old records
            rows = [_row(rng, done + k) for k in range(200)]
            rows = [(BASE - 50 * STEP, *row[1:]) if k % 40 == 3 else row for k, row in enumerate(rows)]
            db.executemany(insert, rows)
            db.execute(index, (done,))
            if request.param == "all in the rollup":
                _rollup.advance(db)
        with db:  # each row's word signature as the flusher stores it; every fourth from before it (NULL)
            rows = db.execute('SELECT "id", "message", "fields", "exception" FROM "logs"').fetchall()
            signed = _speedups.sign_rows(rows, (1, 2, 3))
            db.executemany('UPDATE "logs" SET "words" = ? WHERE "id" = ?', [(r[-1], r[0]) for r in signed if r[0] % 4])
    finally:
        _rollup.SPAN_IDS = span_ids
        db.close()
    yield path


class _Brute:
    """Every row and the full-text matches of a query, filtered and ordered in Python."""

    def __init__(self, path: Path) -> None:
        self.db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        self.rows = self.db.execute('SELECT "id", "ts", "level", "logger", "user_id" FROM "logs"').fetchall()

    def matches(self, fts: str) -> set[int]:
        return {row[0] for row in self.db.execute('SELECT rowid FROM "logs_fts" WHERE "logs_fts" MATCH ?', (fts,))}

    def select(self, fts: str | None, filters: dict[str, Any]) -> list[tuple[Any, ...]]:
        wanted = self.matches(fts) if fts is not None else None
        found = []
        for row in self.rows:
            rid, ts, level, logger, user = row
            if wanted is not None and rid not in wanted:
                continue
            if "level" in filters and level < filters["level"]:
                continue
            if "logger" in filters and not (logger == filters["logger"] or logger.startswith(filters["logger"] + ".")):
                continue
            if "user_id" in filters and user != filters["user_id"]:
                continue
            if "since" in filters and ts < filters["since"]:
                continue
            if "until" in filters and ts >= filters["until"]:
                continue
            found.append(row)
        return found


queries = st.one_of(
    st.none(),
    st.sampled_from(WORDS),
    st.sampled_from(("ALPHA", "alp*", "alpha bravo", "bravo alp*", "Álpha")),
    st.lists(st.sampled_from(WORDS), min_size=2, max_size=3).map(" ".join),
    st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)).map(lambda pair: f"{pair[0]} OR {pair[1]}"),
    st.tuples(st.sampled_from(WORDS), st.sampled_from(WORDS)).map(lambda pair: f'"{pair[0]} {pair[1]}"'),
)
filter_sets = st.fixed_dictionaries(
    {},
    optional={
        "level": st.sampled_from((10, 20, 30, 40, 50, 60)),
        "logger": st.sampled_from(("svc", "svc.api", "svcx", "worker", "nope")),
        "user_id": st.sampled_from(("u1", "rare", "odd", "nobody")),
        "since": st.integers(-320, 3300),
        "until": st.integers(-320, 3300),
    },
)


@settings(max_examples=150, deadline=None)
@given(
    query=queries,
    filters=filter_sets,
    limit=st.sampled_from((1, 7, 100, None)),
    order=st.sampled_from(("newest", "oldest")),
    probe_cap=st.sampled_from((5, 60, 20_000)),
    sample=st.sampled_from((50, 4_000)),
    lookup=st.sampled_from((0.0, 6.0, 1000.0)),
    step=st.sampled_from((0.001, 1.0, 1000.0)),
    first_cap=st.sampled_from((1, 256)),
)
def test_search_and_count_match_a_brute_force_scan(
    db_path: Path, query: str | None, filters: dict[str, Any], limit: int | None, order: str,
    probe_cap: int, sample: int, lookup: float, step: float, first_cap: int,
) -> None:
    """Whatever the estimates make the planner choose, the records and counts are the scan's."""
    if "since" in filters and "until" in filters and filters["since"] >= filters["until"]:
        filters["until"] = filters["since"] + 1
    for name in ("since", "until"):
        if name in filters:
            filters[name] = BASE + filters[name] * STEP
    saved = (_planner.PROBE_CAP, _planner.SAMPLE_IDS, _planner.LOOKUP_COST_BASE, _planner.STEP_COST,
             _planner.FIRST_PROBE_CAP)
    _planner.PROBE_CAP, _planner.SAMPLE_IDS, _planner.LOOKUP_COST_BASE, _planner.STEP_COST, _planner.FIRST_PROBE_CAP = (
        probe_cap, sample, lookup, step, first_cap
    )
    try:
        brute = _Brute(db_path)
        try:
            with ju.LogStore(db_path) as store:
                given_filters = {
                    name: (ts_datetime(value) if name in ("since", "until") else value)
                    for name, value in filters.items()
                }
                fts = store._select(query, False, given_filters).fts if query else None
                expected = brute.select(fts, filters)
                if fts is None:  # without a query: by ts, then id
                    expected.sort(key=lambda row: (row[1], row[0]), reverse=order == "newest")
                else:  # with one: by id, the order the records were committed in
                    expected.sort(key=lambda row: row[0], reverse=order == "newest")
                found = store.search(query, limit=limit, order=order, **given_filters)  # type: ignore[arg-type]
                assert [row[0] for row in expected[:limit]] == [record.id for record in found]
                assert len(expected) == store.count(query, **given_filters)
        finally:
            brute.db.close()
    finally:
        (_planner.PROBE_CAP, _planner.SAMPLE_IDS, _planner.LOOKUP_COST_BASE, _planner.STEP_COST,
         _planner.FIRST_PROBE_CAP) = saved


@pytest.mark.parametrize("query", ["alpha", "bravo delta", "quokka", "alp*"])
def test_time_ranges_match_a_brute_force_scan(db_path: Path, query: str) -> None:
    """Windows over the whole time covered, the old imported records' among them: the records
    and counts are the scan's, however far a record's ts is from its id's neighbours'."""
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            fts = store._select(query, False, {}).fts
            windows = [(-310, -190), (-250, -249), (-100, None), (None, -20), (None, -150), (3100, None)]
            windows += [(start, start + 45) for start in range(-30, 3300, 97)]
            for since, until in windows:
                filters = {name: BASE + value * STEP for name, value in (("since", since), ("until", until))
                           if value is not None}
                given = {name: ts_datetime(value) for name, value in filters.items()}
                expected = sorted((row[0] for row in brute.select(fts, filters)), reverse=True)
                for limit in (3, None):
                    found = store.search(query, limit=limit, **given)  # type: ignore[arg-type]
                    assert expected[:limit] == [record.id for record in found], (since, until, limit)
                assert len(expected) == store.count(query, **given), (since, until)
    finally:
        brute.db.close()


@pytest.mark.parametrize("query", ["quokka", "alpha bravo"])
def test_the_newest_below_any_id_is_the_scans(db_path: Path, query: str) -> None:
    """Newest first below an id (read oldest first in growing windows): below every id, the
    newest match is the scan's, and a page of them too; and export's newest-first pages."""
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            fts = store._select(query, False, {}).fts
            assert fts is not None
            matches = sorted(brute.matches(fts), reverse=True)
            newest = store.newest_id()
            for upto in range(0, newest + 2):
                selection = store._select(query, False, {})
                below = [row_id for row_id in matches if row_id <= upto]
                found = store._records(selection, order="id_desc", limit=1 if upto % 3 else 5, upto_id=upto)
                assert below[: 1 if upto % 3 else 5] == [record.id for record in found], upto
            assert matches == [record.id for record in store.export(query, newest_first=True, batch_size=7)]
    finally:
        brute.db.close()


def test_every_row_lies_in_a_span_holding_its_ts(db_path: Path) -> None:
    """Each row up to the rollup's mark has a span whose ids and ts both hold it; spans are short."""
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        covered = db.execute("""SELECT "value" FROM "janus_rollup_state" WHERE "key" = 'covered_upto'""").fetchall()[0][0]
        outside = db.execute(
            'SELECT count(*) FROM "logs" WHERE "id" <= ? AND NOT EXISTS (SELECT 1 FROM "janus_spans" '
            'WHERE "logs"."id" BETWEEN "min_id" AND "max_id" AND "logs"."ts" BETWEEN "min_ts" AND "max_ts")',
            (covered,),
        ).fetchall()[0][0]
        longest = db.execute('SELECT max("max_id" - "min_id" + 1) FROM "janus_spans"').fetchall()[0][0]
    finally:
        db.close()
    assert 0 == outside
    assert longest <= 100  # SPAN_IDS, or one commit's ids


def _assert_filter_only_search_is_the_scan(store: ju.LogStore, brute: Any, filters: dict[str, Any], order: str) -> None:
    expected = brute.select(None, filters)
    expected.sort(key=lambda row: (row[1], row[0]), reverse=order == "newest")
    for limit in (1, 50, 400):
        found = store.search(limit=limit, order=order, **filters)  # type: ignore[arg-type]
        assert [row[0] for row in expected[:limit]] == [record.id for record in found], (filters, limit)


def test_every_plan_is_taken(db_path: Path) -> None:
    """The database above drives each plan: the matches, a filter's rows, and streams per value."""
    saved = (_planner.PROBE_CAP, _planner.SAMPLE_IDS)
    _planner.PROBE_CAP, _planner.SAMPLE_IDS = 60, 200
    try:
        with ju.LogStore(db_path) as store:
            planner = store._planner()
            drivers = set()
            for query, filters in (("alpha", {"user_id": "rare"}), ("quokka", {"level": 20}), ("alpha bravo", {})):
                selection = store._select(query, False, filters)
                drivers.add(planner.fts(selection.fts, selection.probes, selection.probe_names, 10, None).driver)
            assert {"fts", "logs"} == drivers
            selection = store._select(None, False, {"level": 40, "logger": "svc"})
            streams = planner.streams(
                selection.facts, selection.probes, selection.probe_names, 10, store._index_names()
            )
            assert isinstance(streams, _planner.Streams) and streams.column in ("level", "logger")
    finally:
        _planner.PROBE_CAP, _planner.SAMPLE_IDS = saved


@pytest.mark.parametrize("order", ["newest", "oldest"])
@pytest.mark.parametrize("step", [0.001, 1000.0], ids=["walk the time index", "streams"])
def test_one_broad_filter_is_planned_and_matches_a_brute_force_scan(db_path: Path, order: str, step: float) -> None:
    """A broad level or logger filter alone is read by streams or the time index, never left to a sort."""
    saved = (_planner.PROBE_CAP, _planner.STEP_COST)
    _planner.PROBE_CAP, _planner.STEP_COST = 5, step
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            for filters in ({"level": 30}, {"logger": "svc"}, {"logger": "svc.api"}):
                selection = store._select(None, False, filters)
                plan = store._planner().streams(
                    selection.facts, selection.probes, selection.probe_names, 50, store._index_names()
                )
                if step < 1:
                    assert plan == _planner.WALK_TS, filters
                else:
                    assert isinstance(plan, _planner.Streams), filters
                _assert_filter_only_search_is_the_scan(store, brute, filters, order)
    finally:
        brute.db.close()
        _planner.PROBE_CAP, _planner.STEP_COST = saved


@pytest.mark.parametrize("order", ["newest", "oldest"])
def test_streams_match_a_brute_force_scan(db_path: Path, order: str) -> None:
    """Filter-only searches read as one stream per level or logger give the scan's records."""
    saved = (_planner.PROBE_CAP, _planner.STEP_COST)
    _planner.PROBE_CAP, _planner.STEP_COST = 5, 1000.0  # streams whenever they can be used
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            for filters in ({"level": 20, "logger": "svc"}, {"level": 30, "user_id": "u1"}, {"logger": "svc", "user_id": "u2"}):
                selection = store._select(None, False, filters)
                assert isinstance(store._planner().streams(
                    selection.facts, selection.probes, selection.probe_names, 50, store._index_names()
                ), _planner.Streams)
                _assert_filter_only_search_is_the_scan(store, brute, filters, order)
    finally:
        brute.db.close()
        _planner.PROBE_CAP, _planner.STEP_COST = saved


@pytest.mark.parametrize("query", ["alpha bravo", "ALPHA", "alp*", "bravo alp*", "Álpha bravo", '"alpha bravo"', "42"])
def test_prefiltered_filter_rows_match_a_brute_force_scan(db_path: Path, query: str) -> None:
    """A search driven by a filter's rows, tested against the query's words first, finds what the index finds."""
    saved = (_planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST)
    _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 20_000, 0.0, 1000.0  # the filter drives
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            for filters in ({"user_id": "odd"}, {"user_id": "odd", "level": 20}, {"user_id": "rare", "logger": "svc"}):
                selection = store._select(query, False, filters)
                assert selection.fts is not None
                assert "LIKE" in store._prefilter(selection.fts)  # each query has an ASCII word
                expected = [row[0] for row in brute.select(selection.fts, filters)]
                expected.sort(reverse=True)
                for limit in (1, 3, None):
                    found = store.search(query, limit=limit, **filters)  # type: ignore[arg-type]
                    assert expected[:limit] == [record.id for record in found], (filters, limit)
                    assert selection.driver in (None, "logs")
                plan = store._planner().fts(
                    selection.fts, selection.probes, selection.probe_names, 3, None, prefiltered=True
                )
                assert "logs" == plan.driver
    finally:
        brute.db.close()
        _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = saved


def test_the_odd_rows_try_every_side_of_the_prefilter(db_path: Path) -> None:
    """The corpus above holds matches the words alone would miss (folded letters, NUL) and rows
    holding the words that the index does not match, so the test above can fail."""
    brute = _Brute(db_path)
    try:
        odd = {row[0] for row in brute.rows if row[4] == "odd"}
        matches = brute.matches('"alpha" AND "bravo"') & odd
        texts = dict(brute.db.execute('SELECT "id", CAST("message" AS BLOB) FROM "logs" WHERE "user_id" = \'odd\''))
        assert any("Álpha".encode() in texts[i] for i in matches)  # folded by the tokenizer only
        assert any(b"\x00" in texts[i] for i in matches)
        assert any(b"alphabet" in texts[i] for i in odd - matches)  # the words, no match
    finally:
        brute.db.close()


@pytest.mark.parametrize("query", ["alpha bravo", "ALPHA", "bravo alp*", '"alpha bravo"', "alpha_bravo", "42"])
def test_the_word_signature_drops_rows_but_never_a_match(db_path: Path, query: str) -> None:
    """A filter-led search tests each row's word signature (janus_utils._words) in the user index:
    it drops rows of the corpus, among them rows holding the words inside longer ones, and keeps
    every row the index matches, signed ones among them, so the tests above can fail."""
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            fts = store._select(query, False, {}).fts
            assert fts is not None
            condition = store._signature(fts)
            assert condition
            words = dict(brute.db.execute('SELECT "id", "words" FROM "logs"').fetchall())
            passed = {row[0] for row in brute.db.execute(f'SELECT "id" FROM "logs" WHERE {condition}')}
            matched = brute.matches(fts)
            assert matched <= passed, sorted(matched - passed)[:5]
            assert any(words[i] not in (None, -1) for i in matched)
            assert len(passed) < len(words)
    finally:
        brute.db.close()


def test_a_user_led_search_tests_the_signature_in_the_user_index(db_path: Path) -> None:
    """The words test sits in the subquery that walks the user index, which covers it."""
    saved = (_planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST)
    _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 20_000, 0.0, 1000.0  # the filter drives
    try:
        with ju.LogStore(db_path) as store:
            selection = store._select("alpha bravo", False, {"user_id": "odd"})
            sql, params = store._sql(selection, '"logs"."id"', unmatched=True)
            assert selection.driver == "logs"
            subquery = next(line for line in sql.splitlines() if 'IN (SELECT "id"' in line)
            assert _words.COLUMN in subquery
            assert store._db is not None
            plan = " ".join(str(row[3]) for row in store._db.execute("EXPLAIN QUERY PLAN " + sql, params))
            assert "COVERING INDEX logs_user_bucket" in plan
    finally:
        _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = saved


def test_probes_stop_at_the_first_cap_a_filter_stays_under(db_path: Path) -> None:
    """The narrowest filter is counted exactly; a broad one only as far as the cap that found it."""
    saved = (_planner.PROBE_CAP, _planner.FIRST_PROBE_CAP)
    _planner.PROBE_CAP, _planner.FIRST_PROBE_CAP = 20_000, 2
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            selection = store._select("alpha", False, {"user_id": "rare", "logger": "svc"})
            counted = {p.name: p.rows for p in store._planner()._probes(selection.probes, selection.probe_names)}
            rare = sum(1 for row in brute.rows if row[4] == "rare")
            broad = sum(1 for row in brute.rows if row[3] == "svc" or row[3].startswith("svc."))
            cap = 2
            while rare >= cap:  # caps 2, 32, 512...: the first the rare user stays under
                cap *= 16
            assert cap < broad
            assert rare == counted["user_id"]
            assert cap == counted["logger"]
            selection = store._select("alpha", False, {"logger": "svc"})
            assert [min(broad, 20_000)] == [p.rows for p in store._planner()._probes(selection.probes, selection.probe_names)]
    finally:
        brute.db.close()
        _planner.PROBE_CAP, _planner.FIRST_PROBE_CAP = saved


@pytest.mark.parametrize(
    ("query", "raw"),
    [("alpha bravo", False), ("ALPHA", False), ("alp*", False), ('"alpha bravo"', False), ("42", False),
     ("NEAR(alpha bravo, 2)", True), ("message: bravo NOT delta", True), ("{fields exception}: alpha", True)],
)
def test_filter_rows_matched_in_memory_are_those_the_index_finds_with_the_same_snippets(
    db_path: Path, query: str, raw: bool
) -> None:
    """A filter-led search or count matches its rows in a small in-memory full-text table: the
    same records, in the same order, with the same snippets as looking each row up in the index."""
    saved = (_planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST)
    _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 20_000, 0.0, 1000.0  # the filter drives
    try:
        with ju.LogStore(db_path) as store, ju.LogStore(db_path) as lookups:
            lookups._confirm = ""  # no in-memory table: each row looked up in the index
            used = 0
            for filters in ({"user_id": "odd"}, {"user_id": "rare", "logger": "svc"}, {"user_id": "u1", "level": 40}):
                for order in ("newest", "oldest"):
                    for limit in (1, 7, None):
                        found = store.search(query, raw=raw, limit=limit, order=order, **filters)  # type: ignore[arg-type]
                        expected = lookups.search(query, raw=raw, limit=limit, order=order, **filters)  # type: ignore[arg-type]
                        assert [(r.id, r.snippet) for r in found] == [(r.id, r.snippet) for r in expected]
                        assert found == expected
                        used += bool(found)
                counted = store.count(query, raw=raw, **filters)  # type: ignore[arg-type]
                assert counted == lookups.count(query, raw=raw, **filters)  # type: ignore[arg-type]
                assert counted == len(store.search(query, raw=raw, limit=None, **filters))  # type: ignore[arg-type]
                exported = [r.id for r in store.export(query, raw=raw, batch_size=5, **filters)]  # type: ignore[arg-type]
                assert exported == [r.id for r in lookups.export(query, raw=raw, batch_size=5, **filters)]  # type: ignore[arg-type]
            assert store._confirm == "janus_confirm"
            assert used  # the queries find something, so the comparison can fail
    finally:
        _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = saved


def test_rows_left_in_the_in_memory_table_are_never_found(db_path: Path) -> None:
    """A search stopped half way (its timeout) may leave rows in the in-memory table; the next ignores them."""
    saved = (_planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST)
    _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 20_000, 0.0, 1000.0
    try:
        with ju.LogStore(db_path) as store:
            expected = [r.id for r in store.search("alpha", user_id="rare")]
            assert expected
            assert store._db is not None
            store._db.execute(
                'INSERT INTO temp."janus_confirm"("rowid", "message") VALUES (?, ?)', (expected[0] + 10**9, "alpha")
            )
            assert [r.id for r in store.search("alpha", user_id="rare")] == expected
    finally:
        _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = saved


def test_an_index_with_options_it_cannot_copy_is_looked_up_row_by_row(db_path: Path, tmp_path: Path) -> None:
    """An index made with an option the in-memory table does not copy (detail=) keeps the lookups, same results."""
    copy = tmp_path / "copy.db"
    source = apsw.Connection(str(db_path))
    try:
        with apsw.Connection(str(copy)) as target, target.backup("main", source, "main") as backup:
            backup.step()
    finally:
        source.close()
    db = apsw.Connection(str(copy))
    db.execute(
        'DROP TABLE "logs_fts"; CREATE VIRTUAL TABLE "logs_fts" USING fts5("message", "fields", "exception", '
        'content="logs", content_rowid="id", tokenize="unicode61", detail=full); '
        """INSERT INTO "logs_fts"("logs_fts") VALUES ('rebuild')"""
    )
    db.close()
    saved = (_planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST)
    _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 20_000, 0.0, 1000.0
    try:
        with ju.LogStore(copy) as store, ju.LogStore(db_path) as original:
            for filters in ({"user_id": "odd"}, {"user_id": "rare", "logger": "svc"}):
                found = store.search("alpha bravo", **filters)  # type: ignore[arg-type]
                assert [(r.id, r.snippet) for r in found] == [
                    (r.id, r.snippet) for r in original.search("alpha bravo", **filters)  # type: ignore[arg-type]
                ]
                assert store.count("alpha", **filters) == original.count("alpha", **filters)  # type: ignore[arg-type]
            assert store._confirm == "" and original._confirm == "janus_confirm"
    finally:
        _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = saved


def test_the_prefilter_keeps_every_row_the_index_matches(tmp_path: Path) -> None:
    """LogStore._prefilter only drops rows the index cannot match: texts of ASCII words broken,
    joined and wrapped by every byte from 0x80 up (alone, they are not UTF-8), NUL, folded and
    wide letters, in each text column, checked against the index itself for each query."""
    path = tmp_path / "logs.db"
    db = open_database(str(path))
    rng = random.Random(1916)
    pieces = [b"alpha", b"ALPHA", b"alp", b"ha", b"bravo", b"Bravo", b" ", b"\x00", b"\t", "Á".encode(), "ＡＬ".encode()]
    pieces += [bytes([b]) for b in range(0x80, 0x100)]
    texts = [b"".join(rng.choices(pieces, k=rng.randint(1, 6))) for _ in range(3000)]
    texts += [bytes([b]) + b"lpha" for b in range(0x80, 0x100)] + [b"alph" + bytes([b]) + b"bravo" for b in range(0x80, 0x100)]
    with db:
        for n, text in enumerate(texts):
            values = ["'-'", "NULL", "NULL"]
            values[n % 3] = "CAST(? AS TEXT)"  # message, fields or exception
            db.execute(
                'INSERT INTO "logs"("ts", "level", "logger", "message", "fields", "exception") '
                f"VALUES (?, 20, 'svc', {', '.join(values)})",
                (n, text),
            )
        db.execute('INSERT INTO "logs_fts"("logs_fts") VALUES (\'rebuild\')')
    db.close()
    with ju.LogStore(path) as store:
        for query in ("alpha", "alpha bravo", "alp*", "bravo alp*", "ha"):
            fts = store._select(query, False, {}).fts
            assert fts is not None
            condition = store._prefilter(fts)
            assert "LIKE" in condition
            matched = {row[0] for row in store._db.execute('SELECT rowid FROM "logs_fts" WHERE "logs_fts" MATCH ?', (fts,))}
            passed = {row[0] for row in store._db.execute(f'SELECT "id" FROM "logs" WHERE {condition}')}
            assert matched, query  # the corpus holds matches of every query
            assert len(passed) < len(texts), query  # and rows the prefilter drops
            assert matched <= passed, (query, sorted(matched - passed)[:5])


def test_a_filter_past_the_probe_cap_leads_when_it_is_rare_among_the_newest(db_path: Path) -> None:
    """A filter with more rows than are counted is estimated from how often it passes among the
    newest ids: a rare user still leads (walking matches it never passes would read them all),
    a broad logger does not, nor a time window none of the newest ids lies in (the rows of a
    window are not spread over the ids, and its walk is bounded to its ids); either way the
    records are the scan's."""
    saved = (_planner.PROBE_CAP, _planner.FIRST_PROBE_CAP, _planner.SAMPLE_IDS)
    # A sample of the newest ids that is a small part of the database, as on a big one.
    _planner.PROBE_CAP, _planner.FIRST_PROBE_CAP, _planner.SAMPLE_IDS = 4, 4, 500
    brute = _Brute(db_path)
    try:
        with ju.LogStore(db_path) as store:
            window = {"since": BASE - 300 * STEP, "until": BASE - 200 * STEP}  # the imported records alone
            for filters, driver in (({"user_id": "rare"}, "logs"), ({"logger": "svc"}, "fts"), (window, "fts")):
                given = {name: ts_datetime(value) if name in window else value for name, value in filters.items()}
                selection = store._select("alpha", False, given)
                assert selection.fts is not None
                counted = store._planner()._probes(selection.probes, selection.probe_names)
                assert all(probe.rows >= 4 for probe in counted)  # past the cap: not counted out
                plan = store._planner().fts(
                    selection.fts, selection.probes, selection.probe_names, 10, None, prefiltered=True
                )
                assert driver == plan.driver, (filters, plan.estimates)
                expected = sorted((row[0] for row in brute.select(selection.fts, filters)), reverse=True)
                assert expected[:10] == [record.id for record in store.search("alpha", limit=10, **given)]  # type: ignore[arg-type]
    finally:
        brute.db.close()
        _planner.PROBE_CAP, _planner.FIRST_PROBE_CAP, _planner.SAMPLE_IDS = saved


@pytest.fixture(scope="module")
def spread(tmp_path_factory: pytest.TempPathFactory) -> str:
    """6,000 rows over 2.4M ids: "busy" in every third, "early" only among the oldest."""
    from conftest import BASE_TS, FILL_FTS_SQL, open_writer

    path = tmp_path_factory.mktemp("sampled") / "spread.db"
    db = open_writer(path)
    columns = '"id", "ts", "level", "logger", "message", "user_id", "pid", "thread"'
    rows = []
    for n in range(6_000):  # ids 1..2.4M: 73 buckets of the user index
        user = "busy" if n % 3 == 0 else ("early" if n < 600 and n % 3 == 1 else f"u{n % 50}")
        words = "alpha bravo" if n % 5 else "charlie"
        rows.append((1 + n * 400, BASE_TS + n * 10**9, 20, "app", f"{words} row {n}", user, 1, "t"))
    with db:
        db.executemany(f'INSERT INTO "logs"({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', rows)
        db.execute(FILL_FTS_SQL, (0,))
    db.close()
    return str(path)


class TestSampledUserRows:
    """A full-text search led by a user alone estimates the user's rows from the newest
    id buckets (Planner._sampled) instead of counting every one of them."""

    def test_estimate_and_when_it_is_not_taken(self, spread: str) -> None:
        from janus_utils._schema import user_match_sql

        with ju.LogStore(spread) as store:
            planner = store._planner()
            busy = planner._sampled(user_match_sql(), ["busy"])
            assert busy is not None and 2_000 * 0.8 <= busy <= 2_000 * 1.2  # 2,000 rows spread evenly
            assert planner._sampled(user_match_sql(), ["early"]) is None  # none among the newest ids
            assert planner._sampled(user_match_sql(), ["u7"]) is None  # too few there to scale
            assert planner._sampled('"logs"."level" >= ?', [30]) is None  # not a user filter

    def test_searches_find_what_a_scan_finds(self, spread: str) -> None:
        """Whatever the estimate leads to, the records are those every row read would give."""
        with ju.LogStore(spread) as store:
            for user in ("busy", "early", "u7", "nobody"):
                for query in ("alpha", "charlie", "alpha bravo", "zulu"):
                    every = [r.id for r in store.search(query, user_id=user, limit=None)]
                    scanned = sorted((r.id for r in store.search(user_id=user, limit=None)
                                      if (set(query.split()) <= set(r.message.split()))), reverse=True)
                    assert every == scanned, (user, query)
                    for limit in (1, 10, 100):
                        assert every[:limit] == [r.id for r in store.search(query, user_id=user, limit=limit)]
