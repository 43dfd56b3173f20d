"""JanusHandler alone in dictConfig, levels, stack_info, double capture, and OpenTelemetry ids."""

from __future__ import annotations

import logging
import logging.config
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import janus_utils as ju


@pytest.fixture
def clean_root() -> Iterator[logging.Logger]:
    """The root logger as it was, after the test (handlers and level)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    ju.shutdown()
    root.handlers[:] = handlers
    root.setLevel(level)


def _rows(db: Path, **filters: object) -> list[ju.Record]:
    with ju.LogStore(db) as store:
        return store.search(limit=None, order="oldest", **filters)  # type: ignore[arg-type]


class TestDictConfigAlone:
    def test_dictconfig_only_application_stores_its_records(self, tmp_path: Path) -> None:
        """An app that only calls dictConfig (no configure()) gets its records stored."""
        db = tmp_path / "app.db"
        code = textwrap.dedent(
            f"""
            import logging, logging.config
            logging.config.dictConfig({{
                "version": 1,
                "handlers": {{"janus": {{"class": "janus_utils.JanusHandler",
                                         "db_path": {str(db)!r}, "console": False}}}},
                "root": {{"handlers": ["janus"], "level": "INFO"}},
            }})
            log = logging.getLogger("shop.orders")
            log.info("order %s placed", 17, extra={{"user_id": 42}})
            log.debug("not stored: below INFO")
            """
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        rows = _rows(db)
        assert ["order 17 placed"] == [r.message for r in rows]
        assert "42" == rows[0].user_id
        assert "shop.orders" == rows[0].logger

    def test_handler_honours_the_configured_level(self, tmp_path: Path, clean_root: logging.Logger) -> None:
        """Records below configure()'s level (or a levels override) are not stored."""
        db = tmp_path / "lv.db"
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"janus": {"class": "janus_utils.JanusHandler", "db_path": str(db),
                                   "console": False, "levels": {"noisy": "ERROR"}}},
            "root": {"handlers": ["janus"], "level": "DEBUG"},
        })
        logging.getLogger("app").debug("debug is below the default INFO")
        logging.getLogger("app").info("info kept")
        logging.getLogger("noisy.lib").warning("below the override")
        logging.getLogger("noisy.lib").error("error kept")
        ju.flush()
        assert ["info kept", "error kept"] == [r.message for r in _rows(db)]

    def test_configured_library_wins(self, tmp_path: Path, clean_root: logging.Logger) -> None:
        """A handler made after configure() leaves that configuration alone."""
        ju.configure(tmp_path / "first.db", console=False)
        handler = ju.JanusHandler(db_path=tmp_path / "second.db")
        clean_root.addHandler(handler)
        logging.getLogger("x").warning("to the first")
        ju.flush()
        assert ju.stats()["db_path"] == str(tmp_path / "first.db")
        assert not (tmp_path / "second.db").exists()

    def test_bad_option_fails_dictconfig(self, tmp_path: Path, clean_root: logging.Logger) -> None:
        """A wrong configure() option in the handler makes dictConfig fail, saying which."""
        with pytest.raises(ValueError, match="janus"):
            logging.config.dictConfig({
                "version": 1,
                "handlers": {"janus": {"class": "janus_utils.JanusHandler",
                                       "db_path": str(tmp_path / "x.db"), "colour": True}},
                "root": {"handlers": ["janus"]},
            })


class TestStackInfo:
    def test_stdlib_stack_info_is_kept(self, tmp_path: Path, clean_root: logging.Logger) -> None:
        """stack_info=True on a stdlib call stores the stack in the exception text."""
        db = tmp_path / "s.db"
        ju.configure(db, console=False, capture_stdlib=True)
        logging.getLogger("app").warning("where am I", stack_info=True)
        ju.flush()
        (row,) = _rows(db)
        assert row.exception.startswith("Stack (most recent call last):")
        assert "test_stdlib_stack_info_is_kept" in row.exception

    def test_janus_stack_info_is_kept(self, tmp_path: Path, log_call_path: str) -> None:
        """stack_info=True on a janus logger call stores the caller's stack, not janus's frames."""
        db = tmp_path / "s.db"
        ju.configure(db, console=False)
        try:
            ju.get_logger("app").info("here", stack_info=True, n=1)
            ju.flush()
        finally:
            ju.shutdown()
        (row,) = _rows(db)
        assert row.exception.startswith("Stack (most recent call last):")
        last = row.exception.strip().splitlines()[-2]
        assert "test_stdlib_bridge.py" in last
        assert {"n": 1} == row.fields


class TestDoubleCapture:
    def test_root_handler_and_capture_stdlib_store_once(self, tmp_path: Path, clean_root: logging.Logger) -> None:
        """JanusHandler on the root through dictConfig plus capture_stdlib=True: one row per record."""
        db = tmp_path / "d.db"
        logging.config.dictConfig({
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"janus": {"class": "janus_utils.JanusHandler", "db_path": str(db), "console": False}},
            "root": {"handlers": ["janus"], "level": "INFO"},
        })
        ju.configure(db, console=False, capture_stdlib=True)
        before = ju.stats()["stdlib_duplicates"]
        for n in range(5):
            logging.getLogger("svc").info("event %d", n)
        ju.flush()
        assert 5 == len(_rows(db, logger="svc"))
        assert 5 == ju.stats()["stdlib_duplicates"] - before


@pytest.fixture
def uvicorn_loggers(clean_root: logging.Logger) -> Iterator[None]:
    """uvicorn's loggers as they were, after a test that gave them the shipped log config."""
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(list(log.handlers), log.level, log.propagate) for log in loggers]
    yield
    ju.shutdown()
    for log, (handlers, level, propagate) in zip(loggers, saved):
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate


class TestUvicorn:
    def test_color_message_is_not_stored(self, tmp_path: Path, uvicorn_loggers: None) -> None:
        """uvicorn's coloured copy of a message (extra color_message) is not stored as a field."""
        uvicorn = pytest.importorskip("uvicorn")
        from janus_utils import integrations

        db = tmp_path / "u.db"
        ju.configure(db, console=False)
        log_config = Path(integrations.__file__).with_name("uvicorn_log_config.json")
        config = uvicorn.Config("app:app", host="127.0.0.1", port=0, log_config=str(log_config))
        config.bind_socket().close()  # logs "Uvicorn running on ..." with a color_message extra
        ju.flush()
        (row,) = _rows(db, logger="uvicorn.error")
        assert row.message.startswith("Uvicorn running on http://127.0.0.1:")
        assert "color_message" not in row.fields
        assert "\x1b" not in repr(row.fields)

    def test_other_extras_are_kept(self, tmp_path: Path, clean_root: logging.Logger) -> None:
        """Only color_message is left out: the record's other extra= keys stay fields."""
        db = tmp_path / "u.db"
        ju.configure(db, console=False, capture_stdlib=True)
        logging.getLogger("uvicorn.error").warning(
            "Finished server process [%d]", 7, extra={"color_message": "Finished [\x1b[36m%d\x1b[0m]", "port": 80}
        )
        ju.flush()
        (row,) = _rows(db, logger="uvicorn.error")
        assert "Finished server process [7]" == row.message
        assert 80 == row.fields["port"]
        assert "color_message" not in row.fields


class TestOpenTelemetry:
    @pytest.fixture
    def tracer(self) -> object:
        pytest.importorskip("opentelemetry.sdk.trace")
        from opentelemetry.sdk.trace import TracerProvider

        return TracerProvider().get_tracer("test")

    def test_active_span_fills_trace_and_span_ids(self, tmp_path: Path, tracer: object, log_call_path: str,
                                                   clean_root: logging.Logger) -> None:
        """Inside a span, janus and stdlib records carry its ids; outside, none."""
        db = tmp_path / "o.db"
        ju.configure(db, console=False, capture_stdlib=True)
        log = ju.get_logger("traced")
        with tracer.start_as_current_span("outer") as span:  # type: ignore[attr-defined]
            log.info("in span", n=1)
            log.exception("with exc_info", exc_info=ValueError("v"))
            logging.getLogger("traced.std").warning("stdlib in span")
            with ju.log_context(trace_id="given"):
                log.info("explicit wins")
            ctx = span.get_span_context()
        log.info("after span")
        ju.flush()
        rows = {r.message: r for r in _rows(db)}
        want = (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
        for message in ("in span", "with exc_info", "stdlib in span"):
            assert want == (rows[message].trace_id, rows[message].span_id), message
        assert "given" == rows["explicit wins"].trace_id
        assert (None, None) == (rows["after span"].trace_id, rows["after span"].span_id)
        assert {"n": 1} == rows["in span"].fields

    def test_without_opentelemetry_the_c_path_is_bare(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With OpenTelemetry absent the log call goes straight to the C push, no wrapper."""
        from janus_utils import _otel, logger

        monkeypatch.setattr(_otel, "trace_ids_reader", lambda: None)
        ju.configure(tmp_path / "n.db", console=False)
        try:
            if logger._emitter is not None and logger._emitter.native is not None:
                assert logger._fast == logger._emitter.native.push
            assert logger._trace_ids is None
        finally:
            ju.shutdown()
