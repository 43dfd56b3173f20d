"""Tests of janus_utils._fts: user text made a safe FTS5 query that keeps its syntax."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import BASE_TS, make_row
from janus_utils._fts import (
    MAX_PREFIX_TERMS,
    MAX_QUERY_CHARS,
    MAX_QUERY_TERMS,
    escape_query,
    quote_all,
    required_words,
)
from janus_utils.error_handling.utils.errors import SearchQueryError
from janus_utils.retention import search_archives
from janus_utils.store import LogStore

COLUMNS = ("message", "fields", "exception")

# A small known corpus; the tests check which of these a query finds.
CORPUS = {
    "reset": dict(message="connection reset by peer"),
    "refused": dict(message="connection refused"),
    "paid": dict(message="payment accepted for order 42", fields='{"status": 200}'),
    "declined": dict(message="payment declined: card expired", fields='{"status": 402}'),
    "login": dict(message="user login ok"),
    "failed": dict(
        message="user login failed",
        exception="Traceback (most recent call last):\nValueError: bad password",
    ),
    "db": dict(message="db-01 timeout after 30s"),
    "emoji": dict(message="deploy finished 🚀 naïve café"),
}


@pytest.fixture
def corpus(make_log_db: Callable[..., Path]) -> Iterator[tuple[LogStore, dict[int, str]]]:
    """A LogStore over CORPUS and the record id of each corpus key."""
    keys = list(CORPUS)
    rows = [make_row(ts=BASE_TS + i, **CORPUS[key]) for i, key in enumerate(keys)]
    with LogStore(make_log_db(rows)) as store:
        yield store, {i + 1: key for i, key in enumerate(keys)}


def found(corpus: tuple[LogStore, dict[int, str]], query: str, **kw: Any) -> set[str]:
    store, names = corpus
    return {names[record.id] for record in store.search(query, limit=None, **kw)}


class TestEscapeQuery:
    def test_plain_words_become_phrases_anded(self) -> None:
        """Each bare word is quoted, the words AND-ed."""
        assert '"connection" AND "reset"' == escape_query("connection reset")

    def test_operators_kept(self) -> None:
        """Uppercase AND, OR, NOT stay operators; compound operands get parentheses."""
        assert '"a" OR ("b" NOT "c")' == escape_query("a OR b NOT c")

    def test_lowercase_operators_are_words(self) -> None:
        """and/or/not in lower case are searched as words, as FTS5 does."""
        assert '"a" AND "or" AND "b"' == escape_query("a or b")

    def test_phrase_kept(self) -> None:
        """A balanced "phrase" stays one phrase."""
        assert '"login failed"' == escape_query('"login failed"')

    def test_doubled_quote_inside_phrase(self) -> None:
        """"" inside a phrase is a quote character, kept doubled."""
        assert '"say ""hi"""' == escape_query('"say ""hi"""')

    def test_prefix_kept(self) -> None:
        """term* and "phrase"* stay prefix queries."""
        assert '"pay"* AND "log in"*' == escape_query('pay* "log in"*')

    def test_near_kept(self) -> None:
        """NEAR(a b, N) is kept with its distance."""
        assert 'NEAR("a" "b", 3)' == escape_query("NEAR(a b, 3)")

    def test_known_column_filter_kept(self) -> None:
        """message:term stays a column filter when message is an index column."""
        assert '"message":"timeout"' == escape_query("message:timeout", COLUMNS)

    def test_unknown_column_is_quoted(self) -> None:
        """user:42 is not a column: it is searched as the words user and 42."""
        assert '"user:42"' == escape_query("user:42", COLUMNS)

    def test_punctuation_quoted(self) -> None:
        """Hyphens, carets and the like are quoted, not read as syntax."""
        assert '"db-01" AND "^x" AND "c++"' == escape_query("db-01 ^x c++")

    def test_unbalanced_quote_dropped(self) -> None:
        """An unbalanced quote is a separator."""
        assert '"login" AND "failed"' == escape_query('"login failed')

    def test_stray_operators_dropped(self) -> None:
        """Operators with nothing to join are dropped."""
        assert '"a"' == escape_query("OR a AND")

    def test_unbalanced_parens_dropped(self) -> None:
        """A parenthesis without its pair is dropped; balanced ones group."""
        assert '("a" OR "b") AND "c"' == escape_query("((a OR b) c")

    def test_nothing_searchable_is_empty(self) -> None:
        """Text without letters or digits gives the empty query."""
        assert "" == escape_query(' -- * ^ ( ) "" OR ')

    def test_nul_and_controls_are_separators(self) -> None:
        """NUL would end the query early in SQLite: it separates words instead."""
        assert '"a" AND "b"' == escape_query("a\x00b")

    def test_quote_all_fallback(self) -> None:
        """quote_all makes every word a phrase, operators included, implicitly AND-ed."""
        assert '"a" "OR" "b(c"' == quote_all("a OR b(c")


class TestRequiredWords:
    """The words a search may test a row's text for before asking the index."""

    @pytest.mark.parametrize(
        ("query", "words"),
        [
            ("alpha bravo", ["alpha", "bravo"]),
            ("Alpha ALPHA", ["alpha"]),
            ("alp*", ["alp"]),
            ('"connection reset"', ["connection", "reset"]),
            ("status=503", ["status", "503"]),
            ("Ärger alpha", ["alpha"]),  # the tokenizer folds Ä: no substring says it
            ('say "it\'s"', ["say", "it", "s"]),
        ],
    )
    def test_words_of_anded_phrases(self, query: str, words: list[str]) -> None:
        """Each ASCII word of AND-ed phrases, lowercased, once."""
        assert words == required_words(escape_query(query, COLUMNS))

    @pytest.mark.parametrize(
        "query", ["alpha OR bravo", "alpha -bravo", "message:alpha", "NEAR(alpha bravo)", "Ärger", "-alpha"]
    )
    def test_nothing_for_other_shapes(self, query: str) -> None:
        """OR, NOT, column filters, NEAR and non-ASCII words give no condition at all."""
        assert [] == required_words(escape_query(query, COLUMNS))

    def test_quote_all_and_raw_forms(self) -> None:
        """The fallback's space-separated phrases count as AND; any other syntax gives nothing."""
        assert ["a", "b"] == required_words(quote_all("a b"))
        assert [] == required_words('^"a"')
        assert [] == required_words('"a" AND "b" OR "c"')
        assert [] == required_words("alpha")


class TestQuerySemantics:
    """Escaped queries keep their meaning: checked by what they find in CORPUS."""

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("connection", {"reset", "refused"}),
            ("connection reset", {"reset"}),
            ("connection AND reset", {"reset"}),
            ("connection OR payment", {"reset", "refused", "paid", "declined"}),
            ("connection NOT reset", {"refused"}),
            ("login AND NOT failed", {"login"}),
            ('"login failed"', {"failed"}),
            ('"failed login"', set()),
            ("pay*", {"paid", "declined"}),
            ('"payment acc"*', {"paid"}),
            ("NEAR(connection peer, 2)", {"reset"}),
            ("NEAR(connection peer, 1)", set()),
            ("(connection OR payment) NOT (refused OR declined)", {"reset", "paid"}),
            ("message:payment", {"paid", "declined"}),
            ("exception:password", {"failed"}),
            ("fields:402", {"declined"}),
            ("db-01", {"db"}),
            ("payment declined:", {"declined"}),
            ("connection or payment", set()),
            ("café", {"emoji"}),
            ("🚀 deploy", {"emoji"}),
            ("'login'", {"login", "failed"}),
        ],
    )
    def test_query_finds(self, corpus: tuple[LogStore, dict[int, str]], query: str, expected: set[str]) -> None:
        """The escaped query finds exactly the records its syntax means."""
        assert expected == found(corpus, query)

    def test_raw_mode_passes_syntax(self, corpus: tuple[LogStore, dict[int, str]]) -> None:
        """raw=True passes FTS5 syntax unchanged: ^ anchors to the column start."""
        assert {"login", "failed"} == found(corpus, "^user", raw=True)

    def test_safe_mode_does_not_anchor(self, corpus: tuple[LogStore, dict[int, str]]) -> None:
        """In safe mode ^ is punctuation: ^login is the word login anywhere."""
        assert {"login", "failed"} == found(corpus, "^login")


HOSTILE = [
    '"',
    '""',
    '"unbalanced',
    "unbalanced)",
    "((((",
    "))))",
    "()",
    "-",
    "-term",
    "a - b",
    ":",
    "column:term",
    "message:",
    "{message}:x",
    "*",
    "**",
    "*term",
    "te*rm",
    "^",
    "^term",
    "+",
    "a + b",
    "NEAR(",
    "NEAR()",
    "NEAR(a b,",
    "NEAR(a b, x)",
    "NEAR(a OR b)",
    "AND",
    "OR OR",
    "NOT",
    "NOT NOT NOT",
    "a NOT",
    "'; DROP TABLE logs; --",
    "1' OR '1'='1",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "emoji 😀🎉",
    "日本語 テキスト",
    "ünïcödé",
    "\u202eevil",
    "",
    "   ",
    "\t\n\r",
    ",",
    ",,,",
    "a,b,c",
    "x" * 5000,
    "word " * 1000,
    "(" * 2500 + ")" * 2500,
    "a NOT " * 800 + "b",
    "NEAR(" * 1000,
    '"a" "b" "c' * 300,
]


class TestHostileQueries:
    @pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q)[:30])
    def test_safe_mode_never_raises(self, corpus: tuple[LogStore, dict[int, str]], query: str) -> None:
        """Safe mode turns any text into a query SQLite accepts."""
        store, _ = corpus
        assert isinstance(store.search(query), list)
        assert isinstance(store.count(query), int)

    @pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q)[:30])
    def test_raw_mode_raises_only_search_query_error(
        self, corpus: tuple[LogStore, dict[int, str]], query: str
    ) -> None:
        """Raw mode either runs or raises SearchQueryError, never a bare SQLite error."""
        store, _ = corpus
        try:
            result = store.search(query, raw=True)
        except SearchQueryError:
            return
        assert isinstance(result, list)

    @pytest.mark.parametrize("query", HOSTILE, ids=lambda q: repr(q)[:30])
    def test_escape_query_is_idempotent_and_safe(self, query: str) -> None:
        """Escaping an escaped query changes nothing: the output is its own syntax."""
        once = escape_query(query, COLUMNS)
        assert once == escape_query(once, COLUMNS)

    def test_sql_injection_is_only_words(self, corpus: tuple[LogStore, dict[int, str]]) -> None:
        """SQL in the query is searched as words; the logs table is still there."""
        store, _ = corpus
        assert [] == store.search("'; DROP TABLE logs; --")
        assert len(CORPUS) == store.count()


class TestRawErrors:
    @pytest.mark.parametrize("query", ['"unterminated', "NOT a", "a AND", "nosuchcolumn:x", "NEAR(a b,", "()"])
    def test_invalid_raw_query_is_search_query_error(
        self, corpus: tuple[LogStore, dict[int, str]], query: str
    ) -> None:
        """An invalid raw query raises SearchQueryError naming the query."""
        store, _ = corpus
        with pytest.raises(SearchQueryError) as caught:
            store.search(query, raw=True)
        assert query in caught.value.message

    def test_raw_error_from_count_and_export(self, corpus: tuple[LogStore, dict[int, str]]) -> None:
        """count() and export() report an invalid raw query the same way."""
        store, _ = corpus
        with pytest.raises(SearchQueryError):
            store.count('"x', raw=True)
        with pytest.raises(SearchQueryError):
            list(store.export('"x', raw=True))


# The reproductions: each took seconds to minutes before it was refused.
PREFIX_800 = " ".join(["a*"] * 800)
QUERY_800_KB = "timeout " * 100_000


def _all_methods(store: LogStore, query: str, raw: bool) -> list[Callable[[], object]]:
    return [
        lambda: store.search(query, raw=raw),
        lambda: store.count(query, raw=raw),
        lambda: store.histogram(query=query, raw=raw),
        lambda: store.stats(query, raw=raw),
        lambda: store.export(query, raw=raw),
    ]


class TestQuerySizeLimits:
    @pytest.mark.parametrize("raw", [False, True], ids=["safe", "raw"])
    @pytest.mark.parametrize(
        ("query", "message"),
        [
            (PREFIX_800, f"800 prefix\\* terms; a search takes at most {MAX_PREFIX_TERMS}"),
            (QUERY_800_KB, f"800,000 characters long; a search takes at most {MAX_QUERY_CHARS:,}"),
            (" OR ".join(f"w{n}" for n in range(MAX_QUERY_TERMS + 1)), f"1,001 words; a search takes at most {MAX_QUERY_TERMS}"),
        ],
        ids=["800-prefix-terms", "800-KB", "1001-words"],
    )
    def test_refused_before_running_in_every_method(
        self, corpus: tuple[LogStore, dict[int, str]], query: str, message: str, raw: bool
    ) -> None:
        """search, count, histogram, stats and export refuse an oversized query, raw or not, saying the limit."""
        store, _ = corpus
        for method in _all_methods(store, query, raw):
            with pytest.raises(SearchQueryError, match=message) as caught:
                method()
            assert ("query_too_large", True) == (caught.value.code, "narrow the search with filters" in caught.value.message)

    def test_at_the_limits_is_searched(self, corpus: tuple[LogStore, dict[int, str]]) -> None:
        """Eight prefix terms and a thousand words are still a search."""
        store, _ = corpus
        assert isinstance(store.search(" OR ".join(["conn*"] * MAX_PREFIX_TERMS)), list)
        assert isinstance(store.count(" ".join(["timeout"] * MAX_QUERY_TERMS)), int)

    def test_archive_search_has_the_same_limits(self, tmp_path: Path) -> None:
        """search_archives refuses an oversized text before reading any archive."""
        with pytest.raises(SearchQueryError, match="characters long"):
            search_archives(tmp_path, QUERY_800_KB)


class TestTimeout:
    @pytest.fixture
    def big(self, make_log_db: Callable[..., Path]) -> Path:
        return make_log_db([make_row(f"record {n} timeout", fields=f'{{"n": {n}}}') for n in range(3000)])

    @pytest.mark.parametrize("raw", [False, True], ids=["safe", "raw"])
    def test_statement_past_its_deadline_is_stopped(self, big: Path, raw: bool) -> None:
        """A statement that outlives the timeout is interrupted and says so (code search_timeout)."""
        with LogStore(big, timeout=1e-9) as store:
            with pytest.raises(SearchQueryError, match="ran longer than 1e-09 s and was stopped") as caught:
                store.count("timeout", raw=raw, fields={"n": 5})
            assert "search_timeout" == caught.value.code
            # The connection is fine afterwards: a later search gets its own deadline.
            store.timeout = None
            assert 1 == store.count("timeout", raw=raw, fields={"n": 5})

    def test_a_read_inside_a_read_keeps_the_outer_deadline(self, big: Path) -> None:
        """The planner's estimates are reads inside a search's read: after one, the rest
        of the search is still stopped at the search's own deadline."""
        with LogStore(big, timeout=0.2) as store:
            with pytest.raises(SearchQueryError, match="was stopped"), store._reading() as db:
                store._rows("SELECT 1")  # a nested read, as the planner makes
                db.execute(  # some seconds of work
                    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 50000000) "
                    "SELECT count(*) FROM c"
                ).fetchall()
            assert store._deadline is None  # and the next read gets a deadline of its own

    def test_default_and_bad_timeouts(self, big: Path) -> None:
        """30 s unless told; a timeout must be a positive number of seconds or None."""
        with LogStore(big) as store:
            assert 30.0 == store.timeout
        for bad in (0, -1, float("nan"), float("inf"), "5", True):
            with pytest.raises(SearchQueryError, match="timeout must be"):
                LogStore(big, timeout=bad)  # type: ignore[arg-type]
