"""The logger: from a log call to a committed, searchable row, from threads, tasks and processes."""

from __future__ import annotations

import asyncio
import enum
import io
import json
import logging
import logging.config
import multiprocessing
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju
from janus_utils import _flusher as jflusher
from janus_utils import logger as jlog
from janus_utils.error_handling.utils.errors import ConfigError

FORK = multiprocessing.get_context("fork")

# Every test here runs through both encoders of a log call (see conftest.log_call_path).
pytestmark = pytest.mark.usefixtures("log_call_path")


def query(db_path: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def rows(db_path: str | Path) -> list[dict[str, Any]]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        cur = db.execute("SELECT * FROM logs ORDER BY id")
        names = [d[0] for d in cur.getdescription()]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        db.close()


def messages(db_path: str | Path) -> list[str]:
    return [r[0] for r in query(db_path, "SELECT message FROM logs ORDER BY id")]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app-logs.db"


@pytest.fixture
def console() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def janus(db_path: Path, console: io.StringIO) -> Iterator[Path]:
    """A configured logger writing to a fresh database; shut down afterwards."""
    ju.configure(db_path, level="DEBUG", console_stream=console, ring_size=1 << 20)
    yield db_path
    ju.shutdown()


class TestRecords:
    def test_call_becomes_a_row_with_its_metadata(self, janus: Path) -> None:
        """Message formatted, known fields in columns, other fields as JSON, pid/thread/ts set."""
        before = time.time_ns()
        ju.get_logger("svc.auth").info(
            "user %s logged in", 42, user_id=42, ip="10.0.0.1", agent_id="planner-7", attempts=3
        )
        assert ju.flush(timeout=10)
        (row,) = rows(janus)
        assert "user 42 logged in" == row["message"]
        assert ("svc.auth", 20) == (row["logger"], row["level"])
        assert ("42", "planner-7", None) == (row["user_id"], row["agent_id"], row["request_id"])
        assert {"ip": "10.0.0.1", "attempts": 3} == json.loads(row["fields"])
        assert os.getpid() == row["pid"]
        assert threading.current_thread().name == row["thread"]
        assert before <= row["ts"] <= time.time_ns()

    def test_trace_and_span_ids_get_their_columns(self, janus: Path) -> None:
        """trace_id and span_id are columns, as in the OpenTelemetry log model."""
        ju.get_logger("t").info("x", trace_id="4bf92f35", span_id="00f067aa", request_id="r-1")
        ju.flush(timeout=10)
        assert [("4bf92f35", "00f067aa", "r-1", None)] == query(
            janus, "SELECT trace_id, span_id, request_id, fields FROM logs"
        )

    def test_records_below_the_level_are_not_stored(self, db_path: Path) -> None:
        """Below the configured level nothing is recorded; per-prefix levels override it."""
        ju.configure(db_path, level="WARNING", levels={"svc.db": "DEBUG"}, console=False)
        try:
            ju.get_logger("svc").info("hidden")
            ju.get_logger("svc").warning("shown")
            ju.get_logger("svc.db.pool").debug("also shown")
            ju.get_logger("svc.dbx").debug("hidden too")
            ju.flush(timeout=10)
        finally:
            ju.shutdown()
        assert ["shown", "also shown"] == messages(db_path)

    def test_every_level_method(self, janus: Path) -> None:
        """trace..critical and log() store the stdlib level numbers."""
        ju.configure(janus, level="TRACE", console=False)
        log = ju.get_logger("lv")
        log.trace("t")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        log.log("WARNING", "l")
        ju.flush(timeout=10)
        assert [5, 10, 20, 30, 40, 50, 30] == [r[0] for r in query(janus, "SELECT level FROM logs ORDER BY id")]

    def test_exception_adds_the_traceback(self, janus: Path) -> None:
        """exception() inside an except block stores the traceback text; exc_info= works too."""
        log = ju.get_logger("exc")
        try:
            raise KeyError("missing-key-123")
        except KeyError:
            log.exception("lookup failed", item="x")
        try:
            1 / 0
        except ZeroDivisionError as err:
            log.warning("math", exc_info=err)
        ju.flush(timeout=10)
        first, second = rows(janus)
        assert 40 == first["level"]
        assert "Traceback (most recent call last)" in first["exception"]
        assert "KeyError: 'missing-key-123'" in first["exception"]
        assert "ZeroDivisionError" in second["exception"]
        assert {"item": "x"} == _without_source(json.loads(first["fields"]))

    def test_records_are_full_text_searchable(self, janus: Path) -> None:
        """Message and field text are in the FTS5 index once the flush returns."""
        log = ju.get_logger("fts")
        log.info("payment accepted", order="zebra-991")
        log.info("unrelated")
        ju.flush(timeout=10)
        assert [("payment accepted",)] == query(
            janus, "SELECT message FROM logs_fts WHERE logs_fts MATCH 'zebra'"
        )
        assert [("payment accepted",)] == query(
            janus, "SELECT message FROM logs_fts WHERE logs_fts MATCH 'accepted'"
        )


class TestContext:
    def test_bind_adds_fields_and_call_fields_win(self, janus: Path) -> None:
        """bind() fields go on every record; keywords of the call override them."""
        log = ju.get_logger("agent").bind(agent_id="planner-7", tier="a")
        log.info("one")
        log.bind(tier="b").info("two", tier="c")
        ju.flush(timeout=10)
        assert [("planner-7", '{"tier": "a"}'), ("planner-7", '{"tier": "c"}')] == query(
            janus, "SELECT agent_id, fields FROM logs ORDER BY id"
        )

    def test_log_context_nests_and_unwinds(self, janus: Path) -> None:
        """Context fields apply inside the block only, inner blocks adding to outer ones."""
        log = ju.get_logger("ctx")
        with ju.log_context(user_id=1, request_id="r-1"):
            log.info("outer")
            with ju.log_context(request_id="r-2"):
                log.info("inner")
        log.info("after")
        ju.flush(timeout=10)
        assert [("1", "r-1"), ("1", "r-2"), (None, None)] == query(
            janus, "SELECT user_id, request_id FROM logs ORDER BY id"
        )

    def test_asyncio_tasks_keep_separate_contexts(self, janus: Path) -> None:
        """Interleaved asyncio tasks each see their own request_id."""
        log = ju.get_logger("aio")

        async def handle(rid: str) -> None:
            with ju.log_context(request_id=rid):
                for i in range(20):
                    log.info("step %d", i, step_id=f"{rid}-{i}")
                    await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.gather(*(handle(f"req-{n}") for n in range(5)))

        asyncio.run(main())
        ju.flush(timeout=10)
        got = query(janus, "SELECT request_id, fields FROM logs")
        assert 100 == len(got)
        for rid, fields in got:
            assert json.loads(fields)["step_id"].startswith(rid + "-")


@pytest.mark.usefixtures("flusher_mode")
class TestThreads:
    def test_four_threads_every_record_exactly_once(self, janus: Path) -> None:
        """4 threads log unique tokens; after flush each token is stored exactly once."""
        log = ju.get_logger("thr")
        per_thread = 5000

        def work(t: int) -> None:
            for i in range(per_thread):
                log.info("tok-%d-%d", t, i, n=i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ju.flush(timeout=60)
        got = messages(janus)
        assert sorted(f"tok-{t}-{i}" for t in range(4) for i in range(per_thread)) == sorted(got)
        stats = ju.stats()
        assert (0, 0) == (stats["dropped"], stats["torn"])


class TestStdlib:
    def test_capture_stdlib_keeps_extra_and_exc_info(self, db_path: Path) -> None:
        """configure(capture_stdlib=True): stdlib records arrive with extra fields and traceback."""
        ju.configure(db_path, capture_stdlib=True, console=False)
        try:
            legacy = logging.getLogger("legacy.module")
            legacy.info("order %s placed", 17, extra={"user_id": 7, "cart": "c-9"})
            try:
                raise ValueError("bad cart")
            except ValueError:
                legacy.error("checkout failed", exc_info=True)
            ju.flush(timeout=10)
        finally:
            ju.shutdown()
        first, second = rows(db_path)
        assert ("legacy.module", "order 17 placed", "7") == (first["logger"], first["message"], first["user_id"])
        assert {"cart": "c-9"} == _without_source(json.loads(first["fields"]))
        assert "ValueError: bad cart" in second["exception"]
        assert ju.JanusHandler not in {type(h) for h in logging.getLogger().handlers}

    def test_handler_in_dictconfig(self, janus: Path) -> None:
        """JanusHandler can be named in logging.config.dictConfig."""
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"janus": {"class": "janus_utils.JanusHandler", "level": "INFO"}},
                "loggers": {"dictcfg": {"handlers": ["janus"], "level": "INFO", "propagate": False}},
            }
        )
        try:
            logging.getLogger("dictcfg").info("via dictConfig")
            ju.flush(timeout=10)
        finally:
            logging.getLogger("dictcfg").handlers.clear()
        assert ["via dictConfig"] == messages(janus)


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class TestBadInput:
    def test_nothing_raises_and_everything_is_stored(self, janus: Path) -> None:
        """Hostile messages, args and fields never raise and never stop later records."""
        log = ju.get_logger("bad")
        loop: list[Any] = [1]
        loop.append(loop)
        selfref: dict[str, Any] = {}
        selfref["me"] = selfref
        cases = [
            lambda: log.info(12345),
            lambda: log.info({"a": 1}),
            lambda: log.info(None),
            lambda: log.info(Unprintable()),
            lambda: log.info("obj %s", Unprintable()),
            lambda: log.info("fields", obj=Unprintable(), when=object(), raw=b"\xff\x00", s={1, 2}),
            lambda: log.info("surrogate \udc80 in message", f="lone \ud800"),
            lambda: log.info("nul \x00 byte", f="a\x00b"),
            lambda: log.info("cycles", loop=loop, selfref=selfref),
            lambda: log.info("too few %s %s", 1),
            lambda: log.info("wrong type %d", "abc"),
            lambda: log.info("%(missing)s", {"other": 1}),
        ]
        for case in cases:
            case()  # must not raise
        log.info("still alive")
        assert ju.flush(timeout=10)
        got = messages(janus)
        assert len(cases) + 1 == len(got)
        assert "still alive" == got[-1]
        assert "12345" == got[0]
        assert "<unprintable Unprintable object>" == got[3]
        assert "too few %s %s [bad format args: [1]]" == got[9]
        assert "surrogate \\udc80 in message" == got[6]
        assert "nul \\x00 byte" == got[7]
        fields = [json.loads(f) if f else None for (f,) in query(janus, "SELECT fields FROM logs ORDER BY id")]
        assert "<unprintable Unprintable object>" == fields[5]["obj"]
        assert "[cycle]" in json.dumps(fields[8])
        assert 0 == ju.stats()["internal_errors"]

    def test_one_hostile_field_never_costs_the_record(self, janus: Path, console: io.StringIO) -> None:
        """Whatever one field holds, the record keeps its level, logger, message and other fields."""
        class Colour(enum.IntEnum):
            RED = 1

        def nest(depth: int) -> Any:
            value: Any = 0
            for _ in range(depth):
                value = [value]
            return value

        big = 10**5000  # past Python's 4,300-digit int-to-text limit
        hostile = {
            "big int": big, "negative big int": -big, "huge int": 10**100_000, "in a list": [big],
            "in a dict": {"n": big}, "in a tuple": (big,), "in a set": {big}, "as a key": {big: 1},
            "in a tuple key": {(1, big): 2},
            "odd keys": {None: 1, True: 2, 1.5: 3, float("nan"): 4, float("inf"): 5, (1, 2): 6, b"k": 7},
            "nan": float("nan"), "-inf": float("-inf"), "largest float": 1.7976931348623157e308,
            "complex": complex(float("inf"), float("nan")), "nested 1,500 deep": nest(1500),
            "nested 5,000 deep": nest(5000), "bytes": b"\xff\x00", "surrogate": "\ud800", "enum": Colour.RED,
            "code": (lambda: 0).__code__, "ellipsis": ..., "many keys": {str(i): i for i in range(5000)},
        }
        log = ju.get_logger("hostile")
        for n, (name, value) in enumerate(hostile.items()):
            log.warning("case %d", n, case=name, value=value)
            log.warning("known %d", n, case=name, user_id=value)
        assert ju.flush(timeout=30)
        got = query(janus, "SELECT level, logger, message, user_id, fields FROM logs ORDER BY id")
        assert 2 * len(hostile) == len(got)
        for n, name in enumerate(hostile):
            for (level, logger, message, _, fields), kind in zip(got[2 * n : 2 * n + 2], ("case", "known")):
                assert (30, "hostile", f"{kind} {n}") == (level, logger, message), name
                assert name == json.loads(fields)["case"]
        value_of = {m: (u, json.loads(f).get("value")) for _, _, m, u, f in got}
        # Past the digit limit an int is stored exactly, as hexadecimal text...
        assert big == int(value_of["case 0"][1], 16) == int(value_of["known 0"][0], 16)
        assert -big == int(value_of["case 1"][1], 16)
        assert [hex(big)] == value_of["case 3"][1]
        # ...up to 4,300 hex digits: beyond, cut with the usual marker.
        assert value_of["case 2"][1].startswith(hex(10**100_000)[:4302] + "…[truncated ")
        assert "[depth limit]" in json.dumps(value_of["case 15"][1])
        ju.shutdown()
        assert "console formatting failed" not in console.getvalue()
        assert 2 * len(hostile) == console.getvalue().count("logger=hostile")

    def test_huge_message_is_truncated_with_a_marker(self, db_path: Path) -> None:
        """A 10 MB message is stored cut to the limit with a visible marker."""
        ju.configure(db_path, console=False, max_message_chars=1000)
        try:
            ju.get_logger("big").info("x" * 10_000_000)
            ju.get_logger("big").info("after")
            ju.flush(timeout=10)
        finally:
            ju.shutdown()
        first, second = messages(db_path)
        assert "x" * 1000 + "…[truncated 9999000 chars]" == first
        assert "after" == second

    def test_huge_fields_are_cut_not_lost(self, db_path: Path) -> None:
        """Fields too big for the ring still leave a record, marked truncated."""
        ju.configure(db_path, console=False, ring_size=1 << 16)
        try:
            ju.get_logger("big").info("fat record", blob="y" * 200_000)
            ju.flush(timeout=10)
        finally:
            ju.shutdown()
        ((message, fields),) = query(db_path, "SELECT message, fields FROM logs")
        assert "fat record" == message
        assert "truncated" in fields


class TestCutRecordsKeepIds:
    """A record too big for the ring is cut: its ids stay columns, so a search by user finds it."""

    IDS = {"user_id": "u-1", "agent_id": "a-1", "request_id": "r-1"}

    @staticmethod
    def log_fat(db_path: Path, given: str, ids: dict[str, Any], blob: str) -> dict[str, Any]:
        """One record with *blob* as a field and *ids* given as *given* says; its row."""
        ju.configure(db_path, console=False, ring_size=1 << 20)
        try:
            log = ju.get_logger("big")
            if given == "fields":
                log.info("fat record", blob=blob, **ids)
            elif given == "log_context":
                with ju.log_context(**ids):
                    log.info("fat record", blob=blob)
            else:
                log.bind(**ids).info("fat record", blob=blob)
            assert ju.flush(timeout=30)
            assert 1 == ju.stats()["truncated"]
        finally:
            ju.shutdown()
        (row,) = rows(db_path)
        return row

    @pytest.mark.parametrize("given", ["fields", "log_context", "bind"])
    def test_ids_survive_a_20_mb_field(self, db_path: Path, given: str) -> None:
        """user_id, agent_id and request_id, however given, stay the columns of a record cut for size."""
        row = self.log_fat(db_path, given, self.IDS, "y" * 20_000_000)
        assert self.IDS == {key: row[key] for key in self.IDS}
        assert "fat record" == row["message"]
        fields = json.loads(row["fields"])
        assert ["_truncated_fields"] == list(fields)
        cut = fields["_truncated_fields"]
        assert cut.startswith("{'blob': 'yyy") and "…[truncated " in cut
        assert "u-1" not in cut  # a column, not repeated in the cut text
        with ju.LogStore(db_path) as store:
            assert [row["id"]] == [r.id for r in store.search(user_id="u-1")]
            assert 1 == store.count(user_id="u-1")
            assert 1 == store.count(agent_id="a-1", request_id="r-1")

    def test_an_int_id_is_stored_as_an_uncut_record_stores_it(self, db_path: Path) -> None:
        """An int user_id of a cut record is its decimal text, found by search(user_id=int)."""
        row = self.log_fat(db_path, "fields", {"user_id": 42}, "y" * 20_000_000)
        assert "42" == row["user_id"]
        with ju.LogStore(db_path) as store:
            assert 1 == store.count(user_id=42)

    def test_a_huge_id_is_cut_to_256_chars(self, db_path: Path) -> None:
        """An id too big to be one is itself cut, with the marker; the record is still stored."""
        row = self.log_fat(db_path, "fields", {"user_id": "u" * 20_000_000}, "small")
        assert "u" * 256 + "…[truncated 19999744 chars]" == row["user_id"]
        assert {"blob": "small"} == json.loads(row["fields"])

    @pytest.mark.parametrize("given", ["fields", "log_context", "bind"])
    def test_ids_of_a_cut_record_are_redacted(self, db_path: Path, given: str) -> None:
        """A secret in an id or in the cut field is redacted before the record is cut, as before."""
        jwt = (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
        )
        ids = {"user_id": "u" * 250 + " " + jwt, "agent_id": "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "request_id": jwt}
        row = self.log_fat(db_path, given, ids, "password=hunter2-pw-a1 " + "y" * 20_000_000)
        text = repr(row)
        for secret in ("eyJhbGci", "ghp_16C7", "hunter2-pw-a1"):
            assert secret not in text
        assert ("[REDACTED:github_token]", "[REDACTED:jwt]") == (row["agent_id"], row["request_id"])
        assert row["user_id"].startswith("u" * 250 + " [REDA") and "…[truncated " in row["user_id"]
        assert "password=[REDACTED" in json.loads(row["fields"])["_truncated_fields"]

    def test_a_record_of_four_byte_characters_is_cut_until_it_fits(self, db_path: Path) -> None:
        """The cut counts characters; 4-byte characters in message, traceback, fields, logger and
        thread name make the first cut still too big, and the record is cut again, never lost."""
        wide = "\U0001f600"  # 4 bytes in UTF-8
        ju.configure(db_path, console=False, ring_size=1 << 20)
        try:
            log = ju.get_logger("big." + wide * 200_000)
            threading.current_thread().name, name = wide * 200_000, threading.current_thread().name
            try:
                try:
                    raise ValueError(wide * 300_000)
                except ValueError:
                    log.exception(wide * 300_000, blob=wide * 300_000, user_id="u-4")
            finally:
                threading.current_thread().name = name
            assert ju.flush(timeout=30)
            stats = ju.stats()
        finally:
            ju.shutdown()
        # The message alone is also over max_message_chars: cut once for that, once for size.
        assert (2, 0) == (stats["truncated"], stats["dropped"])
        (row,) = rows(db_path)
        assert "u-4" == row["user_id"]
        assert row["message"].startswith(wide * 100) and "…[truncated " in row["message"]
        assert row["logger"].startswith("big." + wide * 100)


class TestRobustness:
    def test_msg_and_self_are_ordinary_field_names(self, janus: Path) -> None:
        """msg= and self= keywords are fields, not clashes with the call's parameters."""
        ju.get_logger("kw").info("sent", msg="m-42", self="s")
        ju.flush(timeout=10)
        assert [('{"msg": "m-42", "self": "s"}',)] == query(janus, "SELECT fields FROM logs")

    def test_unknown_level_is_recorded_not_raised(self, janus: Path) -> None:
        """log() with an unknown level name records at ERROR with the level kept as a field."""
        ju.get_logger("lv").log("NOTICE", "odd level")
        ju.get_logger("lv").log(2**64, "huge level")
        ju.flush(timeout=10)
        got = query(janus, "SELECT level, message, fields FROM logs ORDER BY id")
        assert (40, "odd level", {"invalid_level": "NOTICE"}) == (got[0][0], got[0][1], _without_source(json.loads(got[0][2])))
        assert ("huge level", 2**63 - 1) == (got[1][1], got[1][0])

    def test_stdlib_record_without_a_name_is_stored(self, janus: Path) -> None:
        """A LogRecord rebuilt without a name (a socket or queue receiver) does not stall the flusher."""
        handler = ju.JanusHandler()
        handler.handle(logging.makeLogRecord({"msg": "from the wire", "levelno": 20, "name": None}))
        ju.get_logger("after").info("after it")
        assert ju.flush(timeout=10)
        assert [("root", "from the wire"), ("after", "after it")] == query(
            janus, "SELECT logger, message FROM logs ORDER BY id"
        )

    def test_a_row_sqlite_refuses_is_replaced_and_the_batch_kept(
        self, janus: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One row SQLite refuses becomes a record saying why; its neighbours are stored."""
        real = jflusher.decode_row

        def decode(payload: bytes) -> tuple[Any, ...]:
            row = real(payload)
            return row[:2] + (None,) + row[3:] if row[3] == "poison" else row  # NULL logger

        monkeypatch.setattr(jflusher, "decode_row", decode)
        monkeypatch.setattr(jlog._flusher, "decode_rows", None)  # every row through decode()
        log = ju.get_logger("batch")
        log.info("before")
        log.info("poison")
        log.info("after")
        assert ju.flush(timeout=10)
        got = query(janus, "SELECT level, message, fields FROM logs ORDER BY id")
        assert ["before", "poison", "after"] == [m for _, m, _ in got]
        assert 40 == got[1][0] and "refused_by_sqlite" in got[1][2]
        assert 1 == ju.stats()["unstorable"]

    def test_a_call_racing_shutdown_cannot_crash(self, db_path: Path) -> None:
        """A log call that picked up the pipeline just before shutdown() still pushes safely."""
        ju.configure(db_path, console=False)
        emitter = jlog._emitter
        assert emitter is not None
        ju.shutdown()
        emitter.emit(time.time_ns(), 20, "late", "after shutdown", None, None, "T")
        ju.configure(db_path, console=False)  # commits what the ring holds first
        try:
            assert "after shutdown" in messages(db_path)
        finally:
            ju.shutdown()

    def test_failed_configure_leaves_no_lock_behind(self, tmp_path: Path) -> None:
        """A database that cannot be opened fails configure() and frees the flusher election."""
        bad = tmp_path / "not-a-db.db"
        bad.write_bytes(b"this is not sqlite" * 300)
        bad.chmod(0o600)
        with pytest.raises(ConfigError, match="cannot use"):
            ju.configure(bad, console=False)
        assert not ju.is_configured()
        from janus_utils.file_handler import FileLock

        other = FileLock(f"{bad}-flusher.lock")
        assert other.acquire(blocking=False)
        other.release()

    def test_reconfigure_with_bad_options_keeps_the_old_setup(self, janus: Path) -> None:
        """configure() with options that fail keeps the working configuration."""
        with pytest.raises(ConfigError):
            ju.configure(janus, redact_keys=tuple(f"k{i}a b-c" for i in range(200)))
        ju.get_logger("still").info("still logging")
        assert ju.flush(timeout=10)
        assert ["still logging"] == messages(janus)


class TestFiles:
    def test_database_wal_shm_ring_and_lock_are_owner_only(self, db_path: Path) -> None:
        """Every file the logger creates is 0600, whatever the umask."""
        old = os.umask(0)
        try:
            ju.configure(db_path, console=False)
            ju.get_logger("perm").info("x")
            ju.flush(timeout=10)
            files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"),
                     Path(f"{db_path}-ring"), Path(f"{db_path}-flusher.lock")]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        finally:
            ju.shutdown()
            os.umask(old)
        assert {f.name: 0o600 for f in files} == modes

    def test_missing_directory_is_a_clear_error(self, tmp_path: Path) -> None:
        """A db_path in a directory that does not exist is a ConfigError saying so."""
        with pytest.raises(ConfigError, match="does not exist"):
            ju.configure(tmp_path / "nope" / "x.db")


class TestConsole:
    def test_console_line_cannot_be_forged(self, janus: Path, console: io.StringIO) -> None:
        """Newlines and terminal escapes in user data stay inside one escaped line."""
        ju.get_logger("web").warning(
            "login failed for %s", "bob\nts=2026 level=INFO msg=forged\x1b[2J", user="x\ry"
        )
        ju.flush(timeout=10)
        out = console.getvalue()
        assert 1 == out.count("\n")
        assert "\x1b" not in out and "\r" not in out
        assert "level=WARNING" in out and "logger=web" in out

    def test_json_console_is_one_object_per_line(self, db_path: Path) -> None:
        """console_format='json' writes one parseable object per record."""
        stream = io.StringIO()
        ju.configure(db_path, console_format="json", console_level="INFO", console_stream=stream)
        try:
            ju.get_logger("j").info("hello\u2028world", user_id=5)
            ju.flush(timeout=10)
        finally:
            ju.shutdown()
        (line,) = stream.getvalue().splitlines()
        record = json.loads(line)
        assert ("hello\u2028world", "5", "INFO") == (record["message"], str(record["user_id"]), record["level_name"])

    def test_json_console_line_survives_a_hostile_field(self, db_path: Path) -> None:
        """A field JSON cannot take as is (a huge int, NaN, a tuple key) still makes its line."""
        out = io.StringIO()
        ju.configure(db_path, console_stream=out, console_format="json")
        try:
            ju.get_logger("j").warning("odd", n=10**5000, f=float("nan"), d={(1, 2): 3})
            assert ju.flush(timeout=10)
        finally:
            ju.shutdown()
        (line,) = out.getvalue().splitlines()
        record = json.loads(line)
        assert ("odd", 10**5000) == (record["message"], int(record["fields"]["n"], 16))

    def test_below_console_level_stays_off_the_console(self, janus: Path, console: io.StringIO) -> None:
        """INFO is stored but not printed with the default console_level WARNING."""
        ju.get_logger("q").info("quiet")
        ju.flush(timeout=10)
        assert "" == console.getvalue()
        assert ["quiet"] == messages(janus)


class TestConfigure:
    def test_bad_options_are_config_errors(self, db_path: Path) -> None:
        """Unknown levels, options and policies raise ConfigError with the reason."""
        with pytest.raises(ConfigError, match="unknown level"):
            ju.configure(db_path, level="LOUD")
        with pytest.raises(ConfigError, match="unknown option"):
            ju.configure(db_path, colour=True)
        with pytest.raises(ConfigError, match="on_full"):
            ju.configure(db_path, on_full="explode")

    def test_hashing_without_a_key_is_refused(self, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """hash_fields with no key and no JANUS_LOG_HASH_KEY fails at configure()."""
        monkeypatch.delenv("JANUS_LOG_HASH_KEY", raising=False)
        with pytest.raises(ConfigError, match="JANUS_LOG_HASH_KEY"):
            ju.configure(db_path, hash_fields=("user_id",))

    def test_hash_fields_are_stored_hashed(self, db_path: Path) -> None:
        """Configured fields are stored as their keyed hash, never in clear."""
        ju.configure(db_path, hash_fields=("user_id", "email"), hash_key="k1", console=False)
        try:
            ju.get_logger("h").info("x", user_id="alice", email="a@example.com")
            ju.flush(timeout=10)
        finally:
            ju.shutdown()
        ((uid, fields),) = query(db_path, "SELECT user_id, fields FROM logs")
        assert ju.security.hash_identifier("alice", b"k1") == uid
        assert "alice" not in uid and "a@example.com" not in fields

    def test_stats_reports_the_counters(self, janus: Path) -> None:
        """stats() has committed, dropped, torn, retries, last error and ring fill."""
        ju.get_logger("s").info("x")
        ju.flush(timeout=10)
        s = ju.stats()
        assert {"committed", "dropped", "torn", "retries", "last_error", "ring_fill", "unstorable"} <= set(s)
        assert (1, True) == (s["committed"], s["leader"])

    def test_log_before_configure_goes_to_stderr(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Unconfigured, WARNING and above reach stderr and nothing raises."""
        ju.get_logger("early").warning("early bird\nsecond line")
        ju.get_logger("early").info("not shown")
        err = capsys.readouterr().err
        assert "WARNING early: early bird\\nsecond line\n" == err


class TestWriteFailures:
    def test_locked_database_is_retried_and_nothing_is_lost(self, db_path: Path) -> None:
        """While another program holds the write lock the flusher retries; then all lands."""
        ju.configure(db_path, console=False)
        try:
            ju.get_logger("w").info("first")
            ju.flush(timeout=10)
            blocker = apsw.Connection(str(db_path))
            blocker.setbusytimeout(10_000)  # past the flusher's idle checkpoint, if one runs
            blocker.execute("BEGIN EXCLUSIVE")
            for i in range(100):
                ju.get_logger("w").info("during %d", i)
            deadline = time.monotonic() + 30
            while ju.stats()["retries"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not ju.flush(timeout=0.2)
            blocker.execute("COMMIT")
            blocker.close()
            assert ju.flush(timeout=30)
            s = ju.stats()
        finally:
            ju.shutdown()
        assert ["first"] + [f"during {i}" for i in range(100)] == messages(db_path)
        assert s["retries"] >= 1
        # Recovered: nothing is wrong now, but the problem is still on record.
        assert s["last_error"] is None
        assert s["errors"] >= 1 and s["last_error_at"] is not None
        assert "cannot write" in s["recent_errors"][-1][1]


# --- processes and SIGKILL -------------------------------------------------


def _child_logs(db: str, name: str, count: int, out: Any) -> None:
    ju.configure(db, console=False)
    log = ju.get_logger(name)
    for i in range(count):
        log.info("%s-%d", name, i)
    ok = ju.flush(timeout=60)
    s = ju.stats()
    out.put((name, ok, s["last_error"]))
    ju.shutdown()


def _child_logs_forever(db: str, name: str, progress: Any, ready: Any) -> None:
    ju.configure(db, console=False)
    ready.set()
    log = ju.get_logger(name)
    i = 0
    while True:
        log.info("%s-%d", name, i)
        progress.value = i  # after the call returned
        i += 1


def _assert_exactly_once(db: Path, name: str, returned: int) -> None:
    got = [m for m in messages(db) if m.startswith(name + "-")]
    numbers = sorted(int(m.rsplit("-", 1)[1]) for m in got)
    assert len(numbers) == len(set(numbers)), f"{name}: duplicates"
    assert list(range(len(numbers))) == numbers, f"{name}: gap"
    assert len(numbers) in (returned + 1, returned + 2), (name, len(numbers), returned)


@pytest.mark.usefixtures("flusher_mode")
class TestProcesses:
    def test_four_processes_one_database_exactly_once(self, db_path: Path) -> None:
        """4 processes log into one database: no 'database is locked', every record once."""
        out = FORK.Queue()
        procs = [FORK.Process(target=_child_logs, args=(str(db_path), f"p{n}", 3000, out)) for n in range(4)]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(60)
        assert [0, 0, 0, 0] == [p.exitcode for p in procs]
        for name, ok, last_error in results:
            assert ok, name
            assert last_error is None or "locked" not in last_error
        ju.configure(db_path, console=False)
        ju.shutdown()
        got = messages(db_path)
        assert sorted(f"p{n}-{i}" for n in range(4) for i in range(3000)) == sorted(got)

    def test_sigkill_of_a_producer_loses_nothing_that_returned(self, db_path: Path) -> None:
        """A producer process SIGKILLed mid-stream: every call that returned is stored once."""
        ju.configure(db_path, console=False)
        try:
            progress = FORK.Value("q", -1, lock=False)
            ready = FORK.Event()
            child = FORK.Process(target=_child_logs_forever, args=(str(db_path), "kid", progress, ready))
            child.start()
            while progress.value < 5000:
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            returned = progress.value
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        _assert_exactly_once(db_path, "kid", returned)

    def test_sigkill_of_the_flusher_process_mid_run(self, db_path: Path) -> None:
        """The flusher's process is SIGKILLed mid-batch; another takes over; exactly once."""
        pa = FORK.Value("q", -1, lock=False)
        pb = FORK.Value("q", -1, lock=False)
        ready_a, ready_b = FORK.Event(), FORK.Event()
        a = FORK.Process(target=_child_logs_forever, args=(str(db_path), "a", pa, ready_a))
        a.start()
        assert ready_a.wait(30)  # a configured first: it is the flusher
        b = FORK.Process(target=_child_logs_forever, args=(str(db_path), "b", pb, ready_b))
        b.start()
        assert ready_b.wait(30)
        while pa.value < 3000 or pb.value < 3000:
            time.sleep(0.005)
        os.kill(a.pid, signal.SIGKILL)
        a.join()
        # b keeps logging and takes over as flusher; let it commit for a while.
        mark = pb.value
        while pb.value < mark + 3000:
            time.sleep(0.005)
        os.kill(b.pid, signal.SIGKILL)
        b.join()
        ju.configure(db_path, console=False)  # commits the leftovers first
        try:
            s = ju.stats()
        finally:
            ju.shutdown()
        _assert_exactly_once(db_path, "a", pa.value)
        _assert_exactly_once(db_path, "b", pb.value)
        assert s["torn"] <= 2  # at most the one record each killed process was writing

    def test_configure_commits_leftovers_of_a_crashed_run(self, db_path: Path) -> None:
        """Records in the ring of a killed process are committed before configure() returns."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                ju.configure(db_path, console=False)
                p = jlog._flusher
                assert p is not None
                p.stopping = True  # no more flushing: the records stay in the ring
                p.wake.set()
                p.thread.join()
                for i in range(500):
                    ju.get_logger("crash").info("left-%d", i)
            finally:
                os.kill(os.getpid(), signal.SIGKILL)
        os.waitpid(pid, 0)
        ju.configure(db_path, console=False)
        try:
            got = messages(db_path)  # no flush(): configure() already committed them
        finally:
            ju.shutdown()
        assert [f"left-{i}" for i in range(500)] == got

    def test_forked_child_logs_through_the_parents_setup(self, janus: Path) -> None:
        """After fork() the child's records reach the database via the shared ring."""
        ju.get_logger("fork").info("parent before")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            ju.get_logger("fork").info("from child")
            ok = ju.flush(timeout=30)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        ju.get_logger("fork").info("parent after")
        assert ju.flush(timeout=30)
        assert ["parent before", "from child", "parent after"] == messages(janus)


class TestRetention:
    def test_flusher_prunes_by_age_and_archives_first(self, db_path: Path, tmp_path: Path) -> None:
        """configure(retention=...) makes the flusher prune old rows, archiving them first."""
        old_ts = time.time_ns() - 10 * 86400 * 10**9
        db = jflusher.open_database(str(db_path))
        with db:
            db.executemany(
                "INSERT INTO logs(ts, level, logger, message) VALUES (?, 20, 'old', ?)",
                [(old_ts + i, f"ancient-{i}") for i in range(300)],
            )
            db.execute("INSERT INTO logs_fts(rowid, message, fields, exception) "
                       "SELECT id, message, fields, exception FROM logs")
        db.close()
        archives = tmp_path / "archive"
        ju.configure(db_path, console=False, retention={"max_age": "7d", "per_level": {"ERROR": "30d"}},
                     archive_dir=archives)
        try:
            ju.get_logger("new").info("fresh")
            ju.flush(timeout=10)
            deadline = time.monotonic() + 60
            while query(db_path, "SELECT count(*) FROM logs WHERE logger = 'old'")[0][0] and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            ju.shutdown()
        assert ["fresh"] == messages(db_path)
        assert [] == query(db_path, "SELECT rowid FROM logs_fts WHERE logs_fts MATCH 'ancient'")
        from janus_utils.retention import iter_archive_records

        archived = sorted(r["message"] for r in iter_archive_records(archives))
        assert sorted(f"ancient-{i}" for i in range(300)) == archived

    def test_bad_retention_is_a_config_error(self, db_path: Path) -> None:
        """An unusable retention value is refused at configure()."""
        with pytest.raises(ConfigError):
            ju.configure(db_path, retention=42)


def _without_source(fields: dict[str, object]) -> dict[str, object]:
    """*fields* less the source location WARNING and above carry (see test_source_location)."""
    return {key: value for key, value in fields.items() if not key.startswith("code.")}
