"""Search as people type it: CJK and emoji, -word and NOT word, pasted identifiers, and archives answering as the database does."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest

from conftest import BASE_TS, make_row, open_writer, write_batch
from janus_utils import LogStore
from janus_utils.error_handling import SearchQueryError
from janus_utils._fts import matcher, tokens
from janus_utils._schema import WIDE_TABLE, ensure_schema
from janus_utils.retention import prune_path, search_archives

CORPUS = [
    "order k-7977 refunded",
    "order k-7978 shipped",
    "lookup failed err_1838fa1042c0 in app.db.pool",
    "look here first",
    "request 123e4567-e89b-12d3-a456-426614174000 timed out",
    "日本語のログを書きました",
    "東京の注文が失敗しました",
    "한국어 로그 메시지",
    "deploy done 🚀 all green",
    "fire 🔥 in the hole",
    "Café au lait ordered",
    "connection reset by peer",
    "connection refused, retrying",
    "payment timeout after 30 s",
]
FIELDS = {2: {"trace": "abc-DEF.42"}, 8: {"note": "ラーメン"}}
EXCEPTIONS = {11: "Traceback (most recent call last):\nConnectionResetError: peer gone"}


def _rows() -> list[tuple[object, ...]]:
    return [
        make_row(
            message,
            ts=BASE_TS + n * 1_000_000_000,
            fields=json.dumps(FIELDS[n], ensure_ascii=False) if n in FIELDS else None,
            exception=EXCEPTIONS.get(n),
        )
        for n, message in enumerate(CORPUS)
    ]


@pytest.fixture
def db(make_log_db: Callable[..., Path]) -> Path:
    return make_log_db(_rows(), name="corpus.db")


def found(db: Path, query: str) -> list[str]:
    with LogStore(db) as store:
        return sorted(record.message for record in store.search(query, limit=None))


class TestCjkAndEmoji:
    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("日本語", "日本語のログを書きました"),
            ("のログ", "日本語のログを書きました"),  # inside a run of CJK, not its start
            ("ログ", "日本語のログを書きました"),  # two characters: under a trigram
            ("注文", "東京の注文が失敗しました"),
            ("로그", "한국어 로그 메시지"),
            ("🚀", "deploy done 🚀 all green"),
            ("fire 🔥", "fire 🔥 in the hole"),
            ("ラーメン", "deploy done 🚀 all green"),  # in the fields
        ],
    )
    def test_found(self, db: Path, query: str, message: str) -> None:
        assert [message] == found(db, query)

    def test_excluded(self, db: Path) -> None:
        """-term works for CJK too."""
        assert "日本語のログを書きました" not in found(db, "-日本語 しました")
        assert ["東京の注文が失敗しました"] == found(db, "-日本語 しました")

    @pytest.mark.parametrize("query", ["NOT 日本語 しました", "しました NOT 日本語", "しました AND NOT 日本語"])
    def test_not_excludes_as_minus_does(self, db: Path, query: str) -> None:
        """NOT term excludes a CJK or emoji term, as it does an ASCII one."""
        assert found(db, "-日本語 しました") == found(db, query) == ["東京の注文が失敗しました"]

    def test_not_alone_excludes(self, db: Path) -> None:
        assert found(db, "NOT 🚀") == found(db, "-🚀")
        assert "deploy done 🚀 all green" not in found(db, "NOT 🚀")

    @pytest.mark.parametrize(
        ("query", "messages"),
        [
            ("timeout OR 注文", ["payment timeout after 30 s", "東京の注文が失敗しました"]),
            ("注文 OR 日本語", ["日本語のログを書きました", "東京の注文が失敗しました"]),
            ("🔥 OR 🚀", ["deploy done 🚀 all green", "fire 🔥 in the hole"]),
            ("ログ OR refused", ["connection refused, retrying", "日本語のログを書きました"]),  # two characters
            ("(注文 OR 日本語) ログ", ["日本語のログを書きました"]),
            ("ました NOT (注文 失敗)", ["日本語のログを書きました"]),
            ("ました NOT (注文 日本語)", ["日本語のログを書きました", "東京の注文が失敗しました"]),
            ("ました NOT (注文 OR ラーメン)", ["日本語のログを書きました"]),
            ("green NOT (🔥 OR ラーメン)", []),
            ("message:ラーメン", []),  # it is in the fields only
            ("fields:ラーメン", ["deploy done 🚀 all green"]),
            ("fields:ラーメン OR fire", ["deploy done 🚀 all green", "fire 🔥 in the hole"]),
            ('"注文が" OR Café', ["Café au lait ordered", "東京の注文が失敗しました"]),
            ("注文* OR 로그", ["東京の注文が失敗しました", "한국어 로그 메시지"]),
            ("ラーメン -green", []),  # an exclusion beside a CJK term
            ("ラーメン NOT fire", ["deploy done 🚀 all green"]),
        ],
    )
    def test_in_or_groups_and_column_filters(self, db: Path, query: str, messages: list[str]) -> None:
        """A CJK or emoji term keeps its place in the query: OR-ed, grouped, excluded as a group, in one column."""
        assert messages == found(db, query)

    @pytest.mark.parametrize("query", ["注文 OR connection", "🔥 OR 日本語", "fields:ラーメン OR order"])
    def test_filters_hold_for_every_branch(self, db: Path, query: str) -> None:
        """An OR-ed CJK term and a filter: the filter applies to both sides of the OR."""
        with LogStore(db) as store:
            every = store.search(query, limit=None)
            late = store.search(query, limit=None, since=BASE_TS // 10**9 + 7)
        assert [r for r in every if r.ts >= BASE_TS + 7 * 10**9] == late and len(late) < len(every)

    @pytest.mark.parametrize("query", ["word3 OR 注文", "注文 OR 🔥", "word1 NOT (注文 OR word2)", "fields:ラーメン OR word5"])
    def test_limits_read_in_windows_find_the_same_records(self, make_log_db: Callable[..., Path], query: str) -> None:
        """Such a query's newest or oldest N, read in id windows from that end, are the first N
        of all its records, with or without other filters, across windows of every size."""
        rows = [
            make_row(
                f"row word{i % 7}" + (" 東京の注文" if i % 997 == 0 else "") + (" 🔥" if i % 1500 == 1 else ""),
                ts=BASE_TS + i * 1_000_000,
                level=(20, 30)[i % 2],
                fields=json.dumps({"note": "ラーメン"}, ensure_ascii=False) if i % 2000 == 5 else None,
            )
            for i in range(30_000)
        ]
        path = make_log_db(rows)
        with LogStore(path) as store:
            for filters in ({}, {"level": "WARNING"}, {"since": BASE_TS // 10**9 + 3, "until": BASE_TS // 10**9 + 25}):
                every = [r.id for r in store.search(query, limit=None, **filters)]
                assert every == sorted(every, reverse=True) and len(every) > 8
                for limit in (1, 7, 100, 5_000):
                    newest = [r.id for r in store.search(query, limit=limit, **filters)]
                    oldest = [r.id for r in store.search(query, limit=limit, order="oldest", **filters)]
                    assert (every[:limit], sorted(every)[:limit]) == (newest, oldest), (query, filters, limit)
            with pytest.raises(SearchQueryError) as caught:
                store.search(query, order="rank")
            assert "rank_unavailable" == caught.value.code

    def test_in_near_is_refused_with_a_clear_error(self, db: Path) -> None:
        with LogStore(db) as store, pytest.raises(SearchQueryError) as caught:
            store.search("NEAR(注文 failed)")
        assert "wide_term_in_near" == caught.value.code

    def test_random_queries_find_what_the_records_hold(self, db: Path) -> None:
        """Random AND / OR / NOT / group / column queries mixing CJK, emoji and ASCII words:
        search, count and every record's own matcher agree, and the answers are not all empty."""
        rng = random.Random(1729)
        words = ["注文", "日本語", "ログ", "로그", "🚀", "🔥", "ラーメン", "order", "connection", "timeout", "green", "fire"]
        columns = ["", "", "", "message:", "fields:"]
        with LogStore(db) as store:
            records = store.search(None, limit=None)
            nonempty = 0
            for _ in range(300):
                terms = [rng.choice(columns) + rng.choice(words) for _ in range(rng.randint(2, 4))]
                query = terms[0]
                for term in terms[1:]:
                    query = rng.choice(["{} OR {}", "{} {}", "{} NOT {}", "({}) OR {}", "{} -{}"]).format(query, term)
                match = matcher(query)
                expected = sorted(r.message for r in records if match(_columns(r)))
                got = sorted(r.message for r in store.search(query, limit=None))
                assert (expected, len(expected)) == (got, store.count(query)), query
                nonempty += bool(expected)
        assert nonempty >= 60

    def test_only_rows_that_need_it_are_in_the_trigram_index(self, db: Path) -> None:
        """CJK and emoji rows are in logs_wide; ASCII ones cost nothing there."""
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            ids = sorted(row[0] for row in conn.execute(f'SELECT rowid FROM "{WIDE_TABLE}"'))
        finally:
            conn.close()
        assert [6, 7, 8, 9, 10] == ids

    def test_prune_removes_them_from_the_trigram_index(self, db: Path, tmp_path: Path) -> None:
        prune_path(db, max_rows=0)
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert 0 == conn.execute(f'SELECT count(*) FROM "{WIDE_TABLE}"').fetchall()[0][0]
        finally:
            conn.close()
        assert [] == found(db, "日本語")

    def test_migration_indexes_existing_rows(self, tmp_path: Path) -> None:
        """A database written before the trigram index gets its CJK rows indexed when migrated."""
        path = tmp_path / "old.db"
        conn = apsw.Connection(str(path))
        from janus_utils import _schema

        # The schema as it was just before the migration that adds the trigram index.
        before = next(v for v, sql in _schema.MIGRATIONS.items() if f'"{WIDE_TABLE}"' in sql)
        for version in range(before):
            conn.execute(_schema.MIGRATIONS[version])
        conn.execute(f"PRAGMA user_version={before}")
        write_batch(conn, _rows())
        assert 0 == conn.execute(
            "SELECT count(*) FROM sqlite_schema WHERE name = ?", (WIDE_TABLE,)
        ).fetchall()[0][0]
        ensure_schema(conn)
        conn.close()
        assert ["日本語のログを書きました"] == found(path, "のログ")


def _columns(record: object) -> dict[str, str | None]:
    """A record's indexed text as the matcher reads it: the fields as the flusher stores them."""
    fields = record.fields  # type: ignore[attr-defined]
    return {
        "message": record.message,  # type: ignore[attr-defined]
        "fields": json.dumps(fields, ensure_ascii=False) if fields else None,
        "exception": record.exception,  # type: ignore[attr-defined]
    }


class TestCountsOfQueriesWithoutWords:
    @pytest.mark.parametrize("query", ["日本語", "🚀", "-🚀", "NOT 注文", "-order", "NOT connection", "timeout OR 注文"])
    def test_count_and_histogram_count_the_records_search_finds(self, db: Path, query: str) -> None:
        """A query answered without FTS5's MATCH alone (CJK, emoji, exclusions) is counted from the
        rows it selects, not from the per-minute counts of every row."""
        with LogStore(db) as store:
            expected = len(store.search(query, limit=None))
            histogram = store.histogram("1d", query=query)
            assert (expected, expected) == (store.count(query), sum(sum(c.values()) for _, c in histogram)), query
            assert expected < len(CORPUS)


class TestExclusion:
    @pytest.mark.parametrize("query", ["order -refunded", "order NOT refunded", "NOT refunded order", "-refunded order"])
    def test_minus_and_not_exclude(self, db: Path, query: str) -> None:
        assert ["order k-7978 shipped"] == found(db, query)

    def test_exclusion_only_keeps_the_rest(self, db: Path) -> None:
        """A query of exclusions alone finds every record without them."""
        assert len(CORPUS) - 2 == len(found(db, "-order"))
        assert len(CORPUS) - 2 == len(found(db, "NOT connection"))

    def test_hyphen_inside_a_word_is_not_an_exclusion(self, db: Path) -> None:
        assert ["order k-7977 refunded"] == found(db, "k-7977")


class TestIdentifiers:
    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("k-7977", "order k-7977 refunded"),
            ("err_1838fa1042c0", "lookup failed err_1838fa1042c0 in app.db.pool"),
            ("app.db.pool", "lookup failed err_1838fa1042c0 in app.db.pool"),
            ("123e4567-e89b-12d3-a456-426614174000", "request 123e4567-e89b-12d3-a456-426614174000 timed out"),
            ("abc-DEF.42", "lookup failed err_1838fa1042c0 in app.db.pool"),
        ],
    )
    def test_pasted_identifier_matches_as_a_phrase(self, db: Path, query: str, message: str) -> None:
        assert [message] == found(db, query)

    def test_part_of_an_identifier_is_not_a_word(self, db: Path) -> None:
        """1042 is inside err_1838fa1042c0 but not one of its words; look is not lookup."""
        assert ([], ["look here first"]) == (found(db, "1042"), found(db, "look"))


QUERIES = [
    "order", "look", "lookup", "1042", "err_1838fa1042c0", "k-7977", "app.db.pool", "db",
    "connection reset", '"connection reset"', "connection -reset", "NOT connection", "reset OR refused",
    "conn*", "NEAR(connection peer, 2)", "NEAR(payment 30, 1)", "exception:peer", "message:peer",
    "cafe", "CAFÉ", "日本語", "のログ", "ログ", "🚀", "-🚀 done", "ラーメン", "abc-DEF.42", "timeout OR 注文",
    "123e4567-e89b-12d3-a456-426614174000", "e89b", "(order OR payment) -refunded",
    "🔥 OR 日本語", "fields:ラーメン OR refused", "しました NOT (注文 OR timeout)",
]


class TestArchiveParity:
    def test_archives_answer_as_the_database(self, db: Path, tmp_path: Path) -> None:
        """Every query finds the same records in the database and, once pruned, in its archives."""
        copy = tmp_path / "pruned.db"
        shutil.copy(db, copy)
        archive = tmp_path / "archive"
        summary = prune_path(copy, max_rows=0, archive_dir=archive)
        assert len(CORPUS) == summary.rows
        for query in QUERIES:
            archived = sorted(str(r["message"]) for r in search_archives(archive, query, limit=None))
            assert found(db, query) == archived, query

    def test_imported_archives_are_searched_as_before(self, db: Path, tmp_path: Path) -> None:
        """Pruned to archives, then imported into a new database: the same answers, CJK included."""
        from janus_utils._flusher import open_database
        from janus_utils.retention import import_archive, list_archives

        copy = tmp_path / "pruned.db"
        shutil.copy(db, copy)
        prune_path(copy, max_rows=0, archive_dir=tmp_path / "archive")
        restored = tmp_path / "restored.db"
        conn = open_database(str(restored))
        try:
            for archive in list_archives(tmp_path / "archive"):
                import_archive(conn, archive)
        finally:
            conn.close()
        for query in QUERIES:
            assert found(db, query) == found(restored, query), query

    def test_queries_find_something(self, db: Path) -> None:
        """The parity corpus is not vacuous: most queries match, some match nothing."""
        counts = [len(found(db, query)) for query in QUERIES]
        assert sum(1 for n in counts if n) >= len(QUERIES) - 4 and 0 in counts


class TestTokens:
    def test_tokens_as_unicode61(self) -> None:
        assert ["err", "1838fa1042c0", "café"[:3] + "e"] == tokens("err_1838fa1042c0 Café")[:2] + [tokens("Café")[0]]

    def test_matcher_columns(self) -> None:
        match = matcher("exception:peer")
        assert match({"exception": "peer gone"}) and not match({"message": "peer gone"})


class TestIndexWithoutColumnSizes:
    def test_migration_rebuilds_the_index_from_the_rows(self, tmp_path: Path) -> None:
        """A database written with per-row token counts is rebuilt without them and finds the same records."""
        from janus_utils import _schema

        path = tmp_path / "old.db"
        conn = apsw.Connection(str(path))
        before = next(v for v, sql in _schema.MIGRATIONS.items() if "columnsize=0" in sql)
        for version in range(before):
            conn.execute(_schema.MIGRATIONS[version])
        conn.execute(f"PRAGMA user_version={before}")
        write_batch(conn, _rows())
        expected = {query: found(path, query) for query in ("order", "connection reset", "café", "Cafe", "timeout 30")}
        assert 1 == conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'logs_fts_docsize'").fetchall()[0][0]
        ensure_schema(conn)
        try:
            assert 0 == conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'logs_fts_docsize'").fetchall()[0][0]
            settings = dict(conn.execute("SELECT k, v FROM logs_fts_config WHERE k IN ('crisismerge', 'usermerge')"))
            assert {"crisismerge": 16, "usermerge": 2} == settings
            conn.execute("""INSERT INTO "logs_fts"("logs_fts", "rank") VALUES ('integrity-check', 1)""")
        finally:
            conn.close()
        assert all(expected.values())
        assert expected == {query: found(path, query) for query in expected}
        with LogStore(path) as store:
            ranked = store.search("order", order="rank")
            assert sorted(expected["order"]) == sorted(record.message for record in ranked)
