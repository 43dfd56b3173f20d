"""janus-logs as an operator used to journalctl, lnav, grep and jq drives it: real subprocesses, pipes and a terminal."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import BASE_TS, make_row, open_writer, run_cli, write_batch

SECOND = 1_000_000_000
TRACEBACK = 'Traceback (most recent call last):\n  File "app.py", line 3, in pay\n    charge()\nRuntimeError: card declined'


def _rows(count: int) -> list[tuple[object, ...]]:
    rows = []
    for n in range(count):
        if n % 10 == 9:
            rows.append(
                make_row(
                    f"payment failed for order k-{n}",
                    ts=BASE_TS + n * SECOND,
                    level=40,
                    logger="app.pay",
                    request_id=f"req-{n}",
                    exception=TRACEBACK,
                    fields=json.dumps({"code.filepath": "/srv/app/pay.py", "code.lineno": 42, "code.function": "pay"}),
                )
            )
        else:
            rows.append(make_row(f"request {n} handled", ts=BASE_TS + n * SECOND, logger="app.web", request_id=f"req-{n}"))
    return rows


@pytest.fixture
def db(make_log_db: Callable[..., Path]) -> Path:
    """200 records one second apart; every tenth an ERROR with a traceback and a source location."""
    return make_log_db(_rows(200), name="ops.db")


def run(db: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = run_cli(list(argv), db.parent, env)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


class TestGlobalOptions:
    def test_db_before_the_command(self, db: Path) -> None:
        """--db before the command works as after it (janus-logs --db x.db tail)."""
        before = run(db, "--db", str(db), "tail", "-n", "3")
        after = run(db, "tail", "-n", "3", "--db", str(db))
        assert (0, 3) == (before.returncode, len(before.stdout.splitlines()))
        assert before.stdout == after.stdout

    def test_db_after_the_command_wins(self, db: Path, tmp_path: Path) -> None:
        """A --db after the command is the one used."""
        result = run(db, "--db", str(tmp_path / "missing.db"), "count", "--db", str(db))
        assert (0, "200") == (result.returncode, result.stdout.strip())

    def test_version(self, db: Path) -> None:
        """--version prints the name and version and exits 0."""
        result = run(db, "--version")
        assert 0 == result.returncode and result.stdout.startswith("janus-logs ")


class TestLimitNotice:
    def test_notice_on_stderr_when_stdout_is_a_file(self, db: Path) -> None:
        """Output to a file (not a terminal): the records on stdout, the cut said on stderr."""
        with open(db.parent / "out.txt", "w") as out:
            result = subprocess.run(
                [sys.executable, "-m", "janus_utils", "search", "--db", str(db), "--level", "ERROR", "-n", "5"],
                stdout=out, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                timeout=120,
            )
        assert 5 == len((db.parent / "out.txt").read_text().splitlines())
        assert "5 shown, more match" in result.stderr

    def test_no_notice_when_everything_fits(self, db: Path) -> None:
        """Exactly the limit matching is not a cut: no notice."""
        result = run(db, "search", "--db", str(db), "--level", "ERROR", "-n", "20")
        assert (20, "") == (len(result.stdout.splitlines()), result.stderr)

    def test_limit_zero_is_all(self, db: Path) -> None:
        """--limit 0 prints every match, newest first, and says nothing on stderr."""
        result = run(db, "search", "--db", str(db), "--limit", "0", "-o", "json")
        ids = [json.loads(line)["id"] for line in result.stdout.splitlines()]
        assert (list(range(200, 0, -1)), "") == (ids, result.stderr)

    def test_limit_zero_streams_in_constant_memory(self, make_log_db: Callable[..., Path]) -> None:
        """--limit 0 over 400 MB of messages runs in a 300 MB address space, where reading them at once fails."""
        rows = [make_row("x" * 40_000 + f" n{n}", ts=BASE_TS + n) for n in range(10_000)]
        big = make_log_db(rows, name="big.db")
        del rows
        limit = 300 * 2**20
        streamed = run_cli(["search", "--db", str(big), "-n", "0", "-o", "cat"], big.parent, memory_limit=limit)
        assert (0, 10_000) == (streamed.returncode, streamed.stdout.count(b"\n")), streamed.stderr[-300:]
        at_once = run_cli(["search", "--db", str(big), "-n", "100000", "-o", "cat"], big.parent, memory_limit=limit)
        assert 2 == at_once.returncode and b"out of memory" in at_once.stderr


class TestPipes:
    def test_piped_to_head_has_no_traceback(self, db: Path) -> None:
        """search | head -1: one line, exit 0 from janus-logs, nothing on stderr."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        command = f"{sys.executable} -m janus_utils search --db {db} -n 0 | head -1; echo rc=${{PIPESTATUS[0]}}"
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=120)
        lines = result.stdout.splitlines()
        assert (2, "rc=0", "") == (len(lines), lines[-1], result.stderr)


class TestFormats:
    def test_lines_and_reverse(self, db: Path) -> None:
        """-n 3 gives the newest three newest first; -r prints the same three oldest first."""
        plain = run(db, "search", "--db", str(db), "-n", "3", "-o", "cat").stdout.splitlines()
        reverse = run(db, "search", "--db", str(db), "-n", "3", "-o", "cat", "-r").stdout.splitlines()
        assert ["payment failed for order k-199", "request 198 handled", "request 197 handled"] == plain
        assert plain[::-1] == reverse

    def test_tail_reverse(self, db: Path) -> None:
        """tail -n 2 -r: the last two, newest first."""
        result = run(db, "tail", "--db", str(db), "-n", "2", "-r", "-o", "cat")
        assert ["payment failed for order k-199", "request 198 handled"] == result.stdout.splitlines()

    def test_verbose_has_every_field_and_the_whole_traceback(self, db: Path) -> None:
        """-o verbose: the full traceback, the source location, the request id."""
        out = run(db, "search", "--db", str(db), "-n", "1", "--level", "ERROR", "-o", "verbose").stdout
        assert "RuntimeError: card declined" in out and 'File "app.py", line 3, in pay' in out
        assert "source: /srv/app/pay.py:42 in pay" in out and "request_id: req-199" in out

    def test_short_shows_source_briefly(self, db: Path) -> None:
        """The one-line format names the file and line, not the whole path."""
        out = run(db, "search", "--db", str(db), "-n", "1", "--level", "ERROR").stdout
        assert "src=pay.py:42" in out and "/srv/app" not in out

    def test_json_and_json_pretty_are_the_same_record(self, db: Path) -> None:
        """-o json is one line per record, -o json-pretty the same object indented."""
        line = run(db, "search", "--db", str(db), "-n", "1", "-o", "json").stdout
        pretty = run(db, "search", "--db", str(db), "-n", "1", "-o", "json-pretty").stdout
        assert json.loads(line) == json.loads(pretty) and len(pretty.splitlines()) > 5

    def test_csv(self, db: Path) -> None:
        """-o csv: a header, then one row per record."""
        out = run(db, "search", "--db", str(db), "-n", "2", "-o", "csv").stdout
        rows = list(csv.DictReader(io.StringIO(out)))
        assert ["200", "199"] == [row["id"] for row in rows]

    def test_json_with_another_format_is_refused(self, db: Path) -> None:
        result = run(db, "search", "--db", str(db), "--json", "-o", "cat")
        assert 2 == result.returncode and "--json" in result.stderr

    def test_utc_and_local_time(self, db: Path) -> None:
        """Piped, times are UTC; --local gives the TZ's time with its offset; --utc forces UTC."""
        env = {"TZ": "Asia/Tokyo"}
        piped = run(db, "search", "--db", str(db), "-n", "1", env=env).stdout
        local = run(db, "--local", "search", "--db", str(db), "-n", "1", env=env).stdout
        utc = run(db, "search", "--db", str(db), "-n", "1", "--utc", env=env).stdout
        assert piped.startswith("2023-11-14T22:16:39.000Z")
        assert local.startswith("2023-11-15T07:16:39.000+09:00")
        assert utc == piped

    def test_grep(self, db: Path) -> None:
        """--grep filters by regex after the query; lower case is case-insensitive, capitals are not."""
        lower = run(db, "search", "--db", str(db), "-n", "0", "--grep", r"order k-1\d9$").stdout.splitlines()
        upper = run(db, "search", "--db", str(db), "-n", "0", "--grep", r"ORDER k-1\d9$").stdout.splitlines()
        assert (10, 0) == (len(lower), len(upper))
        bad = run(db, "search", "--db", str(db), "--grep", "(")
        assert 2 == bad.returncode and "regular expression" in bad.stderr

    def test_grep_with_a_limit_keeps_reading(self, db: Path) -> None:
        """-n 3 --grep finds three matches even when they are far apart."""
        out = run(db, "search", "--db", str(db), "-n", "3", "--grep", "k-", "-o", "cat").stdout.splitlines()
        assert ["payment failed for order k-199", "payment failed for order k-189", "payment failed for order k-179"] == out

    def test_tail_grep(self, db: Path) -> None:
        """tail -n 2 --grep: the last two that match, oldest first."""
        out = run(db, "tail", "--db", str(db), "-n", "2", "--grep", "k-", "-o", "cat").stdout.splitlines()
        assert ["payment failed for order k-189", "payment failed for order k-199"] == out


class TestCountAndShow:
    def test_count(self, db: Path) -> None:
        result = run(db, "count", "--db", str(db), "--level", "ERROR")
        assert (0, "20") == (result.returncode, result.stdout.strip())

    def test_count_none_exits_1(self, db: Path) -> None:
        result = run(db, "count", "--db", str(db), "nothingmatchesthis")
        assert (1, "0") == (result.returncode, result.stdout.strip())

    def test_count_by_level(self, db: Path) -> None:
        result = run(db, "count", "--db", str(db), "--by", "level", "--json")
        assert {"INFO": 180, "ERROR": 20} == json.loads(result.stdout)["counts"]

    def test_count_grep(self, db: Path) -> None:
        assert "10" == run(db, "count", "--db", str(db), "--grep", r"k-1\d9$").stdout.strip()

    def test_show(self, db: Path) -> None:
        """show ID: the whole record; a missing id is said on stderr."""
        result = run(db, "show", "10", "12345", "--db", str(db))
        assert 0 == result.returncode
        assert "[id 10]" in result.stdout and "RuntimeError: card declined" in result.stdout
        assert "source: /srv/app/pay.py:42 in pay" in result.stdout
        assert "12345" in result.stderr

    def test_show_nothing_found(self, db: Path) -> None:
        assert 1 == run(db, "show", "999", "--db", str(db)).returncode


class TestFollow:
    def test_tail_follow_waits_for_the_database(self, tmp_path: Path) -> None:
        """tail -f on a database not created yet waits, then prints what is written to it."""
        path = tmp_path / "later.db"
        process = subprocess.Popen(
            [sys.executable, "-m", "janus_utils", "tail", "-f", "--db", str(path), "-o", "cat", "--interval", "0.05"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            assert process.stderr is not None and process.stdout is not None
            ready, _, _ = select.select([process.stderr], [], [], 30)
            assert ready and "waiting for" in process.stderr.readline()
            assert process.poll() is None
            writer = open_writer(path)
            write_batch(writer, [make_row("first record")])
            writer.close()
            ready, _, _ = select.select([process.stdout], [], [], 30)
            assert ready and "first record" == process.stdout.readline().strip()
        finally:
            process.kill()
            process.wait()


def _on_terminal(argv: list[str], env: dict[str, str], seconds: float = 60.0) -> str:
    """Run janus-logs with stdout and stderr on a pseudo-terminal; everything it showed."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "janus_utils", *argv],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TERM": "xterm", **env},
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed: everything is read
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(10)
    os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


class TestTerminal:
    def test_pager_and_colours(self, db: Path) -> None:
        """On a terminal the output goes through $PAGER, in colour, and the limit notice follows it."""
        shown = _on_terminal(["search", "--db", str(db), "-n", "3"], {"PAGER": "sed 's/^/PAGED:/'", "NO_COLOR": ""})
        assert shown.count("PAGED:") == 3
        assert "\x1b[31mERROR" in shown
        assert shown.index("more match") > shown.rindex("PAGED:")

    def test_no_pager(self, db: Path) -> None:
        """--no-pager (before or after the command) writes straight to the terminal."""
        env = {"PAGER": "sed 's/^/PAGED:/'", "NO_COLOR": ""}
        assert "PAGED:" not in _on_terminal(["--no-pager", "search", "--db", str(db), "-n", "3"], env)
        assert "PAGED:" not in _on_terminal(["search", "--db", str(db), "-n", "3", "--no-pager"], env)

    def test_local_time_on_a_terminal(self, db: Path) -> None:
        """On a terminal times are local by default, as in journalctl."""
        shown = _on_terminal(["search", "--db", str(db), "-n", "1", "--no-pager"], {"TZ": "Asia/Tokyo", "NO_COLOR": "1"})
        assert "2023-11-15T07:16:39.000+09:00" in shown
