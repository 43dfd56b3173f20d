"""Tests of janus_utils.cli: the janus-logs command, through main(argv)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from conftest import BASE_TS, TRICKY_TEXT, decode_logfmt, make_row, open_writer, run_cli, write_batch
from janus_utils import cli
from janus_utils.cli import _flusher_counters, _format_record, _use_colour, main
from janus_utils.store import LogStore, Record

MINUTE = 60 * 1_000_000_000
COMMANDS = ("search", "tail", "stats", "export")
ROOT = Path(__file__).resolve().parent.parent

ROWS: list[dict[str, Any]] = [
    dict(message="connection reset by peer", logger="app.net", level=40, user_id="u1"),
    dict(message="payment accepted", logger="app.pay", user_id="u1", fields=json.dumps({"status": 200, "card": "visa"})),
    dict(message="payment declined", logger="app.pay", level=30, user_id="u2", agent_id="a1", request_id="r2", fields=json.dumps({"status": 402})),
    dict(message="login failed", logger="app.auth", level=40, exception="Traceback (most recent call last):\nValueError: bad password"),
]


@pytest.fixture
def db(make_log_db: Callable[..., Path]) -> str:
    """A database with ROWS one minute apart; records 1..4."""
    return str(make_log_db([make_row(ts=BASE_TS + i * MINUTE, **row) for i, row in enumerate(ROWS)]))


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """main(argv) -> (exit code, stdout, stderr)."""

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


class TestHelp:
    def test_main_help(self, run: Callable[..., tuple[int, str, str]]) -> None:
        """janus-logs --help lists every command and an example."""
        code, out, _ = run("--help")
        assert 0 == code
        assert "Example" in out and all(command in out for command in COMMANDS)

    @pytest.mark.parametrize("command", COMMANDS)
    def test_every_command_has_help_with_example(self, run: Callable[..., tuple[int, str, str]], command: str) -> None:
        """Each command's --help shows its options and an Example."""
        code, out, _ = run(command, "--help")
        assert (0, True, True) == (code, "Example" in out, "--db" in out)

    def test_no_command(self, run: Callable[..., tuple[int, str, str]]) -> None:
        """No command prints the help on stderr and exits 2."""
        code, _, err = run()
        assert (2, True) == (code, "search" in err)

    def test_python_m(self) -> None:
        """python -m janus_utils runs the same command."""
        result = subprocess.run(
            [sys.executable, "-m", "janus_utils", "search", "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=60,
        )
        assert (0, True) == (result.returncode, "Example" in result.stdout)


class TestSearch:
    def test_human_output(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """One line per record: time, level, logger, message, key=value pairs."""
        code, out, err = run("search", "payment", "--db", db)
        assert (0, "") == (code, err)
        assert [
            '2023-11-14T22:15:20.000Z WARNING  app.pay: payment declined user=u2 agent=a1 request=r2 status=402',
            '2023-11-14T22:14:20.000Z INFO     app.pay: payment accepted user=u1 status=200 card=visa',
        ] == out.splitlines()

    def test_exception_last_line_shown(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """A record's exception shows as its last line."""
        _, out, _ = run("search", "password", "--db", db)
        assert out.rstrip().endswith('exc="ValueError: bad password"')

    def test_json_lines(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """--json prints one JSON object per record, with the snippet."""
        code, out, _ = run("search", "declined", "--db", db, "--json")
        records = [json.loads(line) for line in out.splitlines()]
        assert (0, [3], "payment [declined]") == (code, [r["id"] for r in records], records[0]["snippet"])

    def test_nothing_found_exits_1(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """No match: exit 1 and no output, like grep."""
        assert (1, "", "") == run("search", "nonexistent", "--db", db)

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (["--level", "ERROR"], [4, 1]),
            (["--logger", "app.pay"], [3, 2]),
            (["--user", "u1"], [2, 1]),
            (["--agent", "a1"], [3]),
            (["--request", "r2"], [3]),
            (["--field", "status=402"], [3]),
            (["--field", "card=visa", "--field", "status=200"], [2]),
            (["--field", 'status="200"'], []),
            (["--since", "2023-11-14T22:14:20Z", "--until", "2023-11-14T22:16:00Z"], [3, 2]),
            (["--limit", "1"], [4]),
            (["--order", "oldest", "--limit", "2"], [1, 2]),
            (["--level", "WARNING", "--user", "u2", "--logger", "app"], [3]),
        ],
    )
    def test_filters(self, run: Callable[..., tuple[int, str, str]], db: str, options: list[str], expected: list[int]) -> None:
        """Every filter option narrows the search."""
        code, out, _ = run("search", "--db", db, "--json", *options)
        assert (0 if expected else 1, expected) == (code, [json.loads(line)["id"] for line in out.splitlines()])

    def test_raw_query(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """--raw passes FTS5 syntax; an invalid one is a one-line error, exit 2."""
        assert 0 == run("search", "--raw", "pay*", "--db", db)[0]
        code, out, err = run("search", "--raw", '"unbalanced', "--db", db)
        assert (2, "") == (code, out)
        assert err.startswith("janus-logs: error: invalid full-text query") and 1 == len(err.splitlines())

    def test_db_from_environment(self, run: Callable[..., tuple[int, str, str]], db: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without --db the database comes from JANUS_LOG_DB."""
        monkeypatch.setenv("JANUS_LOG_DB", db)
        assert 0 == run("search", "payment")[0]

    @pytest.mark.parametrize(
        "argv",
        [
            ["search", "--db", "/nonexistent/janus.db"],
            ["search", "--level", "LOUD"],
            ["search", "--since", "whenever"],
            ["search", "--order", "rank"],
            ["search", "--since", "1h", "--until", "2h"],
        ],
    )
    def test_errors_exit_2_with_one_line(self, run: Callable[..., tuple[int, str, str]], db: str, argv: list[str]) -> None:
        """Bad values are one line on stderr and exit 2, no traceback."""
        if "--db" not in argv:
            argv = [*argv, "--db", db]
        code, out, err = run(*argv)
        assert (2, "", 1) == (code, out, len(err.splitlines()))
        assert err.startswith("janus-logs: error: ") and "Traceback" not in err

    @pytest.mark.parametrize("argv", [["search", "--field", "nokey"], ["search", "--limit", "-3"], ["search", "--order", "x"], ["frobnicate"]])
    def test_usage_errors_exit_2(self, run: Callable[..., tuple[int, str, str]], argv: list[str]) -> None:
        """argparse usage errors exit 2."""
        assert 2 == run(*argv)[0]


class TestSanitizing:
    def test_hostile_record_stays_on_one_line(self, run: Callable[..., tuple[int, str, str]], make_log_db: Callable[..., Path]) -> None:
        """Escapes, newlines and bidi controls in a record never reach the terminal raw."""
        hostile = "evil\x1b[31mred\nsecond line\r\u202eright-to-left\x07\x9b"
        row = make_row(hostile, logger="log\x1b]0;title\x07", user_id="u\n1", fields=json.dumps({"k\x1b": "v\nw"}))
        path = str(make_log_db([row]))
        code, out, _ = run("search", "--db", path)
        assert (0, 1) == (code, len(out.splitlines()))
        assert not any(char in out.rstrip("\n") for char in "\x1b\r\n\x07\u202e\x9b")
        assert "evil\\x1b[31mred\\nsecond line" in out

    def test_json_output_escapes_terminal_controls(self, run: Callable[..., tuple[int, str, str]], make_log_db: Callable[..., Path]) -> None:
        """--json escapes C1 and bidi controls too, and still parses back the same."""
        path = str(make_log_db([make_row("a\u202eb\x9bc\u2028d")]))
        _, out, _ = run("search", "--db", path, "--json")
        assert not any(char in out for char in "\u202e\x9b\u2028")
        assert "a\u202eb\x9bc\u2028d" == json.loads(out)["message"]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [("plain", "plain"), ("a\nb", "a\\nb"), ("\x1b[2J", "\\x1b[2J"), ("\u202e", "\\u202e"), ("\ud800", "\\ud800"), ("ünï 😀", "ünï 😀")],
    )
    def test_message_escapes(self, text: str, expected: str) -> None:
        """Controls in a message become visible escapes; ordinary Unicode is kept."""
        line = _format_record(Record(1, BASE_TS, 20, "app", text), colour=False)
        assert f"2023-11-14T22:13:20.000Z INFO     app: {expected}" == line

    def test_key_value_pairs_decode_back(self, run: Callable[..., tuple[int, str, str]], make_log_db: Callable[..., Path]) -> None:
        """C1 controls and bidi characters in ids, keys and values are JSON escapes a logfmt reader decodes."""
        fields = {"k\x9bey": "v\x9b[31m\u202e", "plain": "x y", "n": [1, "\x85"]}
        path = str(make_log_db([make_row("m", user_id="u\x9b1", fields=json.dumps(fields))]))
        _, out, _ = run("search", "--db", path)
        head = "2023-11-14T22:13:20.000Z INFO     app: m "
        assert out.startswith(head) and 'user="u\\u009b1"' in out
        expected = [("user", "u\x9b1"), *((key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)) for key, value in fields.items())]
        assert expected == decode_logfmt(out[len(head):])

    @settings(max_examples=300, deadline=None)
    @given(user=TRICKY_TEXT, key=TRICKY_TEXT, value=TRICKY_TEXT)
    def test_any_text_decodes_back(self, user: str, key: str, value: str) -> None:
        """Any id, field name and value decode back exactly, from a line with no raw control character."""
        record = Record(1, BASE_TS, 20, "app", "m", user_id=user, fields={key: value})
        line = _format_record(record, colour=False)
        assert not re.search("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]", line)
        head = "2023-11-14T22:13:20.000Z INFO     app: m "
        assert line.startswith(head)
        assert [("user", user), (key.replace("=", "_"), value)] == decode_logfmt(line[len(head):] + "\n")

    def test_no_colour_when_not_a_tty(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """Captured output has no ANSI codes."""
        assert "\x1b" not in run("search", "--db", db)[1]

    def test_colour_rules(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Colour needs a tty and no NO_COLOR."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "xterm")
        with_tty = _use_colour(Tty())
        monkeypatch.setenv("NO_COLOR", "1")
        assert (True, False, False) == (with_tty, _use_colour(Tty()), _use_colour(io.StringIO()))

    def test_colour_output_on_tty(self, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """On a tty the level is coloured, the text still sanitized."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "xterm")
        stream = Tty()
        monkeypatch.setattr(sys, "stdout", stream)
        assert 0 == main(["search", "connection", "--db", db])
        assert "\x1b[31mERROR" in stream.getvalue()


class TestTail:
    def test_last_n(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """tail -n 2 prints the last two records, oldest first."""
        code, out, _ = run("tail", "-n", "2", "--db", db, "--json")
        assert (0, [3, 4]) == (code, [json.loads(line)["id"] for line in out.splitlines()])

    def test_filters_and_empty(self, run: Callable[..., tuple[int, str, str]], db: str, make_log_db: Callable[..., Path]) -> None:
        """tail takes the filters; nothing to show exits 1."""
        assert 1 == len(run("tail", "--db", db, "--user", "u2")[1].splitlines())
        assert (1, "") == run("tail", "--db", str(make_log_db()))[:2]

    def test_follow_ends_on_ctrl_c_with_0(self, run: Callable[..., tuple[int, str, str]], db: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """tail -f prints records as they come; Ctrl-C ends it with exit 0."""
        closed: list[bool] = []

        def fake_tail(self: LogStore, n: int, follow: bool, **kw: Any) -> Iterator[Record]:
            assert follow
            try:
                yield Record(7, BASE_TS, 20, "app", "first")
                raise KeyboardInterrupt
            finally:
                closed.append(True)

        monkeypatch.setattr(LogStore, "tail", fake_tail)
        code, out, _ = run("tail", "-f", "--db", db)
        assert (0, ["2023-11-14T22:13:20.000Z INFO     app: first"], [True]) == (code, out.splitlines(), closed)

    def test_follow_process_sigint(self, db: str) -> None:
        """A real janus-logs tail -f prints a new commit and exits 0 on SIGINT."""
        process = subprocess.Popen(
            [sys.executable, "-m", "janus_utils", "tail", "-f", "-n", "1", "--db", db],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        try:
            assert process.stdout is not None
            first = _read_line(process)
            writer = open_writer(db)
            try:
                write_batch(writer, [make_row("arrived later")])
            finally:
                writer.close()
            second = _read_line(process)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        assert ("login failed", "arrived later", 0) == (first.split(": ", 1)[1].split(" exc=")[0], second.split(": ", 1)[1], code)


def _read_line(process: subprocess.Popen[str], seconds: float = 30.0) -> str:
    """One line of the child's stdout, failing instead of hanging if none comes."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    if not ready:
        pytest.fail(f"janus-logs printed nothing within {seconds} s")
    return process.stdout.readline().rstrip("\n")


class TestStats:
    def test_text(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """stats shows the size, counts by level and logger and records over time."""
        code, out, _ = run("stats", "--db", db)
        assert 0 == code
        assert "records   4 from 2023-11-14T22:13:20Z to 2023-11-14T22:16:20Z" in out
        assert "INFO 1  WARNING 1  ERROR 2" in out
        assert "2  app.pay" in out and "over time (per 1m, UTC)" in out
        assert "2023-11-14T22:13Z" in out and "database" in out

    def test_json(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """stats --json is one object with the same facts."""
        code, out, _ = run("stats", "--db", db, "--json", "--limit", "1")
        data = json.loads(out)
        assert (0, 4, {"app.pay": 2}, 4) == (code, data["records"], data["by_logger"], len(data["over_time"]["counts"]))

    def test_filtered_and_empty(self, run: Callable[..., tuple[int, str, str]], db: str, make_log_db: Callable[..., Path]) -> None:
        """Filters apply; nothing counted exits 1."""
        data = json.loads(run("stats", "--db", db, "--json", "--level", "ERROR")[1])
        assert {"ERROR": 2} == data["by_level"]
        assert 1 == run("stats", "--db", str(make_log_db()))[0]

    def test_flusher_counters_only_for_this_processes_db(self, db: str) -> None:
        """Flusher counters are shown only when this process's logger writes the db."""
        assert _flusher_counters(db) is None


class TestExport:
    def test_ndjson(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """The default format is one JSON object per line, oldest first."""
        code, out, _ = run("export", "--db", db)
        assert (0, [1, 2, 3, 4]) == (code, [json.loads(line)["id"] for line in out.splitlines()])

    def test_json_array(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """--format json is one array."""
        _, out, _ = run("export", "payment", "--db", db, "--format", "json")
        assert [2, 3] == [record["id"] for record in json.loads(out)]

    def test_csv(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """--format csv has a header row and fields as JSON text."""
        _, out, _ = run("export", "--db", db, "--format", "csv", "--user", "u1")
        rows = list(csv.DictReader(io.StringIO(out)))
        assert (["1", "2"], {"status": 200, "card": "visa"}) == ([r["id"] for r in rows], json.loads(rows[1]["fields"]))
        assert list(cli.EXPORT_COLUMNS) == list(rows[0])

    def test_output_file_and_limit(self, run: Callable[..., tuple[int, str, str]], db: str, tmp_path: Path) -> None:
        """--output writes a file, stdout stays empty; --limit caps."""
        target = tmp_path / "out.ndjson"
        code, out, _ = run("export", "--db", db, "-o", str(target), "--limit", "3")
        assert (0, "", 3) == (code, out, len(target.read_text().splitlines()))

    def test_empty_export(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """Nothing to export exits 1 and still writes a valid empty document."""
        code, out, _ = run("export", "nonexistent", "--db", db, "--format", "json")
        assert (1, []) == (code, json.loads(out))

    def test_unwritable_output(self, run: Callable[..., tuple[int, str, str]], db: str, tmp_path: Path) -> None:
        """An output file that cannot be written is a one-line error, exit 2."""
        code, _, err = run("export", "--db", db, "-o", str(tmp_path / "missing" / "out.csv"))
        assert (2, 1) == (code, len(err.splitlines()))
        assert err.startswith("janus-logs: error: ")

    def test_json_with_other_format(self, run: Callable[..., tuple[int, str, str]], db: str) -> None:
        """--json with --format csv is a usage error."""
        assert 2 == run("export", "--db", db, "--json", "--format", "csv")[0]


class TestDamagedRows:
    """A database holding rows an older import let in, read by real janus-logs processes."""

    @pytest.fixture
    def damaged(self, make_log_db: Callable[..., Path]) -> Path:
        return make_log_db(
            [
                make_row("good record", ts=BASE_TS),
                make_row("bad ts record", ts="yesterday"),
                make_row("bad level record", ts=BASE_TS + MINUTE, level="HIGH"),
                make_row("blob record", ts=BASE_TS + 2 * MINUTE, logger=b"\xffapp", pid="x"),
            ],
            name="damaged.db",
        )

    @pytest.mark.slow
    @pytest.mark.parametrize(
        "argv",
        [
            ["search"],
            ["search", "record"],
            ["tail"],
            ["stats"],
            ["stats", "--json"],
            ["export"],
            ["export", "--format", "csv"],
            ["export", "--format", "json"],
        ],
        ids=" ".join,
    )
    def test_every_reader_shows_the_whole_database(self, damaged: Path, argv: list[str]) -> None:
        """One bad row no longer stops search, tail, stats or export: exit 0, every record there."""
        result = run_cli([*argv, "--db", damaged.name], damaged.parent)
        out = result.stdout.decode()
        assert (0, b"") == (result.returncode, result.stderr)
        if argv == ["stats", "--json"]:
            data = json.loads(out)
            assert (4, 1, BASE_TS + 2 * MINUTE) == (data["records"], data["by_level"]["(invalid)"], data["last_ts"])
        elif argv[0] == "stats":
            assert "records   4 from 2023-11-14T22:13:20Z to 2023-11-14T22:15:20Z" in out and "(invalid) 1" in out
        else:
            assert all(f"{word} record" in out for word in ("good", "bad ts", "bad level", "blob"))
            assert "yesterday" in out and "HIGH" in out  # what the row held is shown, not hidden


class TestExportToFile:
    """export -o through a real process: no symlink followed, nothing replaced unasked, 0600, no formulas."""

    @pytest.fixture
    def workdir(self, db: str) -> Path:
        return Path(db).parent

    def export(self, workdir: Path, db: str, *argv: str, umask: int = 0o022) -> tuple[int, str]:
        old = os.umask(umask)
        try:
            result = run_cli(["export", "--db", db, *argv], workdir)
        finally:
            os.umask(old)
        err = result.stderr.decode()
        assert len(err.splitlines()) <= 1 and "Traceback" not in err, err
        return result.returncode, err

    @pytest.mark.slow
    @pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
    def test_planted_symlink_is_not_followed(self, workdir: Path, db: str, force: list[str]) -> None:
        """-o naming a symlink to a 0600 file is refused, with or without --force; the file is untouched."""
        victim = workdir / "shadow"
        victim.write_text("root:secret\n")
        victim.chmod(0o600)
        (workdir / "out.csv").symlink_to(victim)
        code, err = self.export(workdir, db, "-o", "out.csv", *force)
        assert (2, True, "root:secret\n", 0o600, True) == (
            code,
            "is a symlink" in err,
            victim.read_text(),
            stat.S_IMODE(victim.stat().st_mode),
            (workdir / "out.csv").is_symlink(),
        )

    @pytest.mark.slow
    def test_existing_file_needs_force_then_is_replaced_atomically(self, workdir: Path, db: str) -> None:
        """An existing file is refused without --force; with it, a new 0600 file takes its place."""
        target = workdir / "out.ndjson"
        target.write_text("keep me\n")
        target.chmod(0o644)
        code, err = self.export(workdir, db, "-o", "out.ndjson")
        refused = (code, "--force" in err, target.read_text())
        inode = target.stat().st_ino
        code, err = self.export(workdir, db, "-o", "out.ndjson", "--force")
        lines = target.read_text().splitlines()
        assert ((2, True, "keep me\n"), 0, 4, 0o600) == (refused, code, len(lines), stat.S_IMODE(target.stat().st_mode))
        assert inode != target.stat().st_ino  # a new file renamed into place, not the old one rewritten

    @pytest.mark.slow
    def test_new_file_is_private_whatever_the_umask(self, workdir: Path, db: str) -> None:
        """Under umask 000 the export is still 0600, like the archives; no temp file is left."""
        code, _ = self.export(workdir, db, "-o", "new.csv", "--format", "csv", umask=0)
        leftovers = [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]
        assert (0, 0o600, []) == (code, stat.S_IMODE((workdir / "new.csv").stat().st_mode), leftovers)

    @pytest.mark.slow
    @pytest.mark.parametrize("kind", ["directory", "fifo"])
    def test_force_never_replaces_what_is_not_a_file(self, workdir: Path, db: str, kind: str) -> None:
        """--force onto a directory or a FIFO is refused at once (a FIFO is not opened and waited on)."""
        target = workdir / "special"
        target.mkdir() if kind == "directory" else os.mkfifo(target)
        code, err = self.export(workdir, db, "-o", "special", "--force")
        assert (2, True, True) == (code, "not a regular file" in err, target.is_dir() if kind == "directory" else target.is_fifo())

    @pytest.mark.slow
    def test_force_never_replaces_the_database(self, workdir: Path, db: str) -> None:
        """-o naming the database (or its WAL) with --force is refused; the database still reads."""
        code, err = self.export(workdir, db, "-o", Path(db).name, "--force")
        wal_code, _ = self.export(workdir, db, "-o", Path(db).name + "-wal", "--force")
        assert (2, True, 2) == (code, "is the log database" in err, wal_code)
        assert 4 == len(LogStore(db).search())

    @pytest.mark.slow
    def test_failed_export_leaves_nothing(self, workdir: Path, db: str) -> None:
        """An export that fails part way (a bad raw query) leaves no file and no temp file."""
        code, err = self.export(workdir, db, "--raw", '"unbalanced', "-o", "failed.csv")
        assert (2, True, []) == (code, "invalid full-text query" in err, [p.name for p in workdir.iterdir() if "failed" in p.name])

    @pytest.mark.slow
    def test_csv_formulas_are_escaped(self, make_log_db: Callable[..., Path]) -> None:
        """Cells starting = + - @ tab or CR get a leading quote; others are exact (OWASP CSV injection)."""
        hostile = ['=HYPERLINK("http://evil","click")', "=1+1", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "\tTAB", "\rCR"]
        path = make_log_db(
            [make_row(text, ts=BASE_TS + i) for i, text in enumerate(hostile)]
            + [make_row("plain = text", logger="=evil.logger", user_id="@u", ts=BASE_TS + 99)],
            name="formulas.db",
        )
        code, _ = self.export(path.parent, path.name, "--format", "csv", "-o", "formulas.csv")
        with open(path.parent / "formulas.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert 0 == code
        assert ["'" + text for text in hostile] + ["plain = text"] == [row["message"] for row in rows]
        assert ("'=evil.logger", "'@u") == (rows[-1]["logger"], rows[-1]["user_id"])
