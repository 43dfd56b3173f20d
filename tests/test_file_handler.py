"""Tests for janus_utils.file_handler: atomic writes, paths, private files, locks, gzip NDJSON."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from janus_utils import file_handler as fh
from janus_utils.error_handling.utils.errors import FileHandlerError


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with a permissive umask, so only explicit modes can make files private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def run_in_child(body: Callable[[], int]) -> int:
    """Fork, run *body* in the child, return its exit status (or -signal if killed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class TestAtomicWrite:
    def test_writes_bytes(self, tmp_path: Path) -> None:
        """Bytes are written as given."""
        target = tmp_path / "a.bin"
        fh.atomic_write(target, b"\x00\x01data")
        assert b"\x00\x01data" == target.read_bytes()

    def test_writes_str_as_utf8(self, tmp_path: Path) -> None:
        """Text is written as UTF-8."""
        target = tmp_path / "a.txt"
        fh.atomic_write(target, "héllo")
        assert "héllo".encode() == target.read_bytes()

    def test_replaces_existing_content_and_leaves_no_temp(self, tmp_path: Path) -> None:
        """An existing file is replaced and nothing else is left in the directory."""
        target = tmp_path / "a.txt"
        target.write_text("old")
        fh.atomic_write(target, "new")
        assert ("new", ["a.txt"]) == (target.read_text(), sorted(os.listdir(tmp_path)))

    def test_default_mode_is_0600_under_open_umask(self, tmp_path: Path, open_umask: None) -> None:
        """The file is 0600 even when the umask would allow more."""
        target = tmp_path / "secret"
        fh.atomic_write(target, "x")
        assert 0o600 == mode_of(target)

    def test_given_mode_is_exact_whatever_the_umask(self, tmp_path: Path) -> None:
        """The requested mode is applied exactly even under a restrictive umask."""
        old = os.umask(0o077)
        try:
            target = fh.atomic_write(tmp_path / "shared", "x", mode=0o644)
        finally:
            os.umask(old)
        assert 0o644 == mode_of(target)

    def test_failed_write_keeps_old_content_and_removes_temp(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A write error raises FileHandlerError, keeps the old file and removes the temp file."""
        target = tmp_path / "a.txt"
        target.write_text("old")

        def disk_full(fd: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(fh, "_write_all", disk_full)
        with pytest.raises(FileHandlerError, match="free space"):
            fh.atomic_write(target, "new")
        assert ("old", ["a.txt"]) == (target.read_text(), sorted(os.listdir(tmp_path)))

    def test_refuses_to_overwrite_when_asked(self, tmp_path: Path) -> None:
        """With overwrite=False an existing file is an error with code file_exists."""
        target = tmp_path / "a.txt"
        target.write_text("old")
        with pytest.raises(FileHandlerError) as caught:
            fh.atomic_write(target, "new", overwrite=False)
        assert ("file_exists", "old", []) == (caught.value.code, target.read_text(), temp_files(tmp_path))

    @pytest.mark.parametrize(
        ("where", "expected"),
        [("mid_write", "old"), ("before_rename", "old"), ("after_rename", "new")],
    )
    def test_kill_during_write_leaves_old_or_new_never_partial(
        self, tmp_path: Path, where: str, expected: str
    ) -> None:
        """A writer SIGKILLed at any point leaves the old or the new content, never a mix."""
        target = tmp_path / "state.json"
        old, new = "old" * 1000, "new" * 100_000
        target.write_text(old)

        def child() -> int:
            real_write, real_publish = fh._write_all, fh._publish

            def write_half(fd: int, data: bytes) -> None:
                real_write(fd, data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)

            def publish(temp: Path, dest: Path, *, overwrite: bool) -> None:
                if where == "after_rename":
                    real_publish(temp, dest, overwrite=overwrite)
                os.kill(os.getpid(), signal.SIGKILL)

            if where == "mid_write":
                fh._write_all = write_half  # type: ignore[assignment]
            else:
                fh._publish = publish  # type: ignore[assignment]
            fh.atomic_write(target, new)
            return 0

        assert -signal.SIGKILL == run_in_child(child)
        content = target.read_text()
        assert expected == {old: "old", new: "new"}.get(content, "partial")

        fh.remove_stale_temp_files(tmp_path)
        assert ["state.json"] == sorted(os.listdir(tmp_path))

    def test_stale_temp_of_a_live_writer_is_kept(self, tmp_path: Path) -> None:
        """remove_stale_temp_files leaves temp files whose writer still runs."""
        live = tmp_path / f".x.{os.getpid()}.{'0' * 16}.tmp"
        live.write_text("in progress")
        assert ([], [live.name]) == (fh.remove_stale_temp_files(tmp_path), temp_files(tmp_path))


class TestAtomicOutput:
    def test_appears_only_when_complete_and_private(self, tmp_path: Path, open_umask: None) -> None:
        """Nothing is at the path while writing; after, the content is there, 0600 under umask 000."""
        target = tmp_path / "out.csv"
        with fh.atomic_output(target) as stream:
            stream.write("a,b\n")
            during = target.exists()
        assert (False, "a,b\n", 0o600, []) == (during, target.read_text(), mode_of(target), temp_files(tmp_path))

    def test_exception_leaves_the_old_content(self, tmp_path: Path) -> None:
        """A failure part way removes the temp file; an existing file keeps its content."""
        target = tmp_path / "out.csv"
        target.write_text("old\n")
        with pytest.raises(RuntimeError):
            with fh.atomic_output(target, overwrite=True) as stream:
                stream.write("new")
                raise RuntimeError("boom")
        assert ("old\n", []) == (target.read_text(), temp_files(tmp_path))

    def test_existing_file_refused_before_writing(self, tmp_path: Path) -> None:
        """Without overwrite an existing file is refused at once (code file_exists)."""
        target = tmp_path / "out.csv"
        target.write_text("old\n")
        with pytest.raises(FileHandlerError) as caught:
            with fh.atomic_output(target):
                pytest.fail("the body must not run")
        assert ("file_exists", "old\n") == (caught.value.code, target.read_text())

    @pytest.mark.parametrize("overwrite", [False, True])
    def test_symlink_never_written_through(self, tmp_path: Path, overwrite: bool) -> None:
        """A symlink at the path is refused, even with overwrite; its target is untouched."""
        victim = tmp_path / "victim"
        victim.write_text("precious\n")
        (tmp_path / "out.csv").symlink_to(victim)
        with pytest.raises(FileHandlerError) as caught:
            with fh.atomic_output(tmp_path / "out.csv", overwrite=overwrite) as stream:
                stream.write("x")
        assert ("symlink_refused", "precious\n") == (caught.value.code, victim.read_text())

    def test_symlink_planted_while_writing_is_replaced_not_followed(self, tmp_path: Path) -> None:
        """A symlink that appears during the write is caught by the second check; the victim is untouched."""
        victim = tmp_path / "victim"
        victim.write_text("precious\n")
        with pytest.raises(FileHandlerError):
            with fh.atomic_output(tmp_path / "out.csv", overwrite=True) as stream:
                stream.write("x")
                (tmp_path / "out.csv").symlink_to(victim)
        assert ("precious\n", []) == (victim.read_text(), temp_files(tmp_path))


class TestSafeJoin:
    def test_joins_inside_base(self, tmp_path: Path) -> None:
        """Plain relative parts are joined under the base."""
        assert tmp_path.resolve() / "a" / "b.txt" == fh.safe_join(tmp_path, "a", "b.txt")

    def test_nested_part_with_slashes_is_fine(self, tmp_path: Path) -> None:
        """A part holding several components stays under the base."""
        assert tmp_path.resolve() / "a" / "b" == fh.safe_join(tmp_path, "a/./b")

    @pytest.mark.parametrize("part", ["..", "../x", "a/../../x", "a/..", "x/../y"])
    def test_refuses_dotdot(self, tmp_path: Path, part: str) -> None:
        """Any '..' component is refused."""
        with pytest.raises(FileHandlerError, match=r"'\.\.'"):
            fh.safe_join(tmp_path, part)

    @pytest.mark.parametrize("part", ["/etc/passwd", "//x"])
    def test_refuses_absolute(self, tmp_path: Path, part: str) -> None:
        """An absolute part is refused."""
        with pytest.raises(FileHandlerError, match="absolute"):
            fh.safe_join(tmp_path, "a", part)

    def test_refuses_nul(self, tmp_path: Path) -> None:
        """A NUL byte in a part is refused."""
        with pytest.raises(FileHandlerError, match="NUL"):
            fh.safe_join(tmp_path, "a\x00b")

    def test_refuses_nul_in_base(self, tmp_path: Path) -> None:
        """A NUL byte in the base is refused."""
        with pytest.raises(FileHandlerError, match="NUL"):
            fh.safe_join(f"{tmp_path}\x00x", "a")

    def test_refuses_symlink_that_escapes(self, tmp_path: Path) -> None:
        """A symlink under the base pointing outside it is refused."""
        base = tmp_path / "base"
        base.mkdir()
        (tmp_path / "outside").mkdir()
        (base / "link").symlink_to(tmp_path / "outside")
        with pytest.raises(FileHandlerError, match="symlink"):
            fh.safe_join(base, "link", "file")

    def test_refuses_dangling_symlink_that_escapes(self, tmp_path: Path) -> None:
        """A symlink to a missing target outside the base is refused too."""
        base = tmp_path / "base"
        base.mkdir()
        (base / "link").symlink_to("/nonexistent/janus")
        with pytest.raises(FileHandlerError, match="symlink"):
            fh.safe_join(base, "link")

    def test_allows_symlink_that_stays_inside(self, tmp_path: Path) -> None:
        """A symlink to another place under the base is allowed and resolved."""
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        assert tmp_path.resolve() / "real" / "f" == fh.safe_join(tmp_path, "link", "f")


class TestReadLimited:
    def test_reads_small_file(self, tmp_path: Path) -> None:
        """A file within the limit is read whole."""
        path = tmp_path / "f"
        path.write_bytes(b"12345")
        assert b"12345" == fh.read_limited(path, 5)

    def test_refuses_larger_file_without_reading_it(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file over the limit is refused from its size, before any read."""
        path = tmp_path / "f"
        path.write_bytes(b"123456")
        reads: list[int] = []
        real_read = os.read

        def counting_read(fd: int, n: int) -> bytes:
            reads.append(n)
            return real_read(fd, n)

        monkeypatch.setattr(os, "read", counting_read)
        with pytest.raises(FileHandlerError, match="more than the 5"):
            fh.read_limited(path, 5)
        assert [] == reads

    def test_refuses_directory(self, tmp_path: Path) -> None:
        """A directory is not a file to read."""
        with pytest.raises(FileHandlerError, match="not a regular file"):
            fh.read_limited(tmp_path, 100)

    def test_refuses_fifo_without_hanging(self, tmp_path: Path) -> None:
        """A FIFO with no writer is refused at once instead of blocking the open."""
        os.mkfifo(tmp_path / "pipe")
        with pytest.raises(FileHandlerError, match="not a regular file"):
            fh.read_limited(tmp_path / "pipe", 100)

    def test_missing_file_is_file_handler_error(self, tmp_path: Path) -> None:
        """A missing file raises FileHandlerError, not OSError."""
        with pytest.raises(FileHandlerError, match="cannot open"):
            fh.read_limited(tmp_path / "missing", 100)


class TestPrivateFiles:
    def test_creates_dir_0700(self, tmp_path: Path, open_umask: None) -> None:
        """A new private directory, and its missing parents, are 0700."""
        target = tmp_path / "a" / "b"
        fh.ensure_private_dir(target)
        assert (0o700, 0o700) == (mode_of(tmp_path / "a"), mode_of(target))

    def test_tightens_own_readable_dir(self, tmp_path: Path) -> None:
        """An existing directory of ours readable by others is tightened to 0700."""
        target = tmp_path / "d"
        target.mkdir()
        target.chmod(0o755)
        fh.ensure_private_dir(target)
        assert 0o700 == mode_of(target)

    def test_refuses_group_writable_dir(self, tmp_path: Path) -> None:
        """A directory writable by group or others is refused and left as it was."""
        target = tmp_path / "d"
        target.mkdir()
        target.chmod(0o770)
        with pytest.raises(FileHandlerError, match="chmod 700"):
            fh.ensure_private_dir(target)
        assert 0o770 == mode_of(target)

    def test_refuses_symlinked_dir(self, tmp_path: Path) -> None:
        """A symlink in place of the directory is refused."""
        (tmp_path / "real").mkdir(mode=0o700)
        (tmp_path / "link").symlink_to(tmp_path / "real")
        with pytest.raises(FileHandlerError, match="symlink"):
            fh.ensure_private_dir(tmp_path / "link")

    def test_refuses_file_in_place_of_dir(self, tmp_path: Path) -> None:
        """A regular file where the directory should be is refused."""
        (tmp_path / "f").write_text("x")
        with pytest.raises(FileHandlerError, match="not a directory"):
            fh.ensure_private_dir(tmp_path / "f")

    def test_private_file_is_0600(self, tmp_path: Path, open_umask: None) -> None:
        """private_file creates an empty 0600 file whatever the umask."""
        path = fh.private_file(tmp_path / "f")
        assert (0o600, b"") == (mode_of(path), path.read_bytes())

    def test_private_file_fixes_existing_mode_and_keeps_content(self, tmp_path: Path) -> None:
        """An existing file is made 0600 and its content kept."""
        path = tmp_path / "f"
        path.write_text("keep")
        path.chmod(0o644)
        fh.private_file(path)
        assert (0o600, "keep") == (mode_of(path), path.read_text())

    def test_open_private_refuses_symlink(self, tmp_path: Path) -> None:
        """open_private does not follow a symlink."""
        (tmp_path / "target").write_text("x")
        (tmp_path / "link").symlink_to(tmp_path / "target")
        with pytest.raises(FileHandlerError, match="symlink"):
            fh.open_private(tmp_path / "link")

    def test_open_private_returns_usable_fd(self, tmp_path: Path, open_umask: None) -> None:
        """open_private returns a writable fd on a new 0600 file."""
        path = tmp_path / "f"
        fd = fh.open_private(path, os.O_WRONLY | os.O_CREAT)
        try:
            os.write(fd, b"abc")
        finally:
            os.close(fd)
        assert (0o600, b"abc") == (mode_of(path), path.read_bytes())


class TestFileLock:
    def test_context_manager_holds_then_releases(self, tmp_path: Path) -> None:
        """The lock is held inside the with block and released after it."""
        lock = fh.FileLock(tmp_path / "l")
        with lock:
            inside = lock.locked
        assert (True, False) == (inside, lock.locked)

    def test_lock_file_is_0600(self, tmp_path: Path, open_umask: None) -> None:
        """The lock file is created 0600."""
        with fh.FileLock(tmp_path / "l"):
            pass
        assert 0o600 == mode_of(tmp_path / "l")

    def test_second_lock_in_same_process_is_excluded(self, tmp_path: Path) -> None:
        """Two FileLocks on one path exclude each other, even in one process."""
        first, second = fh.FileLock(tmp_path / "l"), fh.FileLock(tmp_path / "l")
        with first:
            results = (second.acquire(blocking=False), second.acquire(timeout=0.05))
        assert (False, False) == results
        assert second.acquire(blocking=False)
        second.release()

    def test_excludes_other_process(self, tmp_path: Path) -> None:
        """Another process cannot take the lock while it is held, and can after release."""
        path = tmp_path / "l"

        def try_lock() -> int:
            lock = fh.FileLock(path)
            got = lock.acquire(blocking=False)
            return 1 if got else 0

        with fh.FileLock(path):
            while_held = run_in_child(try_lock)
        after = run_in_child(try_lock)
        assert (0, 1) == (while_held, after)

    def test_not_reentrant(self, tmp_path: Path) -> None:
        """Acquiring a lock the same object holds is an error, not a deadlock."""
        lock = fh.FileLock(tmp_path / "l")
        with lock:
            with pytest.raises(FileHandlerError, match="re-entrant"):
                lock.acquire(blocking=False)

    def test_release_without_holding_is_error(self, tmp_path: Path) -> None:
        """Releasing a lock not held raises FileHandlerError."""
        with pytest.raises(FileHandlerError, match="does not hold"):
            fh.FileLock(tmp_path / "l").release()

    def test_forked_child_does_not_keep_lock_after_parent_dies(self, tmp_path: Path) -> None:
        """A child forked while the lock is held does not hold it: the parent's death frees it."""
        path = tmp_path / "l"
        report_r, report_w = os.pipe()
        hold_r, hold_w = os.pipe()
        holder = os.fork()
        if holder == 0:  # pragma: no cover - runs in the child
            try:
                os.close(hold_w)  # else the grandchild would keep its own pipe open
                os.close(report_r)
                lock = fh.FileLock(path)
                lock.acquire()
                grandchild = os.fork()
                if grandchild == 0:
                    os.write(report_w, b"1" if lock.locked else b"0")
                    os.read(hold_r, 1)  # live on until the test is done
                    os._exit(0)
            finally:
                os._exit(0)
        os.close(report_w)
        os.close(hold_r)
        try:
            child_thinks_locked = os.read(report_r, 1)
            os.waitpid(holder, 0)  # the lock holder is dead; its child lives
            lock = fh.FileLock(path)
            got = lock.acquire(timeout=10)
            if got:
                lock.release()
        finally:
            os.close(hold_w)  # lets the grandchild exit
            os.close(report_r)
        assert (b"0", True) == (child_thinks_locked, got)

    def test_is_at_path_notices_a_deleted_or_replaced_lock_file(self, tmp_path: Path) -> None:
        """Deleting the file lets a second lock succeed; the holder can tell."""
        path = tmp_path / "l"
        first = fh.FileLock(path)
        with first:
            assert first.is_at_path()
            path.unlink()
            assert not first.is_at_path()
            second = fh.FileLock(path)
            assert second.acquire(blocking=False)  # another inode: not excluded
            path.unlink()
            path.write_bytes(b"")
            assert not second.is_at_path()
            second.release()
        assert not first.is_at_path()  # not held

    def test_touch_renews_the_held_files_times(self, tmp_path: Path) -> None:
        """So an age-based tmp cleaner does not take a lock file in use."""
        path = tmp_path / "l"
        with fh.FileLock(path) as lock:
            os.utime(path, (1, 1))
            lock.touch()
            assert path.stat().st_mtime > 1


class TestNDJSONGzip:
    RECORDS = [{"id": 1, "msg": "héllo"}, {"id": 2, "nested": {"a": [1, 2]}, "none": None}]

    def write(self, path: Path, records: list[dict[str, object]]) -> Path:
        with fh.NDJSONGzipWriter(path) as writer:
            for record in records:
                writer.write(record)
        return path

    def test_round_trip(self, tmp_path: Path) -> None:
        """Records written come back equal and in order."""
        path = self.write(tmp_path / "a.ndjson.gz", self.RECORDS)
        assert self.RECORDS == list(fh.iter_ndjson_gz(path))

    def test_sidecar_in_sha256sum_format(self, tmp_path: Path) -> None:
        """The .sha256 sidecar holds the file's digest and name as sha256sum writes them."""
        path = self.write(tmp_path / "a.ndjson.gz", self.RECORDS)
        expected = f"{hashlib.sha256(path.read_bytes()).hexdigest()}  a.ndjson.gz\n"
        assert expected == (tmp_path / "a.ndjson.gz.sha256").read_text()

    def test_files_are_0600(self, tmp_path: Path, open_umask: None) -> None:
        """The archive and its sidecar are private."""
        path = self.write(tmp_path / "a.ndjson.gz", self.RECORDS)
        assert (0o600, 0o600) == (mode_of(path), mode_of(fh.sidecar_path(path)))

    def test_invisible_until_closed(self, tmp_path: Path) -> None:
        """Nothing is at the target path until close; only a dot-temp file exists meanwhile."""
        path = tmp_path / "a.ndjson.gz"
        writer = fh.NDJSONGzipWriter(path)
        writer.write({"a": 1})
        during = (path.exists(), len(temp_files(tmp_path)))
        writer.close()
        assert ((False, 1), True, []) == (during, path.exists(), temp_files(tmp_path))

    def test_exception_leaves_nothing(self, tmp_path: Path) -> None:
        """Leaving the block with an exception removes the temp file and publishes nothing."""
        with pytest.raises(RuntimeError):
            with fh.NDJSONGzipWriter(tmp_path / "a.ndjson.gz") as writer:
                writer.write({"a": 1})
                raise RuntimeError("boom")
        assert [] == os.listdir(tmp_path)

    def test_same_records_same_bytes(self, tmp_path: Path) -> None:
        """The output is reproducible: same records, same checksum."""
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        a = self.write(tmp_path / "one" / "a.ndjson.gz", self.RECORDS)
        b = self.write(tmp_path / "two" / "a.ndjson.gz", self.RECORDS)
        assert fh.sha256_file(a) == fh.sha256_file(b)

    def test_never_overwrites(self, tmp_path: Path) -> None:
        """An existing target is not replaced; the error has code file_exists."""
        path = self.write(tmp_path / "a.ndjson.gz", self.RECORDS)
        before = path.read_bytes()
        with pytest.raises(FileHandlerError) as caught:
            self.write(path, [{"other": True}])
        assert ("file_exists", before, []) == (caught.value.code, path.read_bytes(), temp_files(tmp_path))

    def test_checksum_mismatch_refused_before_yielding(self, tmp_path: Path) -> None:
        """A file that does not match its sidecar raises before any record is yielded."""
        path = self.write(tmp_path / "a.ndjson.gz", self.RECORDS)
        other = self.write(tmp_path / "b.ndjson.gz", [{"forged": 1}])
        os.replace(other, path)
        seen: list[dict[str, object]] = []
        with pytest.raises(FileHandlerError) as caught:
            for record in fh.iter_ndjson_gz(path):
                seen.append(record)
        assert ("checksum_mismatch", []) == (caught.value.code, seen)

    def test_verify_false_skips_checksum(self, tmp_path: Path) -> None:
        """verify=False reads even when the sidecar does not match."""
        path = self.write(tmp_path / "a.ndjson.gz", self.RECORDS)
        fh.atomic_write(fh.sidecar_path(path), "0" * 64 + "  a.ndjson.gz\n")
        assert self.RECORDS == list(fh.iter_ndjson_gz(path, verify=False))

    def test_truncated_file_is_error(self, tmp_path: Path) -> None:
        """A truncated gzip stream (no sidecar to catch it) is a FileHandlerError."""
        path = tmp_path / "a.ndjson.gz"
        path.write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:-20])
        with pytest.raises(FileHandlerError, match="truncated or damaged"):
            list(fh.iter_ndjson_gz(path))

    def test_non_object_line_is_error(self, tmp_path: Path) -> None:
        """A line that is JSON but not an object is refused."""
        path = tmp_path / "a.ndjson.gz"
        path.write_bytes(gzip.compress(b"[1, 2]\n"))
        with pytest.raises(FileHandlerError, match="not a JSON object"):
            list(fh.iter_ndjson_gz(path))

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            (b'{"a": "\xff\xfe"}', "line 2 of .* is not UTF-8"),
            (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "line 2 of .* nested too deeply"),
            (b'{"a": ' + b"9" * 5000 + b"}", "line 2 of .* not valid JSON"),
            (b'{"a": 1', "line 2 of .* not valid JSON"),
        ],
        ids=["not-utf8", "nested-100000-deep", "int-of-5000-digits", "unterminated"],
    )
    def test_bad_line_is_error_naming_it(self, tmp_path: Path, line: bytes, message: str) -> None:
        """A line that is not UTF-8 JSON, or JSON too deep or too big for Python, names its line."""
        path = tmp_path / "a.ndjson.gz"
        path.write_bytes(gzip.compress(b'{"ok": 1}\n' + line + b"\n"))
        with pytest.raises(FileHandlerError, match=message):
            list(fh.iter_ndjson_gz(path))

    def test_line_longer_than_the_limit_is_not_read_whole(self, tmp_path: Path) -> None:
        """A line past max_line_bytes is refused; one exactly at it (newline aside) is read."""
        path = tmp_path / "a.ndjson.gz"
        at_limit = b'{"a": "' + b"x" * 91 + b'"}'  # 100 bytes
        path.write_bytes(gzip.compress(at_limit + b"\n" + at_limit + b"y\n"))
        seen: list[dict[str, object]] = []
        with pytest.raises(FileHandlerError, match="line 2 of .* longer than 100 bytes") as caught:
            for record in fh.iter_ndjson_gz(path, max_line_bytes=100):
                seen.append(record)
        assert ("line_too_long", [{"a": "x" * 91}]) == (caught.value.code, seen)

    def test_line_numbers_count_blank_lines(self, tmp_path: Path) -> None:
        """iter_ndjson_gz_lines numbers lines as an editor does, blank ones included."""
        path = tmp_path / "a.ndjson.gz"
        path.write_bytes(gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
        assert [(1, {"a": 1}), (3, {"a": 2})] == list(fh.iter_ndjson_gz_lines(path))

    def test_fifo_is_refused_without_waiting(self, tmp_path: Path) -> None:
        """A FIFO in an archive's place is not a regular file: refused, never opened for a writer."""
        path = tmp_path / "a.ndjson.gz"
        os.mkfifo(path)
        with pytest.raises(FileHandlerError, match="not a regular file"):
            list(fh.iter_ndjson_gz(path))

    @pytest.mark.parametrize("kind", ["fifo", "loop", "dangling"])
    def test_unreadable_sidecar_is_refused_not_skipped(self, tmp_path: Path, kind: str) -> None:
        """A sidecar that is a FIFO or a broken link is an error, not a reason to skip the check."""
        path = self.write(tmp_path / "a.ndjson.gz", self.RECORDS)
        side = fh.sidecar_path(path)
        side.unlink()
        if kind == "fifo":
            os.mkfifo(side)
        else:
            os.symlink(side.name if kind == "loop" else "missing-target", side)
        with pytest.raises(FileHandlerError, match="sha256"):
            list(fh.iter_ndjson_gz(path))

    def test_unserialisable_value_is_error(self, tmp_path: Path) -> None:
        """A value JSON cannot hold raises FileHandlerError and nothing is published."""
        with pytest.raises(FileHandlerError, match="as JSON"):
            with fh.NDJSONGzipWriter(tmp_path / "a.ndjson.gz") as writer:
                writer.write({"when": object()})
        assert [] == os.listdir(tmp_path)

    def test_sha256_file(self, tmp_path: Path) -> None:
        """sha256_file matches hashlib on the whole content."""
        path = tmp_path / "f"
        path.write_bytes(b"x" * (3 << 20))
        assert hashlib.sha256(b"x" * (3 << 20)).hexdigest() == fh.sha256_file(path)
