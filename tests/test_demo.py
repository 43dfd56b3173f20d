"""The demo README line 1 runs: quiet, says where it logged and what it found, and its next commands run as printed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "janus_utils.demo", "--records", "100", *argv],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _next_commands(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("next, try"))
    return [line.strip() for line in lines[start + 1 :] if line.strip()]


class TestDemo:
    def test_quiet_and_clear(self, tmp_path: Path) -> None:
        """No traceback or warning on the console; it says how many, where, and what the search found."""
        result = _demo(tmp_path)
        assert (0, "") == (result.returncode, result.stderr)
        assert "Traceback" not in result.stdout
        assert str(tmp_path / "janus-logs.db") in result.stdout
        assert "search('gateway', level='ERROR') found 2 records" in result.stdout
        assert "[REDACTED:password]" in result.stdout and "hunter2" not in result.stdout

    def test_next_commands_run_as_printed(self, tmp_path: Path) -> None:
        """Each of the three commands it suggests runs, as printed, from the same directory."""
        commands = _next_commands(_demo(tmp_path).stdout)
        assert 3 == len(commands)
        for command in commands:
            assert "|" not in command
            result = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert 0 == result.returncode, (command, result.stderr)
            assert result.stdout.strip(), command

    @pytest.mark.parametrize("unbuffered", ["1", ""])
    def test_a_reader_that_went_away_ends_it_quietly(self, tmp_path: Path, unbuffered: str) -> None:
        """Output to a pipe nobody reads (``| head -1``): exit 0, no traceback, as janus-logs does."""
        read_end, write_end = os.pipe()
        os.close(read_end)  # gone before the first line, buffered or not
        try:
            result = subprocess.run(
                [sys.executable, "-m", "janus_utils.demo", "--records", "20"],
                cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": unbuffered},
            )
        finally:
            os.close(write_end)
        assert (0, "") == (result.returncode, result.stderr)

    def test_rerun_says_it_appends_and_fresh_starts_over(self, tmp_path: Path) -> None:
        first = _demo(tmp_path)
        again = _demo(tmp_path)
        fresh = _demo(tmp_path, "--fresh")
        assert "appended" not in first.stdout
        assert "appended: the database already held" in again.stdout
        assert "appended" not in fresh.stdout
        assert "found 2 records" in fresh.stdout


README = Path(__file__).resolve().parent.parent / "README.md"


def _table_commands() -> list[str]:
    """The janus-logs column of the README's on-call table."""
    text = README.read_text()
    section = text[text.index("### On call: janus-logs beside journalctl and lnav") :]
    section = section[: section.index("\n\n", section.index("| task |"))]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| task")]
    commands = []
    for row in rows:
        cell = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert cell.startswith("`janus-logs ") and cell.endswith("`"), row
        commands.append(cell[1:-1])
    return commands


class TestReadmeTable:
    def test_ten_rows(self) -> None:
        assert 10 == len(_table_commands())

    def test_every_janus_logs_row_runs(self, tmp_path: Path) -> None:
        """Each row, run in the demo's directory, finds records (exit 0); -f keeps following."""
        assert 0 == _demo(tmp_path).returncode
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        for command in _table_commands():
            argv = [sys.executable, "-m", "janus_utils", *shlex.split(command)[1:]]
            if "-f" in argv:
                process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                try:
                    assert process.stdout is not None
                    assert "demo" in process.stdout.readline(), command
                    assert process.poll() is None, command
                finally:
                    process.kill()
                    process.wait()
                continue
            result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
            assert 0 == result.returncode, (command, result.stderr)
            assert result.stdout.strip(), command
