"""janus-logs under hostile input: a real process, one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import BASE_TS, make_row, open_writer, run_cli, write_batch

Argv = Sequence[str | bytes]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with good.db (three records) and the hostile files the cases name."""
    root = tmp_path_factory.mktemp("hostile")
    db = open_writer(root / "good.db")
    try:
        write_batch(db, [make_row(f"payment {n} timeout", ts=BASE_TS + n, user_id="42") for n in range(3)])
    finally:
        db.close()
    shutil.copy(root / "good.db", os.fsencode(root) + b"/caf\xe9.db")
    (root / "a-directory").mkdir()
    os.mkfifo(root / "a-fifo")
    (root / "empty.db").write_bytes(b"")
    (root / "text.db").write_text("not a database\n" * 100)
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    for name, (content, sidecar) in ARCHIVES.items():
        _write_archive(root / f"arch-{name}", content, sidecar)
    return root


ARCHIVE_NAME = "janus-logs-2023-11-14.1-1.ndjson.gz"
GOOD_RECORD = {"id": 1, "ts": BASE_TS, "level": 20, "logger": "app", "message": "restored"}


def _gzip_bomb() -> bytes:
    """One line of 2 GiB once decompressed, 2 MB on disk: gzip members of 16 MiB, repeated."""
    member = gzip.compress(b"a" * (16 << 20), compresslevel=9)
    return gzip.compress(b'{"id": 1, "message": "') + member * 128


def _write_archive(directory: Path, content: bytes | None, sidecar: str) -> None:
    """An archive directory holding *content* under an archive's name (None: a FIFO there)."""
    directory.mkdir()
    path = directory / ARCHIVE_NAME
    if content is None:
        os.mkfifo(path)
    else:
        path.write_bytes(content)
    side = directory / (ARCHIVE_NAME + ".sha256")
    if sidecar == "good" and content is not None:
        side.write_text(f"{hashlib.sha256(content).hexdigest()}  {ARCHIVE_NAME}\n")
    elif sidecar == "fifo":
        os.mkfifo(side)
    elif sidecar == "loop":
        os.symlink(side.name, side)


def _line(text: bytes) -> bytes:
    return gzip.compress(text + b"\n")


# name -> (archive bytes, its .sha256: "good", "none", "fifo" or "loop"), and what
# importing or searching it must say.  The bomb needs its content made lazily.
ARCHIVES: dict[str, tuple[bytes | None, str]] = {
    "non-utf8": (_line(b'{"id": 1, "ts": 1, "level": 20, "logger": "\xff\xfe", "message": "m"}'), "good"),
    "deep-json": (_line(b'{"id": 1, "fields": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "good"),
    "5000-digits": (_line(b'{"id": ' + b"9" * 5000 + b"}"), "good"),
    "not-an-object": (_line(b"[1, 2, 3]"), "good"),
    "truncated": (_line(json.dumps(GOOD_RECORD).encode() * 500)[:-30], "none"),
    "not-gzip": (b"this is not gzip\n", "none"),
    "checksum-differs": (_line(json.dumps(GOOD_RECORD).encode()), "fifo"),
    "sidecar-loop": (_line(json.dumps(GOOD_RECORD).encode()), "loop"),
}
ARCHIVE_ERRORS = {
    "non-utf8": "line 1 of",
    "deep-json": "nested too deeply",
    "5000-digits": "not valid JSON",
    "not-an-object": "not a JSON object",
    "truncated": "truncated or damaged",
    "not-gzip": "truncated or damaged",
    "checksum-differs": "not a regular file",
    "sidecar-loop": "sha256",
}


# (argv, what the one error line must say).  Each names the database itself
# when it needs one; "--db good.db" is added to the others.
REFUSED: list[tuple[Argv, str]] = [
    # times, ages and sizes past what 64-bit nanoseconds or bytes hold
    (["search", "--since", "9" * 400], "out of the range"),
    (["search", "--since", "9" * 400 + "d"], "too long"),
    (["tail", "--until", "1e400"], "cannot read '1e400' as a time"),
    (["stats", "--since", ""], "empty"),
    (["export", "--since", "nan"], "cannot read 'nan' as a time"),
    (["prune", "--older-than", "10000000000w"], "too long"),
    (["prune", "--older-than", "1" * 5000 + "d"], "too long"),
    (["prune", "--max-bytes", "1" * 5000], "too large"),
    (["prune", "--level-age", "9" * 30 + "=1d"], "too large"),
    (["prune", "--level-age", "DEBUG=" + "9" * 400 + "w"], "too long"),
    # counts and numbers
    (["prune", "--max-rows", "9" * 30], "expected at most"),
    (["search", "--limit", "9" * 5000], "expected at most"),
    (["search", "--limit", "-1"], "expected 0 or more"),
    (["tail", "-n", "inf"], "expected a whole number"),
    (["tail", "-f", "--interval", "inf"], "expected at most 86400 seconds"),
    (["tail", "-f", "--interval", "nan"], "expected more than 0 seconds"),
    (["search", "--level", "9" * 400], "too large"),
    (["stats", "--level", "-5"], "unknown level"),
    (["search", "--field", "nokey"], "expected KEY=VALUE"),
    (["search", "--order", "sideways"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    # searches too large to run: refused at once, with the limit
    (["search", " ".join(["a*"] * 5000)], "5,000 prefix* terms; a search takes at most 8"),
    (["search", "--raw", " ".join(["a*"] * 800)], "800 prefix* terms"),
    (["export", "x" * 100_000], "100,000 characters long; a search takes at most 10,000"),
    (["search", "--raw", "x" * 100_000], "100,000 characters long"),
    (["search", " ".join(f"w{n}" for n in range(1500)), "--archives", "a-directory", "--db", "missing.db"], "1,500 words"),
    (["stats", "--raw", "x " * 50_000], "unrecognized arguments: --raw x x x"),
    (["search", "--timeout", "-1"], "expected 0 (no limit) to 86400 seconds"),
    (["tail", "--timeout", "nan"], "expected 0 (no limit)"),
    # the console's server: a port past 65535, a token "file" that is a pipe or a device
    (["serve", "--port", "99999"], "expected a port from 0 to 65535"),
    (["serve", "--token-file", "a-fifo", "--host", "0.0.0.0"], "a-fifo is not a regular file"),
    (["serve", "--token-file", "/dev/zero", "--host", "0.0.0.0"], "/dev/zero is not a regular file"),
    # bytes that are not UTF-8, in argv and in the environment
    ([b"search", b"--user", b"\xff\xfe"], "not valid Unicode"),
    ([b"search", b"--raw", b"caf\xe9"], "not valid Unicode"),
    ([b"stats", b"--db", b"caf\xe9.db"], "not valid UTF-8"),
    ([b"prune", b"--db", b"caf\xe9.db", b"--max-rows", b"1"], "not valid UTF-8"),
    ([b"archive", b"import", b"a-directory", b"--db", b"caf\xe9.db"], "not valid UTF-8"),
    # a database that is missing, or is not a database file
    (["search", "--db", "missing.db"], "does not exist"),
    (["tail", "--db", "a-directory"], "is a directory"),
    (["stats", "--db", "a-fifo"], "not a regular file"),
    (["export", "--db", "loop-a"], "not a regular file"),
    (["search", "--db", "empty.db"], "not a janus log database"),
    (["search", "--db", "text.db"], "not a SQLite database"),
    (["prune", "--db", "a-directory", "--max-rows", "1"], "no log database"),
    (["prune", "--db", "text.db", "--max-rows", "1"], "text.db' is not a SQLite database"),
]


def _case_id(argv: Argv) -> str:
    words = [os.fsdecode(word) for word in argv]
    return " ".join(word if len(word) <= 12 else word[:12] + "..." for word in words)


class TestHostileInput:
    @pytest.mark.slow
    @pytest.mark.parametrize(("argv", "expected"), REFUSED, ids=[_case_id(argv) for argv, _ in REFUSED])
    def test_refused_with_one_line_and_exit_2(self, workdir: Path, argv: Argv, expected: str) -> None:
        """Hostile values are refused: exit 2, one 'janus-logs: error:' line saying what was wrong."""
        words = [os.fsencode(word) for word in argv]
        if b"--db" not in words and words[0] not in (b"frobnicate", b"archive"):
            words += [b"--db", b"good.db"]
        result = run_cli(words, workdir)
        err = result.stderr.decode("utf-8", "replace")
        assert (2, b"", 1) == (result.returncode, result.stdout, len(err.splitlines())), err
        assert "Traceback" not in err and err.startswith("janus-logs") and ": error: " in err
        # Said by the check that knows the value, not the last-resort handler.
        assert expected in err and "unexpected" not in err, err

    @pytest.mark.slow
    @pytest.mark.parametrize("name", sorted(ARCHIVE_ERRORS))
    @pytest.mark.parametrize("command", ["import", "search"])
    def test_hostile_archive(self, workdir: Path, name: str, command: str) -> None:
        """A damaged or hostile archive is one error line naming it, exit 2, whether imported or searched."""
        directory = f"arch-{name}"
        if command == "import":
            argv = ["archive", "import", directory, "--db", f"imported-{name}.db"]
        else:
            argv = ["search", "--archives", directory, "--db", "missing.db"]
        result = run_cli(argv, workdir)
        err = result.stderr.decode("utf-8", "replace")
        assert (2, 1) == (result.returncode, len(err.splitlines())), err
        assert "Traceback" not in err and "unexpected" not in err and ARCHIVE_ERRORS[name] in err, err

    @pytest.mark.slow
    @pytest.mark.parametrize("command", ["import", "search"])
    def test_gzip_bomb_is_not_read_into_memory(self, tmp_path: Path, command: str) -> None:
        """One 2 GiB line under a 1 GiB address-space limit: refused after 64 MiB, not a MemoryError."""
        _write_archive(tmp_path / "bomb", _gzip_bomb(), "good")
        if command == "import":
            argv = ["archive", "import", "bomb", "--db", "bombed.db"]
        else:
            argv = ["search", "--archives", "bomb", "--db", "missing.db"]
        result = run_cli(argv, tmp_path, memory_limit=1 << 30)
        err = result.stderr.decode("utf-8", "replace")
        assert (2, 1) == (result.returncode, len(err.splitlines())), err
        assert "longer than 67,108,864 bytes" in err and "Traceback" not in err

    @pytest.mark.slow
    def test_fifo_named_like_an_archive(self, tmp_path: Path) -> None:
        """A FIFO given as the archive is refused at once, not waited on."""
        _write_archive(tmp_path / "pipes", None, "none")
        result = run_cli(["archive", "import", f"pipes/{ARCHIVE_NAME}", "--db", "x.db"], tmp_path)
        err = result.stderr.decode("utf-8", "replace")
        assert (2, 1, True) == (result.returncode, len(err.splitlines()), "no archive at" in err)

    @pytest.mark.slow
    @pytest.mark.parametrize(("redirect", "message"), [(">&-", "standard output is closed"), ("> /dev/full", "No space left")])
    def test_output_that_cannot_be_written(self, workdir: Path, redirect: str, message: str) -> None:
        """Standard output closed by the shell, or on a full disk: one error line, exit 2."""
        result = subprocess.run(
            f"{shlex.quote(sys.executable)} -m janus_utils export --db good.db {redirect}",
            shell=True,
            cwd=workdir,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=120,
        )
        err = result.stderr.decode()
        assert (2, 1, True) == (result.returncode, len(err.splitlines()), message in err), err

    @pytest.mark.slow
    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
    @pytest.mark.parametrize("what", ["database", "archive"])
    def test_unreadable_file(self, tmp_path: Path, workdir: Path, what: str) -> None:
        """A database or an archive this user may not read: one error line, exit 2."""
        shutil.copy(workdir / "good.db", tmp_path / "locked.db")
        _write_archive(tmp_path / "arch", _line(json.dumps(GOOD_RECORD).encode()), "none")
        locked = tmp_path / "locked.db" if what == "database" else tmp_path / "arch" / ARCHIVE_NAME
        locked.chmod(0)
        argv = ["search", "--db", "locked.db"] if what == "database" else ["archive", "import", "arch", "--db", "new.db"]
        result = run_cli(argv, tmp_path)
        err = result.stderr.decode()
        assert (2, 1, False) == (result.returncode, len(err.splitlines()), "Traceback" in err or "unexpected" in err), err

    @pytest.mark.slow
    def test_non_utf8_database_from_the_environment(self, workdir: Path) -> None:
        """JANUS_LOG_DB naming a non-UTF-8 path is one error line, exit 2."""
        result = run_cli(["stats"], workdir, env={"JANUS_LOG_DB": os.fsencode(workdir) + b"/caf\xe9.db"})
        err = result.stderr.decode("utf-8", "replace")
        assert (2, 1, True) == (result.returncode, len(err.splitlines()), "not valid UTF-8" in err)

    @pytest.mark.slow
    @pytest.mark.parametrize(
        "argv",
        [
            ["search", "--field", "a=" + "[" * 100_000],  # too deep for JSON: compared as text
            ["search", "--field", "a=" + "9" * 5000],  # past int()'s digits: compared as text
            ["search", "(((((" * 1000 + "timeout"],
            ["search", '"' * 999],
        ],
        ids=["field-deep-json", "field-5000-digits", "query-5000-parens", "query-999-quotes"],
    )
    def test_odd_but_valid_values_are_searched(self, workdir: Path, argv: list[str]) -> None:
        """Values that are odd but meaningful are searched for, not refused, and nothing is printed to stderr."""
        result = run_cli([*argv, "--db", "good.db"], workdir)
        assert (result.returncode in (0, 1), b"") == (True, result.stderr)
