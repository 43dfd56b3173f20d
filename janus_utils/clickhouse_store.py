"""Search the records every host shipped into a ClickHouse table, with LogStore's API.

    with ju.ClickHouseStore("http://127.0.0.1:8123", "logs") as fleet:
        for rec in fleet.search("payment timeout", user_id="42", since="1h"):
            print(rec.host, rec.time, rec.level_name, rec.message)

``search``, ``count``, ``histogram`` and ``tail`` take the arguments of
:class:`janus_utils.store.LogStore` and give the same :class:`Record`
objects, with ``host`` set.  The query language is the same and is parsed
by the same code (``janus_utils._fts``); ClickHouse has no full-text index
that both 18.16 and current releases share, so each word becomes a
token-boundary regular expression over the lowercased message, fields and
exception.  Where the results can differ from a local search:

- case is folded, accents are not (FTS5's ``unicode61`` also matches
  ``cafe`` to ``café``);
- ``NEAR(a b)`` matches records that contain both, however far apart;
- ``order="rank"`` needs FTS5's ranking and is refused;
- a ``fields={"k": v}`` filter matches the first key ``k`` at any depth of
  the JSON (``visitParamExtractRaw``), not only at the top;
- ``id`` is the record's id in its own database; ``host`` is always set
  (the database's host for rows stored before records carried one).
  ``tail(cursor=...)`` takes a ``ts`` (nanoseconds), as ids of different
  hosts do not compare, and ``follow`` looks back ``lookback`` seconds for
  records that arrived late (shipping lag).
"""

from __future__ import annotations

import json
import time
import unicodedata
import urllib.parse
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Unpack

from ._fts import _Column, _Group, _Near, _Not, _Phrase, _Wide, parse_query
from ._levels import level_name, parse_level
from ._timeparse import TimeSpec, format_ts, parse_duration, parse_time, ts_datetime
from .error_handling.api.errors import UpstreamError
from .error_handling.utils.errors import SearchQueryError
from .ship._base import check_name, check_timeout
from .ship._http import Endpoint, HTTPClient, Retry, basic_auth, warn_plain_http
from .ship.clickhouse import parse_clickhouse_url
from .store import (
    HISTOGRAM_BY,
    HISTOGRAM_NONE,
    HISTOGRAM_OTHER,
    SNIPPET_ELLIPSIS,
    SNIPPET_END,
    SNIPPET_START,
    SNIPPET_WORDS,
    FieldValue,
    Filters,
    Histogram,
    IdValue,
    Order,
    Record,
    _check_limit,
    _parse_fields,
    _text,
)

__all__ = ["ClickHouseStore"]

_SELECT = (
    "host, service, db_id, id, ts, level, logger, message, user_id, agent_id, request_id, "
    "trace_id, span_id, pid, thread, exception, fields"
)
_NOT_TOKEN = r"[^\pL\pN]"  # re2: what separates FTS5 unicode61 tokens
_FTS_COLUMNS = ("message", "fields", "exception")
_HAYSTACK = {
    None: "lowerUTF8(concat(message, '\\n', ifNull(fields, ''), '\\n', ifNull(exception, '')))",
    "message": "lowerUTF8(message)",
    "fields": "lowerUTF8(ifNull(fields, ''))",
    "exception": "lowerUTF8(ifNull(exception, ''))",
}


def _lit(value: str) -> str:
    """A ClickHouse string literal: every backslash, quote and NUL escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\x00", "\\0") + "'"


def _token_chars(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "LN" or category == "Co"


def _tokens(text: str) -> list[str]:
    """The words FTS5's unicode61 tokenizer would make of *text*, lowercased."""
    words: list[str] = []
    current: list[str] = []
    for char in text:
        if _token_chars(char):
            current.append(char)
        elif current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return [word.lower() for word in words]


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if not c.isalnum() and c != "_" else c for c in text)


def _phrase_regex(phrase: _Phrase) -> str | None:
    words = _tokens(phrase.text)
    if not words:
        return None
    body = (_NOT_TOKEN + "+").join(_re2_escape(word) for word in words)
    end = "" if phrase.prefix else f"(?:{_NOT_TOKEN}|$)"
    return f"(?:^|{_NOT_TOKEN}){body}{end}"


class _Compiler:
    """The _fts syntax tree as a ClickHouse condition; collects the words for snippets."""

    def __init__(self) -> None:
        self.words: list[tuple[str, bool]] = []  # (lowercased word, prefix)

    def condition(self, node: Any, column: str | None = None) -> str:
        if isinstance(node, _Phrase):
            regex = _phrase_regex(node)
            if regex is None:
                return "0"
            self.words.extend((word, node.prefix) for word in _tokens(node.text))
            return f"match({_HAYSTACK[column]}, {_lit(regex)})"
        if isinstance(node, _Wide):
            # CJK or emoji: a substring, as LogStore's trigram index finds it.
            return f"position({_HAYSTACK[column]}, {_lit(node.text.lower())}) > 0"
        if isinstance(node, _Near):
            return "(" + " AND ".join(self.condition(phrase, column) for phrase in node.phrases) + ")"
        if isinstance(node, _Column):
            return self.condition(node.node, node.column)
        if isinstance(node, _Not):
            negatives = " OR ".join(_Compiler().condition(neg, column) for neg in node.negatives)
            return f"({self.condition(node.positive, column)} AND NOT ({negatives}))"
        if isinstance(node, _Group):
            joiner = " AND " if node.op == "AND" else " OR "
            return "(" + joiner.join(self.condition(child, column) for child in node.children) + ")"
        raise AssertionError(f"unknown query node {node!r}")


def _snippet(record: Record, words: list[tuple[str, bool]]) -> str | None:
    """About SNIPPET_WORDS words around the first hit, hits in SNIPPET_START/END, like FTS5's snippet()."""
    if not words:
        return None
    for text in (record.message, json.dumps(record.fields, ensure_ascii=False) if record.fields else "", record.exception or ""):
        parts = text.split()
        hits = [
            i
            for i, part in enumerate(parts)
            if any(
                (token.startswith(word) if prefix else token == word)
                for token in _tokens(part)
                for word, prefix in words
            )
        ]
        if not hits:
            continue
        start = max(0, hits[0] - SNIPPET_WORDS // 4)
        end = min(len(parts), start + SNIPPET_WORDS)
        shown = [f"{SNIPPET_START}{part}{SNIPPET_END}" if i in hits else part for i, part in enumerate(parts[start:end], start)]
        return (SNIPPET_ELLIPSIS if start else "") + " ".join(shown) + (SNIPPET_ELLIPSIS if end < len(parts) else "")
    return None


class ClickHouseStore:
    """A read-only view of a ClickHouse table that janus shipped into (``ship.ClickHouseExporter``).

    *url* is a server's HTTP interface (``http://host:8123``), a list of
    replicas tried in turn, or ``clickhouse://host:8123/database.table``.
    Every method raises SearchQueryError for a bad argument and
    UpstreamError when the server cannot be reached or refuses the query.
    """

    def __init__(
        self,
        url: str | Sequence[str] = "http://127.0.0.1:8123",
        table: str = "logs",
        *,
        database: str = "default",
        user: str | None = None,
        password: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        ca_file: str | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> None:
        if scope:
            # LogStore's scope is enforced in its SQL; this store's queries
            # are not built that way yet, so it refuses rather than widen.
            raise SearchQueryError(
                "ClickHouseStore does not support scope= yet: read scoped records with "
                "LogStore(path, scope=...), or grant ClickHouse row policies"
            )
        if isinstance(url, str) and url.startswith("clickhouse"):
            options = parse_clickhouse_url(url)
            url = options["url"]
            table, database = options["table"], options["database"]
            user = user or options.get("user")
            password = password or options.get("password")
        if "." in table and database == "default":
            database, table = table.split(".", 1)
        self.database = check_name(database, "database")
        self.table = check_name(table, "table")
        endpoints = []
        for one in [url] if isinstance(url, str) else list(url):
            endpoint, url_user, url_password = Endpoint.parse(one, default_port=8123, tls_port=8443, what="ClickHouse url")
            endpoints.append(endpoint)
            user, password = user or url_user, password or url_password
            warn_plain_http(endpoint, "ClickHouse server")
        self._client: HTTPClient | None = HTTPClient(
            endpoints,
            headers={**basic_auth(user, password), **dict(headers or {})},
            timeout=check_timeout(timeout),
            ca_file=ca_file,
        )
        self.where = f"`{self.database}`.`{self.table}`"

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> ClickHouseStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ClickHouseStore {self.where}>"

    # ------------------------------------------------------------ queries
    def _rows(self, sql: str) -> list[dict[str, Any]]:
        if self._client is None:
            raise UpstreamError(f"this ClickHouseStore ({self.where}) is closed", service="clickhouse")
        params = urllib.parse.urlencode({"query": sql + " FORMAT JSONEachRow", "output_format_json_quote_64bit_integers": "0"})
        tries = len(self._client.endpoints)
        for attempt in range(tries):
            try:
                response = self._client.post("/?" + params, b"")
                break
            except Retry as err:
                if attempt == tries - 1:
                    raise UpstreamError(f"cannot query ClickHouse: {err}", service="clickhouse") from None
        body = response.body.decode("utf-8", "replace")
        if response.status != 200:
            message = " ".join(body.split())[:400]
            raise UpstreamError(f"ClickHouse refused the query on {self.where}: {message}", service="clickhouse")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def _conditions(self, query: str | None, raw: bool, filters: Mapping[str, Any]) -> tuple[list[str], _Compiler | None]:
        unknown = sorted(set(filters) - set(Filters.__annotations__))
        if unknown:
            raise TypeError(f"unknown filter {', '.join(unknown)}: use {', '.join(Filters.__annotations__)}")
        where: list[str] = []
        level = filters.get("level")
        if level is not None:
            try:
                where.append(f"level >= {parse_level(level)}")
            except ValueError as exc:
                raise SearchQueryError(str(exc), details={"level": repr(level)}) from exc
        logger = filters.get("logger")
        if logger is not None:
            name = _text(logger, "logger").rstrip(".")
            if not name:
                raise SearchQueryError("logger must be a logger name like 'app' or 'app.db'")
            where.append(f"(logger = {_lit(name)} OR startsWith(logger, {_lit(name + '.')}))")
        for column in ("user_id", "agent_id", "request_id", "trace_id", "service", "host"):
            wanted = filters.get(column)
            if wanted is not None:
                value = _lit(_text(wanted, column))
                where.append(f"{column} = {value}")
                if column == "user_id":  # the form the sorting key has: lets the index skip
                    where.append(f"ifNull(user_id, '') = {value}")
        now = datetime.now(timezone.utc)
        since, until = filters.get("since"), filters.get("until")
        low = parse_time(since, now=now) if since is not None else None
        high = parse_time(until, now=now) if until is not None else None
        if low is not None and high is not None and low >= high:
            raise SearchQueryError(f"since ({format_ts(low)}) must be before until ({format_ts(high)})")
        if low is not None:
            # time (whole seconds, in the partition and sorting keys) prunes; ts decides.
            where.append(f"ts >= {low} AND time >= toDateTime({low // 1_000_000_000})")
        if high is not None:
            where.append(f"ts < {high} AND time <= toDateTime({-(-high // 1_000_000_000)})")
        fields = filters.get("fields")
        if fields:
            if not isinstance(fields, Mapping):
                raise SearchQueryError("fields must be a mapping like {'status': 500}")
            for key, value in fields.items():
                where.append(self._field_condition(key, value))
        compiler = None
        if query is not None:
            if not isinstance(query, str):
                raise SearchQueryError(f"query must be text, not {type(query).__name__}")
            if query.strip():
                _text(query, "query")
                tree, excluded = parse_query(query, _FTS_COLUMNS)
                compiler = _Compiler()
                if tree is not None:
                    where.append(compiler.condition(tree))
                elif excluded:  # -debug, NOT health: every record but these
                    where.append("NOT (" + " OR ".join(_Compiler().condition(node) for node in excluded) + ")")
                else:
                    where.append("0")
        return where, compiler

    @staticmethod
    def _field_condition(key: object, value: object) -> str:
        if not isinstance(key, str):
            raise SearchQueryError(f"field names must be text, not {type(key).__name__}")
        _text(key, "field name")
        if json.dumps(key, ensure_ascii=False)[1:-1] != key:
            raise SearchQueryError(f"field name {key!r} has a quote, backslash or control character: filter on another field")
        raw = f"replaceRegexpOne(visitParamExtractRaw(ifNull(fields, ''), {_lit(key)}), '^\\\\s+', '')"
        if value is None:
            return f"{raw} = 'null'"
        if isinstance(value, bool):
            return f"{raw} = {_lit('true' if value else 'false')}"
        if isinstance(value, (int, float)):
            return f"(match({raw}, '^-?[0-9]') AND toFloat64OrNull({raw}) = {float(value)!r})"
        if isinstance(value, str):
            encoded = json.encoder.encode_basestring(_text(value, f"fields[{key!r}]"))  # type: ignore[attr-defined]
            return f"{raw} = {_lit(encoded)}"
        raise SearchQueryError(
            f"fields[{key!r}] must be text, a number, true/false or None, not {type(value).__name__}"
        )

    def _sql(self, columns: str, where: list[str], tail: str = "") -> str:
        sql = f"SELECT {columns} FROM {self.where}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return sql + tail

    @staticmethod
    def _record(row: dict[str, Any], compiler: _Compiler | None = None) -> Record:
        fields_text = row.get("fields")
        record = Record(
            id=int(row["id"]),
            ts=int(row["ts"]),
            level=int(row["level"]),
            logger=row["logger"],
            message=row["message"],
            user_id=row.get("user_id"),
            agent_id=row.get("agent_id"),
            request_id=row.get("request_id"),
            trace_id=row.get("trace_id"),
            span_id=row.get("span_id"),
            pid=None if row.get("pid") is None else int(row["pid"]),
            thread=row.get("thread"),
            exception=row.get("exception"),
            fields=_parse_fields(fields_text),
            service=row.get("service"),
            host=row.get("host"),
        )
        if compiler is not None:
            snippet = _snippet(record, compiler.words)
            if snippet is not None:
                record = _with_snippet(record, snippet)
        return record

    # ------------------------------------------------------------ public API
    def search(
        self,
        query: str | None = None,
        *,
        level: int | str | None = None,
        logger: str | None = None,
        user_id: IdValue | None = None,
        agent_id: IdValue | None = None,
        request_id: IdValue | None = None,
        service: str | None = None,
        host: str | None = None,
        trace_id: str | None = None,
        since: TimeSpec | None = None,
        until: TimeSpec | None = None,
        fields: Mapping[str, FieldValue] | None = None,
        limit: int | None = 100,
        order: Order = "newest",
        raw: bool = False,
    ) -> list[Record]:
        """The records matching *query* and every filter, newest (or oldest) first, *limit* of them."""
        _check_limit(limit, "limit", none_ok=True)
        if order == "rank":
            raise SearchQueryError(
                "order='rank' needs the local full-text index: ClickHouse results come "
                "newest or oldest first"
            )
        if order not in ("newest", "oldest"):
            raise SearchQueryError(f"order must be one of newest, oldest, rank, not {order!r}")
        where, compiler = self._conditions(
            query,
            raw,
            dict(
                level=level, logger=logger, user_id=user_id, agent_id=agent_id, request_id=request_id,
                service=service, host=host, trace_id=trace_id, since=since, until=until, fields=fields,
            ),
        )
        if limit == 0:
            return []
        direction = "DESC" if order == "newest" else "ASC"
        tail = f" ORDER BY ts {direction}, host {direction}, db_id {direction}, id {direction}"
        if limit is not None:
            tail += f" LIMIT {limit}"
        return [self._record(row, compiler) for row in self._rows(self._sql(_SELECT, where, tail))]

    def count(self, query: str | None = None, *, raw: bool = False, **filters: Unpack[Filters]) -> int:
        """How many records match, over every host."""
        where, _ = self._conditions(query, raw, filters)
        rows = self._rows(self._sql("count() AS n", where))
        return int(rows[0]["n"]) if rows else 0

    def histogram(
        self,
        bucket: str = "1h",
        by: str = "level",
        *,
        query: str | None = None,
        raw: bool = False,
        top: int = 10,
        **filters: Unpack[Filters],
    ) -> Histogram:
        """Counts per time bucket and value of *by*, as LogStore.histogram."""
        column = HISTOGRAM_BY.get(by)
        if column is None:
            raise SearchQueryError(f"by must be one of {', '.join(HISTOGRAM_BY)}, not {by!r}")
        width = parse_duration(bucket) if isinstance(bucket, str) else 0
        if width <= 0:
            raise SearchQueryError(f"bucket must be a duration like '1m', '1h' or '1d', not {bucket!r}")
        _check_limit(top, "top")
        where, _ = self._conditions(query, raw, filters)
        start = f"(ts - ((ts % {width}) + {width}) % {width})"
        rows = self._rows(self._sql(f"{start} AS bucket_start, {column} AS value, count() AS n", where, " GROUP BY bucket_start, value"))
        # The same folding as LogStore.histogram: top values by total, the rest as HISTOGRAM_OTHER.
        totals: dict[str, int] = {}
        named: list[tuple[int, str, int]] = []
        for row in rows:
            raw_value, number = row["value"], int(row["n"])
            if raw_value is None:
                name = HISTOGRAM_NONE
            elif by == "level":
                name = level_name(int(raw_value))
            else:
                name = str(raw_value)
            totals[name] = totals.get(name, 0) + number
            named.append((int(row["bucket_start"]), name, number))
        kept = set(sorted(totals, key=lambda name: (-totals[name], name))[:top])
        buckets: dict[int, dict[str, int]] = {}
        for bucket_start, name, number in named:
            key = name if name in kept else HISTOGRAM_OTHER
            counts = buckets.setdefault(bucket_start, {})
            counts[key] = counts.get(key, 0) + number
        return [(ts_datetime(start_ts), buckets[start_ts]) for start_ts in sorted(buckets)]

    def tail(
        self,
        n: int = 20,
        follow: bool = False,
        *,
        poll_interval: float = 1.0,
        cursor: int | None = None,
        lookback: float = 60.0,
        **filters: Unpack[Filters],
    ) -> Generator[Record, None, None]:
        """The last *n* matching records oldest first, then with *follow* each new one.

        *cursor* is a ``ts``: every matching record after it is yielded (*n*
        ignored).  Following polls every *poll_interval* s and looks back
        *lookback* s, so records shipped late still show, each once.
        """
        _check_limit(n, "n")
        if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int)):
            raise SearchQueryError(f"cursor must be a ts in nanoseconds (an int), not {cursor!r}")
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
            raise SearchQueryError(f"poll_interval must be a positive number of seconds, not {poll_interval!r}")
        where, _ = self._conditions(None, False, filters)
        window = int(lookback * 1e9)
        seen: dict[tuple[str | None, str | None, int], int] = {}
        first: list[Record] = []
        if cursor is None:
            tail = f" ORDER BY ts DESC, host DESC, db_id DESC, id DESC LIMIT {n}"
            if n:
                first = [self._record(row) for row in reversed(self._rows(self._sql(_SELECT, where, tail)))]
            position = first[-1].ts if first else time.time_ns()
            if follow:
                # Records already in the window count as seen: following shows what arrives after.
                known = self._rows(self._sql("host, db_id, id, ts", [*where, f"ts >= {position - window}", f"ts <= {position}"]))
                seen = {(row["host"], row["db_id"], int(row["id"])): int(row["ts"]) for row in known}
        else:
            position = cursor
        return self._tail(where, first, position, follow, float(poll_interval), window, seen, cursor)

    def _tail(
        self,
        where: list[str],
        first: list[Record],
        position: int,
        follow: bool,
        poll: float,
        window: int,
        seen: dict[tuple[str | None, str | None, int], int],
        after: int | None,
    ) -> Generator[Record, None, None]:
        yield from first
        if after is None and not follow:
            return
        while True:
            floor = after + 1 if after is not None else position - window
            after = None
            rows = self._rows(self._sql(_SELECT, [*where, f"ts >= {floor}"], " ORDER BY ts, host, db_id, id"))
            for row in rows:
                key = (row["host"], row["db_id"], int(row["id"]))
                if key in seen:
                    continue
                record = self._record(row)
                seen[key] = record.ts
                position = max(position, record.ts)
                yield record
            horizon = position - window
            for key in [k for k, ts in seen.items() if ts < horizon]:
                del seen[key]
            if not follow:
                return
            time.sleep(poll)


def _with_snippet(record: Record, snippet: str) -> Record:
    from dataclasses import replace

    return replace(record, snippet=snippet)

