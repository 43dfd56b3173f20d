"""Archive names sort as the records they hold (ls, zcat *) and never collide between hosts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import BASE_TS, make_row
from janus_utils import retention
from janus_utils.retention import ARCHIVE_PATTERN, archive_host, list_archives, prune_path

DAY = 86_400 * 1_000_000_000


def test_names_sort_in_id_order(make_log_db: Callable[..., Path], tmp_path: Path) -> None:
    """Chunks of 9 and 10+ ids, over two days: plain sorted() of the names is the id order."""
    rows = [make_row(f"r{n}", ts=BASE_TS + (n // 15) * DAY + n) for n in range(30)]
    db = make_log_db(rows)
    summary = prune_path(db, max_rows=0, archive_dir=tmp_path / "a", chunk_rows=4)
    names = [path.name for path in summary.archives]
    assert len(names) > 3
    lows = [int(ARCHIVE_PATTERN.match(name)["low"]) for name in sorted(names)]  # type: ignore[index]
    assert sorted(lows) == lows and 1 == lows[0]
    assert [p.name for p in list_archives(tmp_path / "a")] == sorted(names)


def test_host_keeps_copies_of_one_database_apart(
    make_log_db: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same database (same db_id, same ids) pruned on two hosts: two names, both listed."""
    db = make_log_db([make_row("same", ts=BASE_TS)])
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    archive = tmp_path / "a"
    monkeypatch.setattr(retention, "archive_host", lambda: "web-1")
    first = prune_path(db, max_rows=0, archive_dir=archive).archives
    monkeypatch.setattr(retention, "archive_host", lambda: "web-2")
    second = prune_path(copy, max_rows=0, archive_dir=archive).archives
    assert ".web-1." in first[0].name and ".web-2." in second[0].name
    assert 2 == len(list_archives(archive))


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [("Web-01.Example.COM", "web-01-example-com"), ("../../etc", "etc"), ("", "host"), ("x" * 80, "x" * 63)],
)
def test_host_in_a_name_is_safe(hostname: str, expected: str) -> None:
    assert expected == archive_host(hostname)


@pytest.mark.parametrize(
    "name",
    [
        "janus-logs-2024-05-01.1-2.ndjson.gz",
        "janus-logs-2024-05-01.0123456789abcdef.1-2.ndjson.gz",
        "janus-logs-2024-05-01.0123456789abcdef.web-1.0000000000000001-0000000000000002.1.ndjson.gz",
    ],
)
def test_older_names_are_still_archives(name: str) -> None:
    match = ARCHIVE_PATTERN.match(name)
    assert match is not None and (1, 2) == (int(match["low"]), int(match["high"]))
