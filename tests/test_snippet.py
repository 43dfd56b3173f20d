"""Tests of the snippets a search makes from the rows' own text (_records.snippets):
the same text as FTS5's snippet(), or FTS5's own where they are not reproduced."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import BASE_TS, make_row, open_writer, write_batch
from janus_utils import _planner
from janus_utils import store as store_module
from janus_utils._fts import escape_query
from janus_utils._snippet import snippet_phrases
from janus_utils.store import SNIPPET_ELLIPSIS, SNIPPET_END, SNIPPET_START, SNIPPET_WORDS, LogStore

pytestmark = pytest.mark.skipif(store_module._c_records is None, reason="built without _native/records.c")

COLUMNS = ("message", "fields", "exception")
WORDS = ["alpha", "bravo", "Alpha", "BRAVO", "al", "alp", "x1", "42", "delta", "delt", "echo", "e"]
ODD_WORDS = ["café", "naïve", "ÉCOLE", "日本語", "straße", "a\x00b", "ǅemo", "ﬁle", "x\u0301y"]
SEPARATORS = [" ", " ", " ", ". ", ": ", ", ", ".", ":", "\n", "\t", " . ", ":\n", "-", "_", '"', "  ", " :"]


def texts(odd: bool) -> st.SearchStrategy[str | None]:
    """Text of a few to some forty words and separators; *odd* adds non-ASCII words and NULs."""
    word = st.sampled_from(WORDS + ODD_WORDS) if odd else st.sampled_from(WORDS)
    pieces = st.lists(st.tuples(st.sampled_from(SEPARATORS), word), min_size=0, max_size=40)
    made = st.builds(lambda lead, parts, tail: lead + "".join(s + w for s, w in parts) + tail,
                     st.sampled_from(["", " ", ": ", "."]), pieces, st.sampled_from(["", ".", " ", ":"]))
    return st.one_of(st.none(), made) if odd else made


def phrase() -> st.SearchStrategy[str]:
    words = st.lists(st.sampled_from(["alpha", "bravo", "al", "delta", "echo", "x1", "42", "e", "café", "zulu"]),
                     min_size=1, max_size=3)
    return st.builds(lambda ws, star: '"' + " ".join(ws) + '"' + ("*" if star else ""), words, st.booleans())


# FTS5 expressions: phrases with AND, OR, NOT, side by side, groups, NEAR and column filters.
expressions = st.recursive(
    phrase(),
    lambda inner: st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["AND", "OR", "NOT", ""]), inner),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda a, b: f"NEAR({a} {b}, 3)", phrase(), phrase()),
        st.builds(lambda c, a: f"{c}:{a}", st.sampled_from(["message", "fields", "{message exception}"]), phrase()),
    ),
    max_leaves=5,
)


@pytest.fixture(scope="module")
def index() -> Iterator[apsw.Connection]:
    """An in-memory table and its external-content index, set up as the logs table's."""
    db = apsw.Connection(":memory:")
    db.execute('CREATE TABLE logs(id INTEGER PRIMARY KEY, message TEXT, fields TEXT, exception TEXT)')
    db.execute(
        'CREATE VIRTUAL TABLE logs_fts USING fts5("message", "fields", "exception", content="logs", '
        'content_rowid="id", tokenize="unicode61", columnsize=0)'
    )
    yield db
    db.close()


def compare(db: apsw.Connection, rows: list[tuple[str | None, ...]], fts: str, words: int = SNIPPET_WORDS) -> int:
    """Check the snippets made here against FTS5's for the rows matching *fts*; how many were made here."""
    db.execute("DELETE FROM logs")
    db.execute("INSERT INTO logs_fts(logs_fts) VALUES('delete-all')")
    for i, row in enumerate(rows, 1):
        db.execute("INSERT INTO logs VALUES (?, ?, ?, ?)", (i, *row))
    db.execute("INSERT INTO logs_fts(logs_fts) VALUES('rebuild')")
    try:
        expected = db.execute(
            "SELECT rowid, snippet(logs_fts, -1, ?, ?, ?, ?) FROM logs_fts WHERE logs_fts MATCH ? ORDER BY rowid",
            (SNIPPET_START, SNIPPET_END, SNIPPET_ELLIPSIS, words, fts),
        ).fetchall()
    except apsw.SQLError:
        return 0  # not a query FTS5 takes
    phrases = snippet_phrases(fts)
    if phrases is None or not expected:
        return 0
    matched = [(rowid, *rows[rowid - 1], None) for rowid, _ in expected]
    made, missing = store_module._c_records.snippets(
        matched, (1, 2, 3), phrases, SNIPPET_START, SNIPPET_END, SNIPPET_ELLIPSIS, words
    )
    for i, (rowid, snippet) in enumerate(expected):
        if i in missing:
            assert made[i][-1] is None
            # Only text this does not reproduce is left to FTS5.
            assert any(text is not None and (not text.isascii() or "\x00" in text) for text in rows[rowid - 1])
        else:
            assert (rowid, snippet) == (rowid, made[i][-1]), (fts, rows[rowid - 1])
        assert made[i][:-1] == matched[i][:-1]
    return len(expected) - len(missing)


class TestSameAsFts5:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rows=st.lists(st.tuples(texts(False), texts(False), texts(False)), min_size=1, max_size=6),
           fts=expressions, words=st.sampled_from([SNIPPET_WORDS, SNIPPET_WORDS, 1, 3, 5, 64]))
    def test_ascii_text(self, index: apsw.Connection, rows: list[tuple[str | None, ...]], fts: str, words: int) -> None:
        """ASCII text, any expression it takes: FTS5's snippet, character for character."""
        compare(index, rows, fts, words)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rows=st.lists(st.tuples(texts(True), texts(True), texts(True)), min_size=1, max_size=6),
           fts=expressions)
    def test_unicode_text_and_nul(self, index: apsw.Connection, rows: list[tuple[str | None, ...]], fts: str) -> None:
        """Text with diacritics, other scripts, NULs or none at all: FTS5's snippet, or left to FTS5."""
        compare(index, rows, fts)

    def test_long_text_and_sentences(self, index: apsw.Connection) -> None:
        """A passage chosen inside a long column, after a sentence start, across columns."""
        message = " ".join(["filler"] * 30) + ". alpha bravo " + " ".join(["filler"] * 30) + ": bravo end."
        rows = [(message, '{"status": 200, "who": "alpha"}', "Traceback: alpha\nbravo.")]
        for fts in ['"alpha"', '"bravo"', '"alpha" AND "bravo"', '"alpha" OR "end"', '"fill"*', '"alpha bravo"',
                    '"bravo" NOT "zulu"', '"alpha" "bravo"']:
            assert 1 == compare(index, rows, fts), fts

    def test_the_escaped_queries_are_reproduced(self) -> None:
        """What escape_query makes of plain words, phrases, OR, exclusions and prefixes is made here."""
        for text in ["quokka", "alpha bravo", "a OR b", "-debug x", "err*", '"a b" c', "(a OR b) c", "x NOT y"]:
            assert snippet_phrases(escape_query(text, COLUMNS)) is not None, text
        for text in ["message:foo bar", "NEAR(a b)", "café", "a OR b c"]:
            assert snippet_phrases(escape_query(text, COLUMNS)) is None, text
        for fts in ['"a" NOT ("b" AND "c")', '"a" NOT "b" "c"', '("a" "b") OR "c"', "a", '"a" + "b"', '^"a"',
                    "(" * 100 + '"a"' + ")" * 100, '"a" OR', '("a"', '""', '"a" AND']:
            assert snippet_phrases(fts) is None, fts


class TestOtherIndexes:
    @pytest.mark.parametrize("tokenize", ["porter unicode61", "unicode61 tokenchars '_'"])
    def test_an_index_of_other_tokens_gets_fts5s_snippets(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tokenize: str) -> None:
        """An index made with porter or tokenchars finds other tokens than the ASCII runs made
        here (running for run, key_1 as one word): FTS5 makes its snippets."""
        path = tmp_path / "other.db"
        db = open_writer(path)
        try:
            db.execute('DROP TABLE logs_fts')
            db.execute('CREATE VIRTUAL TABLE logs_fts USING fts5("message", "fields", "exception", content="logs", '
                       f'content_rowid="id", tokenize="{tokenize}", columnsize=0)')
            write_batch(db, [make_row("jobs running slowly. timeout error", ts=BASE_TS),
                             make_row("key_1 y then 1 y: error", ts=BASE_TS + 1)])
        finally:
            db.close()

        def searches() -> list[list[str | None]]:
            with LogStore(path) as store:
                return [[r.snippet for r in store.search(q, limit=None)] for q in ("run error", '"1 y"', "error")]

        made = searches()
        monkeypatch.setattr(store_module, "native_enabled", lambda: False)
        assert made == searches() and any(made)


class TestSnippetsCall:
    def test_bad_arguments_are_errors(self) -> None:
        """A row without room for its snippet or a malformed phrase is an error, not a crash."""
        snippets = store_module._c_records.snippets
        phrases = (((b"a",), False, True),)
        with pytest.raises(ValueError, match="row 0"):
            snippets([("a",)], (0,), phrases, "[", "]", "…", 12)
        with pytest.raises(TypeError):
            snippets([("a", None)], (0,), (((b"",), False, True),), "[", "]", "…", 12)
        with pytest.raises(ValueError):
            snippets([("a", None)], (0,), (), "[", "]", "…", 12)
        assert ([("a", "[a]")], []) == snippets([("a", None)], (0,), phrases, "[", "]", "…", 12)
        held = ("a b", None)
        made, _ = snippets([held, ("b a", None)], (0,), phrases, "[", "]", "…", 12)
        assert [("a b", "[a] b"), ("b a", "b [a]")] == made and ("a b", None) == held  # a row held elsewhere: copied
        # FTS5's snippet() makes at most 64 tokens, whatever it is asked for.
        long = (" ".join(["a"] * 100), None)
        assert snippets([long], (0,), phrases, "[", "]", "…", 100)[0][0][1].count("a") == 64
        # FTS5 cuts tokens of 32,000 bytes and more: such a phrase is left to it.
        assert snippet_phrases('"' + "x" * 32_000 + '"') is None and snippet_phrases('"' + "x" * 31_999 + '"')
        # Text the phrases do not occur in (FTS5 matched it otherwise): left to FTS5.
        assert ([("b", None), (1, None)], [0, 1]) == snippets([("b", None), (1, None)], (0,), phrases, "[", "]", "…", 12)


class TestSearch:
    @pytest.fixture
    def store(self, make_log_db: Callable[..., Path]) -> Iterator[LogStore]:
        rows = [
            make_row("alpha bravo. charlie: delta", ts=BASE_TS),
            make_row("naïve alpha café", ts=BASE_TS + 1, fields='{"k": "alpha"}'),
            make_row("alpha\x00bravo", ts=BASE_TS + 2),
            make_row("plain alpha words", ts=BASE_TS + 3, exception="Traceback: alpha failed"),
            make_row(" ".join(["word"] * 40) + " alpha " + " ".join(["word"] * 40), ts=BASE_TS + 4),
            make_row("plain bytes", ts=BASE_TS + 5),
        ]
        path = make_log_db(rows)
        with LogStore(path) as store:
            yield store

    QUERIES = ["alpha", "alpha bravo", "alpha OR delta", "alph*", "alpha -charlie", '"alpha bravo"',
               "message:alpha", "NEAR(alpha bravo)", "café", "alpha", "words"]

    def searches(self, store: LogStore) -> list[list[tuple[int, str | None]]]:
        return [[(r.id, r.snippet) for r in store.search(q, limit=None, order=order)]
                for q in self.QUERIES for order in ("newest", "oldest", "rank")]

    def test_same_snippets_as_fts5(self, store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every search's snippets are those FTS5 makes (with the C build off), rows not ASCII too."""
        made = self.searches(store)
        assert any(any(snippet for _, snippet in found) for found in made)
        monkeypatch.setattr(store_module, "native_enabled", lambda: False)
        assert self.searches(store) == made

    def test_text_not_utf8(self, store: LogStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """Once text that is not UTF-8 is met, FTS5 makes the snippets, escaped as every read is."""
        db = apsw.Connection(store.path)
        db.execute("UPDATE logs SET message = CAST(X'706c61696e20ff20627974657320616c706861' AS TEXT) WHERE id = 6")
        db.execute("INSERT INTO logs_fts(logs_fts) VALUES('rebuild')")
        db.close()
        found = {r.id: r.snippet for r in store.search("alpha", limit=None)}
        assert f"plain \\xff bytes {SNIPPET_START}alpha{SNIPPET_END}" == found[6]
        assert f"{SNIPPET_START}alpha{SNIPPET_END} bravo. charlie: delta" == found[1]

    def test_mostly_other_text_is_snippeted_in_the_statement(self, make_log_db: Callable[..., Path]) -> None:
        """When most rows of the last searches were not ASCII (each costs FTS5 a lookup of its
        own), searches ask FTS5 in their statement, trying C again every SNIPPET_RETRY-th."""
        path = make_log_db([make_row(f"naïve alpha {i}", ts=BASE_TS + i) for i in range(20)]
                           + [make_row("plain alpha", ts=BASE_TS + 99)])
        with LogStore(path) as store:
            fts = escape_query("alpha", COLUMNS)
            assert store._snippets_here(fts)
            first = [r.snippet for r in store.search("alpha", limit=None)]
            assert first == [r.snippet for r in store.search("alpha", limit=None)]
            assert not store._snippets_here(fts)  # two searches of 20 rows in 21 not ASCII
            assert first == [r.snippet for r in store.search("alpha", limit=None)]
            tries = [store._snippets_here(fts) for _ in range(store_module.SNIPPET_RETRY * 2)]
            chosen = [i for i, here in enumerate(tries) if here]
            assert 2 == len(chosen) and store_module.SNIPPET_RETRY == chosen[1] - chosen[0]

    def test_filter_led_searches(self, make_log_db: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
        """Searches led by a user's rows (matched in the in-memory table) and by the matches:
        the snippets FTS5 makes, for every order and limit."""
        texts = ["alpha bravo. charlie", "naïve alpha", "alpha: " + "word " * 30 + "bravo", "bravo only", "alpha\x00x"]
        rows = [make_row(texts[i % len(texts)], ts=BASE_TS + i, user_id=f"u{i % 3}",
                         fields='{"k": "alpha"}' if i % 4 == 0 else None) for i in range(60)]
        path = make_log_db(rows)
        for saved in ("PROBE_CAP", "LOOKUP_COST_BASE", "STEP_COST"):
            monkeypatch.setattr(_planner, saved, getattr(_planner, saved))

        def searches() -> list[list[tuple[int, str | None]]]:
            found = []
            with LogStore(path) as store:
                for query in ("alpha", "alpha bravo", "alpha OR bravo", "bravo -charlie", "alph*"):
                    for order in ("newest", "oldest", "rank"):
                        for limit in (1, 5, None):
                            found.append([(r.id, r.snippet) for r in store.search(
                                query, user_id="u1", order=order, limit=limit)])  # type: ignore[arg-type]
            return found

        drivers: list[str | None] = []
        made_here = LogStore._made_snippets

        def recording(store: LogStore, db: Any, selection: Any, rows: Any) -> Any:
            drivers.append(selection.driver)
            return made_here(store, db, selection, rows)

        monkeypatch.setattr(LogStore, "_made_snippets", recording)
        for filter_leads in (True, False):
            if filter_leads:
                _planner.PROBE_CAP, _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 20_000, 0.0, 1000.0
            else:
                _planner.LOOKUP_COST_BASE, _planner.STEP_COST = 1000.0, 0.001
            monkeypatch.setattr(store_module, "native_enabled", lambda: True)
            made = searches()
            monkeypatch.setattr(store_module, "native_enabled", lambda: False)
            assert searches() == made
            assert sum(len(found) for found in made) > 50
            assert ("logs" if filter_leads else "fts") in drivers
            drivers.clear()
