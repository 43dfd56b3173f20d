"""The log database file itself: who may own it, links at its path, and its being deleted or replaced."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import apsw
import pytest

import janus_utils as ju
from janus_utils import _flusher as jflusher
from janus_utils.error_handling.utils.errors import ConfigError
from logging_worker import Worker

ROOT = os.geteuid() == 0
NOBODY = 65534


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app.db"


class TestWhoseFile:
    @pytest.mark.skipif(not ROOT, reason="chown to another uid needs root")
    @pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
    def test_a_file_of_another_user_is_refused(self, db_path: Path, suffix: str) -> None:
        """A database (or -wal/-shm/-journal) another user pre-created is never used."""
        planted = Path(str(db_path) + suffix)
        planted.write_bytes(b"")
        os.chown(planted, NOBODY, NOBODY)
        planted.chmod(0o666)
        with pytest.raises(ConfigError, match=f"belongs to uid {NOBODY}"):
            ju.configure(db_path, console=False)
        assert not ju.is_configured()
        assert b"" == planted.read_bytes()  # nothing was written into it

    @pytest.mark.skipif(not ROOT, reason="chown to another uid needs root")
    def test_refused_by_the_archive_import_path_too(self, db_path: Path) -> None:
        """open_database itself refuses, so every writer (CLI included) does."""
        db_path.write_bytes(b"")
        os.chown(db_path, NOBODY, NOBODY)
        with pytest.raises(ConfigError, match="belongs to uid"):
            jflusher.open_database(str(db_path))

    def test_a_dangling_symlink_is_not_followed(self, db_path: Path, tmp_path: Path) -> None:
        """A link planted at db_path is refused; its target is never created."""
        target = tmp_path / "elsewhere" / "victim"
        target.parent.mkdir()
        db_path.symlink_to(target)
        with pytest.raises(ConfigError, match="is a symlink"):
            ju.configure(db_path, console=False)
        assert not target.exists()
        assert not ju.is_configured()

    def test_a_symlink_to_a_real_database_is_refused(self, db_path: Path, tmp_path: Path) -> None:
        """Even a link to a valid database: the real path must be given."""
        real = tmp_path / "real.db"
        jflusher.open_database(str(real)).close()
        db_path.symlink_to(real)
        with pytest.raises(ConfigError, match="is a symlink"):
            jflusher.open_database(str(db_path))

    def test_a_symlinked_wal_is_refused(self, db_path: Path, tmp_path: Path) -> None:
        """A -wal planted as a link would feed SQLite another file's frames."""
        Path(str(db_path) + "-wal").symlink_to(tmp_path / "frames")
        with pytest.raises(ConfigError, match="-wal' is a symlink"):
            jflusher.open_database(str(db_path))
        assert not (tmp_path / "frames").exists()

    def test_a_database_others_can_write_is_refused(self, db_path: Path) -> None:
        """Mode 0666: anyone could have forged its records."""
        jflusher.open_database(str(db_path)).close()
        db_path.chmod(0o666)
        with pytest.raises(ConfigError, match="writable by group or others"):
            jflusher.open_database(str(db_path))

    def test_a_database_its_owner_made_group_readable_is_used(self, db_path: Path) -> None:
        """0640 is the owner's choice (a log-reader group); it is kept as it is."""
        jflusher.open_database(str(db_path)).close()
        db_path.chmod(0o640)
        jflusher.open_database(str(db_path)).close()
        assert 0o640 == db_path.stat().st_mode & 0o777

    def test_a_directory_at_the_path_is_refused(self, db_path: Path) -> None:
        db_path.mkdir()
        with pytest.raises(ConfigError, match="not a regular file"):
            jflusher.open_database(str(db_path))


# --- deleted or replaced while open ------------------------------------------


def tokens(db: Path, name: str) -> collections.Counter[int]:
    """How many times each NAME-i record is in the database file *db* (read-only)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute("SELECT message FROM logs WHERE message LIKE ?", (name + "-%",)).fetchall()
    finally:
        conn.close()
    return collections.Counter(int(m.rsplit("-", 1)[1]) for (m,) in rows)


def integrity(db: Path) -> str:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchall()[0][0])
    finally:
        conn.close()


def no_duplicates(counts: collections.Counter[int]) -> bool:
    return all(n == 1 for n in counts.values())


@pytest.mark.slow
class TestDeletedOrReplaced:
    def test_a_deleted_database_is_noticed_and_created_afresh(self, db_path: Path, tmp_path: Path) -> None:
        """After os.unlink(db) the records go to a new file at db_path, reported once."""
        kept = tmp_path / "kept.db"  # the deleted file, still reachable to count what it got
        w = Worker(db_path)
        try:
            w.log("a", 0, 1000)
            w.expect("logged")
            w.flush()
            os.link(db_path, kept)
            db_path.unlink()
            w.log("b", 0, 1000)
            w.expect("logged")
            stats = w.flush()
            w.exit()
        finally:
            w.kill()
        assert "ok" == integrity(db_path)
        assert collections.Counter(range(1000)) == tokens(db_path, "b")
        assert not tokens(db_path, "a")
        assert collections.Counter(range(1000)) == tokens(kept, "a")  # checkpointed into it
        # Reported (last_error is cleared again by the commits that follow).
        assert any("was deleted" in message for _, message in stats["recent_errors"])
        assert 1 == w.stderr.count("was deleted")

    def test_a_backup_moved_over_the_live_file_gets_no_stale_wal(self, db_path: Path, tmp_path: Path) -> None:
        """`mv backup.db app.db` while logging: integrity ok, every record in one file or both."""
        backup, old = tmp_path / "backup.db", tmp_path / "old.db"
        w = Worker(db_path)
        try:
            w.log("a", 0, 2000)
            w.expect("logged")
            w.flush()
            src = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
            dst = apsw.Connection(str(backup))
            with dst.backup("main", src, "main") as b:
                b.step()
            dst.close()
            src.close()
            backup.chmod(0o600)
            # The live file moves on from the backup: checkpointed (when idle),
            # then more frames in its WAL, which would not fit the backup.
            w.log("c", 0, 20000)
            w.expect("logged")
            w.flush()
            time.sleep(1.5)
            w.log("c", 20000, 2000)
            w.expect("logged")
            w.flush()
            os.link(db_path, old)  # the file being replaced, to count what it got
            w.log("b", 0, 20000, 0.01)
            time.sleep(0.5)
            os.rename(backup, db_path)  # the live file's -wal and -shm stay beside it
            w.expect("logged")
            stats = w.flush()
            live = integrity(db_path)  # as an operator checks a restore, the app still running
            w.exit()
        finally:
            w.kill()
        assert "ok" == live
        assert "ok" == integrity(db_path)
        assert "ok" == integrity(old)
        assert collections.Counter(range(2000)) == tokens(db_path, "a")  # the backup's own
        assert collections.Counter(range(22000)) == tokens(old, "c")
        assert not tokens(db_path, "c")
        new, replaced = tokens(db_path, "b"), tokens(old, "b")
        assert no_duplicates(new) and no_duplicates(replaced)
        assert set(range(20000)) == set(new) | set(replaced)  # 0 lost
        assert new and replaced  # it did happen mid-stream
        assert any("was replaced" in message for _, message in stats["recent_errors"])
        assert 1 == w.stderr.count("was replaced")

    def test_a_deleted_wal_is_noticed_and_its_records_kept(self, db_path: Path) -> None:
        """Deleting -wal and -shm under the flusher loses nothing committed to them."""
        w = Worker(db_path)
        try:
            w.log("a", 0, 3000)
            w.expect("logged")
            w.flush()  # committed into the WAL, not checkpointed yet
            Path(str(db_path) + "-wal").unlink()
            Path(str(db_path) + "-shm").unlink()
            w.log("b", 0, 1000)
            w.expect("logged")
            w.flush()
            w.exit()
        finally:
            w.kill()
        assert "ok" == integrity(db_path)
        assert collections.Counter(range(3000)) == tokens(db_path, "a")
        assert collections.Counter(range(1000)) == tokens(db_path, "b")
