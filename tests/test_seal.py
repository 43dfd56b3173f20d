"""Sealing and verify: a tamper corpus on copies of a database sealed by the real flusher."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import apsw
import pytest

from janus_utils import seal
from janus_utils._schema import COLUMNS

from conftest import run_cli

pytest.importorskip("cryptography")

# Sealed by the flusher in another process: several batches over several key
# periods (a period of 0.2 s, a pause between batches), every column used.
_WRITER = textwrap.dedent(
    """
    import sys, time
    import apsw
    import janus_utils as ju
    from janus_utils import seal

    db, key = sys.argv[1], sys.argv[2]
    print(seal.init_key(key, period="0.2s"))
    ju.configure(db, seal_key_file=key, console=False, batch_size=400)
    log = ju.get_logger("app.orders")
    other = ju.get_logger("billing")
    for chunk in range(8):
        for i in range(250):
            n = chunk * 250 + i
            if n % 50 == 7:
                try:
                    raise ValueError(f"bad order {n}")
                except ValueError:
                    other.exception("order %d failed", n, user_id=str(n % 9), order=n)
            else:
                log.info("order %d placed", n, user_id=str(n % 9), agent_id=f"agent-{n % 3}",
                         request_id=f"req-{n}", amount=n * 1.5)
        ju.flush()
        time.sleep(0.25)
    ju.shutdown()
    conn = apsw.Connection(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    """
)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(database, key file, verification key) of a database sealed by the flusher."""
    where = tmp_path_factory.mktemp("sealed")
    db, key = where / "app.db", where / "seal.key"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(db), str(key)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return db, key, done.stdout.strip()


@pytest.fixture
def copy(sealed: tuple[Path, Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A copy of the sealed database (and its exported head) to tamper with."""
    db, _, vk = sealed
    target = tmp_path / "copy.db"
    shutil.copyfile(db, target)
    shutil.copyfile(seal.head_path(str(db)), seal.head_path(str(target)))
    return target, vk


def tamper(path: Path, *statements: str, params: tuple[Any, ...] = ()) -> None:
    """Run SQL with Python's own sqlite3, as someone editing the file would."""
    conn = sqlite3.connect(path)
    try:
        for sql in statements:
            conn.execute(sql, params if "?" in sql else ())
        conn.commit()
    finally:
        conn.close()


def batches(path: Path) -> list[tuple[int, int, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT seq, first_id, last_id FROM janus_seal WHERE kind = 'batch' ORDER BY seq").fetchall()
    finally:
        conn.close()


def kinds(report: seal.Report) -> set[str]:
    return {f.kind for f in report.findings}


def text(report: seal.Report) -> str:
    return "\n".join(map(str, report.findings))


class TestIntact:
    def test_untouched_database_verifies_clean(self, copy: tuple[Path, str]) -> None:
        """Every batch the flusher sealed verifies, over more than one key period."""
        path, vk = copy
        report = seal.verify(path, vk)
        assert [] == report.findings
        assert 2000 == report.rows
        assert report.periods >= 2
        assert report.batches >= 8

    def test_cli_exit_zero_and_summary(self, copy: tuple[Path, str]) -> None:
        """janus-logs verify exits 0 and says intact."""
        path, vk = copy
        done = run_cli(["verify", "--db", str(path), "--verify-key", vk], cwd=path.parent)
        assert 0 == done.returncode, done.stderr
        assert b"intact" in done.stdout

    def test_pure_python_reader_agrees(self, copy: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the SQLite extension, verify (Python bytes) gives the same verdict."""
        path, vk = copy
        monkeypatch.setenv("JANUS_SEAL_PURE_PYTHON", "1")
        assert [] == seal.verify(path, vk).findings
        tamper(path, "UPDATE logs SET message = 'edited' WHERE id = 10")
        assert {"changed"} == kinds(seal.verify(path, vk))

    def test_native_and_python_bytes_are_equal(self, copy: tuple[Path, str]) -> None:
        """janus_seal_rows() writes exactly encode_rows()'s bytes, odd values included."""
        if seal._extension_path() is None:
            pytest.skip("janus_seal_rows() was not built (no SQLite or zlib headers)")
        path, _ = copy
        tamper(
            path,
            "UPDATE logs SET user_id = x'00ff10', fields = 'a' || char(0) || 'b', pid = 2.5, thread = NULL WHERE id = 3",
            "UPDATE logs SET level = -9223372036854775808, span_id = '' WHERE id = 4",
        )
        db = apsw.Connection(str(path))
        try:
            assert seal.load_extension(db)
            reader = seal._RowReader(db)
            native = reader.rows_between(1, 50)
            python = seal.encode_rows(reader.fetch(1, 50))
            assert bytes(native[0]) == python[0]
            assert native[1] == python[1]
        finally:
            db.close()

    def test_encoded_tuples_equal_the_stored_rows(self, tmp_path: Path) -> None:
        """encode_rows() of the tuples the flusher inserts gives the bytes janus_seal_rows() reads back."""
        from janus_utils._flusher import _INSERT, open_database

        if seal._native_rows is None or seal._extension_path() is None:
            pytest.skip("janus_utils._sealrows was not built")
        rows = [
            (1, 20, "app", "héllo \u2603 \U0001f600", "42", None, "r", None, None, 7, "T", None, '{"a": 1}', "svc", "h"),
            (-(2**63), 2**63 - 1, "", "", "", "", "", "", "", None, "", "", None, None, None),
            (5, 10, "a\x00b", "nul\x00inside", None, None, None, None, None, 0, None, "tb", None, "s", None),
        ]
        db = open_database(str(tmp_path / "e.db"))
        try:
            with db:
                db.executemany(_INSERT, rows)
            stored = seal._RowReader(db).rows_between(1, 3)
            encoded = seal._native_rows.encode_rows(rows, 1, seal._KINDS)
            assert (bytes(stored[0]), struct.pack(">3I", *stored[1])) == encoded
            for unfit in ((*rows[0][:9], "7", *rows[0][10:]), (*rows[0][:4], 42, *rows[0][5:]), (1.5, *rows[0][1:]),
                          (*rows[0][:3], "\ud800", *rows[0][4:]), (True, *rows[0][1:])):
                assert seal._native_rows.encode_rows([unfit], 1, seal._KINDS) is None
        finally:
            db.close()

    def test_values_past_the_columns_are_left_out(self) -> None:
        """A row ending with its word signature (as the flusher inserts it) encodes as the row
        without it: the seal covers the logs columns only."""
        if seal._native_rows is None:
            pytest.skip("janus_utils._sealrows was not built")
        rows = [(1, 20, "app", "hello", "42", None, "r", None, None, 7, "T", None, '{"a": 1}', "svc", "h")]
        plain = seal._native_rows.encode_rows(rows, 1, seal._KINDS)
        assert plain is not None
        assert plain == seal._native_rows.encode_rows([(*row, -12345) for row in rows], 1, seal._KINDS)
        assert seal._native_rows.encode_rows([rows[0][:-1]], 1, seal._KINDS) is None

    @pytest.mark.parametrize("fold", ["on", "off"])
    def test_row_crcs_equal_zlib_at_every_length(self, tmp_path: Path, fold: str) -> None:
        """The C row CRCs (folded with carry-less multiplication, or not) equal zlib.crc32 at lengths 0..400."""
        if seal._native_rows is None or seal._extension_path() is None:
            pytest.skip("janus_utils._sealrows was not built")
        # A fresh interpreter: the CPU check is made once per process.
        script = textwrap.dedent(
            """
            import json, random, struct, sys, zlib
            import apsw
            from janus_utils import seal
            from janus_utils._flusher import _INSERT, open_database

            rnd = random.Random(14)
            rows = []
            for n in range(401):
                # ASCII and not, so that row lengths cross every 16-byte boundary
                text = "".join(rnd.choice("ab\\u00e9\\u2603\\x00z") if n % 3 else rnd.choice("xyz") for _ in range(n))
                rows.append((n, 20, "l", text, None, None, None, None, None, 1, "t", None, None, None, None))
            content = [seal.encode_rows([(1, *row)])[0][9:] for row in rows]
            expected = [zlib.crc32(c) for c in content]
            data, crcs = seal._native_rows.encode_rows(rows, 1, seal._KINDS)
            assert list(struct.unpack(f">{len(rows)}I", crcs)) == expected
            db = open_database(sys.argv[1])
            with db:
                db.executemany(_INSERT, rows)
            stored = seal._RowReader(db).rows_between(1, len(rows))
            assert list(stored[1]) == expected
            db.close()
            print(len({len(c) for c in content}))
            """
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        if fold == "off":
            env["JANUS_SEAL_NO_CRC_FOLD"] = "1"
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "c.db")], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) > 300  # that many distinct row lengths were compared

    def test_wrong_verification_key_is_a_finding(self, copy: tuple[Path, str]) -> None:
        """Another key did not start this chain."""
        path, _ = copy
        other = seal.init_key(path.parent / "other.key")
        report = seal.verify(path, other)
        assert "signature" in kinds(report)


class TestTamperCorpus:
    @pytest.mark.parametrize("column", COLUMNS)
    def test_changed_byte_in_any_column(self, copy: tuple[Path, str], column: str) -> None:
        """One changed value in any stored column of one row is named by id."""
        path, vk = copy
        if column in ("ts", "level", "pid"):
            tamper(path, f'UPDATE logs SET "{column}" = coalesce("{column}", 0) + 1 WHERE id = 777')
        else:
            tamper(path, f"UPDATE logs SET \"{column}\" = coalesce(\"{column}\", '') || 'x' WHERE id = 777")
        report = seal.verify(path, vk)
        assert {"changed"} == kinds(report)
        assert "rows 777 were edited" in text(report)

    def test_byte_after_a_nul_is_seen(self, copy: tuple[Path, str]) -> None:
        """Text is compared to its last byte, past an embedded NUL."""
        path, vk = copy
        tamper(path, "UPDATE logs SET message = message || char(0) || 'a' WHERE id = 5")
        baseline = seal.verify(path, vk)
        assert "rows 5 were edited" in text(baseline)

    def test_changed_type_same_bytes(self, copy: tuple[Path, str]) -> None:
        """A text value replaced by a BLOB of the same bytes is a change."""
        path, vk = copy
        tamper(path, "UPDATE logs SET message = CAST(message AS BLOB) WHERE id = 6")
        assert "rows 6 were edited" in text(seal.verify(path, vk))

    def test_deleted_row(self, copy: tuple[Path, str]) -> None:
        path, vk = copy
        tamper(path, "DELETE FROM logs WHERE id IN (100, 101)")
        report = seal.verify(path, vk)
        assert {"deleted"} == kinds(report)
        assert "rows 100..101 are gone" in text(report)

    def test_inserted_row(self, copy: tuple[Path, str]) -> None:
        """A row added after the fact, inside or after the sealed ids, is reported."""
        path, vk = copy
        tamper(
            path,
            "INSERT INTO logs (id, ts, level, logger, message) VALUES (5000, 1, 20, 'x', 'forged')",
        )
        report = seal.verify(path, vk)
        assert {"inserted"} == kinds(report)
        assert "rows 5000 were never sealed" in text(report)

    def test_reordered_rows(self, copy: tuple[Path, str]) -> None:
        """Two rows that swapped ids are named as reordered."""
        path, vk = copy
        tamper(
            path,
            "UPDATE logs SET id = -1 WHERE id = 200",
            "UPDATE logs SET id = 200 WHERE id = 201",
            "UPDATE logs SET id = 201 WHERE id = -1",
        )
        report = seal.verify(path, vk)
        assert {"reordered"} == kinds(report)
        assert "rows 200..201 hold each other's records" in text(report)

    def test_dropped_batch(self, copy: tuple[Path, str]) -> None:
        """A batch removed with its chain entry is named by its entry and ids."""
        path, vk = copy
        seq, first, last = batches(path)[3]
        tamper(path, f"DELETE FROM logs WHERE id BETWEEN {first} AND {last}", f"DELETE FROM janus_seal WHERE seq = {seq}")
        report = seal.verify(path, vk)
        assert {"dropped batch"} == kinds(report)
        assert f"ids {first}..{last}" in text(report)

    def test_dropped_entry_rows_kept(self, copy: tuple[Path, str]) -> None:
        """A chain entry removed, its rows left: the rows are unsealed, the entry dropped."""
        path, vk = copy
        seq, first, last = batches(path)[2]
        tamper(path, f"DELETE FROM janus_seal WHERE seq = {seq}")
        report = seal.verify(path, vk)
        assert {"dropped batch", "inserted"} == kinds(report)

    def test_truncated_tail(self, copy: tuple[Path, str]) -> None:
        """The newest batches and their entries removed: caught against the exported head."""
        path, vk = copy
        seq, first, _ = batches(path)[-2]
        tamper(path, f"DELETE FROM logs WHERE id >= {first}", f"DELETE FROM janus_seal WHERE seq >= {seq}")
        report = seal.verify(path, vk)
        assert {"truncated"} == kinds(report)
        assert "ids up to 2000" in text(report)
        assert "newest batches were removed" in text(report)

    def test_head_missing_is_reported(self, copy: tuple[Path, str]) -> None:
        path, vk = copy
        os.unlink(seal.head_path(str(path)))
        assert {"truncated"} == kinds(seal.verify(path, vk))

    def test_torn_head_slot_falls_back_to_the_other(self, copy: tuple[Path, str]) -> None:
        """A head write torn by a crash spoils one slot; the other still anchors the chain."""
        path, vk = copy
        head = Path(seal.head_path(str(path)))
        raw = bytearray(head.read_bytes())
        # Both slots hold an entry (written in turn, whatever the entries' numbers).
        seqs = [json.loads(raw[i * 1024 : (i + 1) * 1024])["seq"] for i in range(2)]
        assert seqs[0] != seqs[1]
        newest = max(range(2), key=lambda i: seqs[i])
        raw[newest * 1024 + 10 : newest * 1024 + 60] = b"\0" * 50
        head.write_bytes(bytes(raw))
        assert [] == seal.verify(path, vk).findings

    def test_forged_head_is_refused(self, copy: tuple[Path, str]) -> None:
        """A head claiming more batches, not signed by the chain's keys, is a signature finding."""
        path, vk = copy
        head = Path(seal.head_path(str(path)))
        entry, _ = seal.read_head(str(head))
        other = seal._ed25519().Ed25519PrivateKey.generate()
        fields = {f.name: getattr(entry, f.name) for f in dataclasses.fields(entry) if f.name not in ("hash", "sig")}
        forged = seal._make_entry(other, **{**fields, "seq": entry.seq + 1, "prev": entry.hash})
        head.write_bytes(seal._head_slot(forged) * 2)
        assert "signature" in kinds(seal.verify(path, vk))

    def test_edited_entry(self, copy: tuple[Path, str]) -> None:
        """A chain entry's digest replaced to match edited rows is still caught."""
        path, vk = copy
        seq, first, last = batches(path)[1]
        tamper(path, f"UPDATE janus_seal SET digest = zeroblob(32) WHERE seq = {seq}")
        assert "changed" in kinds(seal.verify(path, vk))

    def test_cli_exit_one_names_the_problem(self, copy: tuple[Path, str]) -> None:
        path, vk = copy
        tamper(path, "UPDATE logs SET message = 'nothing happened' WHERE id = 1500")
        done = run_cli(["verify", "--db", str(path), "--verify-key", vk, "--json"], cwd=path.parent)
        assert 1 == done.returncode
        found = json.loads(done.stdout)["findings"]
        assert [("changed", "rows 1500 were edited")] == [(f["kind"], f["detail"]) for f in found]

    def test_cli_usage_is_exit_two(self, copy: tuple[Path, str]) -> None:
        path, _ = copy
        assert 2 == run_cli(["verify", "--db", str(path)], cwd=path.parent).returncode
        assert 2 == run_cli(["verify", "--db", str(path), "--verify-key", "zz"], cwd=path.parent).returncode


class TestKeyEvolution:
    def test_current_key_cannot_rewrite_an_earlier_period(
        self, sealed: tuple[Path, Path, str], copy: tuple[Path, str]
    ) -> None:
        """With the key file as it is now, rewriting a batch of an earlier period and re-chaining is detected.

        The forger edits a row of the first batch, recomputes that batch's
        digest and every later entry's link and hash, re-signs every entry
        with the current key, and exports a new head.  Period 0's key signed
        the key entry of period 1 over the old chain: that signature fails.
        """
        _, key_file, vk = sealed
        path, _ = copy
        key = seal._Key(str(key_file))
        assert key.key_no >= 2
        tamper(path, "UPDATE logs SET message = 'refund approved' WHERE id = 3")
        db = apsw.Connection(str(path))
        try:
            reader = seal._RowReader(db)
            entries = seal._entries(db)
            prev = None
            forged: list[seal.Entry] = []
            for entry in entries:
                changes: dict[str, Any] = {}
                if entry.kind == "batch" and entry.first_id <= 3 <= entry.last_id:
                    data, crcs = reader.rows_between(entry.first_id, entry.last_id)
                    changes["digest"] = hashlib.sha256(data).digest()
                    changes["crcs"] = struct.pack(f">{len(crcs)}I", *crcs)
                if prev is not None:
                    changes["prev"] = prev.hash
                if changes or prev is not None:
                    entry = seal._make_entry(
                        key.private, **{f.name: getattr(entry, f.name) for f in dataclasses.fields(entry) if f.name not in ("hash", "sig")} | changes
                    )
                forged.append(entry)
                prev = entry
            with db:
                db.execute("DELETE FROM janus_seal")
                db.executemany(f"INSERT INTO janus_seal VALUES ({', '.join('?' * 12)})", [dataclasses.astuple(e) for e in forged])
        finally:
            db.close()
        Path(seal.head_path(str(path))).write_bytes(seal._head_slot(forged[-1]) * 2)
        report = seal.verify(path, vk)
        assert "signature" in kinds(report)
        assert "period key 1 is not certified by period key 0" in text(report)

    def test_key_file_holds_only_the_current_key(self, sealed: tuple[Path, Path, str]) -> None:
        """After evolving, the key file no longer holds the first private key."""
        _, key_file, vk = sealed
        key = seal._Key(str(key_file))
        assert seal._raw_public(key.private).hex() != vk
        assert 0o600 == os.stat(key_file).st_mode & 0o777


class TestRetention:
    def test_pruned_with_archives_verifies_clean(self, copy: tuple[Path, str], tmp_path: Path) -> None:
        """A prune writes the removed rows' chain entries into the archive; archive + database verify."""
        from janus_utils.retention import prune_path

        path, vk = copy
        archive = tmp_path / "archive"
        summary = prune_path(path, max_rows=700, archive_dir=archive, ship_wait=False)
        assert summary.rows >= 1300
        assert list(archive.glob("*.seal"))
        report = seal.verify(path, vk, archives=archive)
        assert [] == report.findings
        assert report.archived_rows >= 1300
        without = seal.verify(path, vk)
        assert {"deleted"} == kinds(without)
        done = run_cli(["verify", "--db", str(path), "--verify-key", vk, "--archives", str(archive)], cwd=tmp_path)
        assert 0 == done.returncode, done.stdout + done.stderr

    def test_edited_archive_is_detected(self, copy: tuple[Path, str], tmp_path: Path) -> None:
        """A record changed inside an archive (sidecar checksum redone too) is named with its archive."""
        from janus_utils.retention import prune_path

        path, vk = copy
        archive = tmp_path / "archive"
        prune_path(path, max_rows=700, archive_dir=archive, ship_wait=False)
        target = sorted(archive.glob("*.ndjson.gz"))[0]
        lines = gzip.decompress(target.read_bytes()).decode().splitlines()
        record = json.loads(lines[0])
        record["message"] = "nothing to see"
        lines[0] = json.dumps(record)
        target.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
        report = seal.verify(path, vk, archives=archive)
        assert {"changed"} == kinds(report)
        assert f"in archive {target.name}" in text(report)
        assert f"rows {record['id']} were edited" in text(report)

    def test_edited_archive_entry_is_detected(self, copy: tuple[Path, str], tmp_path: Path) -> None:
        from janus_utils.retention import prune_path

        path, vk = copy
        archive = tmp_path / "archive"
        prune_path(path, max_rows=700, archive_dir=archive, ship_wait=False)
        sidecar = sorted(archive.glob("*.seal"))[0]
        entries = [json.loads(line) for line in sidecar.read_text().splitlines()]
        entries[0]["n_rows"] += 1
        sidecar.write_text("".join(json.dumps(e) + "\n" for e in entries))
        assert "changed" in kinds(seal.verify(path, vk, archives=archive))


class TestSealer:
    def test_seal_init_refuses_an_existing_file(self, tmp_path: Path) -> None:
        key = tmp_path / "k"
        seal.init_key(key)
        with pytest.raises(Exception, match="exists"):
            seal.init_key(key)
        done = run_cli(["seal", "init", "--key-file", str(tmp_path / "k2")], cwd=tmp_path)
        assert 0 == done.returncode
        assert 64 == len(done.stdout.strip())
        assert 0o600 == os.stat(tmp_path / "k2").st_mode & 0o777

    def test_key_of_another_database_leaves_batches_unsealed_and_says_so(
        self, sealed: tuple[Path, Path, str], tmp_path: Path
    ) -> None:
        """A key already used elsewhere seals nothing here; the rows are kept and verify reports them."""
        from janus_utils._flusher import open_database

        _, key_file, _ = sealed
        used = tmp_path / "used.key"
        shutil.copyfile(key_file, used)
        os.chmod(used, 0o600)
        messages: list[str] = []
        sealer = seal.Sealer(str(used), str(tmp_path / "new.db"), report=messages.append)
        db = open_database(str(tmp_path / "new.db"))
        try:
            with db:
                db.execute("INSERT INTO logs (ts, level, logger, message) VALUES (1, 20, 'a', 'b')")
                assert sealer.seal(db, 0) is None
            assert 1 == db.execute("SELECT count(*) FROM logs").fetchall()[0][0]
        finally:
            db.close()
        assert "has sealed another database" in messages[0]

    def test_chain_continues_past_rollbacks_other_sealers_and_stray_rows(self, tmp_path: Path) -> None:
        """The newest entry kept in memory, and the ids taken for the inserted tuples, are used only while true."""
        from janus_utils._flusher import _INSERT, open_database

        key = tmp_path / "k"
        vk = seal.init_key(key)
        path = str(tmp_path / "c.db")
        one, two = seal.Sealer(str(key), path), seal.Sealer(str(key), path)
        db = open_database(path)

        def rows(tag: str, n: int = 3) -> list[tuple[Any, ...]]:
            return [(i, 20, "app", f"{tag} {i}", None, None, None, None, None, 1, "t", None, None, None, None) for i in range(n)]

        def commit(sealer: seal.Sealer, batch: list[tuple[Any, ...]], *, rollback: bool = False, stray: bool = False) -> None:
            try:
                with db:
                    last = db.execute("SELECT max(id) FROM logs").fetchall()[0][0] or 0
                    if stray:  # a row above *last* before the batch: the tuples are not ids last + 1 ..
                        db.execute(_INSERT, rows("stray", 1)[0])
                    db.executemany(_INSERT, batch)
                    entry = sealer.seal(db, last, batch)
                    if rollback:
                        raise KeyboardInterrupt
                sealer.publish(entry)
            except KeyboardInterrupt:
                pass

        try:
            commit(one, rows("a"))
            commit(one, rows("b"), rollback=True)  # its entry was written, then rolled back
            commit(one, rows("c"))
            commit(two, rows("d"))  # another sealer of the same database, in between
            commit(one, rows("e"))
            commit(one, rows("f"), stray=True)  # sealed as read back: the stray row and the batch
            entries = seal._entries(db)
        finally:
            db.close()
        report = seal.verify(path, vk)
        assert report.ok, text(report)
        assert (5, 16) == (report.batches, report.rows)
        assert (13, 16, 4) == (entries[-1].first_id, entries[-1].last_id, entries[-1].n_rows)

    def test_configure_refuses_a_missing_key_file(self, tmp_path: Path) -> None:
        """A seal key that cannot be used is a ConfigError from configure(), before anything starts."""
        import janus_utils as ju
        from janus_utils.error_handling.utils.errors import ConfigError

        with pytest.raises(ConfigError, match="seal init"):
            ju.configure(tmp_path / "x.db", seal_key_file=tmp_path / "missing.key", console=False)
        assert not (tmp_path / "x.db").exists()

    def test_group_readable_key_file_is_refused(self, tmp_path: Path) -> None:
        key = tmp_path / "k"
        seal.init_key(key)
        os.chmod(key, 0o640)
        with pytest.raises(Exception, match="chmod 600"):
            seal.Sealer(str(key), str(tmp_path / "x.db"))


class TestCrashes:
    def test_key_evolved_for_a_rolled_back_commit_continues_the_chain(self, tmp_path: Path) -> None:
        """The key file is saved before the commit: a commit that then fails leaves its key entry to the next one."""
        from janus_utils._flusher import open_database

        vk = seal.init_key(tmp_path / "k", period="1s")
        sealer = seal.Sealer(str(tmp_path / "k"), str(tmp_path / "a.db"))
        db = open_database(str(tmp_path / "a.db"))
        try:
            insert = "INSERT INTO logs (ts, level, logger, message) VALUES (1, 20, 'a', ?)"
            with db:
                db.execute(insert, ("one",))
                sealer.publish(sealer.seal(db, 0))
            sealer.key.started_ns -= 2 * 10**9  # the period is over
            db.execute("BEGIN IMMEDIATE")
            db.execute(insert, ("two",))
            assert "batch" == sealer.seal(db, 1).kind
            db.execute("ROLLBACK")  # the commit failed after the key evolved
            assert 1 == seal._Key(str(tmp_path / "k")).key_no
            with db:
                db.execute(insert, ("two again",))
                sealer.publish(sealer.seal(db, 1))
            kinds_in_db = [e.kind for e in seal._entries(db)]
        finally:
            db.close()
        assert ["start", "batch", "key", "batch"] == kinds_in_db
        report = seal.verify(tmp_path / "a.db", vk)
        assert ([], 2, 1) == (report.findings, report.rows, report.periods)

    def test_flusher_killed_while_sealing_then_restarted_verifies_clean(self, tmp_path: Path) -> None:
        """SIGKILL a process sealing every 20 ms; another process takes over the database and key; all verifies."""
        import signal
        import time

        db, key = tmp_path / "app.db", tmp_path / "seal.key"
        vk = seal.init_key(key, period="0.02s")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        writer = textwrap.dedent(
            """
            import sys, time
            import janus_utils as ju
            ju.configure(sys.argv[1], seal_key_file=sys.argv[2], console=False, batch_size=50, commit_interval=0.005)
            log = ju.get_logger("app")
            n = 0
            while True:
                log.info("tok%s-%d", sys.argv[3], n)
                n += 1
                if n % 40 == 0:
                    time.sleep(0.003)
                if len(sys.argv) > 4 and n == int(sys.argv[4]):
                    ju.shutdown()
                    break
            """
        )
        victim = subprocess.Popen([sys.executable, "-c", writer, str(db), str(key), "a"], env=env)
        time.sleep(3.0)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        survivor = subprocess.run(
            [sys.executable, "-c", writer, str(db), str(key), "b", "3000"], env=env, capture_output=True, text=True, timeout=120
        )
        assert 0 == survivor.returncode, survivor.stderr
        assert "unsealed" not in survivor.stderr
        report = seal.verify(db, vk)
        assert [] == report.findings
        assert report.periods >= 2
        with apsw.Connection(str(db)) as conn:
            stored = conn.execute("SELECT count(*) FROM logs").fetchall()[0][0]
            b = conn.execute("SELECT count(*) FROM logs WHERE message LIKE 'tokb-%'").fetchall()[0][0]
        assert 3000 == b
        assert stored == report.rows


class TestArchivesOfOthers:
    def test_another_databases_archives_in_the_same_directory_are_ignored(
        self, sealed: tuple[Path, Path, str], copy: tuple[Path, str], tmp_path: Path
    ) -> None:
        """Archives carry their database's id: rows of another database with the same ids are not mixed in."""
        from janus_utils.retention import prune_path

        from conftest import make_row, open_writer, write_batch

        path, vk = copy
        archive = tmp_path / "archive"
        other = tmp_path / "other.db"
        conn = open_writer(other)
        try:
            write_batch(conn, [make_row(f"other {i}") for i in range(1500)])
        finally:
            conn.close()
        prune_path(other, max_rows=100, archive_dir=archive, ship_wait=False)
        prune_path(path, max_rows=700, archive_dir=archive, ship_wait=False)
        assert [] == seal.verify(path, vk, archives=archive).findings
