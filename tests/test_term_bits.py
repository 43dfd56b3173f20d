"""Term bitmaps: count() of plain words from per-block bitmaps equals the full-text index's own count."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import janus_utils as ju
from janus_utils import _rollup, _schema, _termbits
from janus_utils._record import native_enabled, speedups
from janus_utils.retention import import_archive, prune

from conftest import BASE_TS, at_previous_version, make_row, open_writer, write_batch

B = _termbits.BLOCK_IDS
# Words the rows are made of: some in most rows of every block, "echo" only in
# the odd blocks' rows, the rest rarer; with case, digits, non-ASCII and
# repeats.  The query terms add words no row holds.
COMMON = ("alpha", "bravo", "charlie", "delta")
RARE = ("404", "2024", "café", "naïve", "日本語", "Alpha", "x1", "ECHO")
TERMS = (*COMMON, "echo", *RARE, "ALPHA", "Bravo", "cafe", "naive", "zulu", "status", "7")


def _fill_ids(db: apsw.Connection, low: int, high: int) -> None:
    """Rows with the ids low..high in the logs table (their text does not matter)."""
    with db:
        db.execute(
            "WITH RECURSIVE i(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM i WHERE n < ?) "
            "INSERT INTO logs(id, ts, level, logger, message) SELECT n, ?, 20, 'app', 'x' FROM i",
            (low, high, BASE_TS),
        )


def _message(rng: random.Random, row_id: int) -> str:
    if rng.random() < 0.01:
        return ""
    words = [word for word in COMMON if rng.random() < 0.6]
    if (row_id // B) % 2 and rng.random() < 0.7:
        words.append("echo")
    words += [word for word in RARE if rng.random() < 0.05]
    if words and rng.random() < 0.2:
        words.append(words[0])  # a repeated word
    rng.shuffle(words)
    return " ".join(words)


def _rows(rng: random.Random, first_id: int, count: int) -> list[tuple[Any, ...]]:
    rows = []
    for row_id in range(first_id, first_id + count):
        fields = '{"status": %d}' % rng.choice((200, 404, 7)) if rng.random() < 0.3 else None
        exception = "Traceback: alpha failed" if rng.random() < 0.02 else None
        rows.append(make_row(_message(rng, row_id), ts=BASE_TS + row_id, fields=fields, exception=exception))
    return rows


def _grow(db: apsw.Connection, rng: random.Random, count: int, *, covered: bool = True) -> None:
    """Add *count* rows as the flusher does, in batches; *covered*: the rollup's mark moves past them."""
    newest = db.execute('SELECT coalesce(max("id"), 0) FROM "logs"').fetchall()[0][0]
    for start in range(0, count, 5000):
        write_batch(db, _rows(rng, newest + 1 + start, min(5000, count - start)))
        if covered:
            with db:
                _rollup.advance(db)


def _build_all(db: apsw.Connection) -> int:
    built = 0
    while True:
        with db:
            n, left = _termbits.build(db, lambda: False, 60.0)
        built += n
        if not left:
            return built


def _done(db: apsw.Connection) -> list[int]:
    return [row[0] for row in db.execute('SELECT "block" FROM "janus_term_blocks" ORDER BY 1')]


def _fts_count(path: Path, query: str, raw: bool = False) -> int:
    """What count() gives without the bitmaps: the full-text index's own count."""
    with ju.LogStore(path) as store:
        store._has_term_bits = False
        return store.count(query, raw=raw)


def _count(path: Path, query: str, raw: bool = False) -> int:
    with ju.LogStore(path) as store:
        assert store._has_term_bits
        return store.count(query, raw=raw)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three and a half blocks under the mark, half a block past it; the bitmaps built."""
    path = tmp_path_factory.mktemp("bits") / "logs.db"
    db = open_writer(path)
    try:
        rng = random.Random(15)
        _grow(db, rng, 3 * B + B // 2)
        _grow(db, rng, B // 2, covered=False)
        assert 3 == _build_all(db)
    finally:
        db.close()
    yield path


def _both_paths(monkeypatch: pytest.MonkeyPatch, python: bool) -> None:
    if python:
        monkeypatch.setattr(_termbits, "native_enabled", lambda: False)
    elif not (native_enabled() and hasattr(speedups, "and_count")):
        pytest.skip("the C extension is not built")


class TestCount:
    def test_blocks_below_the_mark_are_built_and_hold_the_frequent_terms(self, built: Path) -> None:
        """Blocks wholly under covered_upto are done; a term has a bitmap where 1 in 8 of the block's ids hold it."""
        db = apsw.Connection(str(built))
        try:
            assert [0, 1, 2] == _done(db)
            terms = {
                block: {row[0] for row in db.execute('SELECT "term" FROM "janus_term_bits" WHERE "block" = ?', (block,))}
                for block in (0, 1, 2)
            }
            for block in (0, 1, 2):
                assert set(COMMON) <= terms[block]
                assert ("echo" in terms[block]) == bool(block % 2)
                assert not {"2024", "x1", "café"} & terms[block]
            for block, term, bits in db.execute('SELECT * FROM "janus_term_bits"'):
                expected = db.execute(
                    'SELECT count(*) FROM "logs_fts" WHERE "logs_fts" MATCH ? AND "rowid" BETWEEN ? AND ?',
                    (f'"{term}"', block * B, block * B + B - 1),
                ).fetchall()[0][0]
                assert expected == _termbits._and_count([bits]) >= _termbits.MIN_ROWS
        finally:
            db.close()

    @pytest.mark.parametrize("python", [False, True], ids=["C", "Python"])
    def test_plain_words_count_as_the_index_does(self, built: Path, monkeypatch: pytest.MonkeyPatch, python: bool) -> None:
        """Every conjunction of the fixed words: bitmaps, the index for the rest, the same total."""
        _both_paths(monkeypatch, python)
        for query in ("alpha", "alpha bravo", "ALPHA Bravo charlie delta", "echo alpha", "alpha 404", "zulu alpha",
                      "alpha alpha", "status alpha", "7 bravo"):
            assert _fts_count(built, query) == _count(built, query), query

    @settings(max_examples=60, deadline=None)
    @given(terms=st.lists(st.sampled_from(TERMS), min_size=1, max_size=4), raw=st.booleans())
    def test_random_conjunctions_count_as_the_index_does(self, built: Path, terms: list[str], raw: bool) -> None:
        """Random words, ASCII or not, repeated, absent: the count equals the index's."""
        query = " AND ".join(f'"{term}"' for term in terms) if raw else " ".join(terms)
        assert _fts_count(built, query, raw) == _count(built, query, raw)

    def test_the_bitmaps_are_what_is_read(self, built: Path, tmp_path: Path) -> None:
        """A block's bitmap, emptied by hand, takes its rows out of the count: the index was not asked for them."""
        copy = tmp_path / "copy.db"
        copy.write_bytes(built.read_bytes())
        before = _count(copy, "alpha bravo")
        db = apsw.Connection(str(copy))
        try:
            in_block = db.execute(
                """SELECT count(*) FROM "logs_fts" WHERE "logs_fts" MATCH '"alpha" AND "bravo"' AND "rowid" < ?""", (B,)
            ).fetchall()[0][0]
            with db:
                db.execute("""UPDATE "janus_term_bits" SET "bits" = x'' WHERE "block" = 0 AND "term" = 'alpha'""")
        finally:
            db.close()
        assert in_block > 0
        assert before - in_block == _count(copy, "alpha bravo")

    def test_other_queries_take_the_index(self, built: Path) -> None:
        """OR, NOT, prefixes, phrases and filters are counted as before."""
        for query, raw in (("alpha OR bravo", True), ("alpha NOT bravo", True), ("alph*", True),
                           ('"alpha bravo"', True), ("alpha -bravo", False)):
            assert _fts_count(built, query, raw) == _count(built, query, raw)
        with ju.LogStore(built) as store:
            assert store.count("alpha", level="INFO") == _fts_count(built, "alpha")


class TestPlainTerms:
    def test_a_conjunction_of_words(self) -> None:
        """Quoted ASCII words joined by AND give their lower-cased set."""
        assert ["alpha", "bravo"] == _termbits.plain_terms('"Bravo" AND "alpha" AND "ALPHA"')
        assert ["404"] == _termbits.plain_terms('"404"')

    @pytest.mark.parametrize("fts", ['"alpha" OR "bravo"', '"alpha bravo"', '"alph"*', '"café"', 'alpha',
                                     '"alpha" NOT "bravo"', '{message} : "alpha"', '"a-b"', ""])
    def test_anything_else_is_not(self, fts: str) -> None:
        """Phrases, prefixes, OR/NOT, columns, non-ASCII: None (the index counts them)."""
        assert _termbits.plain_terms(fts) is None


def _fresh(tmp_path: Path, blocks: int = 2) -> tuple[Path, apsw.Connection]:
    path = tmp_path / "logs.db"
    db = open_writer(path)
    _grow(db, random.Random(blocks), blocks * B)
    assert blocks == _build_all(db)  # ids 1 .. blocks * B: every block wholly under the mark
    return path, db


QUERIES = ("alpha bravo", "alpha", "echo charlie", "delta 404")


def _check(path: Path) -> None:
    for query in QUERIES:
        assert _fts_count(path, query) == _count(path, query), query


class TestChanges:
    def test_a_prune_takes_its_blocks_off_and_the_flusher_builds_them_again(self, tmp_path: Path) -> None:
        """Retention's deletes forget the blocks they delete from; counts stay exact before and after the rebuild."""
        path, db = _fresh(tmp_path, 3)
        try:
            assert [0, 1, 2] == _done(db)
            summary = prune(db, max_rows=3 * B - 5000, chunk_rows=2000)
            assert 5000 == summary.rows
            assert [1, 2] == _done(db)
            _check(path)
            assert 1 == _build_all(db)
            assert [0, 1, 2] == _done(db)
            _check(path)
        finally:
            db.close()

    def test_an_import_below_the_mark_takes_its_blocks_off(self, tmp_path: Path) -> None:
        """Rows restored from an archive with their ids: their block is built again with them."""
        path, db = _fresh(tmp_path, 3)
        try:
            archive = tmp_path / "archive"
            prune(db, max_rows=3 * B - 300, archive_dir=archive)
            _build_all(db)
            assert [0, 1, 2] == _done(db)
            (name,) = archive.glob("*.ndjson.gz")
            assert 300 == import_archive(db, name)
            assert [1, 2] == _done(db)
            _check(path)
            _build_all(db)
            assert [0, 1, 2] == _done(db)
            _check(path)
        finally:
            db.close()

    def test_an_edit_takes_the_blocks_of_the_old_and_new_id_off(self, tmp_path: Path) -> None:
        """A trigger forgets the block of a row whose text or id changes, and the block of its new id."""
        path, db = _fresh(tmp_path, 3)
        try:
            with db:
                # The index is told too, as an editor keeping it in step would.
                old = db.execute('SELECT "message", "fields", "exception" FROM "logs" WHERE "id" = 10').fetchall()[0]
                db.execute("""INSERT INTO "logs_fts"("logs_fts", "rowid", "message", "fields", "exception")
                              VALUES ('delete', 10, ?, ?, ?)""", old)
                db.execute("""UPDATE "logs" SET "message" = 'alpha bravo edited' WHERE "id" = 10""")
                db.execute("""INSERT INTO "logs_fts"("rowid", "message", "fields", "exception")
                              SELECT "id", "message", "fields", "exception" FROM "logs" WHERE "id" = 10""")
            assert [1, 2] == _done(db)
            _check(path)
            _build_all(db)
            with db:
                db.execute(f'UPDATE "logs" SET "level" = 40 WHERE "id" = {B + 5}')  # not the text: nothing
            assert [0, 1, 2] == _done(db)
            with db:
                db.execute(f'UPDATE "logs" SET "id" = {3 * B + 5} WHERE "id" = {B + 5}')  # both blocks go
            assert [0, 2] == _done(db)
        finally:
            db.close()

    def test_rows_past_the_mark_and_unbuilt_blocks_are_counted_by_the_index(self, tmp_path: Path) -> None:
        """Rows an older flusher committed (no bitmaps) and rows past covered_upto count the same."""
        path, db = _fresh(tmp_path, 3)
        try:
            with db:
                db.execute('DELETE FROM "janus_term_blocks" WHERE "block" = 0')
            _grow(db, random.Random(7), B, covered=False)
            _check(path)
        finally:
            db.close()


def test_build_yields_when_the_writer_is_wanted(tmp_path: Path) -> None:
    """build() stops after the block in hand once wanted() says so, and says blocks are left."""
    path, db = _fresh(tmp_path, 4)
    try:
        with db:
            db.execute('DELETE FROM "janus_term_blocks"')
        with db:
            assert (1, True) == _termbits.build(db, lambda: True, 60.0)
        assert [0] == _done(db)
        with db:
            assert (3, False) == _termbits.build(db, lambda: False, 60.0)
        with db:
            assert (0, False) == _termbits.build(db, lambda: False, 60.0)
        _check(path)
    finally:
        db.close()


def test_a_gap_of_empty_blocks_is_skipped(tmp_path: Path) -> None:
    """Ids far apart (an import's): the blocks between are never visited."""
    path = tmp_path / "logs.db"
    db = open_writer(path)
    try:
        rng = random.Random(3)
        write_batch(db, _rows(rng, 1, 10))
        with db:
            db.executemany(
                f'INSERT INTO "logs"("id", {", ".join(_schema.COLUMNS)}) VALUES (?{", ?" * len(_schema.COLUMNS)})',
                [(10**12 + n, *row) for n, row in enumerate(_rows(rng, 1, B))],
            )
            db.execute("""INSERT INTO "logs_fts"("rowid", "message", "fields", "exception")
                          SELECT "id", "message", "fields", "exception" FROM "logs" WHERE "id" > 10""")
            _rollup.advance(db)
        # Block 0 and the first block of the far ids (the second is not wholly under the mark).
        assert (2, False) == _termbits.build(db, lambda: False, 60.0)
        assert [0, 10**12 // B] == _done(db)
        _check(path)
    finally:
        db.close()


def test_a_previous_version_database_migrates_and_catches_up(tmp_path: Path) -> None:
    """The migration adds empty tables; counts are exact before the flusher builds, and after."""
    path = tmp_path / "old.db"
    db = apsw.Connection(str(path))
    try:
        with db:
            at_previous_version(db)
        _grow(db, random.Random(11), 2 * B)
        assert not db.execute("SELECT 1 FROM sqlite_schema WHERE name = 'janus_term_blocks'").fetchall()
        _schema.ensure_schema(db)
        assert [] == _done(db)
        _check(path)
        assert 2 == _build_all(db)
        _check(path)
    finally:
        db.close()


def test_a_database_without_the_tables_counts_through_the_index(tmp_path: Path) -> None:
    """A reader of a database not yet migrated counts as before."""
    path = tmp_path / "old.db"
    db = apsw.Connection(str(path))
    try:
        with db:
            at_previous_version(db)
        _grow(db, random.Random(11), 1000)
    finally:
        db.close()
    with ju.LogStore(path) as store:
        assert not store._has_term_bits
        assert store.count("alpha bravo") > 0


def test_the_flusher_builds_bitmaps_when_idle(tmp_path: Path) -> None:
    """Records logged past a block: once the flusher is idle the block is done, and a count is exact."""
    path = tmp_path / "logs.db"
    ju.configure(path, console=False)
    try:
        log = ju.get_logger("app")
        rng = random.Random(5)
        for n in range(B + 100):
            log.info(_message(rng, n))
        assert ju.flush(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with ju.LogStore(path) as store:
                if store._rows('SELECT count(*) FROM "janus_term_blocks"')[0][0]:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the idle flusher built no block")
        log.info("alpha bravo once more")
        assert ju.flush(timeout=60)
        _check(path)
    finally:
        ju.shutdown()


class TestNative:
    def test_id_bitmap_and_and_count_agree_with_python(self) -> None:
        """The C packing and AND-popcount give what the Python fallback gives."""
        if not (native_enabled() and hasattr(speedups, "id_bitmap")):
            pytest.skip("the C extension is not built")
        rng = random.Random(1)
        ids = [[(1000 + i,) for i in sorted(rng.sample(range(B), rng.randrange(0, 3000)))] for _ in range(3)]
        packed = [speedups.id_bitmap(rows, 1000, B) for rows in ids]
        assert [len(rows) for rows in ids] == [n for _, n in packed]
        expected = len(set.intersection(*({row[0] for row in rows} for rows in ids)))
        assert expected == speedups.and_count([bits for bits, _ in packed])
        assert all(not bits or bits[-1] for bits, _ in packed)  # trailing zero bytes left off

    @pytest.mark.parametrize("rows", [[(999,)], [(1000 + B,)], [("1001",)], [(1001, 2)], [1001]])
    def test_id_bitmap_refuses_what_is_not_an_id_of_the_block(self, rows: list[Any]) -> None:
        """An id outside the block or a row of another shape is a ValueError, never a write out of bounds."""
        if not (native_enabled() and hasattr(speedups, "id_bitmap")):
            pytest.skip("the C extension is not built")
        with pytest.raises(ValueError):
            speedups.id_bitmap(rows, 1000, B)


# Letters of both cases, digits, separators ASCII has (the underscore among
# them), control characters, a NUL and one letter past ASCII.
_ODD_TEXT = st.text(alphabet="aAbBzZ019 _-.:\"'{}\t\n\x01\x00é", max_size=24)


@settings(max_examples=80, deadline=None)
@given(texts=st.lists(st.tuples(_ODD_TEXT, st.one_of(st.none(), _ODD_TEXT), st.one_of(st.none(), _ODD_TEXT)),
                      min_size=1, max_size=30))
def test_rows_read_in_c_give_the_bitmaps_the_index_gives(texts: list[tuple[str, str | None, str | None]]) -> None:
    """ASCII text tokenized by term_bitmaps sets exactly the bits the index's lookups set;
    text it cannot read exactly (a NUL, past ASCII) gives None, and the index is asked."""
    if not (native_enabled() and hasattr(speedups, "term_bitmaps")):
        pytest.skip("the C extension is not built")
    db = apsw.Connection(":memory:")
    try:
        _schema.ensure_schema(db)
        write_batch(db, [make_row(message, fields=fields, exception=exception) for message, fields, exception in texts])
        rows = db.execute(_termbits._BLOCK_ROWS, (0, B - 1)).fetchall()
        words = {word for row in rows for value in row[1:] if value for word in _termbits._WORD.findall(value.lower())}
        terms = sorted(words | {"a", "b", "z1", "ab"})
        from_c = _termbits._from_rows(rows, 0, terms)
        readable = all(value is None or (value.isascii() and "\0" not in value) for row in rows for value in row[1:])
        assert (from_c is not None) == readable
        if from_c is not None:
            from_index = [_termbits._pack(db.execute(_termbits._TERM_IDS, (f'"{t}"', 0, B - 1)), 0) for t in terms]
            assert from_index == from_c
    finally:
        db.close()


def test_a_failing_build_costs_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault in the bitmaps' build is reported once and never stops the records; counts use the index."""
    calls = []

    def broken(*args: Any) -> tuple[int, bool]:
        calls.append(args)
        raise RuntimeError("broken build")

    monkeypatch.setattr(_termbits, "build", broken)
    path = tmp_path / "logs.db"
    ju.configure(path, console=False)
    try:
        log = ju.get_logger("app")
        log.info("alpha bravo first")
        assert ju.flush(timeout=60)
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:
            time.sleep(0.1)
        assert calls
        for n in range(100):
            log.info("alpha bravo %d", n)
        assert ju.flush(timeout=60)
        assert any("broken build" in str(entry) for entry in ju.stats()["recent_errors"])
    finally:
        ju.shutdown()
    with ju.LogStore(path) as store:
        assert 101 == store.count("alpha bravo")


def test_a_flusher_never_quiet_still_builds(tmp_path: Path) -> None:
    """Records every fraction of a second (no quiet second for the idle turns): the block is built meanwhile."""
    path = tmp_path / "logs.db"
    ju.configure(path, console=False)
    try:
        log = ju.get_logger("app")
        rng = random.Random(6)
        for n in range(B + 100):
            log.info(_message(rng, n))
        assert ju.flush(timeout=60)
        built = False
        deadline = time.monotonic() + 30
        while not built and time.monotonic() < deadline:
            log.info("alpha bravo steady")
            assert ju.flush(timeout=60)  # a commit: the flusher is never a second without one
            with ju.LogStore(path) as store:
                built = bool(store._rows('SELECT count(*) FROM "janus_term_blocks"')[0][0])
            time.sleep(0.2)
        assert built
        _check(path)
    finally:
        ju.shutdown()


def test_text_that_is_not_utf8_is_counted_as_the_index_does(tmp_path: Path) -> None:
    """A block holding text another program stored as bytes that are not UTF-8: built from the index, exact."""
    path, db = _fresh(tmp_path, 2)
    try:
        with db:
            db.execute('DELETE FROM "janus_term_blocks"')
            old = db.execute('SELECT "message", "fields", "exception" FROM "logs" WHERE "id" = 7').fetchall()[0]
            db.execute("""INSERT INTO "logs_fts"("logs_fts", "rowid", "message", "fields", "exception")
                          VALUES ('delete', 7, ?, ?, ?)""", old)
            db.execute("""UPDATE "logs" SET "message" = CAST(X'616c70686120ff627261766f' AS TEXT) WHERE "id" = 7""")
            db.execute("""INSERT INTO "logs_fts"("rowid", "message", "fields", "exception")
                          SELECT "id", "message", "fields", "exception" FROM "logs" WHERE "id" = 7""")
        assert 2 == _build_all(db)
        assert [0, 1] == _done(db)
        assert db.execute("""SELECT count(*) FROM "janus_term_bits" WHERE "block" = 0""").fetchall()[0][0] > 0
        _check(path)
    finally:
        db.close()


def _ascii(text: str) -> str:
    return text.encode("ascii", "ignore").decode()


class TestFilling:
    def test_a_burst_builds_its_blocks_as_they_fill(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no idle turn at all, the batch completing a block stores its bitmaps; counts stay exact."""
        if not (native_enabled() and hasattr(speedups, "term_bitmaps")):
            pytest.skip("the C extension is not built")
        monkeypatch.setattr(_termbits, "build", lambda *args: (0, False))  # no idle building
        path = tmp_path / "logs.db"
        ju.configure(path, console=False)
        try:
            log = ju.get_logger("app")
            rng = random.Random(8)
            for n in range(3 * B + 10):
                log.info(_ascii(_message(rng, n)), status=rng.choice((200, 404)))
            assert ju.flush(timeout=120)
        finally:
            ju.shutdown()
        db = apsw.Connection(str(path))
        try:
            assert [1, 2] == _done(db)  # block 0 starts before the first batch: left to the idle turns
        finally:
            db.close()
        _check(path)

    def test_a_gap_waits_for_the_next_block(self, tmp_path: Path) -> None:
        """Batches that do not follow on: the block in progress is dropped, the next one is kept from its start."""
        if not (native_enabled() and hasattr(speedups, "term_bitmaps")):
            pytest.skip("the C extension is not built")
        path = tmp_path / "logs.db"
        db = open_writer(path)
        try:
            filling = _termbits.Filling((1,))
            rng = random.Random(9)
            rows = [(BASE_TS, _ascii(_message(rng, n))) for n in range(3 * B)]
            _fill_ids(db, 3 * B, 4 * B - 1)  # the ids of the block it completes (it checks)
            with db:
                assert 0 == filling.add(db, rows[: B // 2], B)  # from a block's start
                assert 0 == filling.add(db, rows[: B // 2], B + B // 2 + 1)  # one id missing
                assert 0 == filling.add(db, rows[: B], 2 * B + B // 2 + 1)  # kept from 3 * B on
                assert 1 == filling.add(db, rows[: B], 3 * B + B // 2 + 1)  # 3 * B .. 4 * B - 1
            assert [3] == _done(db)
            words = db.execute('SELECT "term" FROM "janus_term_bits" WHERE "block" = 3').fetchall()
            assert set(COMMON) <= {word for (word,) in words}
        finally:
            db.close()

    @pytest.mark.parametrize("mode", ["thread", "process"])
    def test_rows_deleted_from_the_block_being_filled_are_not_counted(self, tmp_path: Path, mode: str) -> None:
        """A prune (another connection) deletes rows of the block the flusher is filling; the block
        completes afterwards: its bitmaps hold only the rows still there, as the index does."""
        path = tmp_path / "logs.db"
        ju.configure(path, console=False, **({"flusher": "process"} if mode == "process" else {}))
        try:
            log = ju.get_logger("app")
            for n in range(B + 4000):  # the flusher keeps ids B .. B + 4000 of block 1
                log.info("alpha bravo %d" if n % 2 else "alpha %d", n)
            assert ju.flush(timeout=120)
            db = open_writer(path)
            try:
                prune(db, max_rows=1000)  # deletes into block 1
            finally:
                db.close()
            for n in range(B):  # block 1 completes in the flusher's next batches
                log.info("alpha bravo again" if n % 2 else "alpha again")
            assert ju.flush(timeout=120)
        finally:
            ju.shutdown()
        _check(path)

    def test_rows_deleted_by_this_connection_are_not_counted(self, tmp_path: Path) -> None:
        """The flusher's own prune (same connection, no data_version change) deleted some of the
        rows in hand: the block is left to the idle turns, which read the table."""
        if not (native_enabled() and hasattr(speedups, "term_bitmaps")):
            pytest.skip("the C extension is not built")
        path = tmp_path / "logs.db"
        db = open_writer(path)
        try:
            rows = [(BASE_TS, "alpha bravo") for _ in range(B)]
            _fill_ids(db, B, 2 * B - 1)
            filling = _termbits.Filling((1,))
            with db:
                assert 0 == filling.add(db, rows[: B // 2], B)
                db.execute("DELETE FROM logs WHERE id = ?", (B + 7,))
                assert 0 == filling.add(db, rows[B // 2 :], B + B // 2)
            assert [] == _done(db)
        finally:
            db.close()

    def test_text_it_cannot_read_is_left_to_the_idle_turns(self, tmp_path: Path) -> None:
        """A block holding a row past ASCII is not built from the rows."""
        if not (native_enabled() and hasattr(speedups, "term_bitmaps")):
            pytest.skip("the C extension is not built")
        path = tmp_path / "logs.db"
        db = open_writer(path)
        try:
            filling = _termbits.Filling((1,))
            rows = [(BASE_TS, "alpha bravo") for _ in range(B)]
            rows[5] = (BASE_TS, "alpha café")
            with db:
                assert 0 == filling.add(db, rows, B)
            assert [] == _done(db)
        finally:
            db.close()

    def test_a_failing_fill_costs_no_record(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A fault while keeping or building a block during a commit: reported, and every record is stored."""

        def broken(*args: Any) -> int:
            raise RuntimeError("broken fill")

        monkeypatch.setattr(_termbits.Filling, "add", broken)
        path = tmp_path / "logs.db"
        ju.configure(path, console=False)
        try:
            log = ju.get_logger("app")
            for n in range(500):
                log.info("alpha bravo %d", n)
            assert ju.flush(timeout=60)
            assert any("broken fill" in str(entry) for entry in ju.stats()["recent_errors"])
        finally:
            ju.shutdown()
        with ju.LogStore(path) as store:
            assert 500 == store.count("alpha bravo")


def test_a_store_kept_open_counts_exactly_across_changes(tmp_path: Path) -> None:
    """A reader's kept counts follow the blocks' stamps: after a prune, a rebuild and new rows, still the index's."""
    path, db = _fresh(tmp_path, 3)
    try:
        with ju.LogStore(path) as store:
            def check() -> None:
                for query in QUERIES:
                    assert _fts_count(path, query) == store.count(query), query

            check()
            check()  # from the kept counts
            prune(db, max_rows=3 * B - 300)
            check()  # block 0 no longer done: the index counts it
            _build_all(db)
            check()  # block 0 done again, with a new stamp
            with db:  # an edit forgets block 1; built again from other text
                old = db.execute(f'SELECT "message", "fields", "exception" FROM "logs" WHERE "id" = {B + 3}').fetchall()[0]
                db.execute("""INSERT INTO "logs_fts"("logs_fts", "rowid", "message", "fields", "exception")
                              VALUES ('delete', ?, ?, ?, ?)""", (B + 3, *old))
                db.execute(f"""UPDATE "logs" SET "message" = 'zulu' WHERE "id" = {B + 3}""")
                db.execute(f"""INSERT INTO "logs_fts"("rowid", "message", "fields", "exception")
                               SELECT "id", "message", "fields", "exception" FROM "logs" WHERE "id" = {B + 3}""")
            _build_all(db)
            check()
            _grow(db, random.Random(12), 2 * B)
            _build_all(db)
            check()
    finally:
        db.close()
