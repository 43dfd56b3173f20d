"""Logger's level methods: in C where the C module is built, the same records either way."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import logger as jlog

C_LOGGER = jlog.speedups is not None and issubclass(ju.Logger, getattr(jlog.speedups, "Logger", ()))
needs_c = pytest.mark.skipif(not C_LOGGER, reason="the C level methods are not in use in this process")
both_paths = pytest.mark.parametrize("log_call_path", ["c", "python"], indirect=True)

REFERENCE = ("user %s logged in",)


def rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app-logs.db"


@pytest.fixture
def configured(db_path: Path) -> Iterator[Path]:
    # No source location: a WARNING would otherwise take the Python path for
    # its caller's frame (tests/test_source_location.py covers that path).
    ju.configure(db_path, console=False, level="INFO", source_location=None)
    yield db_path
    ju.shutdown()


class Spy:
    """An argument that counts how often it is turned into text."""

    def __init__(self) -> None:
        self.calls = 0

    def __str__(self) -> str:
        self.calls += 1
        return "spy"

    __repr__ = __str__


@needs_c
class TestInC:
    def test_the_level_methods_are_the_c_types(self) -> None:
        """debug ... critical, exception and log come from _speedups.Logger."""
        for name in ("trace", "debug", "info", "warning", "warn", "error", "critical", "exception", "log"):
            assert jlog.speedups.Logger is getattr(ju.Logger, name).__objclass__, name

    def test_a_plain_enabled_call_runs_no_python_function(self, configured: Path) -> None:
        """Level check, formatting, context, encoding and push: no Python frame, bound or not."""
        calls: list[str] = []
        log = ju.get_logger("svc.auth")
        bound = log.bind(agent_id="planner-7")

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call":
                calls.append(frame.f_code.co_name)

        log.info("first call of this thread: its name is looked up once, in Python")
        with ju.log_context(request_id="r-1"):
            sys.setprofile(profile)
            try:
                log.info(*REFERENCE, 42, user_id=42, ip="10.0.0.1", agent_id="planner-7")
                bound.warning("n=%d", 7, ok=True)
                log.debug("below %s", 1, user_id=1)
                log.log(20, "via log()", n=1)
            finally:
                sys.setprofile(None)
        assert [] == calls
        assert ju.flush(timeout=10)
        got = rows(configured, "SELECT level, message, request_id, agent_id FROM logs ORDER BY id")[1:]
        assert [
            (20, "user 42 logged in", "r-1", "planner-7"),
            (30, "n=7", "r-1", "planner-7"),
            (20, "via log()", "r-1", None),
        ] == got

    def test_python_from_hands_warning_and_above_to_python(
        self, configured: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """set_python_from(WARNING): INFO stays in C, WARNING and ERROR reach the Python encoder."""
        seen: list[str] = []
        real = jlog.dumps
        monkeypatch.setattr(jlog, "dumps", lambda record: seen.append(record[4]) or real(record))
        previous = jlog.speedups.set_python_from(jlog.WARNING)
        try:
            log = ju.get_logger("p")
            log.info("in C")
            log.warning("in Python")
            log.log(40, "in Python too")
        finally:
            assert jlog.WARNING == jlog.speedups.set_python_from(previous)
        assert ju.flush(timeout=10)
        assert ["in Python", "in Python too"] == seen
        assert 3 == len(rows(configured, "SELECT id FROM logs"))

    def test_the_c_path_is_off_after_shutdown(self, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """After shutdown() the C methods hold no setup: WARNING goes to stderr, as before configure()."""
        ju.configure(db_path, console=False)
        ju.shutdown()
        ju.get_logger("late").warning("after shutdown")
        assert "after shutdown" in capsys.readouterr().err


class TestSameBehaviourBothWays:
    @both_paths
    def test_a_call_below_the_level_never_formats_its_arguments(self, configured: Path, log_call_path: str) -> None:
        """Nothing of a DEBUG call on an INFO logger is turned into text, or stored."""
        spy = Spy()
        log = ju.get_logger("quiet")
        log.debug("x %s", spy, field=spy)
        log.log(10, "x %s", spy)
        log.trace("x %s", spy)
        log.info("y %s", spy)
        assert ju.flush(timeout=10)
        assert 1 == spy.calls
        assert [("y spy",)] == rows(configured, "SELECT message FROM logs")

    @both_paths
    def test_log_context_follows_asyncio_tasks(self, db_path: Path, log_call_path: str) -> None:
        """Each task's log_context and bound fields stay its own while tasks interleave."""
        ju.configure(db_path, console=False)

        async def task(n: int) -> None:
            log = ju.get_logger("tasks").bind(agent_id=f"agent-{n}")
            with ju.log_context(request_id=f"req-{n}"):
                for step in range(5):
                    log.info("task %d step %d", n, step, user_id=n)
                    await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.gather(*(task(n) for n in range(4)))
            ju.get_logger("tasks").info("outside")

        try:
            asyncio.run(main())
            assert ju.flush(timeout=10)
        finally:
            ju.shutdown()
        got = rows(db_path, "SELECT message, request_id, agent_id, user_id FROM logs ORDER BY id")
        assert 21 == len(got)
        for message, request_id, agent_id, user_id in got[:-1]:
            n = message.split()[1]
            assert (f"req-{n}", f"agent-{n}", n) == (request_id, agent_id, user_id)
        assert ("outside", None, None, None) == got[-1]
        # interleaved: task 1's first step comes before task 0's last
        messages = [g[0] for g in got]
        assert messages.index("task 1 step 0") < messages.index("task 0 step 4")

    @both_paths
    def test_stack_info_shows_the_callers_line(self, configured: Path, log_call_path: str) -> None:
        """The Python path a C method hands a call to sees the caller's frame right above it."""
        ju.get_logger("s").warning("where", stack_info=True)
        assert ju.flush(timeout=10)
        ((exc,),) = rows(configured, "SELECT exception FROM logs")
        last = exc.strip().splitlines()[-2:]
        assert "test_stack_info_shows_the_callers_line" in last[0], exc
        assert 'warning("where", stack_info=True)' in last[1], exc

    @both_paths
    def test_a_failing_call_is_counted_not_raised(self, configured: Path, log_call_path: str) -> None:
        """A logger whose bound fields were replaced by a non-dict: the call returns, the error is counted."""
        log = ju.get_logger("broken").bind(a=1)
        log._bound = "not a dict"  # type: ignore[assignment]
        before = ju.stats()["internal_errors"]
        log.info("x", b=2)
        assert before + 1 == ju.stats()["internal_errors"]

    @both_paths
    def test_keyboard_interrupt_while_formatting_reaches_the_caller(self, configured: Path, log_call_path: str) -> None:
        """Only Exception subclasses are swallowed; Ctrl-C during a log call still stops the program."""

        class Interrupts:
            def __str__(self) -> str:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            ju.get_logger("k").info("x %s", Interrupts())

    @both_paths
    def test_a_call_without_a_message_is_a_type_error(self, configured: Path, log_call_path: str) -> None:
        """As for any Python function: a missing argument raises at the call."""
        with pytest.raises(TypeError):
            ju.get_logger("t").info()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            ju.get_logger("t").log()  # type: ignore[call-arg]

    @both_paths
    def test_log_levels_of_every_kind(self, configured: Path, log_call_path: str) -> None:
        """log() with a number between levels, below the level, beyond a C long, a name, a float."""
        log = ju.get_logger("levels")
        log.log(25, "between")
        log.log(5, "below")
        log.log(-1, "negative")
        log.log(2**64, "huge")
        log.log("warning", "by name")
        log.log(30.0, "float")
        log.log(True, "bool")  # not a level name or a plain int: ERROR, named
        assert ju.flush(timeout=10)
        got = rows(configured, "SELECT level, message, fields FROM logs ORDER BY id")
        assert ["between", "huge", "by name", "float", "bool"] == [m for _, m, _ in got]
        by_message = {m: (lv, f) for lv, m, f in got}
        assert (25, None) == by_message["between"]
        assert (30, None) == by_message["by name"] == by_message["float"]
        assert (40, '{"invalid_level": "True"}') == by_message["bool"]

    @both_paths
    def test_level_changes_reach_existing_loggers(self, db_path: Path, log_call_path: str) -> None:
        """configure() again with another level: a logger made before obeys it at once."""
        log = ju.get_logger("relevel")
        bound = log.bind(x=1)
        ju.configure(db_path, console=False, level="WARNING")
        try:
            log.info("dropped")
            bound.info("dropped too")
            ju.configure(db_path, console=False, level="DEBUG")
            log.debug("kept")
            bound.debug("kept too")
            assert ju.flush(timeout=10)
        finally:
            ju.shutdown()
        assert [("kept",), ("kept too",)] == rows(db_path, "SELECT message FROM logs ORDER BY id")


def test_no_speedups_at_import_gives_the_python_methods(tmp_path: Path) -> None:
    """JANUS_UTILS_NO_SPEEDUPS=1 before import: the pure-Python level methods, and records stored."""
    script = textwrap.dedent(
        """
        import sys
        import janus_utils as ju
        from janus_utils import logger
        ju.configure(sys.argv[1], console=False)
        log = ju.get_logger("pure")
        log.info("user %s logged in", 7, user_id=7)
        log.debug("below")
        assert ju.flush(timeout=30)
        print(ju.Logger.__mro__[1].__name__, ju.stats()["committed"], ju.stats()["speedups"])
        ju.shutdown()
        """
    )
    env = {**os.environ, "JANUS_UTILS_NO_SPEEDUPS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "p.db")], env=env, capture_output=True, text=True, timeout=120
    )
    assert 0 == done.returncode, done.stderr
    assert "_PyLevels 1 False" == done.stdout.strip()
    assert [("user 7 logged in", "7")] == rows(tmp_path / "p.db", "SELECT message, user_id FROM logs")


def _python_message(msg: str, args: tuple[Any, ...]) -> str:
    """What the Python path makes of a template and its arguments."""
    try:
        return msg % args
    except Exception:
        return jlog.format_message(msg, args)


@pytest.mark.skipif(jlog.speedups is None, reason="no C module in this build")
@pytest.mark.parametrize(
    "msg, args",
    [
        ("user %s logged in", ("u0000042",)),
        ("%s%s", ("a", "b")),
        ("100%% of %s", ("x",)),
        ("%s", ("",)),
        ("%s", ("é",)),  # a non-ASCII argument
        ("é %s", ("a",)),  # a non-ASCII template
        ("%s and %s", ("only one",)),
        ("%s", ("a", "b")),
        ("%d", ("1",)),
        ("%5s|%-3s", ("a", "b")),
        ("trailing %", ("a",)),
        ("no conversion", ("a",)),
        ("%s", (7,)),
        ("%s|%s|%s", (-(2**63), 2**63 - 1, 2**64)),  # the last one beyond 64 bits
        ("%s", (True,)),  # an int subclass
        ("%s " * 9, tuple("abcdefghi")),  # more arguments than C copies itself
        ("%s %s", ("a", None)),
        ("%(k)s", ({"k": "v"},)),
    ],
)
def test_the_c_formatter_writes_what_python_writes(tmp_path: Path, msg: str, args: tuple[Any, ...]) -> None:
    """Every template, the plain "%s" ones C copies itself and all it hands on: msg % args or its fallback."""
    from janus_utils import _ring

    with _ring.Ring(tmp_path / "r.ring", 1 << 16) as ring:
        addr, push, suspect = ring.native()
        em = jlog.speedups.Emitter(
            addr, push, suspect, ring, False, 1, 1000, 10**9, [], jlog._context,
            jlog.format_message, jlog._thread_name, jlog._tls,
        )
        assert em.push(20, "f", {}, msg, args, {}) is None
        ((_, payload),), _ = ring.read()
    import marshal

    assert _python_message(msg, args) == marshal.loads(payload)[4]
