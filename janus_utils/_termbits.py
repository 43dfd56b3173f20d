"""Per-block bitmaps of frequent terms: how count() of common words avoids walking their doclists.

FTS5 counts an AND of two words by walking both doclists: two words each in
a third of ten million rows are 6.8 million entries, some 250 ms, growing
with the database.  Here the ids are cut into blocks of BLOCK_IDS (block =
id // BLOCK_IDS); for each block below the rollup's covered_upto the
flusher stores the exact bitmap of the rows holding each term that at least
MIN_ROWS of them hold (table ``janus_term_bits``, the block then listed as
done in ``janus_term_blocks``; the schema is in _schema): the commit that
completes a block, from the rows in hand (:class:`Filling`), and idle turns
the blocks it could not (:func:`build`).  A count of words ANDs and counts
the done blocks' bitmaps (2,000 bytes each; a reader keeps each block's
count, :class:`Counts`) and asks the index only for the blocks where a word
has none and for the ids outside the done blocks, as ``rowid`` ranges,
which FTS5 seeks to.

Exact: the index holds the rows' text (the flusher, retention and import
keep the two in step), and a bitmap is built in the transaction that
stores it either from that text, where it is ASCII, split and folded as
unicode61 does (letters and digits, lower-cased: the reading of the word
signature, janus_utils._words), or else from the index's own answers, term
by term.  A block leaves the done list in the transaction of any change to
its rows that the library makes (retention's deletes and imports, through
:func:`forget`, as they tell the rollup; an edit of a row's id or text, by
a trigger).  The rows the flusher keeps for the block it fills
(:class:`Filling`) are dropped when another connection commits, and a block
is built from them only if all its ids are still there.  A change made with
plain SQL outside the library (a DELETE from the sqlite3 shell, an edit
that does not also update the index, an index rebuilt by hand) is not seen,
as for the rollup: update ``logs_fts`` with the rows, then
``DELETE FROM janus_term_blocks`` has the flusher build every block again.
An index with another tokenizer gets no bitmaps.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import apsw

from ._record import native_enabled, speedups
from ._schema import FTS_TABLE, ROLLUP_STATE_TABLE, TABLE, TERM_BITS_TABLE, TERM_BLOCK_IDS, TERM_BLOCKS_TABLE

__all__ = ["BLOCK_IDS", "MIN_ROWS", "Counts", "Filling", "build", "count", "forget", "plain_terms"]

BLOCK_IDS = TERM_BLOCK_IDS
# A term gets a block's bitmap when at least this many of its rows hold it
# (1 in 8 of the block's ids): a bitmap of BLOCK_IDS bits is then no bigger
# than the ids as 16-bit numbers, and rarer terms have short doclists,
# which the index walks quickly anyway.  Measured on the scale benchmark's
# rows (15 words in a third of the rows each, a status field): 17 bitmaps a
# block, some 2 bytes a record.
MIN_ROWS = BLOCK_IDS // 8
# Candidate terms are read from every SAMPLE_EVERY-th row of the block; a
# term gets its bitmap built when the sample says it may reach MIN_ROWS
# (with room for the sample's error: the bitmap's own count decides).
SAMPLE_EVERY = 32
_SAMPLE_FLOOR = MIN_ROWS // SAMPLE_EVERY * 7 // 8

_F = f'"{FTS_TABLE}"'
_ROWS_IN = f'SELECT count(*) FROM "{TABLE}" WHERE "id" BETWEEN ? AND ?'
_BITS = f'"{TERM_BITS_TABLE}"'
_BLOCKS = f'"{TERM_BLOCKS_TABLE}"'
_COVERED = f"""SELECT "value" FROM "{ROLLUP_STATE_TABLE}" WHERE "key" = 'covered_upto'"""
_BLOCK_ROWS = f'SELECT "id", "message", "fields", "exception" FROM "{TABLE}" WHERE "id" BETWEEN ? AND ?'
# Text another program stored that is not UTF-8 cannot be read as str: such a
# block is read as bytes, which only the index's own answers describe.
_BLOCK_BYTES = (
    'SELECT "id", CAST("message" AS BLOB), CAST("fields" AS BLOB), CAST("exception" AS BLOB) '
    f'FROM "{TABLE}" WHERE "id" BETWEEN ? AND ?'
)
_TERM_MAX = 64  # longer words get no bitmap (_speedups.term_bitmaps' limit)
_TERMS_PER_CALL = 64
_TERM_IDS = f'SELECT "rowid" FROM {_F} WHERE {_F} MATCH ? AND "rowid" BETWEEN ? AND ?'
# A word as unicode61 reads ASCII text: letters and digits, any case.  Words
# with other characters are left to the index (their folding is its own).
_WORD = re.compile(r"[0-9a-z]+")
_QUERY_TERM = re.compile(r'"([0-9A-Za-z]+)"')


_TOKENIZE = re.compile(r"""tokenize\s*=\s*('(?:[^']|'')*'|"(?:[^"]|"")*"|\w+)""", re.IGNORECASE)


def plain_tokenizer(db: apsw.Connection) -> bool:
    """Whether the full-text index reads text as unicode61 with its defaults (not porter,
    not separators=...): then a word's ASCII tokens are runs of letters and digits, folded."""
    found = db.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (FTS_TABLE,)).fetchall()
    tokenize = _TOKENIZE.findall(str(found[0][0]) if found else "")
    return all(value.strip("'\"").strip() == "unicode61" for value in tokenize)


def plain_terms(fts: str) -> list[str] | None:
    """The words of an FTS5 query that is only ``"word" AND "word" ...`` (ASCII letters and digits),
    lower-cased as the index folds them; None for any other query."""
    parts = fts.split(" AND ")
    terms = []
    for part in parts:
        found = _QUERY_TERM.fullmatch(part)
        if found is None:
            return None
        terms.append(found[1].lower())
    return sorted(set(terms))


# ------------------------------------------------------------------ bitmaps


def _pack(ids: Iterable[Sequence[int]], base: int) -> tuple[bytes, int]:
    """The bitmap of these (id,) rows, bit id - base (all within the block), and how many."""
    if native_enabled() and hasattr(speedups, "id_bitmap"):
        return speedups.id_bitmap(ids, base, BLOCK_IDS)  # type: ignore[union-attr, no-any-return]
    bits = bytearray(BLOCK_IDS // 8)
    n = 0
    for (row_id,) in ids:
        offset = row_id - base
        bits[offset >> 3] |= 1 << (offset & 7)
        n += 1
    return bytes(bits).rstrip(b"\0"), n


def _and_count(bitmaps: Sequence[bytes]) -> int:
    """How many bits are set in every one of these bitmaps."""
    if native_enabled() and hasattr(speedups, "and_count"):
        return speedups.and_count(bitmaps)  # type: ignore[union-attr, no-any-return]
    first, *rest = bitmaps
    value = int.from_bytes(first, "little")
    for bits in rest:
        value &= int.from_bytes(bits, "little")
    return value.bit_count()


# ------------------------------------------------------------------ the flusher's side


def _candidates(rows: Sequence[Sequence[object]], columns: Sequence[int] = (1, 2, 3)) -> list[str]:
    """Words that a sample of the block's rows (text at *columns*) says may be in MIN_ROWS of them."""
    found: Counter[str] = Counter()
    for row in rows[::SAMPLE_EVERY]:
        values = [row[i] for i in columns]
        text = " ".join(
            value.decode("utf-8", "replace") if type(value) is bytes else str(value) for value in values if value is not None
        )
        found.update(_WORD.findall(text.lower()))  # term counts: never fewer than rows
    return [term for term, n in found.items() if n >= _SAMPLE_FLOOR and len(term) <= _TERM_MAX]


def _from_rows(
    rows: list[tuple[object, ...]], low: int, terms: list[str], columns: tuple[int, ...] | None = None
) -> list[tuple[bytes, int]] | None:
    """Each term's bitmap and count read from the rows' text in C, as unicode61 reads ASCII
    (janus_utils._words); None without the extension or for text it cannot read exactly.
    Rows are (id, text...), or with *columns* the text at those indexes and ids from *low* on."""
    term_bitmaps = getattr(speedups, "term_bitmaps", None) if native_enabled() else None
    if term_bitmaps is None:
        return None
    found: list[tuple[bytes, int]] = []
    extra = () if columns is None else (columns, low)
    for start in range(0, len(terms), _TERMS_PER_CALL):
        part = term_bitmaps(rows, low, BLOCK_IDS, tuple(terms[start : start + _TERMS_PER_CALL]), *extra)
        if part is None:
            return None
        found.extend(part)
    return found


def _store(db: apsw.Connection, block: int, terms: list[str], found: list[tuple[bytes, int]]) -> int:
    stored = [(block, term, bits) for term, (bits, n) in zip(terms, found) if n >= MIN_ROWS]
    db.execute(f'DELETE FROM {_BITS} WHERE "block" = ?', (block,))
    db.executemany(f'INSERT INTO {_BITS}("block", "term", "bits") VALUES (?, ?, ?)', stored)
    # A new stamp for each build: what a reader's Counts go by (random: a block forgotten
    # and built again never gets its old one back, as a counter could).
    db.execute(f'INSERT OR REPLACE INTO {_BLOCKS}("block", "stamp") VALUES (?, random())', (block,))
    return len(stored)


def _build_block(db: apsw.Connection, block: int) -> int:
    """Store the bitmaps of block *block*'s frequent terms and mark it done (in the caller's
    transaction); how many bitmaps.  The index reads text as unicode61 does with its defaults
    (build() checks), so the rows' ASCII text is tokenized here; other text is looked up in
    the index term by term."""
    low = block * BLOCK_IDS
    high = low + BLOCK_IDS - 1
    try:
        rows = db.execute(_BLOCK_ROWS, (low, high)).fetchall()
    except UnicodeDecodeError:
        rows = db.execute(_BLOCK_BYTES, (low, high)).fetchall()
    terms = _candidates(rows) if len(rows) >= MIN_ROWS else []
    found = _from_rows(rows, low, terms) if terms else None
    if found is None:  # the index itself, a term at a time (some tens of ms a block)
        found = [_pack(db.execute(_TERM_IDS, (f'"{term}"', low, high)), low) for term in terms]
    return _store(db, block, terms, found)


class Filling:
    """The flusher's side during a burst: the rows of the block being filled, kept as they are
    committed, so that the batch completing a block builds its bitmaps from the rows in hand
    (a few ms a block, 1 to 2% of a commit's time) instead of leaving the block to the idle
    turns, which a long burst leaves no time for.  Only consecutive batches of rows whose text
    is read exactly count; any other commit makes it wait for the next block's start, and
    blocks it misses are left to build()."""

    def __init__(self, text_at: tuple[int, ...]) -> None:
        self._text_at = text_at  # where a row holds message, fields and exception
        self._rows: list[Sequence[object]] = []  # the rows from a block's first id on, as committed
        self._first = 0  # the id of self._rows[0]
        self._next = -1  # the id the next batch must start at to continue them
        self._usable: bool | None = None  # the tables exist and the index reads text plainly
        self._version: object = None  # PRAGMA data_version at the last batch

    def reset(self) -> None:
        """A commit these rows do not describe (rows one by one, another writer): start again."""
        self._rows, self._next = [], -1

    def add(self, db: apsw.Connection, rows: Sequence[Sequence[object]], first_id: int) -> int:
        """Rows *rows* were just inserted with ids first_id, first_id + 1, ... (in the caller's
        transaction, the rollup's mark moved past them): keep them, and store the bitmaps of
        each block they complete.  How many blocks were built."""
        if self._usable is None:
            self._usable = bool(
                db.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (TERM_BLOCKS_TABLE,)).fetchall()
            ) and plain_tokenizer(db) and native_enabled() and hasattr(speedups, "term_bitmaps")
        if not self._usable:
            return 0
        # Another connection committed since the last batch (a prune, an erase, an edit):
        # the rows in hand may no longer be what the table holds.
        version = db.execute("PRAGMA data_version").fetchall()[0][0]
        if version != self._version:
            self._version, self._rows = version, []
        if first_id != self._next or not self._rows:
            skip = -first_id % BLOCK_IDS  # a block is kept from its first id on
            self._rows, self._first = list(rows[skip:]), first_id + skip
        else:
            self._rows.extend(rows)  # references only: no row is copied
        self._next = first_id + len(rows)
        built = 0
        while len(self._rows) >= BLOCK_IDS:
            block_rows, self._rows = self._rows[:BLOCK_IDS], self._rows[BLOCK_IDS:]
            low, self._first = self._first, self._first + BLOCK_IDS
            # Every id of the block still there (this connection's own prune may have
            # deleted some since they were committed): else left to build().
            present = db.execute(_ROWS_IN, (low, low + BLOCK_IDS - 1)).fetchall()[0][0]
            if present != BLOCK_IDS:
                continue
            terms = _candidates(block_rows, self._text_at)
            found = _from_rows(block_rows, low, terms, self._text_at) if terms else []  # type: ignore[arg-type]
            if found is not None:  # None: text read otherwise than exactly, left to build()
                with db:  # a savepoint: a failure here costs the batch nothing
                    _store(db, low // BLOCK_IDS, terms, found)
                built += 1
        return built


def _next_block(db: apsw.Connection, done: set[int], start: int, last: int) -> int | None:
    """The oldest block from *start* to *last* that holds a row and is not done."""
    block = start
    while block <= last:
        if block in done:
            block += 1
            continue
        found = db.execute(f'SELECT min("id") FROM "{TABLE}" WHERE "id" >= ?', (block * BLOCK_IDS,)).fetchall()
        if found[0][0] is None:
            return None
        if found[0][0] // BLOCK_IDS == block:
            return block
        block = found[0][0] // BLOCK_IDS  # past a run of empty blocks at once
    return None


def build(db: apsw.Connection, wanted: Callable[[], bool], seconds: float) -> tuple[int, bool]:
    """Build blocks' bitmaps, oldest first, for up to *seconds* or until *wanted*() says
    the writer is needed; inside the caller's write transaction, which it should commit.
    How many blocks were built, and whether blocks are left to build."""
    covered = db.execute(_COVERED).fetchall()
    if not covered or type(covered[0][0]) is not int or not plain_tokenizer(db):
        return 0, False  # no mark to go by; or an index whose words count() does not read bitmaps for
    last = (covered[0][0] + 1) // BLOCK_IDS - 1  # the newest block wholly at or below the mark
    oldest = db.execute(f'SELECT min("id") FROM "{TABLE}"').fetchall()[0][0]
    if oldest is None or oldest // BLOCK_IDS > last:
        return 0, False
    done = {row[0] for row in db.execute(f'SELECT "block" FROM {_BLOCKS}')}
    started = time.monotonic()
    built = 0
    block = _next_block(db, done, oldest // BLOCK_IDS, last)
    while block is not None:
        _build_block(db, block)
        built += 1
        done.add(block)
        block = _next_block(db, done, block + 1, last)
        if block is None or wanted() or time.monotonic() - started >= seconds:
            break
    return built, block is not None


def forget(db: apsw.Connection, ids_json: str) -> None:
    """Take the blocks holding these ids (a JSON list) off the done list, with their bitmaps:
    their rows are about to change.  Inside the changing transaction; nothing on a database
    without the tables."""
    if not db.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (TERM_BLOCKS_TABLE,)).fetchall():
        return
    blocks = f'SELECT DISTINCT "value" / {BLOCK_IDS} FROM json_each(?)'
    db.execute(f'DELETE FROM {_BLOCKS} WHERE "block" IN ({blocks})', (ids_json,))
    db.execute(f'DELETE FROM {_BITS} WHERE "block" IN ({blocks})', (ids_json,))


# ------------------------------------------------------------------ the reader's side

_FTS_COUNT = f"SELECT count(*) FROM {_F} WHERE {_F} MATCH ?"
# The done blocks that have a bitmap of the term: one seek of the (block, term)
# key per done block (CROSS JOIN: never a scan of the bitmaps themselves).
_DONE_WITH = (
    f'SELECT {_BLOCKS}."block"{{bits}} FROM {_BLOCKS} CROSS JOIN {_BITS} '
    f'ON {_BITS}."block" = {_BLOCKS}."block" AND {_BITS}."term" = ?'
)
_DONE_HAVING = _DONE_WITH.format(bits="")
_DONE_BITS = _DONE_WITH.format(bits=f', {_BITS}."bits"')


_DONE_STAMPS = f'SELECT "block", "stamp" FROM {_BLOCKS}'
_BLOCK_BITS = f'SELECT "term", "bits" FROM {_BITS} WHERE "block" = ?'


class Counts:
    """A reader's counts of done blocks, as segment filter caches keep them: each block's
    count of rows holding a set of words, under the block's stamp (a new one each time the
    block is built), so that a count asked again ANDs only blocks built since.  At most
    MAX_QUERIES sets of words, the least recently asked dropped."""

    MAX_QUERIES = 64

    def __init__(self) -> None:
        # words -> block -> (stamp, rows holding them all, or None: a word has no bitmap there)
        self._known: dict[tuple[str, ...], dict[int, tuple[int, int | None]]] = {}

    def of(self, terms: tuple[str, ...]) -> dict[int, tuple[int, int | None]]:
        known = self._known.pop(terms, None)
        if known is None:
            known = {}
            while len(self._known) >= self.MAX_QUERIES:
                del self._known[next(iter(self._known))]
        self._known[terms] = known  # the newest at the end
        return known


def count(db: apsw.Connection, terms: Sequence[str], fts: str, counts: Counts | None = None) -> int:
    """How many rows the index matches for *fts*, the AND of *terms* (see plain_terms):
    bitmaps where every term has one, the index elsewhere.  One read transaction.
    *counts* keeps the done blocks' counts for the next call."""
    wanted = tuple(terms)
    known = (counts or Counts()).of(wanted)
    with db:
        stamps = dict(db.execute(_DONE_STAMPS).fetchall())
        for block in [block for block in known if block not in stamps]:
            del known[block]  # no longer done: read from the index
        fresh = [block for block, stamp in stamps.items() if known.get(block, (None,))[0] != stamp]
        if len(fresh) > 64:  # many: a seek per done block and word, then the bitmaps of the full ones
            _count_blocks(db, wanted, stamps, known)
        for block in fresh if len(fresh) <= 64 else ():
            found = dict(db.execute(_BLOCK_BITS, (block,)).fetchall())
            has = [found[term] for term in wanted if term in found]
            known[block] = (stamps[block], _and_count(has) if len(has) == len(wanted) else None)
        total = 0
        full = []
        for block, (_, n) in known.items():
            if n is not None:
                total += n
                full.append(block)
        # The index counts the ids outside the runs of full blocks.
        full.sort()
        low: int | None = None
        i = 0
        while i < len(full):
            j = i
            while j + 1 < len(full) and full[j + 1] == full[j] + 1:
                j += 1
            total += _range_count(db, fts, low, full[i] * BLOCK_IDS - 1)
            low = (full[j] + 1) * BLOCK_IDS
            i = j + 1
        total += _range_count(db, fts, low, None)
    return total


def _count_blocks(
    db: apsw.Connection, terms: tuple[str, ...], stamps: dict[int, int], known: dict[int, tuple[int, int | None]]
) -> None:
    """Every done block's count of rows holding all *terms* into *known*."""
    full: set[int] | None = None
    for term in terms:
        having = {row[0] for row in db.execute(_DONE_HAVING, (term,))}
        full = having if full is None else full & having
        if not full:
            break  # a term rare everywhere: the index alone, as quick as it gets
    bitmaps: dict[int, list[bytes]] = {block: [] for block in full or ()}
    if bitmaps:
        for term in terms:
            for block, bits in db.execute(_DONE_BITS, (term,)):
                if block in bitmaps:
                    bitmaps[block].append(bits)
    for block, stamp in stamps.items():
        known[block] = (stamp, _and_count(bitmaps[block]) if block in bitmaps else None)


def _range_count(db: apsw.Connection, fts: str, low: int | None, high: int | None) -> int:
    sql, params = _FTS_COUNT, [fts]
    if low is not None:
        sql += ' AND "rowid" >= ?'
        params.append(low)
    if high is not None:
        sql += ' AND "rowid" <= ?'
        params.append(high)
    return int(db.execute(sql, params).fetchall()[0][0])
