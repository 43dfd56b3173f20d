"""The flusher's commit path: what it does in bulk stores what the plain way stores.

Rows go into ``logs`` many to a statement (``_flusher._insert_rows``),
checked here against one row to a statement.
"""

from __future__ import annotations

import marshal
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import _flusher as jflusher
from janus_utils import logger as jlog
from janus_utils._record import decode_row

from conftest import BASE_TS, make_row

def query(db_path: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def decoded(i: int, **fields: Any) -> tuple[Any, ...]:
    """A row as the flusher decodes it from the ring: 13 columns, before service and host."""
    record = (1, BASE_TS + i * 7_000_000_000, 20 + 10 * (i % 3 == 0), f"svc.{i % 4}", f"message {i}",
              {"user_id": f"u{i}", "ip": "10.0.0.1", **fields}, None, 4000 + i % 2, "MainThread")
    return decode_row(marshal.dumps(record, 2))


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    db = jflusher.open_database(str(tmp_path / "w.db"))
    yield db
    db.close()


class TestInsertMany:
    @pytest.mark.parametrize("count", [0, 1, 19, 20, 21, 45, 2001])
    def test_the_rows_and_ids_are_those_executemany_stores(self, tmp_path: Path, writer: Any, count: int) -> None:
        """Many rows to a statement store the same rows with the same ids as one row to a statement."""
        rows = [make_row(f"row {i}", ts=BASE_TS + i, user_id=f"u{i}", pid=i % 3) for i in range(count)]
        plain = jflusher.open_database(str(tmp_path / "plain.db"))
        try:
            with plain:
                plain.executemany(jflusher._INSERT, rows)
            want = plain.execute('SELECT * FROM "logs" ORDER BY id').fetchall()
        finally:
            plain.close()
        with writer:
            jflusher._insert_rows(writer, rows)
            assert count == (writer.last_insert_rowid() if count else 0)
        assert want == writer.execute('SELECT * FROM "logs" ORDER BY id').fetchall()

    def test_a_row_with_a_column_missing_is_refused_not_shifted(self, writer: Any) -> None:
        """A short row among many is an error, as with executemany: no value lands in another row's column."""
        rows = [make_row(f"row {i}") for i in range(40)]
        rows[25] = rows[25][:-1]
        with pytest.raises(apsw.BindingsError):
            with writer:
                jflusher._insert_rows(writer, rows)
        assert 0 == writer.execute('SELECT count(*) FROM "logs"').fetchall()[0][0]

    def test_a_row_sqlite_refuses_among_many_is_replaced_and_the_others_kept(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The statement holding a refused row fails whole; the batch then goes row by row, as before."""
        real = jflusher.decode_row

        def decode(payload: bytes) -> tuple[Any, ...]:
            row = real(payload)
            return row[:2] + (None,) + row[3:] if row[3] == "poison" else row  # a NULL logger

        db_path = tmp_path / "app.db"
        monkeypatch.setattr(jflusher, "decode_row", decode)
        ju.configure(db_path, console=False, commit_interval=3600)
        try:
            p = jlog._flusher
            assert p is not None
            p.decode_rows = None  # every row through decode()
            log = ju.get_logger("batch")
            with p.db_lock:  # one batch of them all
                for i in range(45):
                    log.info("poison" if i == 30 else f"row {i}")
            assert ju.flush(timeout=30)
            assert 1 == ju.stats()["unstorable"]
        finally:
            ju.shutdown()
        got = query(db_path, 'SELECT level, message, fields FROM "logs" WHERE logger IS NOT "janus.process" ORDER BY id')
        assert [f"row {i}" for i in range(45) if i != 30] == [m for _, m, _ in got if m != "poison"]
        assert 40 == got[30][0] and "refused_by_sqlite" in got[30][2]
