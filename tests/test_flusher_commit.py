"""The flusher's commit path: what it does in bulk or in C stores what the plain way stores.

Rows go into ``logs`` many to a statement (``_flusher._insert_rows``); their
service and host are appended in C (``_speedups.label_rows``), or with the
word signature as each row is decoded (``_speedups.decode_rows``); the rollup's
groups are counted in C (``_speedups.rollup_groups``); a batch without a
character past ASCII skips the trigram index (``_speedups.any_non_ascii``).
Each is checked here against the plain Python way it replaces.
"""

from __future__ import annotations

import gc
import json
import marshal
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import janus_utils as ju
from janus_utils import _flusher as jflusher
from janus_utils import _resource, _rollup, _schema, _speedups, _words
from janus_utils import logger as jlog
from janus_utils._record import decode_row

from conftest import BASE_TS, make_row

_speedups = pytest.importorskip("janus_utils._speedups")


def query(db_path: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def decoded(i: int, **fields: Any) -> tuple[Any, ...]:
    """A row as the flusher decodes it from the ring: 13 columns, before service and host."""
    record = (1, BASE_TS + i * 7_000_000_000, 20 + 10 * (i % 3 == 0), f"svc.{i % 4}", f"message {i}",
              {"user_id": f"u{i}", "ip": "10.0.0.1", **fields}, None, 4000 + i % 2, "MainThread")
    return decode_row(marshal.dumps(record, 2))


@pytest.fixture
def writer(tmp_path: Path) -> Any:
    db = jflusher.open_database(str(tmp_path / "w.db"))
    yield db
    db.close()


def one_batch_with_a_poisoned_row(p: Any) -> None:
    """45 records in one batch (the flusher *p* held back while they are logged), the 31st
    "poison"; flushed, with one record counted unstorable."""
    log = ju.get_logger("batch")
    with p.db_lock:
        for i in range(45):
            log.info("poison" if i == 30 else f"row {i}")
    assert ju.flush(timeout=30)
    assert 1 == ju.stats()["unstorable"]

class TestInsertMany:
    @pytest.mark.parametrize("count", [0, 1, 19, 20, 21, 45, 2001])
    def test_the_rows_and_ids_are_those_executemany_stores(self, tmp_path: Path, writer: Any, count: int) -> None:
        """Many rows to a statement store the same rows with the same ids as one row to a statement."""
        rows = [make_row(f"row {i}", ts=BASE_TS + i, user_id=f"u{i}", pid=i % 3) for i in range(count)]
        plain = jflusher.open_database(str(tmp_path / "plain.db"))
        try:
            with plain:
                plain.executemany(jflusher._INSERT, rows)
            want = plain.execute('SELECT * FROM "logs" ORDER BY id').fetchall()
        finally:
            plain.close()
        with writer:
            jflusher._insert_rows(writer, rows)
            assert count == (writer.last_insert_rowid() if count else 0)
        assert want == writer.execute('SELECT * FROM "logs" ORDER BY id').fetchall()

    @pytest.mark.parametrize("count", [1, 20, 45])
    def test_signed_rows_store_their_signature_as_one_row_to_a_statement_does(
        self, tmp_path: Path, writer: Any, count: int
    ) -> None:
        """Rows with their word signature appended (sign_rows) go in many to a statement alike."""
        rows = [make_row(f"row {i} Word{i % 3}", ts=BASE_TS + i, user_id=f"u{i}") for i in range(count)]
        signed = _speedups.sign_rows(rows, jflusher._TEXT_AT)
        plain = jflusher.open_database(str(tmp_path / "plain.db"))
        try:
            with plain:
                plain.executemany(jflusher._INSERT_SIGNED, signed)
            want = plain.execute('SELECT *, "words" FROM "logs" ORDER BY id').fetchall()
        finally:
            plain.close()
        with writer:
            jflusher._insert_rows(writer, signed, True)
        got = writer.execute('SELECT *, "words" FROM "logs" ORDER BY id').fetchall()
        assert want == got
        assert [_words.signature(f"row {i} Word{i % 3}") for i in range(count)] == [row[-1] for row in got]

    def test_many_rows_to_a_statement_write_no_statement_journal(self, tmp_path: Path) -> None:
        """A transaction of many-row INSERTs into a table that holds rows already opens no statement
        journal: each statement would otherwise copy every page it changes to a temporary file."""
        opened: list[int] = []

        class Watch(apsw.VFS):  # the default VFS, noting the kind of every file SQLite opens
            def __init__(self) -> None:
                super().__init__("janus-watch-opens", "")

            def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
                opened.append(flags[0])
                return super().xOpen(name, flags)

        vfs = Watch()
        try:
            db = apsw.Connection(str(tmp_path / "w.db"), vfs="janus-watch-opens")
            try:
                _schema.apply_connection_settings(db)
                _schema.ensure_schema(db)
                # Keys spread over every index: each statement changes pages all over the file.
                rows = [make_row(f"row {i}", ts=BASE_TS + i * 7919 % 4000, logger=f"svc.{i * 31 % 97}",
                                 user_id=f"u{i * 7919 % 4000}", agent_id=f"a{i % 53}", request_id=f"r{i * 13 % 4000}")
                        for i in range(4000)]
                with db:
                    jflusher._insert_rows(db, rows[:2000])
                opened.clear()
                with db:
                    jflusher._insert_rows(db, rows[2000:])
                assert 4000 == db.execute('SELECT count(*) FROM "logs"').fetchall()[0][0]
            finally:
                db.close()
        finally:
            vfs.unregister()
        assert [] == [flags for flags in opened if flags & apsw.SQLITE_OPEN_SUBJOURNAL]

    def test_a_row_with_a_column_missing_is_refused_not_shifted(self, writer: Any) -> None:
        """A short row among many is an error, as with executemany: no value lands in another row's column."""
        rows = [make_row(f"row {i}") for i in range(40)]
        rows[25] = rows[25][:-1]
        with pytest.raises(apsw.BindingsError):
            with writer:
                jflusher._insert_rows(writer, rows)
        assert 0 == writer.execute('SELECT count(*) FROM "logs"').fetchall()[0][0]

    def test_a_row_sqlite_refuses_among_many_is_replaced_and_the_others_kept(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The statement holding a refused row fails whole; the batch then goes row by row, as before."""
        real = jflusher.decode_row

        def decode(payload: bytes) -> tuple[Any, ...]:
            row = real(payload)
            return row[:2] + (None,) + row[3:] if row[3] == "poison" else row  # a NULL logger

        db_path = tmp_path / "app.db"
        monkeypatch.setattr(jflusher, "decode_row", decode)
        ju.configure(db_path, console=False, commit_interval=3600)
        try:
            p = jlog._flusher
            assert p is not None
            p.decode_rows = None  # every row through decode()
            one_batch_with_a_poisoned_row(p)
        finally:
            ju.shutdown()
        got = query(db_path, 'SELECT level, message, fields FROM "logs" WHERE logger IS NOT "janus.process" ORDER BY id')
        assert [f"row {i}" for i in range(45) if i != 30] == [m for _, m, _ in got if m != "poison"]
        assert 40 == got[30][0] and "refused_by_sqlite" in got[30][2]


class TestLabelRows:
    def test_service_and_host_appended_as_python_appends_them(self) -> None:
        """label_rows is [row + labels.get(row[9], unknown) for row in rows]."""
        rows = [decoded(i) for i in range(10)] + [decoded(i)[:9] + (None,) + decoded(i)[10:] for i in range(2)]
        labels = {4000: ("api", "web-1")}
        unknown = ("own", "here")
        got = _speedups.label_rows(rows, labels, unknown)
        assert [row + labels.get(row[9], unknown) for row in rows] == got
        assert [("api", "web-1"), ("own", "here")] == [got[0][-2:], got[1][-2:]]

    def test_rows_of_plain_values_are_left_to_no_garbage_collection(self) -> None:
        """Rows of str, int and None are untracked (no collection walks them); others are tracked."""
        rows = [decoded(i) for i in range(3)]
        plain = _speedups.label_rows(rows, {}, ("svc", None))
        assert not any(gc.is_tracked(row) for row in plain)
        odd = _speedups.label_rows(rows, {}, (["a", "list"], None))
        assert all(gc.is_tracked(row) for row in odd)
        assert [row + (["a", "list"], None) for row in rows] == odd

    def test_rows_the_c_decoder_makes_are_untracked(self) -> None:
        """decode_rows's own rows hold str, int and None only."""
        payload = marshal.dumps((1, BASE_TS, 20, "n", "m", {"user_id": "u"}, None, 7, "T"), 2)
        raw = (0).to_bytes(8, "little") + len(payload).to_bytes(4, "little") + bytes(4) + payload
        (row,) = _speedups.decode_rows(raw, 1, decode_row)
        assert decode_row(payload) == row
        assert not gc.is_tracked(row)

    def test_resources_label_takes_announcements_out_either_way(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With and without the C module: the same rows, announcements learned and taken out."""
        announce = decode_row(_resource.announcement(4001, "worker", "box-2"))
        rows = [decoded(0), announce, decoded(1), decoded(2)]
        got = _resource.Resources("own", "here").label(list(rows))
        monkeypatch.setenv("JANUS_UTILS_NO_SPEEDUPS", "1")
        want = _resource.Resources("own", "here").label(list(rows))
        assert want == got
        assert [("own", "here"), ("worker", "box-2"), ("own", "here")] == [r[-2:] for r in got]

    def test_a_label_that_is_no_tuple_is_an_error(self) -> None:
        """As row + label would be: a TypeError, not a crash or a wrong row."""
        with pytest.raises(TypeError):
            _speedups.label_rows([decoded(0)], {4000: ["svc", "host"]}, ("a", "b"))


def ring_raw(*payloads: bytes) -> bytes:
    """Records as jr_read lays them out: a 16-byte head (seq, length) and the payload."""
    return b"".join(
        seq.to_bytes(8, "little") + len(payload).to_bytes(4, "little") + bytes(4) + payload
        for seq, payload in enumerate(payloads)
    )


def record(i: int, message: Any = "m", fields: Any = None, exc: Any = None, pid: Any = 4000, name: Any = "svc") -> bytes:
    return marshal.dumps((1, BASE_TS + i, 20, name, message, fields, exc, pid, "MainThread"), 2)


# Records the C decoder takes whole and ones it hands to decode_row, with and
# without a known pid, text past ASCII, fields JSON, exceptions and a NUL.
VARIED = [
    record(0, "user u1 logged in", {"user_id": "u1", "ip": "10.0.0.1", "agent_id": "planner-7"}),
    record(1, "héllo \u2603 snow", {"note": "naïve"}, pid=4001),
    record(2, "日本語のログ", None, pid=4002),
    record(3, "emoji \U0001f600 ok", {"user_id": 7, "n": 1.5, "flag": True}),
    record(4, "boom", {"k": "v"}, "Traceback (most recent call last):\n  ValueError: bad", pid=4001),
    record(5, "nested", {"deep": {"a": [1, 2]}, "user_id": "u5"}),  # decode_row's
    record(6, "nul\x00inside", None),  # decode_row's
    record(7, None, None, pid=4003),
    record(8, "Mixed CASE words, digits 42 and_under", {"trace_id": "abc", "span_id": "def"}, name=None),
    record(9, "a" * 3000, {"x": "y" * 500}),
    record(10, "pid none", None, pid=None),  # decode_row's
    record(11, "pid is big", None, pid=2**40),
]
LABELS = {4000: ("api", "web-1"), 4001: ("worker", None), 2**40: (None, None)}
OWN = ("own", "here")


def three_steps(raw: bytes, n: int, labels: dict[int, Any] = LABELS) -> list[tuple[Any, ...]]:
    """The flusher's rows as decode_rows, label_rows and sign_rows built them, one after the other."""
    decoded_rows = _speedups.decode_rows(raw, n, decode_row)
    return _speedups.sign_rows(_speedups.label_rows(decoded_rows, labels, OWN), jflusher._TEXT_AT)


class TestRowsBuiltOnce:
    """decode_rows with labels and columns builds each row once, as the three steps it replaces did."""

    def test_one_pass_rows_equal_the_three_steps(self) -> None:
        """Decoded in C or by decode_row, pid known or not: the same rows, signature last."""
        raw = ring_raw(*VARIED)
        handed: list[bytes] = []

        def fallback(payload: bytes) -> tuple[Any, ...]:
            handed.append(payload)
            return decode_row(payload)

        got = _speedups.decode_rows(raw, len(VARIED), fallback, LABELS, OWN, jflusher._TEXT_AT)
        assert [VARIED[5], VARIED[6], VARIED[10]] == handed  # the others decoded in C
        assert three_steps(raw, len(VARIED)) == got
        assert [decode_row(payload) for payload in VARIED] == [row[:13] for row in got]
        assert [LABELS.get(row[9], OWN) for row in got] == [row[13:15] for row in got]
        assert [_words.signature(row[3], row[12], row[11]) for row in got] == [row[15] for row in got]
        assert len(set(row[15] for row in got)) > 5
        assert not any(gc.is_tracked(row) for row in got)

    def test_python_code_run_by_the_label_lookup_sees_no_empty_slot(self) -> None:
        """A labels key with its own __eq__ runs Python code while a row is half built; the
        row, reachable through the GC, holds None where its label and signature will go
        (an empty slot read from Python crashed the process).  In a child process, so
        that a crash is a failure here, not the end of the run."""
        script = """
import gc, marshal, sys
from janus_utils import _speedups
from janus_utils._record import decode_row
ts = 1_700_000_000_000_000_000
payload = marshal.dumps((1, ts, 20, "svc", "m", None, None, 4000, "T"), 2)
raw = bytes(8) + len(payload).to_bytes(4, "little") + bytes(4) + payload
seen = []
class Key:
    def __hash__(self):
        return hash(4000)
    def __eq__(self, other):
        seen.extend(t[13:] for t in gc.get_objects() if type(t) is tuple and len(t) == 16 and t[0] == ts)
        return False
rows = _speedups.decode_rows(raw, 1, decode_row, {Key(): ("x", "y")}, ("own", "here"), (3, 12, 11))
print(seen, rows[0][13:15])
"""
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert (0, "[(None, None, None)] ('own', 'here')\n") == (done.returncode, done.stdout), done.stderr

    def test_text_repeated_from_record_to_record_is_shared_not_mixed_up(self) -> None:
        """Consecutive records that repeat a field's value or the whole fields JSON share one str
        (and its signature); values of the same length that differ are not mixed up."""
        fields = [
            {"ip": "10.0.0.1", "agent_id": "planner-7"},
            {"ip": "10.0.0.1", "agent_id": "planner-7"},
            {"ip": "10.0.0.2", "agent_id": "planner-8"},
            {"ip": "10.0.0.2", "agent_id": "planner-8"},
            {"ip": "10.0.0.1", "agent_id": "planner-7"},
            {"ip": "10.0.0.x", "agent_id": "planner-7"},
            {"ip": "10.0.0.\u00e9", "agent_id": "planner-\u00e9"},
            {"ip": "10.0.0.\u00e9", "agent_id": "planner-\u00e9"},
            {"ip": "10.0.0.1"},
        ]
        payloads = [record(i, f"user u{i} logged in", f) for i, f in enumerate(fields)]
        raw = ring_raw(*payloads)
        got = _speedups.decode_rows(raw, len(payloads), decode_row, LABELS, OWN, jflusher._TEXT_AT)
        assert [decode_row(payload) for payload in payloads] == [row[:13] for row in got]
        assert [_words.signature(row[3], row[12], row[11]) for row in got] == [row[15] for row in got]
        assert got[0][12] is got[1][12] and got[0][5] is got[1][5]
        assert [got[1][12], got[1][5]] != [got[2][12], got[2][5]]
        assert -1 == got[6][15] == got[7][15] and got[8][15] != -1
        plain = _speedups.decode_rows(raw, len(payloads), decode_row)
        assert [decode_row(payload) for payload in payloads] == plain

    def test_labels_alone_append_no_signature(self) -> None:
        """Without columns, decode_rows appends the label only: label_rows' rows."""
        raw = ring_raw(*VARIED)
        got = _speedups.decode_rows(raw, len(VARIED), decode_row, LABELS, OWN)
        assert _speedups.label_rows(_speedups.decode_rows(raw, len(VARIED), decode_row), LABELS, OWN) == got

    def test_a_label_that_is_not_plain_keeps_the_row_tracked(self) -> None:
        """A label holding a list (a forged announcement's service) is appended as is, and the
        garbage collector still sees the row."""
        raw = ring_raw(*VARIED)
        labels = {4000: (["a", "list"], "h")}
        got = _speedups.decode_rows(raw, len(VARIED), decode_row, labels, OWN, jflusher._TEXT_AT)
        assert three_steps(raw, len(VARIED), labels) == got
        assert [row[9] == 4000 for row in got] == [gc.is_tracked(row) for row in got]

    def test_bad_labels_and_columns_are_errors(self) -> None:
        """Labels that are not tuples as long as unknown, and columns past the decoded ones, raise."""
        raw = ring_raw(*VARIED[:2])
        with pytest.raises(TypeError, match="a label must be a tuple"):
            _speedups.decode_rows(raw, 2, decode_row, {4000: ["svc", "h"]}, OWN)
        with pytest.raises(ValueError, match="as long as unknown"):
            _speedups.decode_rows(raw, 2, decode_row, {4000: ("svc",)}, OWN)
        with pytest.raises(ValueError, match="shorter than a column"):
            _speedups.decode_rows(raw, 2, decode_row, LABELS, OWN, (3, 13))
        with pytest.raises(TypeError):
            _speedups.decode_rows(raw, 2, decode_row, None, None, (3,))
        with pytest.raises(TypeError, match="fallback"):
            _speedups.decode_rows(ring_raw(VARIED[5]), 1, lambda payload: ("short",), LABELS, OWN)

    @pytest.mark.parametrize("where", [0, 2, 5])
    def test_a_batch_that_announces_a_process_is_labelled_as_before(self, where: int) -> None:
        """Rows of a pid announced in their own batch (before or after them) get its service and
        host; announcements are taken out and learned, the rest labelled from what was known."""
        payloads = [record(i, f"row {i}", None, pid=4000 + i % 3) for i in range(6)]
        payloads.insert(where, _resource.announcement(4002, "fresh", "box-9"))
        raw = ring_raw(*payloads)
        old = _resource.Resources(*OWN)
        old.by_pid[4000] = ("api", "web-1")
        want = _speedups.sign_rows(old.label(_speedups.decode_rows(raw, 7, decode_row)), jflusher._TEXT_AT)
        new = _resource.Resources(*OWN)
        new.by_pid[4000] = ("api", "web-1")
        once = _speedups.decode_rows(raw, 7, decode_row, new.by_pid, new.own, jflusher._TEXT_AT)
        got = new.label(once)
        assert want == got
        assert old.pending == new.pending and old.by_pid == new.by_pid
        assert [("fresh", "box-9")] * 2 == [row[13:15] for row in got if row[9] == 4002]

    def test_the_python_path_stores_the_same_labels(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the extension: decode_row and Resources.label give the one-pass rows but their
        signature (rows go in without one)."""
        payloads = [_resource.announcement(4001, "late", None), *VARIED]
        raw = ring_raw(*payloads)
        resources = _resource.Resources(*OWN)
        resources.by_pid.update(LABELS)
        once = resources.label(
            _speedups.decode_rows(raw, len(payloads), decode_row, resources.by_pid, OWN, jflusher._TEXT_AT),
        )
        monkeypatch.setenv("JANUS_UTILS_NO_SPEEDUPS", "1")
        python = _resource.Resources(*OWN)
        python.by_pid.update(LABELS)
        plain = python.label([decode_row(p) for p in payloads])
        assert plain == [row[:15] for row in once]
        assert ("late", None) == once[1][13:15]


    def test_the_flusher_stores_each_rows_label_and_signature(self, tmp_path: Path) -> None:
        """Through the flusher (rows built once): service, host and the word signature of every
        row's message, fields and exception, text past ASCII and decode_row's records included."""
        db_path = tmp_path / "app.db"
        ju.configure(db_path, console=False, service="api", host="web-1")
        try:
            log = ju.get_logger("svc")
            log.info("user %s logged in", "u1", user_id="u1", ip="10.0.0.1")
            log.info("héllo \u2603", note="naïve")
            log.info("nested", deep={"a": [1, 2]})
            log.warning("Mixed CASE words, digits 42", trace_id="t")
            try:
                raise ValueError("bad value")
            except ValueError:
                log.exception("boom")
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        got = query(db_path, 'SELECT message, fields, exception, service, host, "words" FROM "logs" '
                             'WHERE logger = \'svc\' ORDER BY id')
        assert 5 == len(got)
        assert [_words.signature(m, f, e) for m, f, e, *_ in got] == [row[5] for row in got]
        assert [("api", "web-1")] * 5 == [row[3:5] for row in got]
        assert -1 == got[1][5] and got[0][5] not in (-1, None)

    def test_a_refused_signed_row_is_replaced_without_its_signature(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Rows built once, one of them refused by SQLite: the batch goes in row by row, the refused
        row replaced by a record of the labelled row (no signature in it), the others signed."""
        db_path = tmp_path / "app.db"
        ju.configure(db_path, console=False, commit_interval=3600, service="api", host="web-1")
        try:
            p = jlog._flusher
            assert p is not None and p.decode_rows is not None
            real = p.resources.label

            def label(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
                rows = real(rows)
                return [row[:2] + (None,) + row[3:] if row[3] == "poison" else row for row in rows]  # a NULL logger

            monkeypatch.setattr(p.resources, "label", label)
            one_batch_with_a_poisoned_row(p)
        finally:
            ju.shutdown()
        got = query(db_path, 'SELECT level, message, fields, "words" FROM "logs" '
                             'WHERE logger IS NOT "janus.process" ORDER BY id')
        assert [f"row {i}" for i in range(45) if i != 30] == [m for _, m, _, _ in got if m != "poison"]
        assert [_words.signature(f"row {i}") for i in range(45) if i != 30] == [w for _, m, _, w in got if m != "poison"]
        level, _, fields, _ = got[30]
        original = json.loads(fields)["original"]
        assert 40 == level and original.endswith("'api', 'web-1')") and "'poison'" in original


class TestFlatRows:
    @pytest.mark.parametrize("count", [0, 19, 20, 45])
    def test_the_values_of_each_whole_statement(self, count: int) -> None:
        """flat_rows is tuple(chain(rows[i:i + per])) for each whole run of per rows."""
        rows = [decoded(i) + ("svc", None, i) for i in range(count)]
        got = _speedups.flat_rows(rows, 20, 16)
        want = [tuple(v for row in rows[i : i + 20] for v in row) for i in range(0, count - count % 20, 20)]
        assert want == got
        assert not any(gc.is_tracked(values) for values in got)

    def test_a_row_of_another_width_anywhere_gives_none(self) -> None:
        """A short row, even past the last whole run, leaves the batch to the checked way."""
        rows = [decoded(i) + ("svc", None, i) for i in range(21)]
        assert _speedups.flat_rows(rows, 20, 16) is not None
        assert _speedups.flat_rows(rows[:20] + [rows[20][:15]], 20, 16) is None
        assert _speedups.flat_rows(rows[:5] + [list(rows[5])] + rows[6:], 20, 16) is None
        with pytest.raises(ValueError):
            _speedups.flat_rows(rows, 0, 16)


ts_values = st.integers(-(2**63), 2**63 - 1) | st.integers(BASE_TS - 10**12, BASE_TS + 10**12)
regular_rows = st.lists(
    st.tuples(ts_values, st.sampled_from([10, 20, 30, 40]), st.sampled_from(["a", "b", "a.b"])),
    min_size=1, max_size=40,
)


class TestRollupGroups:
    @settings(max_examples=300, deadline=None)
    @given(regular_rows)
    def test_groups_are_those_python_counts(self, rows: list[tuple[int, int, str]]) -> None:
        """(ts // MINUTE_NS, level, logger) counted in C as Counter counts it, negative ts included."""
        assert dict(_rollup._count(rows) or {}) == _speedups.rollup_groups(rows, _rollup.MINUTE_NS)

    def test_runs_of_one_key_and_keys_that_come_back(self) -> None:
        """A key that comes back after another run adds to its count."""
        rows = [(BASE_TS, 20, "a")] * 3 + [(BASE_TS, 30, "a")] + [(BASE_TS, 20, "a")] * 2 + [(BASE_TS, 20, "b")]
        minute = BASE_TS // _rollup.MINUTE_NS
        assert {(minute, 20, "a"): 5, (minute, 30, "a"): 1, (minute, 20, "b"): 1} == _speedups.rollup_groups(
            rows, _rollup.MINUTE_NS)

    @pytest.mark.parametrize("row", [(1.5, 20, "a"), (2**64, 20, "a"), (BASE_TS, True, "a"), (BASE_TS, 20, None),
                                     (BASE_TS, "20", "a"), (BASE_TS,)])
    def test_a_row_it_cannot_count_is_left_to_python(self, row: tuple[Any, ...]) -> None:
        """None: advance_batch then counts in Python (or re-reads the batch), as before."""
        assert _speedups.rollup_groups([(BASE_TS, 20, "a"), row], _rollup.MINUTE_NS) is None


class TestTrigramSkip:
    def test_only_a_str_past_ascii_in_message_fields_or_exception_counts(self) -> None:
        """Other columns, bytes and ASCII text never need trigrams."""
        at = jflusher._WIDE_AT
        assert not _speedups.any_non_ascii([make_row("plain", thread="日本", fields='{"a": 1}')], at)
        assert not _speedups.any_non_ascii([make_row("plain", exception=b"\xe6\x97\xa5")], at)
        for column in _schema.WIDE_COLUMNS:
            row = make_row(**{column: "ログ 😀"}) if column != "message" else make_row("ログ")
            assert _speedups.any_non_ascii([make_row("a"), row], at), column

    def test_cjk_records_are_found_whether_their_batch_skips_trigrams_or_not(self, tmp_path: Path) -> None:
        """An ASCII batch adds no trigram entries; a batch with one CJK record indexes exactly that one."""
        db_path = tmp_path / "app.db"
        ju.configure(db_path, console=False, commit_interval=3600)
        try:
            log = ju.get_logger("wide")
            for i in range(30):
                log.info(f"ascii {i}")
            assert ju.flush(timeout=30)
            assert [(0,)] == query(db_path, f'SELECT count(*) FROM "{_schema.WIDE_TABLE}"')
            for i in range(30):
                log.info("日本語のログ" if i == 17 else f"ascii {i}", note="ヘッダ" if i == 3 else "x")
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        # Exactly the rows with a character past ASCII have trigrams: the two of the second batch.
        wide = query(db_path, f'SELECT rowid FROM "{_schema.WIDE_TABLE}" ORDER BY rowid')
        assert query(db_path, """SELECT id FROM "logs" WHERE message = '日本語のログ' OR fields LIKE '%ヘッダ%'
                                 ORDER BY id""") == wide
        assert 2 == len(wide)
        with ju.LogStore(db_path) as store:
            assert ["日本語のログ"] == [r.message for r in store.search("本語")]
            assert 1 == len(store.search("ッダ"))
