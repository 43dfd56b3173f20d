"""The console: whole lines under several processes, drops said and counted, what a line shows."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings

import janus_utils as ju
from conftest import TRICKY_TEXT, decode_logfmt
from janus_utils._console import PIPE_BUF, Console, render_json, render_logfmt

TS = 1_700_000_000 * 1_000_000_000


def record(message: str = "m", fields: dict | None = None, exc: str | None = None, level: int = 30) -> tuple:
    return (1, TS, level, "app", message, fields, exc, 1, "MainThread")


class TestLogfmt:
    def test_containers_are_json(self) -> None:
        """A dict or list field is rendered as JSON text, not as a Python repr."""
        line = render_logfmt(record(fields={"details": {"order_id": 5}, "tags": ["a", "b"]}), False)
        assert 'details="{\\"order_id\\":5}"' in line
        assert 'tags="[\\"a\\",\\"b\\"]"' in line
        assert "'" not in line

    def test_none_is_left_out(self) -> None:
        """A field whose value is None is not printed."""
        line = render_logfmt(record(fields={"user_id": None, "n": 1}), False)
        assert "user_id" not in line
        assert " n=1" in line

    def test_booleans_are_lowercase(self) -> None:
        """True and False read as logfmt tools expect."""
        line = render_logfmt(record(fields={"ok": True, "retry": False}), False)
        assert " ok=true retry=false" in line

    def test_backslash_and_quote_are_escaped(self) -> None:
        """A value with a backslash or quote stays one parseable value."""
        line = render_logfmt(record(message='a "b" \\c'), False)
        assert 'msg="a \\"b\\" \\\\c"' in line


class TestRoundTrip:
    def test_escaped_newline_and_newline_differ(self) -> None:
        """A message holding a newline and one holding backslash-n print differently."""
        newline = render_logfmt(record(message="line1\nline2"), False)
        backslash_n = render_logfmt(record(message="line1\\nline2"), False)
        assert 'msg="line1\\nline2"' in newline
        assert 'msg="line1\\\\nline2"' in backslash_n

    def test_traceback_decodes_to_its_lines(self) -> None:
        """A traceback is one line on the console and its own lines again once decoded."""
        exc = 'Traceback (most recent call last):\n  File "app.py", line 1\nValueError: C:\\tmp'
        assert ("exception", exc) == decode_logfmt(render_logfmt(record(exc=exc), False))[-1]

    @settings(max_examples=300, deadline=None)
    @given(message=TRICKY_TEXT, key=TRICKY_TEXT, value=TRICKY_TEXT)
    def test_decoder_gets_the_text_back(self, message: str, key: str, value: str) -> None:
        """Any message, field name and value decode back exactly, from a line with no raw control character."""
        key = "other" if key == "note" else key
        line = render_logfmt(record(message=message, fields={"note": value, key: "v"}), False)
        assert not re.search("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]", line[:-1])
        pairs = decode_logfmt(line)
        assert [("logger", "app"), ("msg", message), ("note", value), (key.replace("=", "_"), "v")] == pairs[2:]

    def test_lone_surrogate_is_escaped(self) -> None:
        """A lone surrogate (from surrogateescape) is written as its escape, not refused by UTF-8."""
        line = render_logfmt(record(message="bad \udcff byte"), False)
        assert 'msg="bad \\udcff byte"' in line
        assert ("msg", "bad \udcff byte") == decode_logfmt(line)[3]


class TestTracebacks:
    def test_client_error_has_no_traceback(self) -> None:
        """An error record with http_status < 500 is printed without its traceback."""
        line = render_logfmt(record(fields={"http_status": 404}, exc="Traceback ...werkzeug"), False)
        assert "exception=" not in line
        assert "http_status=404" in line

    def test_server_error_keeps_traceback(self) -> None:
        """5xx and above keep their traceback."""
        line = render_logfmt(record(fields={"http_status": 500}, exc="Traceback boom"), False)
        assert 'exception="Traceback boom"' in line

    def test_record_without_status_keeps_traceback(self) -> None:
        """log.exception() outside the HTTP layer keeps its traceback."""
        assert "exception=" in render_logfmt(record(exc="Traceback x"), False)

    def test_rules_all_and_none(self) -> None:
        """console_tracebacks='all' shows every traceback, 'none' none."""
        rec = record(fields={"http_status": 404}, exc="tb")
        assert "exception=tb" in render_logfmt(rec, False, "all")
        assert "exception=" not in render_logfmt(record(exc="tb"), False, "none")

    def test_json_follows_the_rule(self) -> None:
        """The JSON console applies the same rule."""
        assert json.loads(render_json(record(fields={"http_status": 422}, exc="tb"), False))["exception"] is None
        assert json.loads(render_json(record(fields={"http_status": 503}, exc="tb"), False))["exception"] == "tb"

    def test_stored_record_keeps_traceback(self, tmp_path: Path) -> None:
        """What the console leaves out is still stored in full."""
        stream = io.StringIO()
        ju.configure(tmp_path / "t.db", console_stream=stream)
        try:
            ju.get_logger("web").warning("404 not_found", http_status=404, exc_info=ValueError("x"))
            ju.flush()
        finally:
            ju.shutdown()
        assert "exception=" not in stream.getvalue()
        with ju.LogStore(tmp_path / "t.db") as store:
            (rec,) = store.search(level="WARNING")
        assert "ValueError: x" in rec.exception

    def test_bad_rule_is_refused(self, tmp_path: Path) -> None:
        """An unknown console_tracebacks value is a ConfigError naming the choices."""
        with pytest.raises(ju.JanusError, match="console_tracebacks"):
            ju.configure(tmp_path / "t.db", console_tracebacks="some")


class _Chunks:
    """A stream with a file descriptor that records each write() it is given."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.sizes: list[int] = []
        self.data = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := os.read(self.read_fd, 1 << 16):
            self.data += chunk

    def fileno(self) -> int:
        return self.write_fd

    def write(self, text: str) -> int:  # pragma: no cover - the console must not use it
        raise AssertionError("text write used on a stream with a file descriptor")

    def flush(self) -> None:
        pass

    def close(self) -> str:
        os.close(self.write_fd)
        self.thread.join(5)
        os.close(self.read_fd)
        return self.data.decode()


class TestWrites:
    def test_writes_whole_lines_within_pipe_buf(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Each os.write holds whole lines and at most PIPE_BUF bytes; a long line gets its own."""
        sizes: list[tuple[int, bytes]] = []
        real = os.write

        def spy(fd: int, data: bytes) -> int:
            sizes.append((len(data), bytes(data)))
            return real(fd, data)

        stream = _Chunks()
        console = Console(stream=stream, fmt="logfmt", enabled=True, report=lambda m: None)
        for n in range(200):
            console.put(record(f"line {n} " + "x" * 100))
        console.put(record("long " + "y" * (PIPE_BUF * 2)))
        monkeypatch.setattr(os, "write", spy)
        console.write()
        monkeypatch.undo()
        text = stream.close()
        assert 201 == text.count("\n")
        for size, data in sizes:
            assert data.endswith(b"\n")
            assert size <= PIPE_BUF or data.count(b"\n") == 1
        assert any(size > PIPE_BUF for size, _ in sizes)

    def test_stream_without_fd_gets_text(self) -> None:
        """A StringIO (no file descriptor) still gets every line."""
        stream = io.StringIO()
        console = Console(stream=stream, fmt="logfmt", enabled=True, report=lambda m: None)
        console.put(record("hello"))
        console.write()
        assert "msg=hello" in stream.getvalue()


class TestDrops:
    def test_full_queue_without_wait_counts_and_says(self) -> None:
        """With no wait allowed, the lines that do not fit are counted and reported in one line."""
        stream = io.StringIO()
        console = Console(stream=stream, fmt="logfmt", enabled=True, report=lambda m: None, wait=0)
        for n in range(10_000 + 37):
            console.put(record(f"n{n}"))
        assert 37 == console.dropped
        console.write()
        lines = stream.getvalue().splitlines()
        assert 10_001 == len(lines)
        assert "37 line(s) dropped" in lines[-1]

    def test_stuck_stream_costs_one_wait(self) -> None:
        """A stream nobody reads: one call waits, later ones drop at once; all counted."""
        read_fd, write_fd = os.pipe()
        stream = os.fdopen(write_fd, "w")
        console = Console(stream=stream, fmt="logfmt", enabled=True, report=lambda m: None, wait=0.3)
        console.start()
        try:
            start = time.monotonic()
            for n in range(30_000):
                console.put(record("z" * 200))
            elapsed = time.monotonic() - start
            assert elapsed < 3.0
            assert console.dropped > 0
        finally:
            console.stopping = True
            os.close(read_fd)  # the blocked write fails; the thread ends
            console.thread.join(5)
            with contextlib.suppress(OSError):
                stream.close()
            assert not console.thread.is_alive()


_WORKER = textwrap.dedent(
    """
    import json, sys
    import janus_utils as ju
    proc, count, db = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ju.configure(db, console_level="WARNING")
    log = ju.get_logger("load")
    pad = "p" * 120
    for n in range(count):
        log.warning("line %d %d %s", proc, n, pad, seq=n)
    ju.flush()
    dropped = ju.stats()["console_dropped"]
    ju.shutdown()
    print(json.dumps({"proc": proc, "dropped": dropped}))
    """
)

_LINE = re.compile(
    r'^ts=\S+ level=WARNING logger=load msg="line (\d) (\d+) p{120}" seq=(\d+)$'
)


@pytest.mark.slow
def test_four_processes_into_one_pipe(tmp_path: Path) -> None:
    """4 processes x 20,000 lines into one pipe: every line intact, or its drop counted."""
    count = 20_000
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "NO_COLOR": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(p), str(count), str(tmp_path / "c.db")],
            stderr=write_fd, stdout=subprocess.PIPE, env=env,
        )
        for p in range(4)
    ]
    os.close(write_fd)
    data = bytearray()
    while chunk := os.read(read_fd, 1 << 16):
        data += chunk
    os.close(read_fd)
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    seen: set[tuple[int, int]] = set()
    bad, said = [], 0
    for line in data.decode().splitlines():
        m = _LINE.match(line)
        if m:
            key = (int(m[1]), int(m[2]))
            assert key not in seen
            assert m[2] == m[3]
            seen.add(key)
        elif "line(s) dropped" in line:
            said += int(re.search(r"(\d+) line\(s\) dropped", line)[1])
        else:
            bad.append(line)
    dropped = sum(r["dropped"] for r in reports)
    print(f"intact lines: {len(seen)}, dropped (stats): {dropped}, dropped (said): {said}, broken: {len(bad)}")
    assert [] == bad[:5]
    assert 4 * count == len(seen) + dropped
    assert said == dropped
    with ju.LogStore(tmp_path / "c.db") as store:
        assert 4 * count == store.count(logger="load")
