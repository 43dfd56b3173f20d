"""Shared fixtures: janus log databases written the way the production flusher writes them."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import strategies as st

from janus_utils._schema import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    WIDE_INDEX_SQL,
    WIDE_TABLE,
    apply_connection_settings,
    ensure_schema,
)

# The flusher's two statements: the rows, then the FTS index once per batch.
INSERT_SQL = (
    f'INSERT INTO "logs" ({", ".join(COLUMNS)}) '
    f'VALUES ({", ".join("?" for _ in COLUMNS)})'
)
FILL_FTS_SQL = (
    'INSERT INTO "logs_fts"(rowid, message, fields, exception) '
    'SELECT id, message, fields, exception FROM "logs" WHERE id > ?'
)

# 2023-11-14T22:13:20Z: a fixed base time so that tests never read the clock.
BASE_TS = 1_700_000_000 * 1_000_000_000


def make_row(message: str = "hello", **values: Any) -> tuple[Any, ...]:
    """One `logs` row in COLUMNS order; anything not given gets a plain default."""
    defaults: dict[str, Any] = {
        "ts": BASE_TS,
        "level": 20,
        "logger": "app",
        "message": message,
        "pid": 1234,
        "thread": "MainThread",
    }
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise TypeError(f"not a logs column: {sorted(unknown)}")
    defaults.update(values)
    return tuple(defaults.get(column) for column in COLUMNS)


def at_previous_version(db: apsw.Connection) -> None:
    """Give an empty database the schema one version before this one (inside the caller's transaction)."""
    for version in range(SCHEMA_VERSION - 1):
        db.execute(MIGRATIONS[version])
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")


def before_migration(db: apsw.Connection, sql: str) -> None:
    """Give an empty database the schema just before the migration holding *sql* (inside the
    caller's transaction): a test of one migration stays one whatever follows it."""
    (version,) = [n for n, migration in MIGRATIONS.items() if sql in migration]
    for n in range(version):
        db.execute(MIGRATIONS[n])
    db.execute(f"PRAGMA user_version={version}")


def open_writer(path: str | os.PathLike[str]) -> apsw.Connection:
    """A writing connection set up like the flusher's, schema created."""
    db = apsw.Connection(os.fspath(path))
    apply_connection_settings(db)
    ensure_schema(db)
    return db


def write_batch(db: apsw.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert one batch in one transaction, then fill the FTS index as the flusher does."""
    with db:
        last = db.execute('SELECT coalesce(max(rowid), 0) FROM "logs_fts"').fetchall()[0][0]
        db.executemany(INSERT_SQL, list(rows))
        db.execute(FILL_FTS_SQL, (last,))
        if db.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (WIDE_TABLE,)).fetchall():
            db.execute(WIDE_INDEX_SQL, (last,))  # as the flusher: CJK and emoji rows by trigrams too


def run_cli(
    argv: Sequence[str | bytes], cwd: Path, env: dict[str, str | bytes] | None = None, *, memory_limit: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``python -m janus_utils ARGV`` in *cwd*; stdin closed, so nothing can wait on it.

    *memory_limit* caps the process's address space (RLIMIT_AS): reading more
    than that into memory fails instead of succeeding slowly.
    """

    def limit() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    environment: dict[str | bytes, str | bytes] = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    environment.pop("JANUS_LOG_DB", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "janus_utils", *argv],
        cwd=cwd,
        env=environment,  # type: ignore[arg-type]  # bytes values are how a non-UTF-8 variable is passed
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        preexec_fn=limit,
    )


def write_tokens_process(path: str, batches: int, per_batch: int) -> None:
    """Run in another process: write batches of rows each carrying a unique token."""
    import time

    db = open_writer(path)
    try:
        for b in range(batches):
            rows = []
            for i in range(per_batch):
                n = b * per_batch + i
                level = 20 if n % 2 == 0 else 10
                rows.append(make_row(f"token tok{n:06d}", ts=BASE_TS + n, level=level))
            write_batch(db, rows)
            time.sleep(0.002)  # let the reader's polls fall between commits
    finally:
        db.close()


@pytest.fixture
def make_log_db(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Build a janus log database from rows (made with make_row); returns its path."""
    counter = 0

    def build(rows: Iterable[tuple[Any, ...]] = (), *, name: str | None = None) -> Path:
        nonlocal counter
        counter += 1
        path = tmp_path / (name or f"logs{counter}.db")
        db = open_writer(path)
        try:
            rows = list(rows)
            if rows:
                write_batch(db, rows)
        finally:
            db.close()
        return path

    yield build


def rows_from(specs: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """make_row for each mapping: a readable way to write a small corpus."""
    return [make_row(**dict(spec)) for spec in specs]


@pytest.fixture(params=["c", "python"])
def log_call_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with log calls through the C encoder, once through the Python path.

    ``configure()`` reads the switch, so it holds for every setup the test makes.
    """
    if request.param == "python":
        monkeypatch.setenv("JANUS_UTILS_NO_SPEEDUPS", "1")
    else:
        monkeypatch.delenv("JANUS_UTILS_NO_SPEEDUPS", raising=False)
    return str(request.param)


@pytest.fixture(params=["thread", "process"])
def flusher_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with the flusher as a thread, once as a process of its own.

    ``configure()`` reads ``$JANUS_LOG_FLUSHER`` when not given ``flusher=``,
    so it holds for every setup the test makes, forked children and
    subprocesses included.
    """
    monkeypatch.setenv("JANUS_LOG_FLUSHER", str(request.param))
    return str(request.param)


# ---------------------------------------------------------------- real servers for the shipping tests
@pytest.fixture(scope="session")
def clickhouse() -> Iterator[Any]:
    """ZooKeeper and two ClickHouse replicas (cluster ``janus_test``) on loopback, for the session."""
    from servers import ClickHouseCluster, clickhouse_missing

    missing = clickhouse_missing()
    if missing:
        pytest.skip(f"ClickHouse tests need the Debian packages clickhouse-server and zookeeper: {missing}")
    with ClickHouseCluster() as cluster:
        yield cluster


@pytest.fixture
def otlp_receiver() -> Iterator[Any]:
    """A loopback OTLP/HTTP receiver decoding every request with opentelemetry-proto."""
    pytest.importorskip("opentelemetry.proto", reason="the OTLP tests need opentelemetry-proto (the [test] extra)")
    from servers import OTLPReceiver

    with OTLPReceiver() as receiver:
        yield receiver


# ---------------------------------------------------------------- logfmt lines, read back
_LOGFMT_PAIR = re.compile(r'("(?:[^"\\]|\\.)*"|[^ =]+)=("(?:[^"\\]|\\.)*"|[^ ]*)')


def decode_logfmt(line: str) -> list[tuple[str, str]]:
    """The pairs of one logfmt line, quoted keys and values unescaped as logfmt readers do (JSON escapes)."""
    assert line.endswith("\n") and line.count("\n") == 1
    pairs = []
    rest = line[:-1]
    while rest:
        match = _LOGFMT_PAIR.match(rest)
        assert match, rest
        key, value = (json.loads(part) if part.startswith('"') else part for part in match.groups())
        pairs.append((key, value))
        rest = rest[match.end():].removeprefix(" ")
    return pairs


# Text a log call may carry: backslashes, quotes, line breaks, terminal escapes, C1
# controls, bidi overrides, anything else (no lone surrogates: UTF-8 cannot hold them).
TRICKY_TEXT = st.text(
    st.one_of(
        st.sampled_from('\\"= \n\r\t\x00\x07\x1b\x7f\x85\x9b\u2028\u2029\u202e\u2066nx[]'),
        st.characters(blacklist_categories=("Cs",)),
    )
)
