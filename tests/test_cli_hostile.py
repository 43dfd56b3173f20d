"""janus-logs under hostile input: a real process, one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import BASE_TS, make_row, open_writer, write_batch

Argv = Sequence[str | bytes]


def run_cli(argv: Argv, cwd: Path, env: dict[str, str | bytes] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m janus_utils ARGV`` in *cwd*; stdin closed, so nothing can wait on it."""
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
    )


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
    return root


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
