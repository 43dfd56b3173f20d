"""Tests of a search led by a user's rows read from the wanted end of the id buckets
first (LogStore._candidates): the same records as reading them all at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from conftest import BASE_TS, make_row
from janus_utils import _planner
from janus_utils import store as store_module
from janus_utils._schema import USER_BUCKET_BITS
from janus_utils.store import LogStore

WORDS = ["alpha bravo", "alpha", "bravo charlie", "alpha bravo delta", "echo"]


@pytest.fixture
def spread(make_log_db: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Users' records spread over some forty id buckets, the user's filter leading every search."""
    rows = [make_row(WORDS[i % len(WORDS)], ts=BASE_TS + i, user_id=f"u{i % 3}") for i in range(240)]
    path = make_log_db(rows)
    db = apsw.Connection(str(path))
    with db:
        # Ids 6,000 apart: 240 records in some 44 buckets of the user index.
        db.execute('UPDATE "logs" SET "id" = "id" * 6000')
        db.execute("""INSERT INTO "logs_fts"("logs_fts") VALUES ('rebuild')""")
    db.close()
    monkeypatch.setattr(_planner, "PROBE_CAP", 20_000)
    monkeypatch.setattr(_planner, "LOOKUP_COST_BASE", 0.0)
    monkeypatch.setattr(_planner, "STEP_COST", 1000.0)  # the filter leads
    return path


class TestBucketWindows:
    def test_same_records_as_one_statement(self, spread: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Any first window, newest or oldest first, any limit and cursor: the records of one statement."""
        reads: list[int] = []
        closing = LogStore._closing

        def counted(cursor: Any) -> Any:
            reads.append(1)
            return closing(cursor)

        monkeypatch.setattr(LogStore, "_closing", staticmethod(counted))

        def searches() -> list[Any]:
            found: list[Any] = []
            with LogStore(spread) as store:
                for query in ("alpha bravo", "alpha", "zulu", "alpha -delta"):
                    for user in ("u0", "u1"):
                        for order in ("newest", "oldest"):
                            for limit in (1, 3, 10, 60, None):
                                found.append([(r.id, r.snippet) for r in store.search(
                                    query, user_id=user, order=order, limit=limit)])  # type: ignore[arg-type]
                        page = store.after(0, query, user_id=user, limit=4)
                        found.append(([r.id for r in page[0]], page[1]))
            return found

        monkeypatch.setattr(store_module, "_WINDOW_AT_MOST", 0.0)  # one statement
        expected = searches()
        single = len(reads)
        assert sum(len(found) for found in expected if isinstance(found, list)) > 100
        # The planner expects some 0.01 matches of a user here: first windows of 1 bucket to about 20.
        for margin in (1e-7, 1e-5, 5e-5):
            monkeypatch.setattr(store_module, "_WINDOW_AT_MOST", 1e9)
            monkeypatch.setattr(store_module, "_WINDOW_MARGIN", margin)
            reads.clear()
            assert expected == searches()
            assert len(reads) > single  # the windows were read

    def test_the_buckets_are_many(self, spread: Path) -> None:
        """The fixture's records do span many buckets (else the windows test nothing)."""
        db = apsw.Connection(str(spread))
        buckets = db.execute(f'SELECT count(DISTINCT "id" >> {USER_BUCKET_BITS}) FROM "logs"').fetchall()[0][0]
        db.close()
        assert buckets > 30

