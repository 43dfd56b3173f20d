"""Read-only file systems: configure() refuses them with a ConfigError; LogStore and janus-logs read there.

The file systems are real: a tmpfs mounted, filled, then remounted read-only
(which needs root).  A writable file inside one is a bind mount of a file
from a writable directory.  Every mount is detached lazily at the end: a
ring file stays mapped until the process exits (janus_utils._flusher.open_ring).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import janus_utils as ju
from janus_utils import _reading, _ring
from janus_utils.error_handling import ConfigError, FileHandlerError, RingError

from conftest import run_cli

ROOT = os.geteuid() == 0
NOT_ROOT = "mounting a read-only tmpfs needs root"


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


MakeMount = Callable[..., Path]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[MakeMount]:
    """make(files={name: source}, writable=(names), options="") -> a read-only directory holding them.

    *files* are copied in before the remount; each name in *writable* is
    bind-mounted from a writable file (a source in *files*, else empty; a
    name ending in -ring gets a new, empty ring).  Skips when mounting fails.
    """
    if not ROOT:
        pytest.skip(NOT_ROOT)
    mounts: list[str] = []

    def make(files: dict[str, Path] | None = None, writable: Sequence[str] = (), options: str = "") -> Path:
        where = tmp_path / f"ro{len(mounts)}"
        where.mkdir()
        try:
            _mount("-t", "tmpfs", "-o", ",".join(filter(None, ["size=64m", options])), "tmpfs", str(where))
        except (OSError, subprocess.CalledProcessError) as err:
            pytest.skip(f"cannot mount a tmpfs here: {getattr(err, 'stderr', b'') or err}")
        mounts.append(str(where))
        for name, source in (files or {}).items():
            shutil.copyfile(source, where / name)
            os.chmod(where / name, 0o600)
        for name in writable:
            (where / name).touch(0o600, exist_ok=True)
        if "rw" not in options.split(","):
            _mount("-o", "remount,ro", str(where))
        for name in writable:
            source = tmp_path / f"rw{len(mounts)}-{name}"
            if name in (files or {}):
                shutil.copyfile((files or {})[name], source)
            elif name.endswith("-ring"):
                _ring.Ring(str(source), 1 << 16)
            else:
                source.touch()
            os.chmod(source, 0o600)
            _mount("--bind", str(source), str(where / name))
            mounts.append(str(where / name))
        return where

    yield make
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


_WRITER = textwrap.dedent(
    """
    import os, sys
    import janus_utils as ju

    db, count, crash = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "crash"
    ju.configure(db, console=False)
    log = ju.get_logger("svc")
    for i in range(count):
        log.info("order %d paid", i, user_id=str(i % 3))
    log.error("gateway timeout", user_id="1")
    ju.flush(timeout=10)
    if crash:
        os._exit(0)  # no shutdown: the last batches stay in the -wal
    ju.shutdown()
    """
)


def write_logs(db: Path, count: int = 50, *, crash: bool = False) -> None:
    """*count* records and one ERROR into *db*, by a process of its own (its ring stays mapped)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(db), str(count), "crash" if crash else "clean"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert 0 == done.returncode, done.stderr


@pytest.fixture
def closed_db(tmp_path: Path) -> Path:
    """A log database closed cleanly: the file alone, no -wal or -shm."""
    db = tmp_path / "src" / "app.db"
    db.parent.mkdir()
    write_logs(db)
    assert not Path(f"{db}-wal").exists()
    return db


@pytest.fixture
def crashed_db(tmp_path: Path) -> Path:
    """A log database whose writer was killed: its last records are in the -wal only."""
    db = tmp_path / "crashed" / "app.db"
    db.parent.mkdir()
    write_logs(db, crash=True)
    assert Path(f"{db}-wal").stat().st_size > 0
    return db


class TestConfigure:
    def test_read_only_directory_is_a_config_error(self, read_only: MakeMount) -> None:
        """configure() in a read-only directory raises ConfigError (not RingError), from the ring's error."""
        where = read_only()
        with pytest.raises(ConfigError, match=r"cannot write in .*Read-only file system.*writable directory") as caught:
            ju.configure(where / "x.db", console=False)
        assert not isinstance(caught.value, RingError)
        assert isinstance(caught.value.__cause__, RingError)
        assert not ju.is_configured()

    def test_read_only_directory_with_a_flusher_process(self, read_only: MakeMount) -> None:
        """flusher='process' raises the same ConfigError."""
        where = read_only()
        with pytest.raises(ConfigError, match="Read-only file system"):
            ju.configure(where / "x.db", console=False, flusher="process")

    @pytest.mark.parametrize(
        ("writable", "fails_at"),
        [
            (("x.db-ring",), "x.db-flusher.lock"),
            (("x.db-ring", "x.db-flusher.lock"), "x.db"),
        ],
        ids=["lock-file", "database"],
    )
    def test_each_file_it_cannot_create_is_a_config_error(
        self, read_only: MakeMount, writable: tuple[str, ...], fails_at: str
    ) -> None:
        """Past a writable ring, a lock file or database the directory cannot take is the same ConfigError."""
        where = read_only(writable=writable)
        with pytest.raises(ConfigError, match=r"cannot write in .*Read-only file system") as caught:
            ju.configure(where / "x.db", console=False)
        assert fails_at in "".join(text for _, text in caught.value.cause_chain())
        assert not ju.is_configured()

    def test_existing_database_without_room_for_its_wal_is_a_config_error(
        self, read_only: MakeMount, closed_db: Path
    ) -> None:
        """A log database there whose -wal and -shm cannot be created (SQLite: "unable to open") says why."""
        where = read_only(files={"x.db": closed_db}, writable=("x.db-ring", "x.db-flusher.lock"))
        with pytest.raises(ConfigError, match=r"cannot write in .*Read-only file system") as caught:
            ju.configure(where / "x.db", console=False)
        assert "CantOpenError" in caught.value.cause_chain()[1][0]

    def test_no_inode_for_the_lock_file_waits(self, read_only: MakeMount, tmp_path: Path) -> None:
        """A full disk (no inode left for the lock file) makes configure() return; the flusher retries."""
        where = read_only(options="rw,nr_inodes=3")
        _ring.Ring(str(where / "x.db-ring"), 1 << 16)
        (where / "filler").touch()
        try:
            ju.configure(where / "x.db", console=False, ring_size=1 << 16)
            assert "No space left on device" in (ju.stats()["last_error"] or "")
        finally:
            ju.shutdown(timeout=2)

    def test_foreign_ring_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A ring file that is not a janus ring is a ConfigError, as README promises."""
        ring = tmp_path / "x.db-ring"
        ring.write_bytes(b"not a ring" * 1000)
        ring.chmod(0o600)
        with pytest.raises(ConfigError, match="not a janus ring|does not match"):
            ju.configure(tmp_path / "x.db", console=False)


class TestLogStore:
    def test_closed_database_is_read_from_the_file_alone(self, read_only: MakeMount, closed_db: Path) -> None:
        """A cleanly closed database on read-only media is searched and counted in full."""
        where = read_only(files={"app.db": closed_db})
        with ju.LogStore(where / "app.db") as store:
            assert store.immutable
            assert 51 == store.count()
            assert ["gateway timeout"] == [r.message for r in store.search("timeout")]
        assert ["app.db"] == os.listdir(where)

    def test_writable_directory_is_read_as_before(self, closed_db: Path) -> None:
        """Where the -shm can be made, the usual read-only connection is used."""
        with ju.LogStore(closed_db) as store:
            assert not store.immutable
            assert 51 == store.count()

    def test_directory_only_not_writable_is_refused(
        self, read_only: MakeMount, closed_db: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where the file system is writable but not by this user, immutable is not used: a writer may come."""
        where = read_only(files={"app.db": closed_db})
        # Not writable, yet not a read-only file system: how a directory of another user looks.
        monkeypatch.setattr(_reading, "_read_only_media", lambda directory: False)
        with pytest.raises(FileHandlerError, match=r"app.db-shm .* this user cannot write in .* copy app.db"):
            ju.LogStore(where / "app.db")

    def test_wal_that_cannot_be_read_is_refused(self, read_only: MakeMount, crashed_db: Path, tmp_path: Path) -> None:
        """A -wal without its -shm there is refused, never skipped; its copy elsewhere reads every record."""
        where = read_only(files={"app.db": crashed_db, "app.db-wal": Path(f"{crashed_db}-wal")})
        with pytest.raises(FileHandlerError, match=r"-wal file .* Copy app.db and app.db-wal together"):
            ju.LogStore(where / "app.db")
        copied = tmp_path / "copied"
        copied.mkdir()
        shutil.copyfile(where / "app.db", copied / "app.db")
        shutil.copyfile(where / "app.db-wal", copied / "app.db-wal")
        with ju.LogStore(copied / "app.db") as store:
            assert 51 == store.count()

    def test_wal_with_its_shm_is_read(self, read_only: MakeMount, crashed_db: Path) -> None:
        """Database, -wal and -shm together on read-only media: every record, the -wal's included."""
        files = {name: Path(f"{crashed_db}{name[6:]}") for name in ("app.db", "app.db-wal", "app.db-shm")}
        where = read_only(files=files)
        with ju.LogStore(where / "app.db") as store:
            assert not store.immutable
            assert 51 == store.count()


_SEALER = textwrap.dedent(
    """
    import sys
    import janus_utils as ju
    from janus_utils import seal

    db, key = sys.argv[1], sys.argv[2]
    print(seal.init_key(key, period="1h"))
    ju.configure(db, seal_key_file=key, console=False)
    for i in range(20):
        ju.get_logger("svc").info("sealed %d", i)
    ju.flush(timeout=10)
    ju.shutdown()
    """
)


class TestCli:
    @pytest.fixture
    def mounted(self, read_only: MakeMount, closed_db: Path) -> Path:
        return read_only(files={"app.db": closed_db}) / "app.db"

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["search", "timeout"], b"gateway timeout"),
            (["tail", "-n", "1"], b"gateway timeout"),
            (["count"], b"51"),
            (["export", "--format", "ndjson"], b'"order 49 paid"'),
        ],
        ids=["search", "tail", "count", "export"],
    )
    def test_reading_commands_work(self, mounted: Path, argv: list[str], expected: bytes) -> None:
        """search, tail, count and export read a database on read-only media."""
        done = run_cli([*argv, "--db", str(mounted)], cwd=mounted.parent)
        assert (0, b"") == (done.returncode, done.stderr)
        assert expected in done.stdout

    def test_refused_wal_is_one_line(self, read_only: MakeMount, crashed_db: Path) -> None:
        """The refusal of an unreadable -wal is janus-logs' one-line error, exit 2."""
        where = read_only(files={"app.db": crashed_db, "app.db-wal": Path(f"{crashed_db}-wal")})
        done = run_cli(["count", "--db", str(where / "app.db")], cwd=where)
        assert 2 == done.returncode
        assert done.stderr.startswith(b"janus-logs: error: ") and b"app.db-wal" in done.stderr
        assert 1 == done.stderr.count(b"\n")

    def test_verify(self, read_only: MakeMount, tmp_path: Path) -> None:
        """verify checks a sealed database on read-only media."""
        pytest.importorskip("cryptography")
        src = tmp_path / "sealed"
        src.mkdir()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-c", _SEALER, str(src / "app.db"), str(src / "seal.key")],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert 0 == done.returncode, done.stderr
        where = read_only(files={"app.db": src / "app.db", "app.db-seal.head": src / "app.db-seal.head"})
        checked = run_cli(["verify", "--db", str(where / "app.db"), "--verify-key", done.stdout.strip()], cwd=where)
        assert (0, b"") == (checked.returncode, checked.stderr)
        assert b"intact" in checked.stdout
