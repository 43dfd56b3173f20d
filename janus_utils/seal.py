"""Sealing: a forward-secure, signed hash chain over the committed batches, and its verifier.

The construction (README "Sealing and verification"):

* Each committed batch gets a chain entry, written by the flusher in the
  batch's own transaction: the batch's row ids and count, the SHA-256 of the
  canonical bytes of its rows (every stored column, the id included: see
  ``_native/sealrows.c``), the hash of the previous entry, and an Ed25519
  signature by the current *period key*.  An entry's hash is the SHA-256 of
  its signed message, so each entry fixes everything before it.
* Keys evolve forward (Bellare & Yee 1997, Schneier & Kelsey 1999; as
  journald's Forward Secure Sealing, by periods): when a period is over, the
  flusher makes a fresh Ed25519 key, signs a ``key`` entry naming its public
  key and the chain head with the old key, saves the new key over the old one
  in the key file, and forgets the old one.  A key stolen in period k can
  sign nothing that verifies as period j < k: every entry of period j is
  fixed by the hash chain under the key entry that period j's key signed.
* The verification key is the first public key.  It checks the chain and
  signs nothing.
* The newest entry is also written to ``<db>-seal.head`` after each commit,
  so that a database cut short (its newest batches and entries removed) is
  caught against it.

Keep out of the flusher's way: ``Sealer.seal`` is one call inside the
commit's transaction, ``Sealer.publish`` one call after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import apsw

from ._reading import open_for_reading
from ._schema import COLUMNS, TABLE
from .error_handling.utils.errors import ConfigError, SealError

__all__ = [
    "ROW_COLUMNS",
    "SEAL_TABLE",
    "Finding",
    "Report",
    "Sealer",
    "encode_rows",
    "head_path",
    "archive_entries",
    "check_key_file",
    "init_key",
    "parse_period",
    "verify",
]

SEAL_TABLE = "janus_seal"
ROW_COLUMNS: tuple[str, ...] = ("id", *COLUMNS)  # what a row's seal covers, in this order
_COLS = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
_MAGIC = b"janus-seal/1\n"
_ZERO = bytes(32)
DEFAULT_PERIOD_NS = 15 * 60 * 10**9  # journald's default sealing interval
_ENTRY_COLUMNS = "seq, kind, key_no, first_id, last_id, n_rows, sealed_ns, digest, crcs, prev, hash, sig"
_INSERT_ENTRY = f'INSERT INTO "{SEAL_TABLE}" ({_ENTRY_COLUMNS}) VALUES ({", ".join("?" * 12)})'


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError(
            "sealing needs the cryptography package (Ed25519): pip install 'janus_utils[seal]'"
        ) from None
    return ed25519


def _raw_public(private: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(private: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


# -- entries --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One link of the chain: ``start`` (seq 0), ``key`` (a new period key) or ``batch``."""

    seq: int
    kind: str
    key_no: int
    first_id: int  # batch: its rows' ids; start: 0 and the newest id before sealing began
    last_id: int
    n_rows: int  # batch: its rows; start: the rows before sealing began
    sealed_ns: int
    digest: bytes  # batch: SHA-256 of the rows' bytes; start and key: the period's public key
    crcs: bytes  # batch: CRC-32 of each row (diagnosis only)
    prev: bytes
    hash: bytes
    sig: bytes

    def message(self, crcs_sha256: bytes | None = None) -> bytes:
        """The signed bytes; the entry's hash is their SHA-256.  (*crcs_sha256*: the head file's stand-in for crcs.)"""
        return _message(
            self.kind, self.seq, self.key_no, self.first_id, self.last_id, self.n_rows, self.sealed_ns, self.digest,
            crcs_sha256 if crcs_sha256 is not None else hashlib.sha256(self.crcs).digest(), self.prev,
        )

    def to_json(self) -> dict[str, Any]:
        return {name: (value.hex() if type(value) is bytes else value) for name, value in vars(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        values = {}
        for f in dataclasses.fields(cls):
            value = data[f.name]
            if f.type == "bytes":
                value = bytes.fromhex(value)
            elif f.type == "int" and type(value) is not int:
                raise ValueError(f"{f.name} is not an integer")
            values[f.name] = value
        return cls(**values)

    def describe(self) -> str:
        if self.kind == "batch":
            return f"batch {self.seq} (ids {self.first_id}..{self.last_id}, {self.n_rows} rows)"
        return f"{self.kind} entry {self.seq}"


def _message(
    kind: str, seq: int, key_no: int, first_id: int, last_id: int, n_rows: int, sealed_ns: int,
    digest: bytes, crcs_sha256: bytes, prev: bytes,
) -> bytes:
    return b"".join(
        (
            _MAGIC,
            kind.encode("ascii") + b"\n",
            struct.pack(">qqqqqq", seq, key_no, first_id, last_id, n_rows, sealed_ns),
            digest,
            crcs_sha256,
            prev,
        )
    )


def _make_entry(private: Any, crcs_sha256: bytes | None = None, **fields: Any) -> Entry:
    """A signed entry of *fields*; *crcs_sha256*: the SHA-256 of fields["crcs"], if the caller has it."""
    f = fields
    if crcs_sha256 is None:
        crcs_sha256 = hashlib.sha256(f["crcs"]).digest()
    message = _message(
        f["kind"], f["seq"], f["key_no"], f["first_id"], f["last_id"], f["n_rows"], f["sealed_ns"], f["digest"],
        crcs_sha256, f["prev"],
    )
    return Entry(hash=hashlib.sha256(message).digest(), sig=private.sign(message), **fields)


def _entry_row(entry: Entry) -> tuple[Any, ...]:
    """*entry* as the values of _INSERT_ENTRY (dataclasses.astuple deep-copies each field)."""
    e = entry
    return (e.seq, e.kind, e.key_no, e.first_id, e.last_id, e.n_rows, e.sealed_ns, e.digest, e.crcs, e.prev, e.hash, e.sig)


def _entries(db: apsw.Connection, sql_tail: str = "ORDER BY seq", params: tuple[Any, ...] = ()) -> list[Entry]:
    rows = db.execute(f'SELECT {_ENTRY_COLUMNS} FROM "{SEAL_TABLE}" {sql_tail}', params).fetchall()
    return [Entry(*row) for row in rows]


# -- the rows' bytes ------------------------------------------------------


def _encode_value(value: Any) -> bytes:
    if value is None:
        return b"\x00"
    if type(value) is int:
        return b"\x01" + value.to_bytes(8, "big", signed=True)
    if type(value) is float:
        return b"\x02" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return b"\x03" + len(data).to_bytes(4, "big") + data
    data = bytes(value)
    return b"\x04" + len(data).to_bytes(4, "big") + data


def encode_rows(rows: Iterable[tuple[Any, ...]]) -> tuple[bytes, list[int]]:
    """The canonical bytes of *rows* (id first, then COLUMNS) and each row's CRC-32 without its id.

    The same bytes as the janus_seal_rows() SQLite function (_native/sealrows.c).
    """
    out: list[bytes] = []
    crcs: list[int] = []
    for row in rows:
        head = _encode_value(row[0])
        content = b"".join(_encode_value(v) for v in row[1:])
        out.append(head)
        out.append(content)
        crcs.append(zlib.crc32(content))
    return b"".join(out), crcs


def _split(blob: bytes) -> tuple[memoryview, list[int]]:
    """janus_seal_rows()'s result as (the rows' bytes, their CRCs)."""
    n = int.from_bytes(blob[-4:], "big")
    end = len(blob) - 4 - 4 * n
    crcs = list(struct.unpack(f">{n}I", blob[end:-4]))
    return memoryview(blob)[:end], crcs


# The flusher's own row tuples, encoded in C without reading them back
# (janus_utils._sealrows.encode_rows); None where the module was not built.
try:
    from . import _sealrows as _native_rows
except ImportError:  # pragma: no cover - built optionally (setup.py)
    _native_rows = None
# How SQLite stores each column's values (_schema declares these INTEGER, the rest TEXT).
_KINDS = bytes(ord("i") if c in ("ts", "level", "pid") else ord("t") for c in COLUMNS)


def _extension_path() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_sealrows*.so")) + glob.glob(os.path.join(here, "_sealrows*.pyd")))
    return found[0] if found else None


def load_extension(db: apsw.Connection) -> bool:
    """Give *db* the janus_seal_rows() function; False if it cannot be loaded (Python is used instead)."""
    path = _extension_path()
    if path is None or os.environ.get("JANUS_SEAL_PURE_PYTHON"):
        return False
    try:
        db.enable_load_extension(True)
        try:
            db.load_extension(path, "sqlite3_janussealrows_init")
        finally:
            db.enable_load_extension(False)  # SQL may not load anything itself
    except apsw.Error:
        return False
    return True


class _RowReader:
    """The bytes and CRCs of rows by id range, with janus_seal_rows() or, failing that, Python."""

    def __init__(self, db: apsw.Connection) -> None:
        self.db = db
        self.native = load_extension(db)

    def rows_after(self, after_id: int) -> tuple[bytes | memoryview, list[int], int, int]:
        """(bytes, crcs, first id, last id) of the rows with id > *after_id*."""
        first, last = self.db.execute(
            f'SELECT (SELECT min(id) FROM "{TABLE}" WHERE id > ?1), (SELECT max(id) FROM "{TABLE}" WHERE id > ?1)',
            (after_id,),
        ).fetchall()[0]
        if first is None:
            return b"", [], 0, 0
        data, crcs = self.rows_between(first, last)
        return data, crcs, first, last

    def rows_between(self, first: int, last: int) -> tuple[bytes | memoryview, list[int]]:
        if self.native:
            # A rowid range is scanned in id order; janus_seal_rows() checks it.
            sql = f'SELECT janus_seal_rows({_COLS}) FROM "{TABLE}" WHERE id BETWEEN ? AND ?'
            try:
                return _split(self.db.execute(sql, (first, last)).fetchall()[0][0])
            except apsw.SQLError as err:
                if "not in id order" not in str(err):
                    raise
        return encode_rows(self.fetch(first, last))

    def fetch(self, first: int, last: int) -> list[tuple[Any, ...]]:
        return self.db.execute(
            f'SELECT {_COLS} FROM "{TABLE}" WHERE id BETWEEN ? AND ? ORDER BY id', (first, last)
        ).fetchall()


# -- the key file ---------------------------------------------------------


def parse_period(value: str | int | float) -> int:
    """A seal period ("15min", "1h", "30s", or seconds) in nanoseconds."""
    units = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
    text = str(value).strip().lower()
    number, unit = text, "s"
    for name in sorted(units, key=len, reverse=True):
        if text.endswith(name) and text[: -len(name)].strip():
            number, unit = text[: -len(name)].strip(), name
            break
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ConfigError(f"a seal period must look like 15min, 1h or 30s, not {value!r}") from None
    if not 0 < seconds <= 366 * 86400:
        raise ConfigError(f"a seal period must be above 0 and at most a year, not {value!r}")
    return int(seconds * 10**9)


def _write_private(path: str, data: dict[str, Any]) -> None:
    """Replace the key file atomically (0600, fsynced): the old key is gone from the name."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".seal-key-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def init_key(path: str | os.PathLike[str], *, period: str | int | float = "15min", force: bool = False) -> str:
    """Write a new seal key file (0600) at *path*; return the verification key (hex) to keep elsewhere."""
    ed25519 = _ed25519()
    path = os.fspath(path)
    if os.path.lexists(path) and not force:
        raise ConfigError(
            f"{path!r} exists: a seal key is made once per database; remove it (its chain then "
            "cannot be continued) or choose another path"
        )
    private = ed25519.Ed25519PrivateKey.generate()
    public = _raw_public(private)
    _write_private(
        path,
        {
            "janus_seal_key": 1,
            "key_no": 0,
            "private": _raw_private(private).hex(),
            "public0": public.hex(),
            "period_ns": parse_period(period),
            "started_ns": time.time_ns(),
            "cert": None,
        },
    )
    return public.hex()


class _Key:
    """The current period key, as the key file holds it."""

    def __init__(self, path: str) -> None:
        ed25519 = _ed25519()
        self.path = path
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("janus_seal_key") != 1:
                raise ValueError("not a janus seal key file")
            self.key_no = int(data["key_no"])
            self.private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data["private"]))
            self.public0 = bytes.fromhex(data["public0"])
            self.period_ns = int(data["period_ns"])
            self.started_ns = int(data["started_ns"])
            self.cert = Entry.from_json(data["cert"]) if data.get("cert") else None
        except FileNotFoundError:
            raise ConfigError(f"seal key file {path!r} does not exist: create it with janus-logs seal init") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"seal key file {path!r} cannot be used ({err}): create one with janus-logs seal init") from None
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise ConfigError(f"seal key file {path!r} is readable by others (mode {mode & 0o777:04o}): chmod 600 it")

    def save(self) -> None:
        _write_private(
            self.path,
            {
                "janus_seal_key": 1,
                "key_no": self.key_no,
                "private": _raw_private(self.private).hex(),
                "public0": self.public0.hex(),
                "period_ns": self.period_ns,
                "started_ns": self.started_ns,
                "cert": self.cert.to_json() if self.cert else None,
            },
        )

    def evolve(self, head: Entry, now_ns: int) -> Entry:
        """A new period key, certified by the current one, saved in place of it; the key entry."""
        new = _ed25519().Ed25519PrivateKey.generate()
        cert = _make_entry(
            self.private,
            seq=head.seq + 1,
            kind="key",
            key_no=self.key_no + 1,
            first_id=0,
            last_id=0,
            n_rows=0,
            sealed_ns=now_ns,
            digest=_raw_public(new),
            crcs=b"",
            prev=head.hash,
        )
        self.private, self.key_no, self.started_ns, self.cert = new, self.key_no + 1, now_ns, cert
        self.save()  # before the commit: the old key must not outlive its period on disk
        return cert


def check_key_file(path: str) -> None:
    """Raise ConfigError unless *path* is a seal key file sealing can use (configure() calls it)."""
    _Key(path)


# -- the flusher's side ---------------------------------------------------


def head_path(db_path: str) -> str:
    """Where the newest seal of *db_path* is exported, beside the database."""
    return db_path + "-seal.head"


class Sealer:
    """Seals each batch the flusher commits (configure(seal_key_file=...))."""

    def __init__(self, key_file: str, db_path: str, report: Callable[[str], None] | None = None) -> None:
        self.key = _Key(os.fspath(key_file))
        self.db_path = db_path
        self.report = report or (lambda message: print(f"janus_utils: {message}", file=sys.stderr))
        self._readers: dict[int, _RowReader] = {}
        self.sealed_batches = 0
        self._slot: int | None = None  # the head slot the next publish writes
        self.failures = 0
        # The newest entry this sealer wrote, so that a seal need not read it
        # back (its crcs make it three pages): trusted only while the table's
        # newest entry is still it (see _newest).
        self._head: Entry | None = None
        self._crcs_sha256: tuple[bytes, bytes] | None = None  # (entry hash, its crcs' SHA-256)

    def _reader(self, db: apsw.Connection) -> _RowReader:
        reader = self._readers.get(id(db))
        if reader is None or reader.db is not db:
            self._readers = {id(db): _RowReader(db)}  # one connection at a time
            reader = self._readers[id(db)]
        return reader

    def seal(self, db: apsw.Connection, after_id: int, rows: list[tuple[Any, ...]] | None = None) -> Entry | None:
        """Inside the batch's transaction: seal the rows with id > *after_id*.

        *rows*, when given, are the tuples just inserted (COLUMNS first): their
        bytes are then encoded from them, not read back, if every value is
        one SQLite stores as given; otherwise the stored rows are read.

        A seal that cannot be made (a key file out of step with this
        database's chain, a key file that cannot be saved) leaves the batch
        committed unsealed and says so: verify then reports those rows.
        Database errors propagate, so the whole batch is retried.
        """
        try:
            # No savepoint (one cost a quarter of the commit here): _seal
            # reads, evolves and signs first, and writes its one or two
            # entries last, so a failure leaves no half entry.
            return self._seal(db, after_id, rows)
        except (apsw.BusyError, apsw.LockedError, apsw.IOError, apsw.FullError):
            raise
        except Exception as err:
            self.failures += 1
            self.report(f"batch committed unsealed: {type(err).__name__}: {err}")
            return None

    def _seal(self, db: apsw.Connection, after_id: int, rows: list[tuple[Any, ...]] | None) -> Entry | None:
        key = self.key
        now = time.time_ns()
        writes: list[Entry] = []  # inserted at the end, once nothing can fail but the database
        head = self._newest(db)
        if head is None:
            if key.key_no != 0:
                raise SealError(
                    f"the seal key {key.path!r} has sealed another database (it is at period "
                    f"{key.key_no}): make a new key for this one with janus-logs seal init"
                )
            count = db.execute(f'SELECT count(*) FROM "{TABLE}" WHERE id <= ?', (after_id,)).fetchall()[0][0]
            head = _make_entry(
                key.private, seq=0, kind="start", key_no=0, first_id=0, last_id=after_id, n_rows=count,
                sealed_ns=now, digest=key.public0, crcs=b"", prev=_ZERO,
            )
            writes.append(head)
        elif key.key_no > head.key_no:
            # The key was evolved for a commit that did not happen: its key
            # entry, signed then, goes in now.
            cert = key.cert
            if cert is None or cert.key_no != key.key_no or cert.prev != head.hash or cert.seq != head.seq + 1:
                raise SealError(f"the seal key {key.path!r} is ahead of the chain in {self.db_path}")
            head = cert
            writes.append(head)
        elif key.key_no < head.key_no:
            raise SealError(
                f"the seal key {key.path!r} (period {key.key_no}) is older than the chain in "
                f"{self.db_path} (period {head.key_no}): was it restored from a backup?"
            )
        digest, crc_bytes, first, last = self._rows(db, after_id, rows)
        if now - key.started_ns >= key.period_ns:
            head = key.evolve(head, now)  # saved to the key file now: before the commit
            writes.append(head)
        if crc_bytes:
            crcs_sha256 = hashlib.sha256(crc_bytes).digest()
            head = _make_entry(
                key.private, crcs_sha256, seq=head.seq + 1, kind="batch", key_no=key.key_no, first_id=first,
                last_id=last, n_rows=len(crc_bytes) // 4, sealed_ns=now, digest=digest, crcs=crc_bytes,
                prev=head.hash,
            )
            self._crcs_sha256 = (head.hash, crcs_sha256)  # for publish's head slot
            writes.append(head)
            self.sealed_batches += 1
        db.executemany(_INSERT_ENTRY, [_entry_row(e) for e in writes])
        self._head = head
        return head if writes else None

    def _newest(self, db: apsw.Connection) -> Entry | None:
        """The chain's newest entry: the one this sealer wrote last if the table still ends with it.

        A commit rolled back after its seal, another flusher's commits, or
        another file at the path all show as a different newest (seq,
        sealed_ns), read from the rowid's b-tree page alone; the entry is
        then read from the table.
        """
        cached = self._head
        if cached is not None:
            found = db.execute(f'SELECT seq, sealed_ns FROM "{SEAL_TABLE}" ORDER BY seq DESC LIMIT 1').fetchall()
            if found and found[0] == (cached.seq, cached.sealed_ns):
                return cached
            self._head = None
        return (_entries(db, "ORDER BY seq DESC LIMIT 1") or [None])[0]

    def _rows(
        self, db: apsw.Connection, after_id: int, rows: list[tuple[Any, ...]] | None
    ) -> tuple[bytes, bytes, int, int]:
        """(the SHA-256 of the rows' bytes, their CRCs, first id, last id) of the rows with id > *after_id*."""
        if rows and _native_rows is not None:
            # The rows were given ids above the newest one before them, in
            # insert order: they hold after_id + 1 .. after_id + len(rows)
            # exactly when that is the newest id now (a row above after_id
            # from before would have pushed theirs higher).  max(id) reads one
            # b-tree path; min(id), max(id) over a range reads the range.
            last = db.execute(f'SELECT max(id) FROM "{TABLE}"').fetchall()[0][0]
            first = after_id + 1
            if last == after_id + len(rows):
                found = _native_rows.encode_rows(rows, first, _KINDS)
                if found is not None:
                    return hashlib.sha256(found[0]).digest(), found[1], first, last
        data, crcs, first, last = self._reader(db).rows_after(after_id)
        return hashlib.sha256(data).digest(), struct.pack(f">{len(crcs)}I", *crcs), first, last

    def publish(self, entry: Entry | None) -> None:
        """After the commit: export the newest entry beside the database (tail truncation is caught by it).

        The file has two fixed slots written in turn in place (no rename, no
        fsync: a commit pays a pwrite): a write torn by a crash spoils one
        slot, and the other still holds the entry before.  In turn by write,
        not by the entry's number: a commit that also starts a key period
        adds two entries, and by number every such commit would land in the
        same slot.
        """
        if entry is None:
            return
        path = head_path(self.db_path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if self._slot is None:  # first write of this process: not over the newest entry
                    slots = _parse_slots(os.pread(fd, 2 * _HEAD_SLOT, 0))
                    newest = max((i for i in (0, 1) if slots[i]), key=lambda i: slots[i][0].seq, default=1)  # type: ignore[index]
                    self._slot = 1 - newest
                known = self._crcs_sha256
                slot = _head_slot(entry, known[1] if known is not None and known[0] == entry.hash else None)
                os.pwrite(fd, slot, self._slot * _HEAD_SLOT)
                self._slot ^= 1
            finally:
                os.close(fd)
        except OSError as err:
            self.report(f"cannot write the seal head {path}: {err.strerror}")


_HEAD_SLOT = 1024


_HEAD_JSON = json.JSONEncoder(separators=(",", ":"))  # json.dumps with options makes one per call


def _head_slot(entry: Entry, crcs_sha256: bytes | None = None) -> bytes:
    data = entry.to_json()
    data["crcs"] = ""  # they stand in by their SHA-256
    data["crcs_sha256"] = (crcs_sha256 or hashlib.sha256(entry.crcs).digest()).hex()
    text = _HEAD_JSON.encode(data).encode()
    return text.ljust(_HEAD_SLOT - 1) + b"\n"


def read_head(path: str) -> tuple[Entry, bytes] | None:
    """The newest whole entry in a head file, with its crcs' SHA-256; None if neither slot holds one."""
    with open(path, "rb") as f:
        raw = f.read(2 * _HEAD_SLOT)
    best: tuple[Entry, bytes] | None = None
    for found in _parse_slots(raw):
        if found is not None and (best is None or found[0].seq > best[0].seq):
            best = found
    return best


def _parse_slots(raw: bytes) -> list[tuple[Entry, bytes] | None]:
    """Each of the two head slots in *raw*: its whole entry and crcs' SHA-256, or None."""
    slots: list[tuple[Entry, bytes] | None] = []
    for slot in (raw[:_HEAD_SLOT], raw[_HEAD_SLOT : 2 * _HEAD_SLOT]):
        try:
            data = json.loads(slot)
            crcs_sha256 = bytes.fromhex(data.pop("crcs_sha256"))
            entry = Entry.from_json(data)
        except (ValueError, KeyError, TypeError, AttributeError):
            slots.append(None)  # torn by a crash, empty, or not a head
            continue
        ok = hashlib.sha256(entry.message(crcs_sha256)).digest() == entry.hash
        slots.append((entry, crcs_sha256) if ok else None)
    return slots


# -- retention ------------------------------------------------------------


def archive_entries(db: apsw.Connection, archive: Path, first_id: int, last_id: int) -> Path | None:
    """Beside *archive*, the chain entries of the batches its rows (ids *first_id*..*last_id*) came from.

    Called by retention before the rows are deleted.  The database keeps its
    entries too (a few hundred bytes a batch), so it still verifies alone.
    """
    from .file_handler import atomic_write

    try:
        entries = _entries(db, "WHERE last_id >= ? AND first_id <= ? AND kind = 'batch' ORDER BY seq", (first_id, last_id))
    except apsw.SQLError:  # not sealed (the table is missing)
        return None
    if not entries:
        return None
    path = archive.with_name(archive.name + ".seal")
    atomic_write(path, "".join(json.dumps(e.to_json()) + "\n" for e in entries))
    return path


# -- verify ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing verify found wrong: its kind, where, and what."""

    kind: str  # changed, deleted, inserted, reordered, truncated, dropped batch, entry, signature, head
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclasses.dataclass
class Report:
    """What verify checked and found."""

    findings: list[Finding] = dataclasses.field(default_factory=list)
    batches: int = 0
    rows: int = 0
    archived_rows: int = 0
    periods: int = 0
    unsealed_before: int = 0  # rows from before sealing began (not covered)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, where: str, detail: str) -> None:
        self.findings.append(Finding(kind, where, detail))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "batches": self.batches,
            "rows": self.rows,
            "archived_rows": self.archived_rows,
            "periods": self.periods,
            "unsealed_before": self.unsealed_before,
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "notes": self.notes,
        }


def _check_signature(public: bytes, entry: Entry, message: bytes | None = None) -> bool:
    from cryptography.exceptions import InvalidSignature

    key = _ed25519().Ed25519PublicKey.from_public_bytes(public)
    try:
        key.verify(entry.sig, message if message is not None else entry.message())
    except InvalidSignature:
        return False
    return True


def _ranges(ids: list[int]) -> str:
    """1, 2, 3, 7 -> '1..3, 7' (at most 8 ranges shown)."""
    parts: list[str] = []
    start = prev = None
    for i in sorted(ids):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}" if start == prev else f"{start}..{prev}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}..{prev}")
    shown = ", ".join(parts[:8])
    return shown + (f" and {len(parts) - 8} more ranges" if len(parts) > 8 else "")


def _archive_rows(
    archive_dir: str | os.PathLike[str], report: Report, db_id: str | None
) -> dict[int, tuple[tuple[Any, ...], str]]:
    """Every row archived from this database (by its db_id in the archive names), by id, with its archive."""
    from .retention import ARCHIVE_PATTERN, _decode_record, _record_row, iter_ndjson_gz, list_archives

    rows: dict[int, tuple[tuple[Any, ...], str]] = {}
    for path in list_archives(archive_dir):
        match = ARCHIVE_PATTERN.match(path.name)
        if match is not None and match["db"] and db_id and match["db"] != db_id:
            continue  # another database's archive: its ids are its own
        try:
            for record in iter_ndjson_gz(path, verify=False):
                row = _record_row(_decode_record(record), path)
                rows[row[0]] = (row, path.name)
        except Exception as err:
            report.add("changed", f"archive {path.name}", f"cannot be read as a janus archive ({err})")
    return rows


def _archive_entries(archive_dir: str | os.PathLike[str]) -> Iterator[tuple[str, Entry | None]]:
    for path in sorted(Path(archive_dir).glob("*.seal")):
        with open(path) as f:
            for line in f:
                try:
                    yield path.name, Entry.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    yield path.name, None


def verify(
    db_path: str | os.PathLike[str],
    verify_key: str,
    *,
    archives: str | os.PathLike[str] | None = None,
    head: str | os.PathLike[str] | None = None,
) -> Report:
    """Check the database's seal chain, its rows, and (with *archives*) the archived rows.

    *verify_key* is the hex public key ``janus-logs seal init`` printed.
    *head* defaults to ``<db>-seal.head``.  Raises ConfigError for a missing
    database or a malformed key; everything else is a finding in the report.
    """
    try:
        public0 = bytes.fromhex(verify_key.strip())
        if len(public0) != 32:
            raise ValueError
    except ValueError:
        raise ConfigError("the verification key must be 64 hex digits, as janus-logs seal init printed it") from None
    db_path = os.fspath(db_path)
    if not os.path.isfile(db_path):
        raise ConfigError(f"no database at {db_path!r}")
    db, _ = open_for_reading(db_path)  # on read-only media too
    try:
        return _Verifier(db, public0, report=Report()).run(
            archives=archives, head=os.fspath(head) if head is not None else head_path(db_path)
        )
    finally:
        db.close()


class _Verifier:
    def __init__(self, db: apsw.Connection, public0: bytes, report: Report) -> None:
        self.db = db
        self.public0 = public0
        self.report = report
        self.keys: dict[int, bytes] = {}  # key_no -> public key, as certified by the chain

    def run(self, *, archives: str | os.PathLike[str] | None, head: str) -> Report:
        report = self.report
        try:
            entries = _entries(self.db)
        except apsw.SQLError:
            report.add("entry", "database", "it has no seal chain (sealing was never on, or the table was dropped)")
            return report
        if not entries:
            report.add("entry", "database", "its seal chain is empty (dropped, or nothing was ever sealed)")
            return report
        good = self._chain(entries)
        self._head(head, entries)
        from ._schema import database_id

        archived = _archive_rows(archives, report, database_id(self.db)) if archives is not None else {}
        if archives is not None:
            self._archive_entries(archives, entries)
        self._rows([e for e in good if e.kind == "batch"], entries, archived)
        return report

    # -- the chain of entries

    def _chain(self, entries: list[Entry]) -> list[Entry]:
        """Check hashes, links, keys and signatures; return the entries whose rows are worth checking."""
        report = self.report
        start = entries[0]
        if start.seq != 0 or start.kind != "start":
            report.add("dropped batch", "entry 0", "the chain's first entry is missing or changed")
        elif start.digest != self.public0 or not _check_signature(self.public0, start):
            report.add("signature", "entry 0", "the chain was not started by this verification key")
        else:
            self.keys[0] = self.public0
            self.report.unsealed_before = start.n_rows
        current_no, current = 0, self.public0
        prev: Entry | None = None
        good: list[Entry] = []
        gaps: list[tuple[int, int]] = []  # (seq before, seq after) of missing entries
        for entry in entries:
            if hashlib.sha256(entry.message()).digest() != entry.hash:
                report.add("changed", entry.describe(), "the chain entry was edited (its hash does not match)")
                prev = entry
                continue
            if prev is not None:
                if entry.seq != prev.seq + 1:
                    gaps.append((prev.seq, entry.seq))
                elif entry.prev != prev.hash:
                    report.add("changed", entry.describe(), f"does not follow entry {prev.seq}: an entry was replaced")
            prev = entry
            if entry.kind == "key":
                if entry.key_no != current_no + 1 or not _check_signature(current, entry):
                    report.add(
                        "signature", f"key entry {entry.seq}",
                        f"period key {entry.key_no} is not certified by period key {current_no}",
                    )
                    continue
                current_no, current = entry.key_no, entry.digest
                self.keys[current_no] = current
                self.report.periods += 1
            elif entry.kind == "batch":
                if entry.key_no != current_no:
                    report.add("signature", entry.describe(), f"claims period {entry.key_no} inside period {current_no}")
                good.append(entry)
        for before, after in gaps:
            # The ids between the batches on either side of the gap.
            low = max((e.last_id for e in entries if e.kind == "batch" and e.seq < before + 1), default=self.report.unsealed_before and entries[0].last_id)
            high = min((e.first_id for e in entries if e.kind == "batch" and e.seq > after - 1), default=None)
            gap = f"entries {before + 1}..{after - 1}" if after - before > 2 else f"entry {before + 1}"
            ids = f"ids {low + 1}..{high - 1}" if high is not None else f"ids after {low}"
            report.add("dropped batch", gap, f"missing from the chain ({ids})")
        last = entries[-1]
        if last.kind == "batch" and last.key_no in self.keys and not _check_signature(self.keys[last.key_no], last):
            report.add("signature", last.describe(), "the newest entry's signature is wrong")
        self.report.batches = len(good)
        return good

    def _head(self, path: str, entries: list[Entry]) -> None:
        report = self.report
        try:
            found = read_head(path)
        except FileNotFoundError:
            report.add("truncated", path, "the exported seal head is missing: a truncated tail cannot be ruled out")
            return
        except OSError as err:
            report.add("truncated", path, f"the exported seal head cannot be read ({err.strerror})")
            return
        if found is None:
            report.add("signature", path, "the exported seal head holds no whole, self-consistent entry")
            return
        head, crcs_sha256 = found
        public = self.keys.get(head.key_no - 1 if head.kind == "key" else head.key_no)
        last = entries[-1]
        if public is not None and not _check_signature(public, head, head.message(crcs_sha256)):
            report.add("signature", path, "the exported seal head is not signed by a key of this chain")
            return
        if head.seq > last.seq:
            # With the periods after the database's end gone too, the head's
            # key is not in the chain: it cannot be checked, but either the
            # database lost its tail or the head was forged; both are wrong.
            report.add(
                "truncated", f"entries {last.seq + 1}..{head.seq}",
                f"the database ends at entry {last.seq} but was sealed up to entry {head.seq} "
                f"(ids up to {head.last_id}, period {head.key_no}): its newest batches were removed",
            )
            return
        if public is None:
            report.add("signature", path, "the exported seal head names a period key this chain never certified")
            return
        same = next((e for e in entries if e.seq == head.seq), None)
        if same is None or same.hash != head.hash:
            report.add("changed", f"entry {head.seq}", "differs from the exported seal head: the chain was rewritten")

    def _archive_entries(self, archives: str | os.PathLike[str], entries: list[Entry]) -> None:
        by_seq = {e.seq: e for e in entries}
        for name, entry in _archive_entries(archives):
            if entry is None or hashlib.sha256(entry.message()).digest() != by_seq.get(entry.seq, entry).hash:
                where = f"archive {name}" + (f" entry {entry.seq}" if entry else "")
                self.report.add("changed", where, "the archive's copy of a chain entry differs from the database's")

    # -- the rows

    def _rows(self, batches: list[Entry], entries: list[Entry], archived: dict[int, tuple[tuple[Any, ...], str]]) -> None:
        reader = _RowReader(self.db)
        report = self.report
        bad: list[Entry] = []
        present = 0
        native = reader.native
        if native and batches:
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS seal_batches(seq INTEGER PRIMARY KEY, first_id, last_id)")
            self.db.execute("DELETE FROM temp.seal_batches")
            with self.db:
                self.db.executemany(
                    "INSERT INTO temp.seal_batches VALUES (?, ?, ?)", [(e.seq, e.first_id, e.last_id) for e in batches]
                )
            by_seq = {e.seq: e for e in batches}
            seen: set[int] = set()
            cols = ", ".join(f"l.{c}" for c in ('"id"', *(f'"{c}"' for c in COLUMNS)))
            sql = (
                f"SELECT b.seq, janus_seal_rows({cols}) FROM temp.seal_batches b "
                f'JOIN "{TABLE}" l ON l.id BETWEEN b.first_id AND b.last_id GROUP BY b.seq'
            )
            try:
                for seq, blob in self.db.execute(sql):
                    entry = by_seq[seq]
                    seen.add(seq)
                    data, crcs = _split(blob)
                    present += len(crcs)
                    if len(crcs) != entry.n_rows or hashlib.sha256(data).digest() != entry.digest:
                        bad.append(entry)
                bad.extend(e for e in batches if e.seq not in seen)  # no row left at all
                bad.sort(key=lambda e: e.seq)
            except apsw.SQLError as err:
                if "not in id order" not in str(err):
                    raise
                present, bad = 0, list(batches)  # read each batch in id order, in Python
                native = False
        else:
            bad = list(batches)
        for entry in bad:
            present += self._diagnose(reader, entry, archived, count_present=not native)
        report.rows = present
        self._unsealed(entries, batches, present)

    def _diagnose(
        self, reader: _RowReader, entry: Entry, archived: dict[int, tuple[tuple[Any, ...], str]], *, count_present: bool
    ) -> int:
        """Check one batch row by row (database rows and archived ones); say what changed."""
        report = self.report
        rows = {row[0]: (row, None) for row in reader.fetch(entry.first_id, entry.last_id)}
        db_count = len(rows)
        from_archive = 0
        for i in range(entry.first_id, entry.last_id + 1):
            if i not in rows and i in archived:
                rows[i] = archived[i]
                from_archive += 1
        ordered = [rows[i] for i in sorted(rows)]
        data, crcs = encode_rows(row for row, _ in ordered)
        if len(ordered) == entry.n_rows and hashlib.sha256(data).digest() == entry.digest:
            report.archived_rows += from_archive
            return db_count if count_present else 0
        expected = dict(zip(range(entry.first_id, entry.last_id + 1), struct.unpack(f">{entry.n_rows}I", entry.crcs)))
        actual = {row[0]: (crc, source) for (row, source), crc in zip(ordered, crcs)}
        where = entry.describe()
        deleted = [i for i in expected if i not in actual]
        inserted = [i for i in actual if i not in expected]
        wrong = {i: actual[i] for i in expected if i in actual and actual[i][0] != expected[i]}
        moved = [i for i, (crc, _) in wrong.items() if crc in {expected[j] for j in wrong if j != i}]
        changed = [i for i in wrong if i not in moved]
        if deleted:
            hint = "" if archived else " (if retention pruned them, pass the archive directory)"
            report.add("deleted", where, f"rows {_ranges(deleted)} are gone{hint}")
        if inserted:
            report.add("inserted", where, f"rows {_ranges(inserted)} were not in the sealed batch")
        if moved:
            report.add("reordered", where, f"rows {_ranges(moved)} hold each other's records (ids swapped)")
        for source, ids in _by_source(changed, wrong).items():
            report.add("changed", where + (f" in archive {source}" if source else ""), f"rows {_ranges(ids)} were edited")
        if not (deleted or inserted or moved or changed):
            report.add("changed", where, "the rows differ from what was sealed (which row is not known)")
        return db_count if count_present else 0

    def _unsealed(self, entries: list[Entry], batches: list[Entry], present: int) -> None:
        """Rows in the database that no batch covers: inserted after the fact."""
        start = entries[0] if entries[0].kind == "start" else None
        boundary = start.last_id if start else 0
        total = self.db.execute(f'SELECT count(*) FROM "{TABLE}" WHERE id > ?', (boundary,)).fetchall()[0][0]
        if total > present:
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS seal_cover(first_id INTEGER PRIMARY KEY, last_id)")
            self.db.execute("DELETE FROM temp.seal_cover")
            with self.db:
                self.db.executemany(
                    "INSERT OR IGNORE INTO temp.seal_cover VALUES (?, ?)", [(e.first_id, e.last_id) for e in batches]
                )
            ids = [
                r[0]
                for r in self.db.execute(
                    f'SELECT id FROM "{TABLE}" l WHERE id > ? AND NOT EXISTS (SELECT 1 FROM temp.seal_cover c '
                    "WHERE c.first_id = (SELECT max(first_id) FROM temp.seal_cover WHERE first_id <= l.id) "
                    "AND l.id <= c.last_id) LIMIT 10000",
                    (boundary,),
                )
            ]
            if ids:
                self.report.add("inserted", "outside every sealed batch", f"rows {_ranges(ids)} were never sealed")
        if start is not None:
            before = self.db.execute(f'SELECT count(*) FROM "{TABLE}" WHERE id <= ?', (boundary,)).fetchall()[0][0]
            if before > start.n_rows:
                self.report.add(
                    "inserted", f"ids up to {boundary}",
                    f"{before} rows from before sealing began, {start.n_rows} when it began",
                )


def _by_source(ids: list[int], wrong: dict[int, tuple[int, str | None]]) -> dict[str | None, list[int]]:
    out: dict[str | None, list[int]] = {}
    for i in ids:
        out.setdefault(wrong[i][1], []).append(i)
    return out
