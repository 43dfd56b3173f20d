"""Tests of the janus-logs retention commands: prune, archive import and search --archives."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from conftest import make_row, open_writer, run_cli, write_batch

from janus_utils import cli
from janus_utils._schema import database_id
from janus_utils._timeparse import format_ts
from janus_utils.cli import ARCHIVED_MARK, main
from janus_utils.retention import ALL_COLUMNS, archive_host

SECOND = 1_000_000_000
DAY = 86_400 * SECOND

Run = Callable[..., tuple[int, str, str]]

HOST = archive_host()  # in every archive name


def _noon(ts: int) -> int:
    """Noon UTC of the day of *ts*: rows a few seconds apart stay in one archive (one per day)."""
    return ts - ts % DAY + DAY // 2


# Read once: prune measures ages from its own clock, and these are days away from every limit used.
NOW = time.time_ns()
OLD = _noon(NOW - 400 * DAY)  # past 30d and 365d
MID = _noon(NOW - 40 * DAY)  # past 30d, within 365d
NEW = NOW - 3_600 * SECOND  # within every age used here

ROWS: list[dict[str, Any]] = [
    dict(message="cache miss", ts=OLD, level=10),
    dict(message="request served", ts=OLD + SECOND),
    dict(message="disk full", ts=OLD + 2 * SECOND, level=40, exception="Traceback (most recent call last):\nOSError: no space"),
    dict(message="request served", ts=MID, logger="app.web"),
    dict(message="timeout talking to db", ts=MID + SECOND, level=40, logger="app.db", user_id="u1", fields=json.dumps({"status": 504})),
    dict(message="request served", ts=NEW),
    dict(message="timeout from cache", ts=NEW + SECOND, level=30, logger="app.cache"),
]


@pytest.fixture
def db(make_log_db: Callable[..., Path]) -> str:
    """A database with ROWS: ids 1-3 on one old day, 4-5 forty days ago, 6-7 an hour ago."""
    return str(make_log_db([make_row(**row) for row in ROWS]))


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """main(argv) -> (exit code, stdout, stderr)."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def archive_dir(tmp_path: Path) -> Path:
    return tmp_path / "archive"


def _rows(path: str | Path) -> list[tuple[Any, ...]]:
    """Every column of every record, by id, read without changing the database (not the word
    signature, which import computes from the text: the fixtures' rows have none)."""
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        columns = ", ".join(f'"{column}"' for column in ALL_COLUMNS)
        return db.execute(f'SELECT {columns} FROM "logs" ORDER BY "id"').fetchall()
    finally:
        db.close()


def _db_id(path: str | Path) -> str | None:
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return database_id(db)
    finally:
        db.close()


def _ids(path: str | Path) -> list[int]:
    return [row[0] for row in _rows(path)]


def _json_ids(out: str) -> list[int]:
    return [json.loads(line)["id"] for line in out.splitlines()]


class TestPrune:
    def test_older_than(self, run: Run, db: str) -> None:
        """--older-than removes every record past the age and says how many, by level."""
        code, out, err = run("prune", "--db", db, "--older-than", "30d")
        assert (0, "", [6, 7]) == (code, err, _ids(db))
        lines = out.splitlines()
        assert lines[0].startswith("removed       5 records (about ")
        assert "levels        DEBUG 1  INFO 2  ERROR 2" == lines[2]

    def test_time_range_shown(self, run: Run, db: str) -> None:
        """The summary shows the time of the oldest and newest record removed."""
        _, out, _ = run("prune", "--db", db, "--older-than", "30d")
        expected = f"from          {format_ts(OLD, digits=3)} to {format_ts(MID + SECOND, digits=3)}"
        assert expected == out.splitlines()[1]

    def test_level_age_overrides_older_than(self, run: Run, db: str) -> None:
        """--level-age ERROR=365d keeps the recent error that --older-than alone would remove."""
        assert 0 == run("prune", "--db", db, "--older-than", "30d", "--level-age", "ERROR=365d")[0]
        assert [5, 6, 7] == _ids(db)

    def test_level_age_alone(self, run: Run, db: str) -> None:
        """--level-age without --older-than removes only that level."""
        assert 0 == run("prune", "--db", db, "--level-age", "debug=1d")[0]
        assert [2, 3, 4, 5, 6, 7] == _ids(db)

    def test_repeated_level_age(self, run: Run, db: str) -> None:
        """--level-age may be given for several levels."""
        assert 0 == run("prune", "--db", db, "--level-age", "DEBUG=1d", "--level-age", "INFO=30d")[0]
        assert [3, 5, 6, 7] == _ids(db)

    def test_max_rows(self, run: Run, db: str) -> None:
        """--max-rows removes the oldest records until that many remain."""
        code, out, _ = run("prune", "--db", db, "--max-rows", "3", "--json")
        assert (0, 4, [5, 6, 7]) == (code, json.loads(out)["rows"], _ids(db))

    def test_max_bytes(self, run: Run, db: str) -> None:
        """--max-bytes below the database's size removes the oldest records."""
        code, out, _ = run("prune", "--db", db, "--max-bytes", "1KB", "--dry-run", "--json")
        assert (0, True) == (code, json.loads(out)["rows"] > 0)

    def test_dry_run_changes_nothing(self, run: Run, db: str, archive_dir: Path) -> None:
        """--dry-run says what would go, and removes and writes nothing."""
        before = _rows(db)
        code, out, _ = run("prune", "--db", db, "--older-than", "30d", "--archive-dir", str(archive_dir), "--dry-run")
        assert (0, before, False) == (code, _rows(db), archive_dir.exists())
        assert out.startswith("would remove  5 records") and "(dry run: nothing was changed)" in out

    def test_json_summary(self, run: Run, db: str) -> None:
        """--json prints the summary as one JSON object on one line."""
        code, out, _ = run("prune", "--db", db, "--older-than", "30d", "--json")
        assert (0, 1) == (code, len(out.splitlines()))
        data = json.loads(out)
        expected = {
            "rows": 5,
            "per_level": {"DEBUG": 1, "INFO": 2, "ERROR": 2},
            "oldest_ts": OLD,
            "newest_ts": MID + SECOND,
            "archives": [],
            "dry_run": False,
        }
        assert expected == {key: data[key] for key in expected}

    def test_dry_run_json(self, run: Run, db: str) -> None:
        """--dry-run --json counts the same rows and says it was a dry run."""
        code, out, _ = run("prune", "--db", db, "--max-rows", "5", "--dry-run", "--json")
        data = json.loads(out)
        assert (0, 2, {"DEBUG": 1, "INFO": 1}, True, 7) == (code, data["rows"], data["per_level"], data["dry_run"], len(_ids(db)))

    def test_archive_dir(self, run: Run, db: str, archive_dir: Path) -> None:
        """--archive-dir writes one archive per day, with checksums, and lists them."""
        code, out, _ = run("prune", "--db", db, "--older-than", "30d", "--archive-dir", str(archive_dir))
        names = sorted(path.name for path in archive_dir.iterdir())
        old_day, mid_day = (format_ts(ts, digits=0)[:10] for ts in (OLD, MID))
        origin = _db_id(db)
        expected = [
            f"janus-logs-{old_day}.{origin}.{HOST}.0000000000000001-0000000000000003.ndjson.gz",
            f"janus-logs-{old_day}.{origin}.{HOST}.0000000000000001-0000000000000003.ndjson.gz.sha256",
            f"janus-logs-{mid_day}.{origin}.{HOST}.0000000000000004-0000000000000005.ndjson.gz",
            f"janus-logs-{mid_day}.{origin}.{HOST}.0000000000000004-0000000000000005.ndjson.gz.sha256",
        ]
        assert (0, expected) == (code, names)
        assert f"archived to   2 files in {archive_dir}" in out.splitlines()
        assert f"  janus-logs-{mid_day}.{origin}.{HOST}.0000000000000004-0000000000000005.ndjson.gz" == out.splitlines()[-1]

    def test_archive_dir_json(self, run: Run, db: str, archive_dir: Path) -> None:
        """--json lists the archive paths written."""
        _, out, _ = run("prune", "--db", db, "--max-rows", "5", "--archive-dir", str(archive_dir), "--json")
        name = f"janus-logs-{format_ts(OLD, digits=0)[:10]}.{_db_id(db)}.{HOST}.0000000000000001-0000000000000002.ndjson.gz"
        assert [name] == [Path(p).name for p in json.loads(out)["archives"]]

    def test_chunk_rows(self, run: Run, db: str) -> None:
        """--chunk-rows sets how many records each transaction removes."""
        _, out, _ = run("prune", "--db", db, "--older-than", "30d", "--chunk-rows", "2", "--json")
        assert (5, 3) == (json.loads(out)["rows"], json.loads(out)["chunks"])

    def test_nothing_to_prune_exits_1(self, run: Run, db: str) -> None:
        """Nothing past the limits: exit 1, the database untouched."""
        assert (1, "nothing to prune: no record is past the limits\n", "") == run("prune", "--db", db, "--older-than", "1000d")
        assert 7 == len(_ids(db))

    def test_nothing_to_prune_json(self, run: Run, db: str) -> None:
        """--json with nothing to prune still prints the (empty) summary, exit 1."""
        code, out, _ = run("prune", "--db", db, "--max-rows", "100", "--json")
        assert (1, 0) == (code, json.loads(out)["rows"])

    def test_progress_on_a_terminal(self, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a terminal a long prune shows a running count on stderr."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        err = Tty()
        monkeypatch.setattr(sys, "stderr", err)
        monkeypatch.setattr(sys, "stdout", io.StringIO())
        monkeypatch.setattr(cli, "_PROGRESS_EVERY", 2)
        assert 0 == main(["prune", "--db", db, "--older-than", "30d", "--chunk-rows", "2"])
        assert "\rremoved 2 records\rremoved 4 records\rremoved 5 records\n" == err.getvalue()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ([], "nothing to prune by: give --older-than AGE"),
            (["--older-than", "3x"], "cannot read the age '3x'"),
            (["--older-than", "0d"], "an age must be more than zero"),
            (["--max-bytes", "5 parsecs"], "cannot read the size '5 parsecs'"),
            (["--level-age", "LOUD=1d"], "unknown level 'LOUD'"),
            (["--level-age", "ERROR=1d", "--level-age", "ERROR=2d"], "--level-age gives one level twice (ERROR)"),
            (["--level-age", "error=1d", "--level-age", "40=2d"], "--level-age gives one level twice (error and 40)"),
            (["--db", "/nonexistent/janus.db", "--max-rows", "1"], "no log database at '/nonexistent/janus.db'"),
        ],
    )
    def test_errors_exit_2_with_one_line(self, run: Run, db: str, options: list[str], message: str) -> None:
        """A limit missing or unreadable is one line on stderr, exit 2, nothing removed."""
        argv = ["prune", *options] if "--db" in options else ["prune", "--db", db, *options]
        code, out, err = run(*argv)
        assert (2, "", 1) == (code, out, len(err.splitlines()))
        assert err.startswith(f"janus-logs: error: {message}")
        assert 7 == len(_ids(db))

    @pytest.mark.parametrize("options", [["--level-age", "ERROR"], ["--chunk-rows", "0"], ["--max-rows", "-1"]])
    def test_usage_errors_exit_2(self, run: Run, db: str, options: list[str]) -> None:
        """Malformed option values are argparse usage errors, exit 2."""
        assert 2 == run("prune", "--db", db, *options)[0]

    def test_not_a_janus_database(self, run: Run, tmp_path: Path) -> None:
        """A SQLite file without the log schema is refused, exit 2."""
        path = tmp_path / "other.db"
        apsw.Connection(str(path)).execute("CREATE TABLE t(x)")
        code, _, err = run("prune", "--db", str(path), "--max-rows", "1")
        assert (2, True) == (code, "is not a janus log database" in err)


@pytest.fixture
def pruned(run: Run, db: str, archive_dir: Path) -> list[tuple[Any, ...]]:
    """Prune ids 1-5 of *db* into *archive_dir*; returns those rows as they were."""
    removed = _rows(db)[:5]
    assert 0 == run("prune", "--db", db, "--older-than", "30d", "--archive-dir", str(archive_dir))[0]
    return removed


class TestArchiveImport:
    def test_round_trip(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path) -> None:
        """Pruned records imported into a new database come back identical, every column."""
        restored = tmp_path / "restored.db"
        code, out, err = run("archive", "import", str(archive_dir), "--db", str(restored))
        assert (0, "", pruned) == (code, err, _rows(restored))
        lines = out.splitlines()
        assert [": 3 inserted", ": 2 inserted", f"5 inserted from 2 archives into {restored}"] == [
            lines[0][-12:], lines[1][-12:], lines[2]
        ]

    def test_new_database_is_private(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path) -> None:
        """The database import creates is readable by its owner only."""
        restored = tmp_path / "restored.db"
        run("archive", "import", str(archive_dir), "--db", str(restored))
        assert 0o600 == stat.S_IMODE(os.stat(restored).st_mode)

    def test_import_twice_inserts_nothing(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path) -> None:
        """Importing the same archives again inserts 0 records and exits 1."""
        restored = str(tmp_path / "restored.db")
        run("archive", "import", str(archive_dir), "--db", restored)
        code, out, _ = run("archive", "import", str(archive_dir), "--db", restored)
        assert (1, f"0 inserted from 2 archives into {restored}", pruned) == (code, out.splitlines()[-1], _rows(restored))

    def test_import_back_into_the_pruned_database(self, run: Run, db: str, pruned: list[tuple[Any, ...]], archive_dir: Path) -> None:
        """Imported into the database they came from, the records are back under their ids."""
        assert 0 == run("archive", "import", str(archive_dir), "--db", db)[0]
        assert pruned == _rows(db)[:5] and [1, 2, 3, 4, 5, 6, 7] == _ids(db)

    def test_imported_records_are_searchable(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path) -> None:
        """Imported records are in the full-text index."""
        restored = str(tmp_path / "restored.db")
        run("archive", "import", str(archive_dir), "--db", restored)
        code, out, _ = run("search", "disk", "--db", restored, "--json")
        assert (0, [3]) == (code, _json_ids(out))

    def test_files_and_json(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path) -> None:
        """Archive files may be named one by one; --json gives the counts as one object."""
        files = sorted(str(p) for p in archive_dir.glob("*.ndjson.gz"))
        restored = str(tmp_path / "restored.db")
        code, out, _ = run("archive", "import", files[1], files[0], "--db", restored, "--json")
        expected = {"db": restored, "archives": [{"path": files[1], "inserted": 2}, {"path": files[0], "inserted": 3}], "inserted": 5}
        assert (0, expected) == (code, json.loads(out))

    def test_checksum_mismatch_exits_2(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path) -> None:
        """An archive that does not match its .sha256 is refused, and nothing of it imported."""
        sidecar = sorted(archive_dir.glob("*.sha256"))[0]
        sidecar.write_text("0" * 64 + "  " + sidecar.name.removesuffix(".sha256") + "\n")
        restored = tmp_path / "restored.db"
        code, _, err = run("archive", "import", str(archive_dir), "--db", str(restored))
        assert (2, 1, True, []) == (code, len(err.splitlines()), "does not match its checksum" in err, _rows(restored))

    @pytest.mark.parametrize(
        ("name", "message"),
        [("missing.ndjson.gz", "no archive at"), ("*.sha256", "is a checksum file, not an archive")],
    )
    def test_bad_paths_exit_2_before_importing(
        self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path, name: str, message: str
    ) -> None:
        """Every path is checked before anything is imported or created."""
        bad = next(iter(archive_dir.glob(name)), archive_dir / name)
        good = str(sorted(archive_dir.glob("*.ndjson.gz"))[0])
        restored = tmp_path / "restored.db"
        code, out, err = run("archive", "import", good, str(bad), "--db", str(restored))
        assert (2, "", True, False) == (code, out, message in err, restored.exists())

    def test_empty_directory_exits_1(self, run: Run, tmp_path: Path) -> None:
        """A directory without archives imports nothing, says so and exits 1."""
        empty = tmp_path / "empty"
        empty.mkdir()
        restored = tmp_path / "restored.db"
        code, out, _ = run("archive", "import", str(empty), "--db", str(restored))
        assert (1, f"{empty}: no archives in this directory", False) == (code, out.splitlines()[0], restored.exists())

    def test_no_action_prints_help(self, run: Run) -> None:
        """archive without an action prints its help on stderr and exits 2."""
        code, _, err = run("archive")
        assert (2, True) == (code, "import" in err)

    @pytest.mark.slow
    @pytest.mark.parametrize(
        ("column", "value", "reason"),
        [("id", 2**63 - 1, "id 9223372036854775807 is not a record id"), ("ts", "yesterday", "ts 'yesterday'"), ("level", "HIGH", "level 'HIGH'")],
    )
    def test_bad_record_refused_and_logging_goes_on(self, tmp_path: Path, column: str, value: Any, reason: str) -> None:
        """The issue's archives: refused whole (exit 2, line and reason), and a real logger still commits after."""
        archive = tmp_path / "archive"
        archive.mkdir()
        name = "janus-logs-2024-05-01.1-2.ndjson.gz"
        good = {"id": 1, "ts": 1_714_564_800 * SECOND, "level": 20, "logger": "app", "message": "restored"}
        data = gzip.compress((json.dumps(good) + "\n" + json.dumps({**good, "id": 2, column: value}) + "\n").encode())
        (archive / name).write_bytes(data)
        (archive / (name + ".sha256")).write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")

        imported = run_cli(["archive", "import", "archive", "--db", "app.db"], tmp_path)
        logged = subprocess.run(
            [sys.executable, "-c", LOG_ONE_RECORD, str(tmp_path / "app.db")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        err = imported.stderr.decode()
        assert (2, 1, True) == (imported.returncode, len(err.splitlines()), f"line 2 of 'archive/{name}': {reason}" in err), err
        assert ("True\n", ["logged after the refused import"]) == (logged.stdout, [row[4] for row in _rows(tmp_path / "app.db")])


# A real application: configure, log one record, wait for the commit, print flush()'s answer.
LOG_ONE_RECORD = """
import sys
import janus_utils as ju
ju.configure(db_path=sys.argv[1], console=False)
ju.get_logger("app").info("logged after the refused import")
print(ju.flush())
ju.shutdown()
"""


MARKER = "zanzibarquokka7f3a9c"  # what user 42 logged: a word found nowhere else

# A real application: 300 records, every tenth of them user 42's, carrying MARKER.
LOG_USERS = f"""
import sys
import janus_utils as ju
ju.configure(db_path=sys.argv[1], console=False)
log = ju.get_logger("shop")
for n in range(300):
    if n % 10 == 0:
        log.info("order %s shipped to {MARKER}", n, user_id="42", street="{MARKER} road")
    else:
        log.info("order %s shipped", n, user_id="7")
print(ju.flush())
ju.shutdown()
"""


def _leaks(db_path: Path, text: str) -> list[str]:
    """Which of the database's files (db, -wal, -shm) still hold *text*, raw bytes grepped."""
    found = []
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{db_path}{suffix}")
        if file.exists() and text.encode() in file.read_bytes():
            found.append(suffix or "db")
    return found


class TestErase:
    @pytest.mark.slow
    def test_erase_a_user_logged_by_a_real_application(self, tmp_path: Path) -> None:
        """erase --user 42: gone from the db file, WAL and archives; user 7's records all still there."""
        db_path = tmp_path / "app.db"
        logged = subprocess.run(
            [sys.executable, "-c", LOG_USERS, str(db_path)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert ("True\n", ["db"]) == (logged.stdout, _leaks(db_path, MARKER)), logged.stderr
        # An ordinary prune first: half of user 42's records to archives, their residue left in the file.
        pruned = run_cli(["prune", "--db", "app.db", "--max-rows", "150", "--archive-dir", "archive"], tmp_path)
        reader = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            reader.execute("SELECT count(*) FROM logs").fetchall()  # now idle, it keeps the -wal file in place
            erased = run_cli(["erase", "--user", "42", "--db", "app.db", "--archive-dir", "archive", "--json"], tmp_path)
            leaks = _leaks(db_path, MARKER)
            wal_size = os.path.getsize(f"{db_path}-wal")
        finally:
            reader.close()
        again = run_cli(["erase", "--user", "42", "--db", "app.db", "--archive-dir", "archive"], tmp_path)
        summary = json.loads(erased.stdout)
        archived = b"".join(gzip.open(p).read() for p in (tmp_path / "archive").glob("*.ndjson.gz"))
        assert (0, 0, b"") == (pruned.returncode, erased.returncode, erased.stderr)
        assert (15, 15, [], 0, False) == (summary["rows"], summary["archived_rows"], leaks, wal_size, MARKER.encode() in archived)
        assert (1, 270) == (again.returncode, len(_rows(db_path)) + archived.count(b"\n"))
        assert "0 records of user 42" in again.stdout.decode()

    @pytest.mark.slow
    def test_secure_prune_of_everything(self, make_log_db: Callable[..., Path]) -> None:
        """The issue's case: prune to 0 rows with --secure, and the Stripe key is in none of the files."""
        key = "sk_live_51Hx0" + MARKER
        db_path = make_log_db([make_row(f"charged card with {key}", fields=json.dumps({"key": key})), make_row("other")])
        reader = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            reader.execute("SELECT count(*) FROM logs").fetchall()  # now idle, it keeps the -wal file in place
            result = run_cli(["prune", "--db", db_path.name, "--max-rows", "0", "--secure"], db_path.parent)
            leaks = _leaks(db_path, MARKER) + _leaks(db_path, MARKER.lower())
        finally:
            reader.close()
        out = result.stdout.decode()
        assert (0, [], [], True) == (result.returncode, _rows(db_path), leaks, "WAL emptied" in out)


class TestSearchArchives:
    def test_database_first_then_archives(self, run: Run, db: str, pruned: list[tuple[Any, ...]], archive_dir: Path) -> None:
        """Database matches come first, then archive matches, each marked archived."""
        code, out, _ = run("search", "timeout", "--db", db, "--archives", str(archive_dir), "--json")
        records = [json.loads(line) for line in out.splitlines()]
        assert (0, [7, 5], [None, True]) == (code, [r["id"] for r in records], [r.get("archived") for r in records])

    def test_same_line_format_with_mark(self, run: Run, db: str, archive_dir: Path) -> None:
        """An archived record prints as it did from the database, with the mark at the end."""
        before = run("search", "talking", "--db", db)[1]
        run("prune", "--db", db, "--older-than", "30d", "--archive-dir", str(archive_dir))
        code, after, _ = run("search", "talking", "--db", db, "--archives", str(archive_dir))
        assert (0, before.rstrip("\n") + " " + ARCHIVED_MARK + "\n") == (code, after)

    def test_archives_only_when_db_missing(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path) -> None:
        """With --archives and no database at --db, only the archives are searched."""
        code, out, err = run("search", "--db", str(tmp_path / "gone.db"), "--archives", str(archive_dir), "--json")
        assert (0, "", [1, 2, 3, 4, 5]) == (code, err, _json_ids(out))

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (["request"], [2, 4]),
            (["space no"], [3]),
            (["disk served"], []),
            (["request", "--logger", "app.web"], [4]),
            (["--level", "ERROR"], [3, 5]),
            (["--logger", "app"], [1, 2, 3, 4, 5]),
            (["--since", "@MID"], [4, 5]),
            (["--until", "@MID"], [1, 2, 3]),
            (["--limit", "2"], [1, 2]),
        ],
    )
    def test_filters(self, run: Run, pruned: list[tuple[Any, ...]], archive_dir: Path, tmp_path: Path, options: list[str], expected: list[int]) -> None:
        """QUERY words, --level, --logger, --since, --until and --limit apply to archives."""
        options = [format_ts(MID, digits=9) if option == "@MID" else option for option in options]
        code, out, _ = run("search", *options, "--db", str(tmp_path / "gone.db"), "--archives", str(archive_dir), "--json")
        assert (0 if expected else 1, expected) == (code, _json_ids(out))

    def test_limit_counts_both(self, run: Run, db: str, pruned: list[tuple[Any, ...]], archive_dir: Path) -> None:
        """--limit is the total: archives are searched only for what the database left."""
        _, out, _ = run("search", "served", "--db", db, "--archives", str(archive_dir), "--json", "--limit", "2")
        assert [6, 2] == _json_ids(out)

    def test_nothing_found_exits_1(self, run: Run, db: str, pruned: list[tuple[Any, ...]], archive_dir: Path) -> None:
        """No match in either: exit 1, no output."""
        assert (1, "", "") == run("search", "nonexistent", "--db", db, "--archives", str(archive_dir))

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            (["--raw", "disk"], "--raw is FTS5 syntax"),
            (["--user", "u1"], "--user cannot be used with --archives"),
            (["--field", "status=504", "--agent", "a"], "--agent, --field cannot be used with --archives"),
            (["--since", "2h", "--until", "3h"], "must be before"),
            (["--archives", "/nonexistent/archive"], "is not a directory"),
        ],
    )
    def test_errors_exit_2_before_output(self, run: Run, db: str, archive_dir: Path, options: list[str], message: str) -> None:
        """What archives cannot be searched by is refused before any database match is printed."""
        archive_dir.mkdir()
        argv = ["search", "--db", db, *options]
        if "--archives" not in options:
            argv += ["--archives", str(archive_dir)]
        code, out, err = run(*argv)
        assert (2, "", 1, True) == (code, out, len(err.splitlines()), message in err)


def _command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every command and action of *parser*, by its full name."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {inner}": p for inner, p in _command_parsers(sub).items()})
    return found


class TestHelp:
    @pytest.mark.parametrize("argv", [["prune"], ["archive"], ["archive", "import"], ["search"]])
    def test_help_has_example(self, run: Run, argv: list[str]) -> None:
        """prune, archive, archive import and search --help show an Example."""
        code, out, _ = run(*argv, "--help")
        assert (0, True) == (code, "Example:" in out)

    def test_every_command_is_documented(self) -> None:
        """Every command and action has a description and an Example in its help."""
        parsers = _command_parsers(cli._build_parser())
        undocumented = [name for name, p in parsers.items() if not p.description or "Example:" not in (p.epilog or "")]
        assert ([], True) == (undocumented, {"prune", "archive", "archive import"} <= set(parsers))

    def test_main_help_lists_new_commands(self, run: Run) -> None:
        """janus-logs --help lists prune and archive."""
        out = run("--help")[1]
        assert (True, True) == ("prune" in out, "archive import" in out)
