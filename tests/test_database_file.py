"""The log database file itself: who may own it, links at its path, and its being deleted or replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import janus_utils as ju
from janus_utils import _flusher as jflusher
from janus_utils.error_handling.utils.errors import ConfigError

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
