"""Ship records into a ClickHouse table over its HTTP interface (``INSERT ... FORMAT JSONEachRow``).

Exactly once into a ``ReplicatedMergeTree`` table: a batch is always the same
id range encoded the same way, so a batch sent again after a crash or a
timeout is the same block, which ClickHouse's block deduplication drops on
whichever replica it arrives.  Into a plain ``MergeTree`` (no ``cluster``) a
re-sent batch can land twice: at least once, with ``(host, db_id, id)`` to
find the twins.

The SQL is what both ClickHouse 18.16 (Debian 12's package) and current
releases accept: no DateTime64, Map, LowCardinality, CODEC, TTL or skip
indexes; settings go as URL parameters.  ``DDL`` below is the table created
when it is missing; the README shows it filled in.

The HTTP interface rather than the official driver: ``clickhouse-connect``
fails against 18.16 (it queries a ``readonly`` setting 18.16 does not have),
and a POST of JSON lines is all shipping needs.  No dependency at all.
"""

from __future__ import annotations

import gzip
import json
import re
import textwrap
import urllib.parse
from collections.abc import Sequence
from typing import Any

from ..error_handling.utils.errors import ConfigError, ShipError
from ._base import Exporter, Identity, check_batch_size, check_name, check_timeout, clamp
from ._http import Endpoint, HTTPClient, Retry, basic_auth, is_loopback, warn_plain_http

__all__ = ["COLUMN_TYPES", "ClickHouseExporter", "ddl", "parse_clickhouse_url"]

# Every column of the table, in insert order, with its type.  ``time`` is
# computed by the server from ``ts`` (MATERIALIZED), so it is never sent and
# a batch's bytes depend on the rows alone.
COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("host", "String"),
    ("service", "Nullable(String)"),
    ("db_id", "String"),
    ("id", "UInt64"),
    ("ts", "Int64"),
    ("level", "Int64"),
    ("logger", "String"),
    ("message", "String"),
    ("user_id", "Nullable(String)"),
    ("agent_id", "Nullable(String)"),
    ("request_id", "Nullable(String)"),
    ("trace_id", "Nullable(String)"),
    ("span_id", "Nullable(String)"),
    ("pid", "Nullable(Int64)"),
    ("thread", "Nullable(String)"),
    ("exception", "Nullable(String)"),
    ("fields", "Nullable(String)"),
)
INSERT_COLUMNS = tuple(name for name, _ in COLUMN_TYPES)

DDL = textwrap.dedent(
    """\
    CREATE TABLE IF NOT EXISTS `{database}`.`{table}`{on_cluster}
    (
        `host` String,
        `service` Nullable(String),
        `db_id` String,
        `id` UInt64,
        `ts` Int64,
        `time` DateTime MATERIALIZED toDateTime(intDiv(ts, 1000000000)),
        `level` Int64,
        `logger` String,
        `message` String,
        `user_id` Nullable(String),
        `agent_id` Nullable(String),
        `request_id` Nullable(String),
        `trace_id` Nullable(String),
        `span_id` Nullable(String),
        `pid` Nullable(Int64),
        `thread` Nullable(String),
        `exception` Nullable(String),
        `fields` Nullable(String)
    )
    ENGINE = {engine}
    PARTITION BY toYYYYMMDD(time)
    ORDER BY (toStartOfHour(time), ifNull(user_id, ''), ts)
    SETTINGS index_granularity = 8192{dedup}"""
)


def ddl(database: str, table: str, cluster: str | None = None) -> str:
    """The CREATE TABLE statement for *database*.*table*; Replicated and ON CLUSTER when *cluster* is named.

    Partitioned by day (drop old days with ``ALTER TABLE ... DROP PARTITION``),
    sorted by hour, then user, then time: a time range reads only its hours,
    and one user's records within them sit together.
    """
    check_name(database, "database")
    check_name(table, "table")
    if cluster is not None:
        check_name(cluster, "cluster")
        engine = f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}.{table}', '{{replica}}')"
        # Block hashes kept for deduplication: a batch re-sent after this many
        # other inserts into the table would no longer be recognised.
        dedup = ", replicated_deduplication_window = 1000"
        on_cluster = f" ON CLUSTER `{cluster}`"
    else:
        engine, dedup, on_cluster = "MergeTree()", "", ""
    return DDL.format(database=database, table=table, on_cluster=on_cluster, engine=engine, dedup=dedup)


# ClickHouse error codes (its ErrorCodes.cpp) that no retry will change.
_PERMANENT = {
    16: "no such column in the table",
    26: "cannot parse the data",
    27: "cannot parse the data",
    44: "illegal column",
    47: "unknown identifier",
    53: "type mismatch",
    60: "the table does not exist",
    62: "syntax error",
    70: "cannot convert a value",
    81: "the database does not exist",
    117: "incorrect data",
    164: "the user is read-only",
    192: "unknown user",
    193: "wrong password",
    194: "a password is required",
    497: "access denied",
    516: "authentication failed",
}
_CODE = re.compile(r"Code:\s*(\d+)")


def _classify(status: int, body: bytes, what: str) -> Exception:
    """A failed answer as Retry (may pass) or ShipError (will not)."""
    text = body.decode("utf-8", "replace").strip()
    match = _CODE.search(text)
    code = int(match.group(1)) if match else None
    short = " ".join(text.split())[:400]
    if code in _PERMANENT:
        return ShipError(f"{what}: ClickHouse refused it, {_PERMANENT[code]} (Code {code}): {short}")
    if status in (401, 403):
        return ShipError(f"{what}: HTTP {status}, check the user and password: {short}")
    if status in (400, 404, 405, 411, 413, 414) and code is None:
        return ShipError(f"{what}: HTTP {status}: {short}")
    return Retry(f"{what}: HTTP {status}: {short or 'no message'}")


def parse_clickhouse_url(url: str) -> dict[str, Any]:
    """``clickhouse[+https]://[user:pass@]host:port[,host:port...]/database.table[?cluster=c]`` as exporter options."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("clickhouse", "clickhouse+http", "clickhouse+https"):
        raise ConfigError(f"a ClickHouse sink is clickhouse://host:8123/database.table, not {url!r}")
    scheme = "https" if parts.scheme.endswith("https") else "http"
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigError(f"no host in {url!r}: write clickhouse://host:8123/database.table")
    urls = [f"{scheme}://{host}" for host in hosts.split(",") if host]
    path = parts.path.strip("/")
    database, dot, table = path.partition(".")
    if not dot:
        database, table = "default", path or "logs"
    options: dict[str, Any] = {"url": urls if len(urls) > 1 else urls[0], "database": database, "table": table}
    if userinfo:
        user, _, password = userinfo.partition(":")
        options["user"] = urllib.parse.unquote(user)
        options["password"] = urllib.parse.unquote(password) if password else None
    for key, values in urllib.parse.parse_qs(parts.query).items():
        if key in ("cluster", "name", "compression"):
            options[key] = values[-1]
        elif key == "batch_size":
            options[key] = int(values[-1])
        else:
            raise ConfigError(f"unknown option {key!r} in {url!r}: use cluster=, name=, batch_size= or compression=")
    return options


_enc = json.encoder.encode_basestring  # type: ignore[attr-defined]  # the C encoder, non-ASCII kept


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bytes):  # a BLOB where text belongs (not written by janus)
        value = value.decode("utf-8", "replace")
    return _enc(value if isinstance(value, str) else str(value))


class ClickHouseExporter(Exporter):
    """Ship records into ``database.table`` on a ClickHouse server (HTTP interface, port 8123).

    *url* is one server, or a list of replicas of the same table tried in
    turn when one does not answer.  With *cluster* the table is created
    ``ON CLUSTER`` as a ``ReplicatedMergeTree`` (exactly once); without, as a
    ``MergeTree`` on that server (at least once).  *create* False expects
    the table to exist.  Credentials go in *user*/*password* (HTTP basic
    auth) or *headers*; ``https://`` URLs use TLS (*ca_file* for a private CA).
    *compression* ``"gzip"`` or ``None``; the default gzips except to a loopback
    address, where it only costs time.

    *batch_size* rows go in one INSERT.  Every INSERT makes a part on each
    replica, a ZooKeeper entry and, soon, a merge: at 50,000 rows the two
    replicas and ZooKeeper spend about half the CPU per row that they do at
    20,000 (a body of about 20 MB for the benchmark record).
    """

    kind = "clickhouse"

    def __init__(
        self,
        url: str | Sequence[str] = "http://127.0.0.1:8123",
        table: str = "logs",
        *,
        database: str = "default",
        cluster: str | None = None,
        user: str | None = None,
        password: str | None = None,
        headers: dict[str, str] | None = None,
        create: bool = True,
        name: str | None = None,
        host: str | None = None,
        batch_size: int = 50_000,
        timeout: float = 30.0,
        compression: str | None = "auto",
        ca_file: str | None = None,
    ) -> None:
        if isinstance(url, str) and url.startswith("clickhouse"):
            options = parse_clickhouse_url(url)
            url = options.pop("url")
            table = options.pop("table", table)
            database = options.pop("database", database)
            cluster = options.pop("cluster", cluster)
            user = options.pop("user", user)
            password = options.pop("password", password)
            name = options.pop("name", name)
        if "." in table and database == "default":
            database, table = table.split(".", 1)
        self.database = check_name(database, "database")
        self.table = check_name(table, "table")
        self.cluster = check_name(cluster, "cluster") if cluster is not None else None
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ConfigError("url must name at least one ClickHouse server")
        self.endpoints: list[Endpoint] = []
        for one in urls:
            endpoint, url_user, url_password = Endpoint.parse(one, default_port=8123, tls_port=8443, what="ClickHouse url")
            self.endpoints.append(endpoint)
            user = user or url_user
            password = password or url_password
        self.user = user
        self._password = password
        self.headers = dict(headers or {})
        self.create = create
        self.host = host
        self.batch_size = check_batch_size(batch_size)
        self.timeout = check_timeout(timeout)
        if compression == "auto":
            compression = None if all(is_loopback(e.host) for e in self.endpoints) else "gzip"
        if compression not in (None, "gzip", "none"):
            raise ConfigError(f"compression must be 'gzip' or None, not {compression!r}")
        self.compression = None if compression == "none" else compression
        self.ca_file = ca_file
        first = self.endpoints[0]
        self.name = name or f"clickhouse://{first.netloc}/{self.database}.{self.table}"
        self.engine: str | None = None
        self.server_version: str | None = None
        self._client: HTTPClient | None = None
        self._insert_path = "/?" + urllib.parse.urlencode(
            {"query": f"INSERT INTO `{self.database}`.`{self.table}` ({', '.join(INSERT_COLUMNS)}) FORMAT JSONEachRow"}
        )

    def __repr__(self) -> str:
        return f"<ClickHouseExporter {self.name}>"

    # ------------------------------------------------------------ HTTP
    @property
    def client(self) -> HTTPClient:
        if self._client is None:
            for endpoint in self.endpoints:
                warn_plain_http(endpoint, "ClickHouse server")
            self._client = HTTPClient(
                list(self.endpoints),
                headers={**basic_auth(self.user, self._password), **self.headers},
                timeout=self.timeout,
                ca_file=self.ca_file,
            )
        return self._client

    def query(self, sql: str, *, data: bytes | None = None, what: str = "query", **settings: Any) -> str:
        """Run *sql* (with *settings* as URL parameters); Retry or ShipError on failure."""
        params = urllib.parse.urlencode({"query": sql, **{k: str(v) for k, v in settings.items()}})
        response = self.client.post("/?" + params, data or b"")
        if response.status != 200:
            raise _classify(response.status, response.body, what)
        return response.body.decode("utf-8", "replace")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------ the sink
    def open(self, identity: Identity) -> None:
        """Create the table if it is missing (and allowed), then check its columns."""
        self.server_version = self.query("SELECT version()", what="connecting").strip()
        where = f"`{self.database}`.`{self.table}`"
        exists = self.query(f"EXISTS TABLE {where}", what=f"looking for {where}").strip() == "1"
        if not exists:
            if not self.create:
                raise ShipError(f"the ClickHouse table {where} does not exist and create=False: create it (README has the DDL)")
            on_cluster = f" ON CLUSTER `{self.cluster}`" if self.cluster else ""
            if self.database != "default":
                self.query(f"CREATE DATABASE IF NOT EXISTS `{self.database}`{on_cluster}", what=f"creating database {self.database}")
            self.query(ddl(self.database, self.table, self.cluster), what=f"creating {where}")
        self._check_columns(where)

    def _check_columns(self, where: str) -> None:
        described = self.query(f"DESCRIBE TABLE {where} FORMAT TabSeparated", what=f"describing {where}")
        found = {}
        for line in described.splitlines():
            cells = line.split("\t")
            if len(cells) >= 2:
                found[cells[0]] = cells[1]
        wrong = [
            f"{column} {wanted}" + (f" (it is {found[column]})" if column in found else " (missing)")
            for column, wanted in COLUMN_TYPES
            if found.get(column) != wanted
        ]
        if wrong:
            raise ShipError(
                f"schema mismatch: {where} on the ClickHouse server does not have the columns janus ships: "
                + ", ".join(wrong)
                + "; alter it, or ship to a new table (it is created with the README's DDL)"
            )
        engine = self.query(
            "SELECT engine FROM system.tables WHERE database = '{}' AND name = '{}'".format(self.database, self.table),
            what="reading the table engine",
        ).strip()
        self.engine = engine or None

    @property
    def exactly_once(self) -> bool:
        """Whether the table drops re-sent batches (a Replicated*MergeTree)."""
        return bool(self.engine and self.engine.startswith("Replicated"))

    def encode(self, rows: list[tuple[Any, ...]], identity: Identity) -> bytes:
        """JSON lines, keys and separators fixed: the same rows always give the same bytes.

        ``host`` is the row's own (configure(host=...)), or the database's
        identity host for rows stored before records carried one.
        """
        default_host = _enc(identity.host)
        db_id = _enc(identity.db_id)
        lines = []
        append = lines.append
        for (
            rid, ts, level, logger, message, user, agent, request, trace, span, pid, thread, exc, fields, service, host
        ) in rows:
            append(
                f'{{"host":{default_host if host is None else _text(host)},"service":{_text(service)},'
                f'"db_id":{db_id},"id":{rid},"ts":{clamp(ts)},"level":{clamp(level)},"logger":{_text(logger)},'
                f'"message":{_text(message)},"user_id":{_text(user)},"agent_id":{_text(agent)},'
                f'"request_id":{_text(request)},"trace_id":{_text(trace)},"span_id":{_text(span)},'
                f'"pid":{"null" if pid is None else clamp(pid)},"thread":{_text(thread)},'
                f'"exception":{_text(exc)},"fields":{_text(fields)}}}\n'
            )
        text = "".join(lines)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: replaced, the same way every time
            return text.encode("utf-8", "replace")

    def select_encoded(self, identity: Identity) -> tuple[str, tuple[Any, ...]] | None:
        """Each row's JSON line built by SQLite's json_object(): no Python per row.

        The same lines as encode() (keys, order, escapes).  The CASTs keep an
        odd stored value (a REAL in ts, text in pid) from making a batch that
        ClickHouse would refuse for ever; text columns go as they are (a CAST
        on each cost a quarter of the time), and a BLOB among them makes
        SQLite refuse the query, whereupon the shipper encodes that batch
        with encode().  Each line comes out as bytes (the CAST AS BLOB):
        SQLite's UTF-8 as it is, never decoded into Python text and encoded
        again, which cost a third of the encoding time.  The lines are joined
        in Python: an ordered ``group_concat(... ORDER BY id)`` sorts the
        whole batch again and cost a third of the shipping time.
        """
        columns = ", ".join(
            f"'{name}', {expr}"
            for name, expr in (
                ("host", 'coalesce("host", :host)'),
                ("service", '"service"'),
                ("db_id", ":db_id"),
                ("id", '"id"'),
                ("ts", 'CAST("ts" AS INTEGER)'),
                ("level", 'CAST("level" AS INTEGER)'),
                ("logger", '"logger"'),
                ("message", '"message"'),
                *((name, f'"{name}"') for name in ("user_id", "agent_id", "request_id", "trace_id", "span_id")),
                ("pid", 'CAST("pid" AS INTEGER)'),
                *((name, f'"{name}"') for name in ("thread", "exception", "fields")),
            )
        )
        return (
            f"SELECT \"id\", CAST(json_object({columns}) AS BLOB) FROM \"logs\" "
            "WHERE \"id\" > :after AND \"id\" <= :upto ORDER BY \"id\" LIMIT :limit",
            (identity.host, identity.db_id),
        )

    def send(self, body: bytes) -> int:
        headers = {"Content-Type": "application/json"}
        if self.compression == "gzip":
            # mtime=0: the same batch compresses to the same bytes.
            body = gzip.compress(body, compresslevel=1, mtime=0)
            headers["Content-Encoding"] = "gzip"
        response = self.client.post(self._insert_path, body, headers)
        if response.status != 200:
            raise _classify(response.status, response.body, f"insert into {self.database}.{self.table}")
        return 0
