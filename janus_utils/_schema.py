"""The log database schema, its version and its migrations: defined here and nowhere else."""

from __future__ import annotations

import textwrap

import apsw

from ._fts import WIDE_GLOB
from .error_handling.db.errors import MigrationError

__all__ = [
    "COLUMNS",
    "ROLLUP_STATE_TABLE",
    "ROLLUP_TABLE",
    "SPAN_IDS",
    "SPAN_TABLE",
    "TERM_BITS_TABLE",
    "TERM_BLOCK_IDS",
    "TERM_BLOCKS_TABLE",
    "DECODED_COLUMNS",
    "META_TABLE",
    "SHIP_CURSOR_TABLE",
    "FTS_TABLE",
    "LEVEL_INDEX_FLOOR",
    "SCHEMA_VERSION",
    "TABLE",
    "USER_BUCKET_BITS",
    "USER_INDEX",
    "WIDE_INDEX_SQL",
    "WIDE_TABLE",
    "wide_index_sql",
    "apply_connection_settings",
    "database_id",
    "ensure_schema",
    "user_buckets_sql",
    "user_buckets_within",
    "user_match_sql",
]

TABLE = "logs"
FTS_TABLE = "logs_fts"
META_TABLE = "janus_meta"  # this database's identity (db_id) and other facts about it
SHIP_CURSOR_TABLE = "janus_ship_cursor"  # how far each sink (janus_utils.ship) has got
SCHEMA_VERSION = 11
WIDE_TABLE = "logs_wide"  # trigram index of the rows holding CJK or emoji (see _V_WIDE)
ROLLUP_TABLE = "janus_rollup"  # records counted per minute, level and logger (janus_utils._rollup)
ROLLUP_STATE_TABLE = "janus_rollup_state"  # how far the rollup has got
SPAN_TABLE = "janus_spans"  # the ts range of each run of ids (janus_utils._rollup)
SPAN_IDS = 16_384  # a span holds at most this many ids
TERM_BITS_TABLE = "janus_term_bits"  # a block's rows holding a frequent term (janus_utils._termbits)
# Ids per block of the term bitmaps: a bitmap of 2,000 bytes, two to a 4 KiB
# page (16,384 ids, 2,048 bytes, took a page each: twice the bytes a record).
TERM_BLOCK_IDS = 16_000
TERM_BLOCKS_TABLE = "janus_term_blocks"  # the blocks whose frequent terms have their bitmaps
# The level index holds only records at or above this level (WARNING).  SQLite
# uses a partial index only for a query that repeats its WHERE term as written,
# so every query meant for it says "level" >= 30 in those very words (a literal).
LEVEL_INDEX_FLOOR = 30

# A user's records are indexed by (id >> USER_BUCKET_BITS, user_id, ts): the
# newest 32,768 ids' entries sit together at the end of the index, so a batch
# dirties the few hundred leaves of its bucket, whatever the number of users
# and of rows.  (user_id, ts) dirtied the newest leaf of every user in the
# batch: ~1,700 pages a commit for 5,000 users, growing with the database
# until every user had a leaf of its own; ingest of the tenth million ran at
# 0.69x of the first.  A user's rows are read with one seek per bucket
# (user_match_sql): ~300 at ten million rows, some microseconds each.
USER_BUCKET_BITS = 15
USER_INDEX = f"{TABLE}_user_bucket"

# Column order of an inserted row (``id`` is assigned by SQLite).
COLUMNS: tuple[str, ...] = (
    "ts",  # UTC, integer nanoseconds since the epoch (OTel Timestamp)
    "level",  # stdlib number; OTel SeverityNumber via _levels.OTEL_SEVERITY
    "logger",  # logger / module name (OTel InstrumentationScope name)
    "message",  # formatted, redacted message (OTel Body)
    "user_id",
    "agent_id",
    "request_id",
    "trace_id",  # OTel TraceId, when given
    "span_id",  # OTel SpanId, when given
    "pid",
    "thread",
    "exception",  # formatted traceback text, or NULL
    "fields",  # every other field as a JSON object, or NULL (OTel Attributes)
    "service",  # the service that logged it (OTel service.name), from configure(service=...)
    "host",  # the machine it was logged on (OTel host.name)
)
# What a ring record decodes to (_record.decode_row, _speedups.decode_rows); the
# flusher appends service and host, which the process announced (_resource).
DECODED_COLUMNS = COLUMNS[:13]

_V1 = textwrap.dedent(
    f"""
    CREATE TABLE IF NOT EXISTS "{TABLE}" (
        -- AUTOINCREMENT: ids are never reused after a prune, so archives,
        -- tail cursors and imports always mean the same record by an id.
        "id" INTEGER PRIMARY KEY AUTOINCREMENT,
        "ts" INTEGER NOT NULL,
        "level" INTEGER NOT NULL,
        "logger" TEXT NOT NULL,
        "message" TEXT NOT NULL,
        "user_id" TEXT,
        "agent_id" TEXT,
        "request_id" TEXT,
        "trace_id" TEXT,
        "span_id" TEXT,
        "pid" INTEGER,
        "thread" TEXT,
        "exception" TEXT,
        "fields" TEXT
    );
    CREATE INDEX IF NOT EXISTS "{TABLE}_ts" ON "{TABLE}" ("ts");
    CREATE INDEX IF NOT EXISTS "{TABLE}_level_ts" ON "{TABLE}" ("level", "ts");
    CREATE INDEX IF NOT EXISTS "{TABLE}_logger_ts" ON "{TABLE}" ("logger", "ts");
    CREATE INDEX IF NOT EXISTS "{TABLE}_user_ts" ON "{TABLE}" ("user_id", "ts")
        WHERE "user_id" IS NOT NULL;
    CREATE INDEX IF NOT EXISTS "{TABLE}_agent_ts" ON "{TABLE}" ("agent_id", "ts")
        WHERE "agent_id" IS NOT NULL;
    CREATE INDEX IF NOT EXISTS "{TABLE}_request_ts" ON "{TABLE}" ("request_id", "ts")
        WHERE "request_id" IS NOT NULL;
    -- External-content index: the text lives once, in "{TABLE}".  It is filled
    -- once per batch by the flusher (INSERT ... SELECT), not by a trigger:
    -- a trigger was measured 2.8x slower and leaves one segment per row.
    CREATE VIRTUAL TABLE IF NOT EXISTS "{FTS_TABLE}" USING fts5(
        "message", "fields", "exception",
        content="{TABLE}", content_rowid="id", tokenize="unicode61"
    );
    INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}", "rank") VALUES ('crisismerge', 16);
    -- Where the flusher has got to in each ring file: the ring position after
    -- the last committed record.  Written in the same transaction as the rows,
    -- so a crash at any point neither loses nor repeats a record.
    CREATE TABLE IF NOT EXISTS "janus_ring_state" (
        "ring_id" TEXT PRIMARY KEY,
        "committed_upto" INTEGER NOT NULL
    );
    """
)

_V2 = textwrap.dedent(
    f"""
    -- Which service and host a record comes from, so that the logs of several
    -- hosts (and their archives) can be told apart.  Older rows keep NULL.
    ALTER TABLE "{TABLE}" ADD COLUMN "service" TEXT;
    ALTER TABLE "{TABLE}" ADD COLUMN "host" TEXT;
    CREATE INDEX IF NOT EXISTS "{TABLE}_service_ts" ON "{TABLE}" ("service", "ts")
        WHERE "service" IS NOT NULL;
    CREATE INDEX IF NOT EXISTS "{TABLE}_host_ts" ON "{TABLE}" ("host", "ts")
        WHERE "host" IS NOT NULL;
    -- Each process's service and host, as it announced them through the ring.
    CREATE TABLE IF NOT EXISTS "janus_processes" (
        "pid" INTEGER PRIMARY KEY,
        "service" TEXT,
        "host" TEXT,
        "announced_ts" INTEGER NOT NULL
    );
    -- This database's identity: archive names carry it, so archives of two
    -- databases never share a name, and an import knows whose ids it holds.
    CREATE TABLE IF NOT EXISTS "janus_meta" ("key" TEXT PRIMARY KEY, "value" TEXT NOT NULL);
    INSERT OR IGNORE INTO "janus_meta"("key", "value") VALUES ('db_id', lower(hex(randomblob(8))));
    """
)

_V3 = textwrap.dedent(
    f"""
    -- How far each sink (janus_utils.ship) has got.  Every id up to
    -- "shipped_upto" is acknowledged by the sink; "batch_upto" closes the
    -- batch in flight (shipped_upto < id <= batch_upto), written before it
    -- is sent, so a batch re-sent after a crash holds exactly the same rows.
    -- With the database's db_id ("{META_TABLE}") and a row's host and id, a
    -- record is named across a fleet.
    CREATE TABLE IF NOT EXISTS "{SHIP_CURSOR_TABLE}" (
        "sink" TEXT PRIMARY KEY,
        "shipped_upto" INTEGER NOT NULL DEFAULT 0,
        "batch_upto" INTEGER NOT NULL DEFAULT 0,
        "updated_ns" INTEGER NOT NULL DEFAULT 0,
        "state" TEXT NOT NULL DEFAULT 'new',
        "last_error" TEXT
    );
    """
)

_SEAL = textwrap.dedent(
    """
    -- The seal chain (janus_utils.seal): one entry per sealed batch, per new
    -- period key and one to start; written in the batch's own transaction.
    -- "hash" is the SHA-256 of the signed message, "prev" the previous
    -- entry's hash; "crcs" (4 bytes a row) only say which row changed.
    CREATE TABLE IF NOT EXISTS "janus_seal" (
        "seq" INTEGER PRIMARY KEY,
        "kind" TEXT NOT NULL,
        "key_no" INTEGER NOT NULL,
        "first_id" INTEGER NOT NULL,
        "last_id" INTEGER NOT NULL,
        "n_rows" INTEGER NOT NULL,
        "sealed_ns" INTEGER NOT NULL,
        "digest" BLOB NOT NULL,
        "crcs" BLOB NOT NULL,
        "prev" BLOB NOT NULL,
        "hash" BLOB NOT NULL,
        "sig" BLOB NOT NULL
    );
    """
)


# The columns a row is also indexed by trigrams for (see _wide_rows).
WIDE_COLUMNS = ("message", "fields", "exception")


def _wide_rows(row: str) -> str:
    # The GLOB class of _fts.WIDE_GLOB, quoted for SQL: the one definition of "needs it".
    # Bytes = characters for ASCII text (most rows): no GLOB runs for it.  Not
    # octet_length(): the trigger below runs in whatever SQLite deletes rows
    # (the sqlite3 shell, Python's sqlite3), and octet_length needs 3.43.
    pattern = "'" + WIDE_GLOB.replace("'", "''") + "'"
    return " OR ".join(
        f'(length(CAST({row}."{column}" AS BLOB)) > length({row}."{column}") AND {row}."{column}" GLOB {pattern})'
        for column in WIDE_COLUMNS
    )


_V_WIDE = textwrap.dedent(
    f"""
    -- unicode61 finds words between separators: CJK text, written without
    -- spaces, is one token per run (日本語 does not find 日本語のログ), and
    -- emoji are separators.  Rows holding such characters, and only those,
    -- are also indexed by trigrams, where a term holding one is looked up as
    -- a substring (janus_utils._fts.split_wide).  Contentless: the text is
    -- stored once, in "{TABLE}"; secure-delete: a deleted row's trigrams are
    -- gone from the index, not only unlinked.  Filled once per batch, as
    -- "{FTS_TABLE}" is (WIDE_INDEX_SQL: an AFTER INSERT trigger was measured
    -- to halve the insert rate); emptied by janus_utils.retention as it deletes
    -- rows (prune, erase), not by a trigger that would need SQLite 3.43 in
    -- every program that deletes a row.
    CREATE VIRTUAL TABLE IF NOT EXISTS "{WIDE_TABLE}" USING fts5(
        "message", "fields", "exception", content='', contentless_delete=1, tokenize='trigram'
    );
    INSERT INTO "{WIDE_TABLE}"("{WIDE_TABLE}", "rank") VALUES ('secure-delete', 1);
    INSERT INTO "{WIDE_TABLE}"("rowid", "message", "fields", "exception")
    SELECT "id", "message", "fields", "exception" FROM "{TABLE}" WHERE {_wide_rows(f'"{TABLE}"')};
    """
)

# After a batch of rows with ids above ? was inserted: index those that need
# trigrams.  Run by every writer that inserts rows (the flusher, archive
# import) right after it fills "logs_fts", in the same transaction.
def wide_index_sql(where: str) -> str:
    """Index in "logs_wide" the rows matching *where* (SQL on "logs") that need trigrams."""
    return (
        f'INSERT INTO "{WIDE_TABLE}"("rowid", "message", "fields", "exception") '
        f'SELECT "id", "message", "fields", "exception" FROM "{TABLE}" '
        f'WHERE ({where}) AND ({_wide_rows(chr(34) + TABLE + chr(34))})'
    )


WIDE_INDEX_SQL = wide_index_sql('"id" > ?')


# A row the rollup counts by its values: anything else (a damaged or foreign
# row) is only counted in "irregular", which sends readers the exact way.
_REGULAR = "typeof({row}.\"ts\") = 'integer' AND typeof({row}.\"level\") = 'integer' AND typeof({row}.\"logger\") = 'text'"
# ts // 60 s, rounding down for ts before the epoch as well.
_MINUTE = "({row}.\"ts\" / 60000000000 - ({row}.\"ts\" % 60000000000 < 0))"


def _rollup_change(row: str, sign: str) -> str:
    """The trigger statements that add (sign "+") or take away ("-") one row's count."""
    regular = _REGULAR.format(row=row)
    minute = _MINUTE.format(row=row)
    # The id range only widens: a bound for a search, never an exact range.
    return textwrap.dedent(
        f"""
        INSERT INTO "{ROLLUP_TABLE}"("minute", "level", "logger", "n", "min_id", "max_id")
            SELECT {minute}, {row}."level", {row}."logger", {sign}1, {row}."id", {row}."id" WHERE {regular}
            ON CONFLICT DO UPDATE SET "n" = "n" {sign} 1,
                "min_id" = min("min_id", excluded."min_id"), "max_id" = max("max_id", excluded."max_id");
        UPDATE "{ROLLUP_STATE_TABLE}" SET "value" = "value" {sign} 1
            WHERE "key" = 'irregular' AND NOT ({regular});
        """
    )


_COVERED = f"""(SELECT "value" FROM "{ROLLUP_STATE_TABLE}" WHERE "key" = 'covered_upto')"""

_ROLLUP = textwrap.dedent(
    f"""
    -- Records counted per minute, level and logger, so that count() and
    -- histogram() over millions of rows read thousands.  It counts the rows
    -- with an id up to covered_upto: the flusher adds each batch in its
    -- transaction (one GROUP BY, then covered_upto moves); retention counts
    -- what it deletes and an import what it restores below the mark, as both
    -- tell the full-text index (janus_utils._rollup); a trigger counts an
    -- edit.  Rows above the mark are counted from "{TABLE}".  No insert or
    -- delete trigger: measured, an insert trigger costs 40% of a commit even
    -- when its WHEN is false, a delete trigger 80% of a DELETE.
    CREATE TABLE IF NOT EXISTS "{ROLLUP_TABLE}" (
        "minute" INTEGER NOT NULL,  -- ts // 60 s
        "level" INTEGER NOT NULL,
        "logger" TEXT NOT NULL,
        "n" INTEGER NOT NULL,
        -- Every row of the group ever counted has an id in this range: how a
        -- time range bounds a walk of the full-text index by id.
        "min_id" INTEGER NOT NULL,
        "max_id" INTEGER NOT NULL,
        PRIMARY KEY ("minute", "level", "logger")
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS "{ROLLUP_STATE_TABLE}" ("key" TEXT PRIMARY KEY, "value" INTEGER NOT NULL);
    -- irregular: rows below the mark whose ts, level or logger has the wrong
    -- type (written by something else); while there is one, readers count exactly.
    INSERT OR IGNORE INTO "{ROLLUP_STATE_TABLE}"("key", "value") VALUES ('covered_upto', 0), ('irregular', 0);
    -- The rows already stored (seconds per ten million, once).
    INSERT INTO "{ROLLUP_TABLE}"("minute", "level", "logger", "n", "min_id", "max_id")
        SELECT {_MINUTE.format(row=f'"{TABLE}"')}, "level", "logger", count(*), min("id"), max("id") FROM "{TABLE}"
        WHERE {_REGULAR.format(row=f'"{TABLE}"')} GROUP BY 1, 2, 3;
    UPDATE "{ROLLUP_STATE_TABLE}" SET "value" = (
        SELECT count(*) FROM "{TABLE}" WHERE NOT ({_REGULAR.format(row=f'"{TABLE}"')})) WHERE "key" = 'irregular';
    UPDATE "{ROLLUP_STATE_TABLE}" SET "value" = (SELECT coalesce(max("id"), 0) FROM "{TABLE}")
        WHERE "key" = 'covered_upto';
    -- The flusher merges the full-text index while idle ('merge', janus_utils._flusher):
    -- any level with two segments, so that a lookup seeks few segments.
    INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}", "rank") VALUES ('usermerge', 2);
    CREATE TRIGGER IF NOT EXISTS "{TABLE}_rollup_update" AFTER UPDATE OF "id", "ts", "level", "logger" ON "{TABLE}"
    WHEN OLD."id" <= {_COVERED} OR NEW."id" <= {_COVERED}
    BEGIN {_rollup_change("OLD", "-")} {_rollup_change("NEW", "+")} END;
    """
)

_FTS_NO_COLUMNSIZE = textwrap.dedent(
    f"""
    -- The full-text index without its per-row token counts (columnsize=0):
    -- 12 of some 300 bytes a record.  Only order="rank" (bm25) reads them,
    -- and it now tokenizes the matching rows' text instead.  Rebuilt from
    -- "{TABLE}" (a minute or so per ten million rows, once); its settings
    -- are set again.
    DROP TABLE IF EXISTS "{FTS_TABLE}";
    CREATE VIRTUAL TABLE "{FTS_TABLE}" USING fts5(
        "message", "fields", "exception",
        content="{TABLE}", content_rowid="id", tokenize="unicode61", columnsize=0
    );
    INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}", "rank") VALUES ('crisismerge', 16);
    INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}", "rank") VALUES ('usermerge', 2);
    INSERT INTO "{FTS_TABLE}"("{FTS_TABLE}") VALUES ('rebuild');
    """
)

_USER_BUCKETS = textwrap.dedent(
    f"""
    -- A user's records by id bucket first (see USER_BUCKET_BITS): ingest no
    -- longer writes a leaf per user per commit.  Built from "{TABLE}"
    -- (seconds per million rows, once).
    DROP INDEX IF EXISTS "{TABLE}_user_ts";
    CREATE INDEX IF NOT EXISTS "{USER_INDEX}" ON "{TABLE}" (("id" >> {USER_BUCKET_BITS}), "user_id", "ts")
        WHERE "user_id" IS NOT NULL;
    """
)

_SPANS = textwrap.dedent(
    f"""
    -- The lowest and highest ts of each run of at most {SPAN_IDS} ids: how a
    -- time range bounds a walk by id (a search's full-text matches) to within
    -- a run at each end, where the rollup's minutes hold a million ids on a
    -- busy server.  A span holds the real minimum and maximum of its rows, so
    -- the bound is exact however the ts are ordered (late records, imports of
    -- old ones).  Like the rollup it covers the ids up to covered_upto: the
    -- flusher writes each batch's span in its transaction, an import its
    -- rows below the mark (janus_utils._rollup); a deleted row leaves its
    -- span as it was (a bound only widens), a trigger widens the span of an
    -- edited row.  No column type: the ts as stored, so that a span compares
    -- with a bound as its rows do.
    CREATE TABLE IF NOT EXISTS "{SPAN_TABLE}" (
        "min_id" INTEGER PRIMARY KEY,
        "max_id" INTEGER NOT NULL,
        "min_ts",
        "max_ts"
    );
    -- The rows already stored (seconds per ten million, once).
    INSERT INTO "{SPAN_TABLE}"("min_id", "max_id", "min_ts", "max_ts")
        SELECT min("id"), max("id"), min("ts"), max("ts") FROM "{TABLE}" WHERE "id" <= {_COVERED}
        GROUP BY "id" / {SPAN_IDS};
    CREATE TRIGGER IF NOT EXISTS "{TABLE}_spans_update" AFTER UPDATE OF "id", "ts" ON "{TABLE}"
    WHEN NEW."id" <= {_COVERED}
    BEGIN
        INSERT INTO "{SPAN_TABLE}"("min_id", "max_id", "min_ts", "max_ts") VALUES (NEW."id", NEW."id", NEW."ts", NEW."ts")
            ON CONFLICT DO UPDATE SET "max_id" = max("max_id", excluded."max_id"),
                "min_ts" = min("min_ts", excluded."min_ts"), "max_ts" = max("max_ts", excluded."max_ts");
    END;
    """
)

_LEVEL_INDEX_PARTIAL = textwrap.dedent(
    f"""
    -- The level index without the INFO and DEBUG records: the bulk of a log,
    -- which a level filter never narrows (a search for INFO and above walks
    -- the time index), while WARNING and above are the few a level filter
    -- looks for.  20 of some 270 bytes a record.
    DROP INDEX IF EXISTS "{TABLE}_level_ts";
    CREATE INDEX "{TABLE}_level_ts" ON "{TABLE}" ("level", "ts") WHERE "level" >= {LEVEL_INDEX_FLOOR};
    """
)

_WORDS = textwrap.dedent(
    f"""
    -- Each row's word signature (janus_utils._words), in the user index: a
    -- search led by a user rejects the rows that cannot hold its words from
    -- the index alone, without reading them.  Rows stored before hold NULL,
    -- which passes every test (no backfill: new rows make it pay).  The user
    -- index is rebuilt with it (seconds per million rows, once).  A signed
    -- row whose text is edited afterwards gets -1, which also passes (a NULL
    -- one stays NULL).
    ALTER TABLE "{TABLE}" ADD COLUMN "words" INTEGER;
    DROP INDEX IF EXISTS "{USER_INDEX}";
    CREATE INDEX "{USER_INDEX}" ON "{TABLE}" (("id" >> {USER_BUCKET_BITS}), "user_id", "ts", "words")
        WHERE "user_id" IS NOT NULL;
    CREATE TRIGGER IF NOT EXISTS "{TABLE}_words_update" AFTER UPDATE OF "message", "fields", "exception" ON "{TABLE}"
    WHEN NEW."words" IS NOT NULL AND NEW."words" <> -1
    BEGIN UPDATE "{TABLE}" SET "words" = -1 WHERE "id" = NEW."id"; END;
    """
)

_SPAN_HOSTS = textwrap.dedent(
    f"""
    -- The host index goes (23 of some 255 bytes a record): the store is
    -- local to a host, so nearly every row of a database has the same host
    -- and the index told a host filter little but its order.  Each span
    -- keeps instead the one host of its rows (NULL: several, or unknown), so
    -- a host filter reads only the spans that may hold that host, and the
    -- rows past covered_upto (janus_utils.store).  The rows' hosts are
    -- checked on the rows as before: a span only says where to look.
    -- Filled from "{TABLE}" (seconds per ten million rows, once).  A row
    -- whose host or id is edited makes the spans that hold its new id
    -- "several" unless they have its host; the span it leaves stays right.
    -- (A moved row also gets a span of its own from "{TABLE}_spans_update".)
    DROP INDEX IF EXISTS "{TABLE}_host_ts";
    ALTER TABLE "{SPAN_TABLE}" ADD COLUMN "host";
    UPDATE "{SPAN_TABLE}" SET "host" = (
        SELECT CASE WHEN min("host") = max("host") THEN min("host") END FROM "{TABLE}"
        WHERE "id" BETWEEN "{SPAN_TABLE}"."min_id" AND "{SPAN_TABLE}"."max_id");
    CREATE TRIGGER IF NOT EXISTS "{TABLE}_spans_host" AFTER UPDATE OF "id", "host" ON "{TABLE}"
    WHEN (NEW."host" IS NOT OLD."host" OR NEW."id" <> OLD."id") AND NEW."id" <= {_COVERED}
    BEGIN
        UPDATE "{SPAN_TABLE}" SET "host" = NULL
        WHERE "min_id" <= NEW."id" AND "max_id" >= NEW."id" AND "host" IS NOT NEW."host";
    END;
    """
)

_TERM_BITS = textwrap.dedent(
    f"""
    -- For each block of {TERM_BLOCK_IDS} ids (block = id / {TERM_BLOCK_IDS}) below
    -- covered_upto, the terms held by at least one row in eight of the
    -- block's ids, each with the exact bitmap of the block's rows that
    -- "{FTS_TABLE}" finds for it (bit i: id block * {TERM_BLOCK_IDS} + i): count()
    -- of common terms ANDs and counts bits instead of walking doclists of
    -- millions (janus_utils._termbits).  The flusher builds a block's
    -- bitmaps as its last batch commits, or when idle, from the rows' text
    -- read as the index reads it, and lists the block in "{TERM_BLOCKS_TABLE}"; a reader trusts only
    -- the blocks listed there and asks the index for the rest.  Retention's
    -- deletes and an import's rows take their blocks off the list, as they
    -- tell the rollup (janus_utils._rollup); an edit of a row's id or text,
    -- by a trigger.  Empty until the flusher has caught up: no backfill here.
    CREATE TABLE IF NOT EXISTS "{TERM_BLOCKS_TABLE}" (
        "block" INTEGER PRIMARY KEY,
        "stamp" INTEGER NOT NULL  -- new at each build: a reader's cached counts go by it
    );
    CREATE TABLE IF NOT EXISTS "{TERM_BITS_TABLE}" (
        "block" INTEGER NOT NULL,
        "term" TEXT NOT NULL,
        "bits" BLOB NOT NULL,  -- little-endian bit order, trailing zero bytes left off
        PRIMARY KEY ("block", "term")
    );
    CREATE TRIGGER IF NOT EXISTS "{TABLE}_term_bits_update"
    AFTER UPDATE OF "id", "message", "fields", "exception" ON "{TABLE}"
    BEGIN
        DELETE FROM "{TERM_BLOCKS_TABLE}" WHERE "block" IN (OLD."id" / {TERM_BLOCK_IDS}, NEW."id" / {TERM_BLOCK_IDS});
        DELETE FROM "{TERM_BITS_TABLE}" WHERE "block" IN (OLD."id" / {TERM_BLOCK_IDS}, NEW."id" / {TERM_BLOCK_IDS});
    END;
    """
)

# MIGRATIONS[n] takes a database from user_version n to n + 1.
MIGRATIONS: dict[int, str] = {
    0: _V1, 1: _V2, 2: _V3, 3: _SEAL, 4: _V_WIDE, 5: _ROLLUP, 6: _FTS_NO_COLUMNSIZE, 7: _USER_BUCKETS,
    8: _SPANS + _LEVEL_INDEX_PARTIAL, 9: _WORDS + _SPAN_HOSTS, 10: _TERM_BITS,
}


def user_buckets_sql(low: str, high: str) -> str:
    """A subquery listing the user index's buckets from the one holding id *low* to *high* (SQL)."""
    bits = USER_BUCKET_BITS
    return (
        f"(WITH RECURSIVE \"janus_bucket\"(\"b\") AS (SELECT ({low}) >> {bits} UNION ALL "
        f"SELECT \"b\" + 1 FROM \"janus_bucket\" WHERE \"b\" < ({high}) >> {bits}) SELECT \"b\" FROM \"janus_bucket\")"
    )


# The lowest and highest id: two subqueries, each one lookup (min() and max()
# in one SELECT read every row).
ID_SPAN_SQL = f'SELECT (SELECT min("id") FROM "{TABLE}"), (SELECT max("id") FROM "{TABLE}")'
# Every bucket of USER_INDEX, from the lowest id's to the highest's: where user_match_sql seeks.
EVERY_USER_BUCKET = user_buckets_sql(f'SELECT min("id") FROM "{TABLE}"', f'SELECT max("id") FROM "{TABLE}"')


def user_match_sql(row: str = f'"{TABLE}"') -> str:
    """``user_id = ?`` for the *row* of "logs", written so that SQLite seeks the user in each
    bucket of USER_INDEX (one seek each) rather than reading every row."""
    return f'({row}."user_id" = ? AND ({row}."id" >> {USER_BUCKET_BITS}) IN {EVERY_USER_BUCKET})'


def user_buckets_within(sql: str, low: int, high: int) -> str:
    """*sql* with each user condition (user_match_sql) kept to the buckets of ids *low* to
    *high*: ints written into the text, so the statement's parameters stay as they were."""
    return sql.replace(EVERY_USER_BUCKET, user_buckets_sql(str(int(low)), str(int(high))))


def database_id(db: apsw.Connection) -> str | None:
    """The database's random identity (16 hex digits), or None before schema version 2."""
    try:
        rows = db.execute("""SELECT "value" FROM "janus_meta" WHERE "key" = 'db_id'""").fetchall()
    except apsw.SQLError:
        return None
    return str(rows[0][0]) if rows else None


def apply_connection_settings(
    db: apsw.Connection, *, busy_timeout_ms: int = 5000, synchronous: str = "NORMAL"
) -> None:
    """WAL, NORMAL sync (FULL for audit logs), a busy timeout: every janus connection's settings."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
    db.setbusytimeout(busy_timeout_ms)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA foreign_keys=ON")


def ensure_schema(db: apsw.Connection) -> int:
    """Create or migrate the schema to SCHEMA_VERSION; returns the version found before."""
    found = db.execute("PRAGMA user_version").fetchall()[0][0]
    if found > SCHEMA_VERSION:
        raise MigrationError(
            f"this database has log schema version {found}, newer than this "
            f"janus_utils understands ({SCHEMA_VERSION}): upgrade janus_utils"
        )
    if found == SCHEMA_VERSION:
        return found
    with db:  # one transaction: a migration applies whole or not at all
        version = db.execute("PRAGMA user_version").fetchall()[0][0]
        while version < SCHEMA_VERSION:
            db.execute(MIGRATIONS[version])
            version += 1
            db.execute(f"PRAGMA user_version={version}")
    return found
