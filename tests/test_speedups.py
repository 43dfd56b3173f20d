"""The C encoder of a log call: the same bytes and rows as the Python path, or a hand-back."""

from __future__ import annotations

import enum
import marshal
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import janus_utils as ju
from janus_utils.error_handling.utils.errors import ConfigError
from janus_utils import _ring, _speedups
from janus_utils import _record as jrec
from janus_utils import logger as jlog

def query(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# --- the encoder alone -------------------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
plain = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | text
fields = st.none() | st.dictionaries(text, plain, max_size=6)
records = st.tuples(
    st.just(1), st.integers(0, 2**63 - 1), st.integers(-(2**63), 2**63 - 1), text, text, fields,
    st.none() | text, st.integers(0, 2**31 - 1), text,
)


class TestEncode:
    @settings(max_examples=400, deadline=None)
    @given(records)
    def test_plain_records_encode_as_marshal_does(self, record: tuple[Any, ...]) -> None:
        """Byte for byte what marshal.dumps(record, 2) writes: the flusher cannot tell."""
        assert marshal.dumps(record, 2) == _speedups.encode(record)

    @pytest.mark.parametrize(
        "value",
        [2**63, -(2**63) - 1, 2**64, -(2**31) - 1, 2**31, -(2**31), 2**31 - 1, 0, -1,
         0.0, -0.0, float("nan"), float("-inf"), "", "\x00", "é☃😀"],
    )
    def test_edges_of_ints_floats_and_text(self, value: Any) -> None:
        """Where marshal switches int forms, signed zero, NaN, NUL and multi-byte UTF-8."""
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            with pytest.raises(ValueError):
                _speedups.encode(value)
        else:
            assert marshal.dumps(value, 2) == _speedups.encode(value)

    @pytest.mark.parametrize(
        "value, error",
        [
            ("lone \udc80 surrogate", ValueError),  # marshal's surrogatepass is Python's job
            ([1, 2], TypeError),
            ({"nested": {"a": 1}}, ValueError),
            ({1: "int key"}, ValueError),
            (type("S", (str,), {})("str subclass"), TypeError),
            ("x" * (_speedups.MAX_RECORD + 1), ValueError),
        ],
    )
    def test_what_it_does_not_write_is_refused(self, value: Any, error: type[Exception]) -> None:
        """Anything outside plain data raises, so the log call falls back rather than guessing."""
        with pytest.raises(error):
            _speedups.encode(value)


class TestEmitterObject:
    def test_an_uninitialised_emitter_raises_instead_of_crashing(self) -> None:
        """Emitter.__new__ without __init__ has no ring: push says so."""
        em = _speedups.Emitter.__new__(_speedups.Emitter)
        with pytest.raises(RuntimeError, match="not initialised"):
            em.push(20, "n", {}, "m", (), {})

    def test_bad_arguments_are_refused_at_construction(self) -> None:
        """A null ring address, or a context that is not a ContextVar, is a clear error."""
        ok = dict(ring=1, push=1, suspect=1, keepalive=None, check=True, pid=1, max_chars=10,
                  console_level=30, listeners=[], context=jlog._context,
                  format_message=jlog.format_message, thread_name=jlog._thread_name, tls=jlog._tls)
        with pytest.raises(ValueError, match="NULL"):
            _speedups.Emitter(**{**ok, "ring": 0})
        with pytest.raises(TypeError, match="ContextVar"):
            _speedups.Emitter(**{**ok, "context": {}})


# --- the flusher's decoder ---------------------------------------------------

wild_text = text | st.text(
    alphabet=st.sampled_from(["a", "é", "\x00", "\n", '"', "\\", "\x1f", "\x7f", "\ud800", "\udfff", "😀"]),
    max_size=8,
)
# and past Python's 4,300-digit int-to-text limit, which JSON encoding hits
huge_int = st.integers(10**4300, 10**4400) | st.integers(-(10**4400), -(10**4300))
wild_int = st.integers() | st.integers(-(2**63), 2**63 - 1) | huge_int
wild_plain = st.none() | st.booleans() | wild_int | st.floats() | wild_text
wild_value = st.recursive(
    wild_plain | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
key = st.sampled_from(["user_id", "agent_id", "request_id", "trace_id", "span_id"]) | text
wild_records = st.tuples(
    st.just(1) | st.integers(0, 3), wild_int, wild_int, st.none() | wild_text, st.none() | wild_text,
    st.none() | st.dictionaries(key, wild_plain, max_size=6) | st.dictionaries(key, wild_value, max_size=4),
    st.none() | wild_text, wild_int | st.none(), st.none() | wild_text,
)


def ring_buffer(*payloads: bytes) -> bytes:
    """Records as jr_read lays them out: a 16-byte head (seq, length) and the payload."""
    out = b""
    for seq, payload in enumerate(payloads):
        out += seq.to_bytes(8, "little") + len(payload).to_bytes(4, "little") + bytes(4) + payload
    return out


def same_row(a: tuple[Any, ...], b: tuple[Any, ...], ts: Any = 0) -> bool:
    """Rows are equal; where the record had no usable ts (or was undecodable) the row
    is stamped with the time of decoding, which differs between the two decodes."""
    if a[2] == b[2] == "janus.ring" or not -(2**63) <= ts < 2**63:
        return a[1:] == b[1:]
    return a == b


class TestDecode:
    @settings(max_examples=600, deadline=None)
    @given(st.lists(wild_records, min_size=1, max_size=4))
    def test_rows_are_those_decode_row_makes(self, records: list[tuple[Any, ...]]) -> None:
        """Whatever a record holds, C decodes it as decode_row does, in order, or hands it over."""
        payloads = [marshal.dumps(r, 2) for r in records]
        got = _speedups.decode_rows(ring_buffer(*payloads), len(payloads), jrec.decode_row)
        want = [jrec.decode_row(p) for p in payloads]
        assert len(want) == len(got)
        for r, w, g in zip(records, want, got):
            assert same_row(w, g, r[1]), (w, g)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=64))
    def test_garbage_is_an_undecodable_row_as_in_python(self, payload: bytes) -> None:
        """Bytes that are no record make the same 'undecodable' row as decode_row does."""
        (got,) = _speedups.decode_rows(ring_buffer(payload), 1, jrec.decode_row)
        assert same_row(jrec.decode_row(payload), got)

    def test_repeated_keys_keep_the_last_value_as_marshal_does(self) -> None:
        """The C encoder writes context, bound and call fields in turn; the last one wins."""
        record = (1, 5, 20, "n", "m", None, None, 7, "T")
        payload = _speedups.encode(record)
        # Splice a dict with a repeated key in place of None (the 6th item).
        fields = b"{" + _speedups.encode("k")[0:] + _speedups.encode("first") + _speedups.encode(
            "user_id") + _speedups.encode(1) + _speedups.encode("k") + _speedups.encode("last") + b"0"
        head = _speedups.encode((1, 5, 20, "n", "m"))[5:]
        tail = _speedups.encode((None, 7, "T"))[5:]
        spliced = payload[:5] + head + fields + tail
        assert marshal.loads(spliced)[5] == {"k": "last", "user_id": 1}
        (got,) = _speedups.decode_rows(ring_buffer(spliced), 1, jrec.decode_row)
        assert jrec.decode_row(spliced) == got
        assert ('{"k": "last"}', "1") == (got[12], got[4])

    def test_a_short_buffer_is_an_error_not_a_crash(self) -> None:
        """count beyond what the buffer holds, or a length past its end, raise ValueError."""
        payload = marshal.dumps((1, 5, 20, "n", "m", None, None, 7, "T"), 2)
        with pytest.raises(ValueError):
            _speedups.decode_rows(ring_buffer(payload), 2, jrec.decode_row)
        with pytest.raises(ValueError):
            _speedups.decode_rows(ring_buffer(payload)[:-1], 1, jrec.decode_row)


# --- the two paths side by side ---------------------------------------------


class Boom:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class SetsContext:
    """An argument whose __str__ sets the log context: read after formatting, both ways."""

    token: Any = None

    def __str__(self) -> str:
        SetsContext.token = jlog._context.set({"request_id": "set-by-str", "extra": 1})
        return "sets-context"


class AddsKey:
    """An argument whose __str__ adds a key no log call could pass to a bound dict."""

    def __init__(self, bound: dict[Any, Any]) -> None:
        self.bound = bound

    def __str__(self) -> str:
        self.bound[(1, 2)] = "tuple key"
        return "adds-key"


def corpus() -> None:
    """Every kind of call: the plain ones the C path takes and each kind it hands back."""
    log = ju.get_logger("svc.users")
    log.info("plain")
    log.info("user %s logged in", 42, user_id=42, ip="10.0.0.1", agent_id="planner-7")
    log.warning("%d items at %.2f", 3, 2.5, ratio=0.25, ok=True, nothing=None, neg=-7)
    log.debug("ints", small=2**31 - 1, big=2**40, bigger=-(2**62), huge=2**70)
    log.info("héllo ☃ %s", "😀", emoji="🚀", accent="é")
    log.info("lone \udc80 surrogate", field="also \ud800 here")
    log.info("nul\x00byte", value="a\x00b")
    with ju.log_context(user_id=1, k="ctx", shared="ctx", c=1, request_id="r-1"):
        # call beats bound beats context; keys keep their first position
        log.bind(k="bound", shared="bound", b=2, agent_id="b-1").info("repeated keys", k="call", a=3)
        log.info("context only")
    log.bind(agent_id="b-2").info("bound only")
    sneaky = log.bind(a=1)
    sneaky.info("formatting changed the fields: %s", AddsKey(sneaky._bound))
    log.info("formatting set the context: %s", SetsContext())
    jlog._context.reset(SetsContext.token)
    log.info("nested", tags=["a", "b"], meta={"x": 1}, pair=(1, 2))
    log.info("foreign values", colour=Colour.RED, name=Name("n"), raw=b"\xff")
    log.info(Name("str subclass message %s"), 1)
    log.info("%(a)s-%(b)s", {"a": 1, "b": 2})
    log.info("%d", "not a number")
    log.info("%s and %s", "only one")
    log.info("v=%s", Boom())
    log.info(123)
    log.info(Boom())
    log.info("x" * 500)  # over max_message_chars below
    log.info("y" * 5000 + " %s", "z")  # under it, over the C path's buffer
    log.info("password=hunter2 token %s", "abc", api_key="sk-live-1234567890abcdef")
    log.info("card 4111 1111 1111 1111", url="https://bob:secret@example.com/x")
    log.error("floats", nan=float("nan"), inf=float("inf"))
    log.info("huge ints", n=10**5000, user_id=-(10**5000), inside=[10**5000], key={10**5000: 1})
    secret = "sk-live-1234567890abcdef"
    for _ in range(3):  # the same objects again: a flagged string is never taken as clean
        ju.get_logger("auth.token").bind(api_key=secret).info("bound secret", note="plain")
        with ju.log_context(password="hunter2"):
            log.info("context secret")
    log.log(2**64, "huge level")
    log.log("NOTICE", "odd level")
    log.info("special keys", exc_info=False, stack_info=False)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("caught %s", "it")


COMPARED = "level, logger, message, user_id, agent_id, request_id, trace_id, span_id, pid, thread, exception, fields"


def run_corpus(db_path: Path, calls: Callable[[], None] | None = None) -> list[tuple[Any, ...]]:
    """Log *calls* (the corpus by default) into *db_path*; the rows as COMPARED selects them."""
    ju.configure(db_path, level="DEBUG", console=False, max_message_chars=1000)
    try:
        (calls or corpus)()
        assert ju.flush(timeout=30)
    finally:
        ju.shutdown()
    return query(db_path, f"SELECT {COMPARED} FROM logs ORDER BY id")


def both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: Callable[[], None] | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows of *calls* (the corpus by default) through the C path, then through Python."""
    monkeypatch.delenv("JANUS_UTILS_NO_SPEEDUPS", raising=False)
    through_c = run_corpus(tmp_path / "c.db", calls)
    monkeypatch.setenv("JANUS_UTILS_NO_SPEEDUPS", "1")
    return through_c, run_corpus(tmp_path / "py.db", calls)


class TestSameRowsBothWays:
    def test_corpus_stores_the_same_rows_through_c_and_python(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every column but id and ts is the same, whichever path each call took."""
        through_c, through_python = both_ways(tmp_path, monkeypatch)
        assert 37 == len(through_python)
        for c_row, py_row in zip(through_c, through_python):
            assert py_row == c_row
        assert len(through_python) == len(through_c)

    def test_a_repeated_call_site_stores_the_same_rows_both_ways(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One call site logged again and again, its field values constant, changing, too long to
        keep with their name, suspect, and its argument a str or an int of every count of digits:
        the same rows through C and Python."""
        def calls() -> None:
            log = ju.get_logger("svc.auth")
            for ip in ["10.0.0.1", "10.0.0.1", "10.0.0.2", "y" * 60, "y" * 60, "password=x", "10.0.0.1"]:
                for uid in ["u1", "u0000042", 7, 12, 12345, 99999, -12345, 10**12, 4111111111111111, "sk-x"]:
                    log.info("user %s logged in", uid, user_id=uid, ip=ip, agent_id="planner-7")

        through_c, through_python = both_ways(tmp_path, monkeypatch, calls)
        assert 70 == len(through_python) == len(through_c)
        assert through_python == through_c
        assert any("[REDACTED" in str(row) for row in through_c)

    def test_secrets_are_redacted_on_the_c_path(self, tmp_path: Path) -> None:
        """A suspect record goes back to Python for redaction; nothing secret is stored,
        however often the same secret string is logged and wherever it sits."""
        db_path = tmp_path / "c.db"
        ju.configure(db_path, console=False)
        try:
            assert jlog._fast is not None
            key = "sk-live-1234567890abcdef"
            github = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"  # recognised by its shape
            for _ in range(3):
                ju.get_logger("s").info("login with password=hunter2", api_key=key)
                ju.get_logger("s").bind(token=key).info("bound")
                ju.get_logger("s").info("value only: %s", github, note=github)
            assert ju.flush(timeout=10)
        finally:
            ju.shutdown()
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        for secret in (b"hunter2", key.encode(), github.encode()):
            assert secret not in raw


# --- which path a call takes --------------------------------------------------


@pytest.fixture
def encodes(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """The records the Python encoder saw; the C path leaves this list empty."""
    seen: list[tuple[Any, ...]] = []
    real = jlog.dumps

    def counting(record: tuple[Any, ...]) -> bytes:
        seen.append(record)
        return real(record)

    monkeypatch.setattr(jlog, "dumps", counting)
    yield seen


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "app-logs.db"


@pytest.fixture
def configured(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def configure(**options: Any) -> None:
        ju.configure(db_path, console=False, **options)

    yield configure
    ju.shutdown()


class TestWhichPath:
    def test_plain_calls_never_reach_the_python_encoder(
        self, configured: Callable[..., None], encodes: list[tuple[Any, ...]]
    ) -> None:
        """Plain template, args and fields: encoded and pushed in C."""
        configured()
        log = ju.get_logger("p")
        with ju.log_context(request_id="r-9"):
            for i in range(100):
                log.bind(agent_id="a").info("n=%d", i, user_id=i, ok=True, ratio=0.5, none=None)
        assert ju.flush(timeout=10)
        assert [] == encodes
        assert (100, True) == (ju.stats()["committed"], ju.stats()["speedups"])

    @pytest.mark.parametrize(
        "call",
        [
            lambda log: log.info("nested", tags=["a"]),
            lambda log: log.info(b"bytes message"),
            lambda log: log.info("%s", 1, huge=2**70),
            lambda log: log.info("secret password=hunter2"),
            lambda log: log.info("x" * 70_000),
            lambda log: log.info("lone \udc80"),
        ],
        ids=["nested-field", "non-str-message", "int-over-64-bits", "suspect", "too-long", "surrogate"],
    )
    def test_other_calls_are_handed_to_python_and_stored_once(
        self, configured: Callable[..., None], encodes: list[tuple[Any, ...]], call: Any
    ) -> None:
        """Each kind of call C does not finish reaches the Python encoder, and is one row."""
        configured()
        call(ju.get_logger("p"))
        assert ju.flush(timeout=10)
        assert encodes  # redaction encodes twice: before and after
        assert {"p"} == {r[3] for r in encodes}
        assert 1 == ju.stats()["committed"]

    def test_switch_and_hash_fields_keep_everything_in_python(
        self, configured: Callable[..., None], encodes: list[tuple[Any, ...]],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """JANUS_UTILS_NO_SPEEDUPS, and hash_fields (Python's job), turn the C path off."""
        configured(hash_fields=("user_id",), hash_key=b"k" * 32)
        assert (None, False) == (jlog._fast, ju.stats()["speedups"])
        ju.get_logger("p").info("hashed", user_id=7)
        monkeypatch.setenv("JANUS_UTILS_NO_SPEEDUPS", "1")
        configured()
        assert jlog._fast is None
        ju.get_logger("p").info("pure")
        assert ju.flush(timeout=10)
        assert ["hashed", "pure"] == [r[4] for r in encodes]


class TestCallDetails:
    def test_fields_are_merged_before_encoding(self, tmp_path: Path) -> None:
        """Context, bound and call fields are merged before encoding: the bytes are
        marshal's, and a value the call overrides never reaches the ring file."""
        with _ring.Ring(tmp_path / "r.ring", 1 << 16) as ring:
            addr, push, suspect = ring.native()
            em = _speedups.Emitter(
                addr, push, suspect, ring, True, 4242, 1000, 10**9, [], jlog._context,
                jlog.format_message, jlog._thread_name, jlog._tls,
            )
            token = jlog._context.set({"k": "CONTEXT-VALUE", "c": 1})
            try:
                assert em.push(20, "n", {"k": "BOUND-VALUE", "b": 2}, "m %s", ("x",), {"k": "CALL"}) is None
            finally:
                jlog._context.reset(token)
            ((_, payload),), _ = ring.read()
        record = marshal.loads(payload)
        assert marshal.dumps(record, 2) == payload
        assert ("m x", {"k": "CALL", "c": 1, "b": 2}, 4242) == (record[4], record[5], record[7])
        assert b"CONTEXT-VALUE" not in payload and b"BOUND-VALUE" not in payload

    def test_the_record_s_end_follows_the_pid(self, tmp_path: Path) -> None:
        """The thread's name, exception and pid are written from the thread's kept bytes, and
        anew once the pid changes (as after fork): marshal's bytes each time."""
        with _ring.Ring(tmp_path / "r.ring", 1 << 16) as ring:
            addr, push, suspect = ring.native()
            em = _speedups.Emitter(
                addr, push, suspect, ring, True, 4242, 1000, 10**9, [], jlog._context,
                jlog.format_message, jlog._thread_name, jlog._tls,
            )
            for pid in [4242, 4242, 777, 2**40, 4242]:
                em.pid = pid
                assert em.push(20, "n", {}, "m %s", ("x",), {"k": "v"}) is None
            records, _ = ring.read()
        assert [4242, 4242, 777, 2**40, 4242] == [marshal.loads(p)[7] for _, p in records]
        for _, payload in records:
            record = marshal.loads(payload)
            assert marshal.dumps(record, 2) == payload
            assert (None, threading.current_thread().name) == (record[6], record[8])

    @pytest.mark.parametrize("log_call_path", ["c", "python"], indirect=True)
    def test_a_call_whose_argument_shuts_down_goes_to_stderr(
        self, db_path: Path, log_call_path: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Formatting that shuts logging down: the record is not pushed into the old
        ring; like any call after shutdown() it goes to stderr."""

        class ShutsDown:
            def __str__(self) -> str:
                ju.shutdown()
                return "shut"

        ju.configure(db_path, console=False)
        ju.get_logger("s").warning("before")
        ju.get_logger("s").warning("during %s", ShutsDown())
        assert not ju.is_configured()
        ju.configure(db_path, console=False)  # commits whatever the ring holds
        ju.shutdown()
        assert [("before",)] == query(db_path, "SELECT message FROM logs")
        assert "during shut" in capsys.readouterr().err

    def test_max_message_chars_must_be_an_integer(self, db_path: Path) -> None:
        """A float limit is a clear ConfigError, not a failure at the first long message."""
        with pytest.raises(ConfigError, match="max_message_chars"):
            ju.configure(db_path, max_message_chars=1000.0)

    @pytest.mark.parametrize("paths", [("python", "c"), ("c", "c", "python")], ids=["python-first", "c-first"])
    def test_a_thread_keeps_the_name_of_its_first_call_whichever_path(self, db_path: Path, paths: tuple[str, ...]) -> None:
        """The C path and the Python path share one per-thread name cache (tls.name):
        a rename after the thread's first call changes neither path."""
        ju.configure(db_path, console=False)
        try:
            def work() -> None:
                log = ju.get_logger("t")
                for n, path in enumerate(paths):
                    # a list field takes the Python path; plain keywords the C path
                    log.info(f"{path} path {n}", **({"nested": [1]} if path == "python" else {}))
                    threading.current_thread().name = "renamed"

            t = threading.Thread(target=work, name="first-name")
            t.start()
            t.join()
            assert ju.flush(timeout=10)
        finally:
            ju.shutdown()
        got = query(db_path, "SELECT message, thread FROM logs ORDER BY id")
        assert [(f"{path} path {n}", "first-name") for n, path in enumerate(paths)] == got

    def test_a_huge_max_message_chars_is_accepted(self, db_path: Path) -> None:
        """max_message_chars beyond a C long (no limit, in effect) configures and logs."""
        ju.configure(db_path, console=False, max_message_chars=2**64)
        try:
            assert jlog._fast is not None
            ju.get_logger("h").info("fine")
            assert ju.flush(timeout=10)
            assert 1 == ju.stats()["committed"]
        finally:
            ju.shutdown()


# --- a full ring, with the GIL held in C ---------------------------------------


class TestFullRing:
    def test_full_ring_waits_with_the_gil_released(self, db_path: Path) -> None:
        """The C push never waits: a full ring goes to the Python push, which lets the
        flusher thread of this same process drain while the caller waits; nothing drops."""
        ju.configure(db_path, console=False, ring_size=1 << 16, block_timeout=60)
        try:
            log = ju.get_logger("full")
            log.info("first")
            assert ju.flush(timeout=10)
            blocker = apsw.Connection(str(db_path))
            blocker.setbusytimeout(10_000)  # past the flusher's idle checkpoint, if one runs
            blocker.execute("BEGIN EXCLUSIVE")
            unblock = threading.Timer(0.5, lambda: (blocker.execute("COMMIT"), blocker.close()))
            unblock.start()
            for i in range(3000):  # ~120 bytes each: several times the 64 KiB ring
                log.info("token-%05d", i, user_id=i)
            unblock.join()
            assert ju.flush(timeout=30)
            s = ju.stats()
        finally:
            ju.shutdown()
        assert (0, 3001) == (s["dropped"], s["committed"])
        got = [m for (m,) in query(db_path, "SELECT message FROM logs WHERE message LIKE 'token-%' ORDER BY id")]
        assert [f"token-{i:05d}" for i in range(3000)] == got

    def test_full_ring_with_drop_counts_each_drop_once(self, db_path: Path) -> None:
        """on_full="drop": what C could not push is dropped by the Python push and counted once."""
        ju.configure(db_path, console=False, ring_size=1 << 16, on_full="drop")
        try:
            blocker = apsw.Connection(str(db_path))
            blocker.setbusytimeout(10_000)  # past the flusher's idle checkpoint, if one runs
            blocker.execute("BEGIN EXCLUSIVE")
            for i in range(3000):
                ju.get_logger("drop").info("token-%05d", i)
            dropped = ju.stats()["dropped"]
            blocker.execute("COMMIT")
            blocker.close()
            assert ju.flush(timeout=30)
            committed = ju.stats()["committed"]
        finally:
            ju.shutdown()
        assert dropped > 0
        assert 3000 == dropped + committed


# --- fork -------------------------------------------------------------------------


def test_forked_child_records_carry_the_childs_pid(db_path: Path) -> None:
    """The C encoder writes the pid it is given; after fork() that is the child's."""
    ju.configure(db_path, console=False)
    try:
        ju.get_logger("fork").info("parent")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            ju.get_logger("fork").info("child")
            os._exit(0 if ju.flush(timeout=30) else 1)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        assert ju.flush(timeout=30)
    finally:
        ju.shutdown()
    got = query(db_path, "SELECT message, pid FROM logs ORDER BY id")
    assert [("parent", os.getpid()), ("child", pid)] == got


# --- what the C path keeps between calls --------------------------------------

KINDS = (0, 1, -1, 9, -10, 99, 100, 999, 1000, 2**30 - 1, 2**30, -(2**30), 2**31, 10**15 - 1, -(10**15), 10**18 - 1,
         10**18, 2**62, -(2**63), 2**63 - 1,
         "s", "", True, 1.5, None)


def repeated_sites() -> None:
    """Call sites run again and again: one template and one set of keyword names, values
    of every kind through them, and the calls a kept verdict must not wave through."""
    log, other = ju.get_logger("svc.cache"), ju.get_logger("svc.other")
    for value in KINDS:
        log.info("v=%s and %s%%", value, "x", n=value, ip="10.0.0.1")
        other.info("v=%s and %s%%", value, "x", n=value, ip="10.0.0.1")  # another logger between
        log.info("plain %s", value)
    for _ in range(3):
        log.info("%d not plain %s", 5, "x", n=1)  # a template kept as not plain
        log.info("%s" * 9, *range(9))  # more arguments than the C formatter takes
        log.info("x" * 300 + " %s", "y")  # a template longer than the kept ones
        log.info("trailing %s %", "a")  # an incomplete format
        log.info("special", n=1, exc_info=False)  # stdlib's key among keyword names
        log.info("key %s", "k", password="hunter2")  # a secret key name
        log.info("value %s", "v", note="token=abc")  # a secret in a value


HIDDEN = "sk-live-1234567890abcdef"  # "^sk-": a key where no letter or digit comes before it


def repeated_arguments() -> None:
    """Calls whose fields repeat the message's argument, clean and not."""
    log = ju.get_logger("svc.args")
    for uid in ("u0000001", "u0000002"):
        log.info("user %s logged in", uid, user_id=uid, ip="10.0.0.1")
        # after a letter (and after another argument) the message hides the key; alone it is one
        log.info("id%s", HIDDEN, note=HIDDEN)
        log.info("%s%s", "x", HIDDEN, note=HIDDEN)
        log.info("key %s", HIDDEN, note=HIDDEN)
        log.info("%s", HIDDEN, note=HIDDEN)


class TestCallSiteCaches:
    def test_kept_templates_and_names_store_the_rows_python_stores(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Templates, keyword names and logger names kept across calls change no row."""
        through_c, through_python = both_ways(tmp_path, monkeypatch, repeated_sites)
        assert 3 * len(KINDS) + 3 * 7 == len(through_python)
        assert through_python == through_c
        messages = [row[2] for row in through_c[: 3 * len(KINDS) : 3]]
        assert [f"v={value} and x%" for value in KINDS] == messages

    def test_a_field_that_repeats_the_messages_argument_stores_what_python_stores(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A field holding the message's own argument is not scanned again only where the
        message's verdict covers it: a key hidden in the message by the letter before it
        is still found in the field."""
        through_c, through_python = both_ways(tmp_path, monkeypatch, repeated_arguments)
        assert 2 * 5 == len(through_python)
        assert through_python == through_c
        fields = [row[-1] for row in through_c]
        assert all(HIDDEN not in f for f in fields if f is not None)

    def test_constant_last_fields_are_copied_only_while_they_hold(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A site's last fields, kept as one copy while their values stay, store what Python
        stores when one of them changes (back and forth, to a value too long to keep with its
        name, to a secret), whatever comes before them."""
        def calls() -> None:
            log = ju.get_logger("svc.run")
            regions = ["eu", "us"]
            for k in range(24):
                tier = "gold" if k < 8 else "x" * 50 if k < 16 else "token=zz9" if k % 5 == 0 else "gold"
                log.info("call %s", f"u{k:07d}", user_id=k, region=regions[k // 3 % 2], zone="a", tier=tier)

        through_c, through_python = both_ways(tmp_path, monkeypatch, calls)
        assert 24 == len(through_python) == len(through_c)
        assert through_python == through_c
        assert not any("zz9" in str(row) for row in through_c)

    def test_a_secret_is_caught_on_every_call_of_a_site(self, db_path: Path) -> None:
        """A site whose key name or value the prefilter flags is never taken as clean."""
        ju.configure(db_path, console=False)
        try:
            log = ju.get_logger("svc.site")
            for i in range(6):
                log.info("login %s", i, password="hunter2", user_id=i)
                log.info("token %s", i, note=f"token=abc{i}")
                # a clean constant value kept for the site, then a secret in its place
                log.info("alternating %s", i, ip="10.0.0.1", note="fine" if i % 2 else "token=zz9secret")
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        stored = "\n".join(str(row) for row in query(db_path, "SELECT message, fields FROM logs"))
        assert 18 == len(query(db_path, "SELECT id FROM logs"))
        assert 3 == stored.count("fine")
        assert "zz9secret" not in stored
        assert "hunter2" not in stored
        assert all(f"abc{i}" not in stored for i in range(6))


class TestThreadNames:
    def test_each_thread_gets_its_own_name_even_after_others_ended(self, db_path: Path) -> None:
        """Threads started one after another (an ended thread's storage may be reused)
        each record their own name on every call."""
        ju.configure(db_path, console=False)
        try:
            def work(n: int) -> None:
                for k in range(3):
                    ju.get_logger("t").info("call %s", k, n=n)

            for n in range(20):
                t = threading.Thread(target=work, args=(n,), name=f"worker-{n}")
                t.start()
                t.join()
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        got = query(db_path, "SELECT json_extract(fields, '$.n'), thread FROM logs ORDER BY id")
        assert [(n, f"worker-{n}") for n in range(20) for _ in range(3)] == got

    def test_a_new_setup_reads_the_name_again(self, db_path: Path) -> None:
        """A kept name belongs to one setup: after configure() anew it is read from tls
        again, so a name the Python path set meanwhile is the one recorded."""
        names = []

        def work() -> None:
            ju.get_logger("t").info("first setup")
            names.append(jlog._tls.name)
            jlog._tls.name = "set-between"  # as if another setup's first call had named it
            done.set()
            go.wait(30)
            ju.get_logger("t").info("second setup")

        done, go = threading.Event(), threading.Event()
        ju.configure(db_path, console=False)
        t = threading.Thread(target=work, name="thread-a")
        try:
            t.start()
            assert done.wait(30)
            assert ju.flush(timeout=10)
        finally:
            ju.shutdown()
        ju.configure(db_path, console=False)
        try:
            go.set()
            t.join()
            assert ju.flush(timeout=10)
        finally:
            ju.shutdown()
        assert ["thread-a"] == names
        got = query(db_path, "SELECT message, thread FROM logs ORDER BY id")
        assert [("first setup", "thread-a"), ("second setup", "set-between")] == got

    def test_a_forked_child_keeps_its_threads_names(self, db_path: Path) -> None:
        """After fork() the child's main thread records the name tls holds for it, and a
        thread the child starts records its own."""
        ju.configure(db_path, console=False)
        try:
            ju.get_logger("fork").info("parent")
            parent_name = jlog._tls.name
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                ok = False
                try:
                    ju.get_logger("fork").info("child main")
                    t = threading.Thread(target=lambda: ju.get_logger("fork").info("child thread"),
                                         name="child-worker")
                    t.start()
                    t.join()
                    ju.get_logger("fork").info("child main again")
                    ok = ju.flush(timeout=30)
                finally:
                    os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert 0 == os.waitstatus_to_exitcode(status)
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        got = query(db_path, "SELECT message, thread FROM logs ORDER BY id")
        assert [("parent", parent_name), ("child main", parent_name), ("child thread", "child-worker"),
                ("child main again", parent_name)] == got

    def test_a_tls_that_is_no_threading_local_is_read_on_every_call(self, tmp_path: Path) -> None:
        """Only a real threading.local's name is kept in C (gevent's is per greenlet):
        with any other object the name is read from it each time."""

        class Local:
            name = "first"

        tls = Local()
        with _ring.Ring(tmp_path / "r.ring", 1 << 16) as ring:
            addr, push, suspect = ring.native()
            em = _speedups.Emitter(
                addr, push, suspect, ring, True, 1, 1000, 10**9, [], jlog._context,
                jlog.format_message, jlog._thread_name, tls,
            )
            assert em.push(20, "n", {}, "m %s", ("x",), {}) is None
            tls.name = "second"
            assert em.push(20, "n", {}, "m %s", ("x",), {}) is None
            payloads, _ = ring.read()
        assert ["first", "second"] == [marshal.loads(p)[8] for _, p in payloads]
