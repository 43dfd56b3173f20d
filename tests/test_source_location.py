"""Source location: the caller's file, line and function on WARNING and above by default, on every stdlib record."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import janus_utils as ju
from janus_utils import _source
from janus_utils.error_handling.utils.errors import ConfigError

HERE = str(Path(__file__).resolve())


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "src.db"
    yield path
    ju.shutdown()


def _records(db: Path) -> dict[str, ju.Record]:
    ju.flush()
    with ju.LogStore(db) as store:
        return {r.message: r for r in store.search(limit=None, order="oldest")}


def _line() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


class TestDefault:
    def test_warning_and_above_carry_it_info_does_not(self, db: Path) -> None:
        """By default WARNING, ERROR and exception() record file, line and function; INFO records none."""
        ju.configure(db, console=False)
        log = ju.get_logger("app")
        log.info("an info"); info_line = _line()  # noqa: E702
        log.warning("a warning"); warning_line = _line()  # noqa: E702
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("an exception"); exception_line = _line()  # noqa: E702
        rows = _records(db)
        assert not set(_source.KEYS) & set(rows["an info"].fields)
        for message, line in (("a warning", warning_line), ("an exception", exception_line)):
            fields = rows[message].fields
            assert (HERE, line, "TestDefault.test_warning_and_above_carry_it_info_does_not") == (
                fields[_source.FILEPATH], fields[_source.LINENO], fields[_source.FUNCTION]
            )
        assert info_line < warning_line

    def test_log_method_and_stacklevel(self, db: Path) -> None:
        """Logger.log points at its caller; stacklevel=2 at the caller's caller."""
        ju.configure(db, console=False)
        log = ju.get_logger("app")

        def helper() -> None:
            log.warning("from helper", stacklevel=2)

        log.log("ERROR", "via log"); log_line = _line()  # noqa: E702
        helper(); helper_line = _line()  # noqa: E702
        rows = _records(db)
        assert log_line == rows["via log"].fields[_source.LINENO]
        assert helper_line == rows["from helper"].fields[_source.LINENO]

    def test_bound_fields_and_context_kept(self, db: Path) -> None:
        """The location is added beside bound and context fields, none lost."""
        ju.configure(db, console=False)
        with ju.log_context(request_id="r1"):
            ju.get_logger("app").bind(order=7).warning("bound")
        record = _records(db)["bound"]
        assert ("r1", 7, HERE) == (record.request_id, record.fields["order"], record.fields[_source.FILEPATH])


class TestSetting:
    def test_debug_means_every_record(self, db: Path) -> None:
        ju.configure(db, console=False, level="DEBUG", source_location="DEBUG")
        ju.get_logger("app").debug("a debug")
        assert HERE == _records(db)["a debug"].fields[_source.FILEPATH]

    def test_none_means_no_record(self, db: Path) -> None:
        ju.configure(db, console=False, source_location=None)
        ju.get_logger("app").error("an error")
        assert not set(_source.KEYS) & set(_records(db)["an error"].fields)

    def test_bad_value_is_refused(self, db: Path) -> None:
        with pytest.raises(ConfigError):
            ju.configure(db, console=False, source_location="LOUD")


class TestStdlib:
    def test_stdlib_records_always_carry_theirs(self, db: Path) -> None:
        """A stdlib INFO record keeps the pathname, lineno and funcName it carries."""
        ju.configure(db, console=False, source_location=None)
        std = logging.getLogger("std.src")
        std.setLevel(logging.INFO)
        handler = ju.JanusHandler()
        std.addHandler(handler)
        try:
            std.info("stdlib info"); line = _line()  # noqa: E702
        finally:
            std.removeHandler(handler)
        fields = _records(db)["stdlib info"].fields
        assert (HERE, line, "test_stdlib_records_always_carry_theirs") == (
            fields[_source.FILEPATH], fields[_source.LINENO], fields[_source.FUNCTION]
        )
