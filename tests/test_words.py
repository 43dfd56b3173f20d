"""The per-row word signature: C and Python agree, and no row the index matches is ever rejected."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import before_migration

import janus_utils as ju
from janus_utils import _schema, _speedups, _words
from janus_utils._flusher import open_database
from janus_utils._fts import required_tokens
from janus_utils.retention import import_archive

# Every ASCII byte (NUL and separators among them), letters of both cases, a few past ASCII.
ALPHABET = [chr(c) for c in range(128)] + ["Á", "é", "ß", "Ａ", "日"]
texts = st.none() | st.text(alphabet=st.sampled_from(ALPHABET), max_size=60)
values = texts | st.binary(max_size=8) | st.integers() | st.floats(allow_nan=False)


class TestSignRows:
    @settings(max_examples=400, deadline=None)
    @given(row=st.tuples(values, values, values))
    def test_the_c_signature_is_the_python_one(self, row: tuple[Any, ...]) -> None:
        """sign_rows appends what _words.signature computes, for any values in the text columns."""
        signed = _speedups.sign_rows([("ts", *row, "tail")], (1, 2, 3))
        assert [("ts", *row, "tail", _words.signature(*row))] == signed

    def test_only_exact_ascii_text_is_described(self) -> None:
        """Text past ASCII, a NUL, a blob or a number makes the row -1 (every bit); None adds nothing."""
        rows = [("Hello, hello WORLD", None), ("café", None), ("a\0b", None), ("a", b"b"), ("a", 42), (None, None)]
        words = [row[-1] for row in _speedups.sign_rows(rows, (0, 1))]
        hello_world = _words.mask(["hello", "world"])
        assert [hello_world, -1, -1, -1, -1, 0] == words
        assert all(-(2**31) <= word < 2**31 for word in words)  # a signed 32-bit integer

    def test_bad_arguments_raise(self) -> None:
        """A row that is not a tuple, or too short for a column, raises rather than guessing."""
        with pytest.raises(TypeError):
            _speedups.sign_rows([["a"]], (0,))
        with pytest.raises(ValueError):
            _speedups.sign_rows([("a",)], (1,))
        with pytest.raises(ValueError):
            _speedups.sign_rows([("a",)], (-1,))


class TestTokens:
    def test_prefix_words_are_not_whole_tokens(self) -> None:
        """The last word of a prefix phrase only begins a token: it sets no required bit."""
        assert ["alpha"] == required_tokens('"alpha" AND "bra"*')
        assert ["foo"] == required_tokens('"foo bar"*')
        assert ["foo", "bar", "baz"] == required_tokens('"foo_bar" AND "baz"')
        assert [] == required_tokens('"alpha" OR "bravo"')
        assert [] == required_tokens('"Álpha"')

    def test_a_bit_set_past_31_is_a_negative_mask(self) -> None:
        """Masks are signed like the stored values, so & and = compare them as SQLite stores them."""
        high = next(w for w in (f"w{n}" for n in range(1000)) if _words.word_bit(w) == 1 << 31)
        assert _words.mask([high]) < 0
        assert _words.signature(high) == _words.mask([high])


def _index_rows(db: apsw.Connection, rows: list[tuple[Any, ...]], user_id: str | None = None) -> None:
    """Store (message, fields, exception) rows with their signature, then index them all."""
    signed = [(*row, user_id) for row in _speedups.sign_rows(rows, (0, 1, 2))]
    with db:
        db.executemany(
            'INSERT INTO "logs"("ts", "level", "logger", "message", "fields", "exception", "words", "user_id") '
            "VALUES (1, 20, 'svc', ?, ?, ?, ?, ?)",
            signed,
        )
        db.execute("""INSERT INTO "logs_fts"("logs_fts") VALUES ('rebuild')""")


def test_the_signature_keeps_every_row_the_index_matches(tmp_path: Path) -> None:
    """For texts built to break it (case, digits, underscores, words inside words, NUL, folded
    letters, blobs, tokens in fields and tracebacks), every row FTS5 matches passes the
    signature test, and the test rejects rows, so this could fail."""
    db = open_database(str(tmp_path / "logs.db"))
    rng = random.Random(1517)
    pieces = ["alpha", "ALPHA", "Alpha", "alp", "ha", "bravo", "bravo2", "2", "_", " ", "-", ".", "\t", "\n",
              "\0", "Á", "lpha", "alphabet", "x", "Traceback (most recent call last):\n  "]
    rows: list[tuple[Any, ...]] = []
    for n in range(3000):
        text = "".join(rng.choices(pieces, k=rng.randint(1, 6)))
        columns: list[Any] = ["-", None, None]
        columns[n % 3] = json.dumps({"note": text}) if n % 3 == 1 else text
        if n % 97 == 0:
            columns[0] = text.encode()  # a blob
        rows.append(tuple(columns))
    _index_rows(db, rows)
    try:
        for query in ("alpha", "alpha bravo", "ha", "bravo2", "2", "alpha_bravo", "x alpha", "alp* bravo", "lpha"):
            with ju.LogStore(tmp_path / "logs.db") as store:
                fts = store._select(query, False, {}).fts
                assert fts is not None
                condition = store._signature(fts)
                assert condition
                matched = {r[0] for r in db.execute('SELECT rowid FROM "logs_fts" WHERE "logs_fts" MATCH ?', (fts,))}
                passed = {r[0] for r in db.execute(f'SELECT "id" FROM "logs" WHERE {condition}')}
                assert matched, query
                assert len(passed) < len(rows), query
                assert matched <= passed, (query, sorted(matched - passed)[:5])
    finally:
        db.close()


def test_the_flusher_stores_each_rows_signature(tmp_path: Path) -> None:
    """Records logged through configure() get their signature; text the hash cannot describe gets -1."""
    path = tmp_path / "logs.db"
    ju.configure(db_path=str(path))
    try:
        log = ju.get_logger("svc")
        log.info("Alpha bravo_charlie", user_id="u1", status=503)
        log.info("café au lait", user_id="u1")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        assert ju.flush(timeout=10)
    finally:
        ju.shutdown()
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = db.execute('SELECT "message", "fields", "exception", "words" FROM "logs" ORDER BY "id"').fetchall()
    finally:
        db.close()
    assert [_words.signature(*row[:3]) for row in rows] == [row[3] for row in rows]
    assert rows[0][3] == _words.signature("Alpha bravo_charlie", '{"status":503}')
    assert rows[1][3] == -1
    assert rows[2][3] & _words.mask(["valueerror", "boom", "traceback"]) == _words.mask(["valueerror", "boom", "traceback"])


def test_an_imported_archive_is_signed(tmp_path: Path) -> None:
    """Rows restored from an archive get the signature the flusher would have given them."""
    path = tmp_path / "logs.db"
    archive = tmp_path / "janus-logs-2024-01-01.000001-000002.ndjson.gz"
    records = [
        {"id": 1, "ts": 1, "level": 20, "logger": "svc", "message": "Alpha bravo", "fields": '{"k": "v"}'},
        {"id": 2, "ts": 2, "level": 20, "logger": "svc", "message": "Ångström"},
    ]
    with gzip.open(archive, "wt") as out:
        out.writelines(json.dumps(record) + "\n" for record in records)
    db = open_database(str(path))
    try:
        assert 2 == import_archive(db, archive)
        words = [row[0] for row in db.execute('SELECT "words" FROM "logs" ORDER BY "id"')]
    finally:
        db.close()
    assert [_words.signature("Alpha bravo", '{"k": "v"}'), -1] == words


def test_migrated_rows_hold_null_and_an_edit_gives_minus_one(tmp_path: Path) -> None:
    """Rows from before the column hold NULL (every search passes them); a text edit sets a signed row's to -1."""
    path = tmp_path / "logs.db"
    db = apsw.Connection(str(path))
    try:
        with db:
            before_migration(db, _schema._WORDS)
            db.execute("""INSERT INTO "logs"("ts", "level", "logger", "message", "user_id") VALUES (1, 20, 'a', 'old', 'u')""")
        _schema.ensure_schema(db)
        assert [(None,)] == db.execute('SELECT "words" FROM "logs"').fetchall()
        index = [row[2] for row in db.execute(f'PRAGMA index_xinfo("{_schema.USER_INDEX}")')]
        assert _words.COLUMN in index
        with db:
            db.execute("""INSERT INTO "logs"("ts", "level", "logger", "message", "words") VALUES (2, 20, 'a', 'new', 5)""")
            db.execute("""UPDATE "logs" SET "level" = 30 WHERE "ts" = 2""")
        assert [(None,), (5,)] == db.execute('SELECT "words" FROM "logs" ORDER BY "id"').fetchall()
        with db:
            db.execute("""UPDATE "logs" SET "message" = 'edited' WHERE "ts" = 2""")
            db.execute("""UPDATE "logs" SET "message" = 'old, edited' WHERE "ts" = 1""")  # NULL passes already
        assert [(None,), (-1,)] == db.execute('SELECT "words" FROM "logs" ORDER BY "id"').fetchall()
    finally:
        db.close()


def test_an_index_with_another_tokenizer_gets_no_word_tests(tmp_path: Path) -> None:
    """With porter stemming "running" matches "runs", which neither the signature nor the
    substring test would let through: a user-led search of such an index tests neither."""
    from janus_utils import _planner

    path = tmp_path / "logs.db"
    db = open_database(str(path))
    try:
        with db:
            db.execute(
                'DROP TABLE "logs_fts"; CREATE VIRTUAL TABLE "logs_fts" USING fts5("message", "fields", "exception", '
                "content=\"logs\", content_rowid=\"id\", tokenize='porter unicode61')"
            )
        _index_rows(db, [("the job runs", None, None), ("the job waits", None, None)], user_id="u")
    finally:
        db.close()
    saved = (_planner.LOOKUP_COST_BASE, _planner.STEP_COST)
    _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 0.0, 1000.0  # the user's rows lead
    try:
        with ju.LogStore(path) as store:
            fts = store._select("running", False, {}).fts
            assert fts is not None
            assert "" == store._signature(fts) == store._prefilter(fts)
            assert ["the job runs"] == [r.message for r in store.search("running", user_id="u")]
    finally:
        _planner.LOOKUP_COST_BASE, _planner.STEP_COST = saved
