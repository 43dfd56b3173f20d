"""Secrets never reach any file: database, WAL, ring, or console — and clean records pass unchanged."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

import janus_utils as ju

# Every test here runs through both encoders of a log call (see conftest.log_call_path).
pytestmark = pytest.mark.usefixtures("log_call_path")

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAqSECRETPEMBODYzq8h1Xb3cd\n"
    "k2uWQbWSECRETPEMLINE2xYz\n"
    "-----END RSA PRIVATE KEY-----"
)


def _raise_with(secret_text: str) -> BaseException:
    try:
        raise RuntimeError(secret_text)
    except RuntimeError as err:
        return err


# (the secret that must vanish, the log call that carries it)
Case = tuple[str, Callable[[Any, logging.Logger], None]]

CASES: list[Case] = [
    # in the message
    ("hunter2-pw-a1", lambda log, std: log.info("login with password=hunter2-pw-a1 failed")),
    ("S3cr3t-pass-b2", lambda log, std: log.info('config {"password": "S3cr3t-pass-b2"} loaded')),
    ("tok-c3-9f8e7d6c5b4a", lambda log, std: log.info("refresh token: tok-c3-9f8e7d6c5b4a")),
    (JWT, lambda log, std: log.info(f"Authorization: Bearer {JWT}")),
    ("AKIAIOSFODNN7EXAMPLE", lambda log, std: log.info("aws key AKIAIOSFODNN7EXAMPLE in use")),
    ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     lambda log, std: log.info("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")),
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a",
     lambda log, std: log.info("pushing with ghp_16C7e42F292c6912E7710c838347Ae178B4a")),
    ("xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
     lambda log, std: log.info("slack xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy posted")),
    ("SECRETPEMBODY", lambda log, std: log.info("loaded key %s", PEM.replace("SECRETPEMBODYzq8h1Xb3cd", "SECRETPEMBODY"))),
    ("dbpass-d4", lambda log, std: log.info("connecting to postgresql://app:dbpass-d4@db.internal:5432/prod")),
    ("mongo-pw-e5", lambda log, std: log.info("mongodb://admin:mongo-pw-e5@mongo:27017/?authSource=admin")),
    ("odbc-pw-f6", lambda log, std: log.info("Server=tcp:sql.local;Database=x;User Id=sa;Password=odbc-pw-f6;")),
    ("4111 1111 1111 1111", lambda log, std: log.info("charged card 4111 1111 1111 1111 ok")),
    ("5500-0000-0000-0004", lambda log, std: log.info("card 5500-0000-0000-0004 declined")),
    ("378282246310005", lambda log, std: log.info("amex 378282246310005 used")),
    ("sess-g7-abcdef", lambda log, std: log.info("cookie: session=sess-g7-abcdef; Path=/")),
    ("apikey-h8-zzz", lambda log, std: log.info("calling with api_key=apikey-h8-zzz&q=1")),
    ("Basic dXNlcjpwYXNzLWk5", lambda log, std: log.info("Authorization: Basic dXNlcjpwYXNzLWk5")),
    # in printf arguments
    ("argpass-j10", lambda log, std: log.info("user %s set password=%s", "bob", "argpass-j10")),
    (JWT[:60], lambda log, std: log.info("got %s from idp", JWT)),
    ("4012888888881881", lambda log, std: log.info("card %s", "4012888888881881")),
    ("https://u:argurl-k11@", lambda log, std: log.info("fetching %s", "https://u:argurl-k11@example.com/x")),
    # in fields
    ("fieldpw-l12", lambda log, std: log.info("signup", password="fieldpw-l12")),
    ("fieldtok-m13", lambda log, std: log.info("oauth", access_token="fieldtok-m13")),
    ("fieldsecret-n14", lambda log, std: log.info("app", client_secret="fieldsecret-n14")),
    ("Bearer fieldauth-o15", lambda log, std: log.info("req", authorization="Bearer fieldauth-o15")),
    ("fieldcookie-p16", lambda log, std: log.info("req", cookie="sid=fieldcookie-p16")),
    ("fieldkey-q17", lambda log, std: log.info("cfg", private_key="fieldkey-q17")),
    ("dbpw-r18", lambda log, std: log.info("cfg", db_password="dbpw-r18")),
    ("freetext-s19", lambda log, std: log.info("req", note="retry with token=freetext-s19")),
    (JWT[-20:], lambda log, std: log.info("req", header=f"Bearer {JWT}")),
    # nested fields
    ("nested-t20", lambda log, std: log.info("payload", body={"user": {"password": "nested-t20"}})),
    ("nested-u21", lambda log, std: log.info("payload", items=[{"api_key": "nested-u21"}])),
    ("nested-v22", lambda log, std: log.info("payload", headers={"Set-Cookie": "id=nested-v22"})),
    ("nested-w23", lambda log, std: log.info("payload", cfg={"db": {"url": "mysql://root:nested-w23@h/db"}})),
    # bound and context fields
    ("bound-x24", lambda log, std: log.bind(secret="bound-x24").info("bound")),
    ("ctx-y25", lambda log, std: _in_context(log, session_id="ctx-y25")),
    # exception text
    ("exc-z26", lambda log, std: log.error("failed", exc_info=_raise_with("login password=exc-z26 rejected"))),
    (JWT[20:50], lambda log, std: log.error("failed", exc_info=_raise_with(f"bad jwt {JWT}"))),
    # stdlib extra= and stdlib messages
    ("stdextra-aa27", lambda log, std: std.info("legacy", extra={"password": "stdextra-aa27"})),
    ("stdmsg-bb28", lambda log, std: std.warning("legacy token=%s", "stdmsg-bb28")),
    ("stdexc-cc29", lambda log, std: std.error("legacy", exc_info=_raise_with("secret=stdexc-cc29"))),
    # bytes values, logger and thread names are part of the record too
    ("hunter2bytes", lambda log, std: log.info("raw", body=b"password=hunter2bytes&user=bob")),
    ("hunter3name", lambda log, std: ju.get_logger("auth.password=hunter3name").warning("named")),
    ("hunter4thread", lambda log, std: _in_thread("w password=hunter4thread", lambda: log.warning("t"))),
    # console-level records (WARNING+) must be clean on the console too
    ("console-dd30", lambda log, std: log.error("alert password=console-dd30")),
    ("console-ee31", lambda log, std: log.critical("alert", api_key="console-ee31")),
]


def _in_thread(name: str, call: Callable[[], None]) -> None:
    import threading

    t = threading.Thread(target=call, name=name)
    t.start()
    t.join()


def _in_context(log: Any, **fields: Any) -> None:
    with ju.log_context(**fields):
        log.warning("in context")


def raw_bytes(paths: list[Path]) -> bytes:
    return b"".join(p.read_bytes() for p in paths if p.exists())


@pytest.fixture
def run_corpus(tmp_path: Path) -> tuple[Path, bytes, str]:
    db = tmp_path / "audit.db"
    console = io.StringIO()
    ju.configure(db, console_stream=console, console_level="WARNING", capture_stdlib=True)
    std = logging.getLogger("legacy.std")
    log = ju.get_logger("corpus")
    try:
        for _, call in CASES:
            call(log, std)
        log.info("clean record after the corpus")
        assert ju.flush(timeout=30)
        # Read the files while the logger still runs: the WAL is not yet checkpointed away.
        files = [db, Path(f"{db}-wal"), Path(f"{db}-ring")]
        blob = raw_bytes(files)
    finally:
        ju.shutdown()
    return db, blob + raw_bytes([db, Path(f"{db}-wal"), Path(f"{db}-ring")]), console.getvalue()


class TestNoSecretReachesAFile:
    def test_corpus_is_large_enough(self) -> None:
        """The corpus holds at least 40 realistic secret-bearing log calls."""
        assert len(CASES) >= 40

    def test_no_secret_in_database_wal_ring_or_console(self, run_corpus: tuple[Path, bytes, str]) -> None:
        """After flush, no secret substring is in the raw database, WAL, ring file or console."""
        db, blob, console = run_corpus
        leaked = [s for s, _ in CASES if s.encode() in blob or s in console]
        assert [] == leaked
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            count = conn.execute("SELECT count(*) FROM logs").fetchall()[0][0]
            redacted = conn.execute("SELECT count(*) FROM logs WHERE message LIKE '%[REDACTED:%' "
                                    "OR fields LIKE '%[REDACTED:%' OR exception LIKE '%[REDACTED:%'").fetchall()[0][0]
        finally:
            conn.close()
        assert len(CASES) + 1 == count  # nothing was dropped on the way
        assert redacted >= len(CASES) - 2  # markers say what was removed
        assert "[REDACTED:" in console


CLEAN = [
    "order 8842 shipped to warehouse 12",
    "request 3f2b6c1e-8a4d-4c7b-9e21-5d0f7a9b1c33 done in 12 ms",
    "deployed commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "at 2026-11-27T07:20:47.123456Z epoch 1764228047123",
    "see https://example.com/docs?page=2 for details",
    "user bob@example.com signed up",
]


class TestCleanRecordsPassUnchanged:
    def test_clean_messages_are_stored_byte_for_byte(self, tmp_path: Path) -> None:
        """Records with no secret are stored exactly as logged."""
        db = tmp_path / "clean.db"
        ju.configure(db, console=False)
        try:
            for text in CLEAN:
                ju.get_logger("clean").info(text, ref=text)
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            got = conn.execute("SELECT message FROM logs ORDER BY id").fetchall()
        finally:
            conn.close()
        assert CLEAN == [m for (m,) in got]


class TestTruncationKeepsRedaction:
    def test_secret_at_the_cut_is_redacted_whole(self, tmp_path: Path) -> None:
        """A card number straddling the truncation point is redacted, not cut in half."""
        db = tmp_path / "cut.db"
        ju.configure(db, console=False, max_message_chars=100)
        try:
            ju.get_logger("cut").info("x" * 90 + " card 4111 1111 1111 1111 " + "y" * 1000)
            assert ju.flush(timeout=30)
        finally:
            ju.shutdown()
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            ((message,),) = conn.execute("SELECT message FROM logs").fetchall()
        finally:
            conn.close()
        assert "4111" not in message and "1111" not in message
        assert message.endswith("chars]")


class TestBeforeConfigure:
    def test_last_resort_output_is_redacted(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Before configure(), the stderr fallback redacts too."""
        ju.get_logger("early").warning("login failed password=hunter5early")
        err = capsys.readouterr().err
        assert "hunter5early" not in err and "[REDACTED:password]" in err
