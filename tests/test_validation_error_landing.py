"""A password a FastAPI app refuses in a 422 lands nowhere a byte of a log record goes.

The README's FastAPI app, with a login route taking a pydantic body model, runs
under uvicorn (once through the C encoder, once through the Python path).  A
password too short for the model is posted; the app's own route also logs a
pydantic ValidationError the three ways users do (``log.exception`` around
``Model(**data)``, ``exc.errors()`` in the message, ``exc.errors()`` as a
field).  Then the password is looked for in every place, as
tests/test_secret_landing.py does for the secret corpus: the rows (message,
fields with ``cause_chain``, the traceback), the FTS index, the database and
WAL bytes, the ring file as the records were pushed, the console, ``janus-logs
search`` and the exports.  The rejected value of a field that is no secret
(the username) is kept.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import apsw
import pytest
from test_secret_landing import _cli, _exports, _fts_matches
from test_servers import Server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

PASSWORD = "hunter2xyz"  # too short for the model: refused with 422
SIGNUP_PIN = "83917"  # a pin whose rejected value pydantic's text form shows on a line after "pin"
USERNAME = "bobby-the-user"  # too long: refused too, and no secret, so kept

APP = textwrap.dedent(
    """
    import logging
    import os
    from pathlib import Path

    import fastapi
    import pydantic
    from pydantic import BaseModel, Field

    import janus_utils as ju
    from janus_utils.integrations.starlette import install

    DB = os.environ["JANUS_LOG_DB"]
    # commit_interval: the flusher commits when flush() asks, so the ring holds every record.
    ju.configure(db_path=DB, console_level="INFO", commit_interval=3600)
    app = fastapi.FastAPI()
    install(app)
    log = ju.get_logger("api.signup")


    class Login(BaseModel):
        username: str = Field(max_length=5)
        password: str = Field(min_length=12)


    class Signup(BaseModel):
        username: str = Field(max_length=5)
        pin: int


    @app.get("/ok")
    async def ok():
        return {"ok": True}


    @app.post("/login")
    async def login(body: Login):
        return {"ok": True}


    @app.post("/signup")
    async def signup(data: dict):
        try:
            Signup(**data)
        except pydantic.ValidationError as exc:
            log.exception("signup refused")
            log.warning("signup refused: %s", exc.errors())
            log.warning("signup refused, as JSON: %s", exc.json())
            log.warning("signup refused", errors=exc.errors())
            raise fastapi.HTTPException(status_code=400, detail="signup refused") from None
        return {"ok": True}


    @app.post("/snapshot")
    def snapshot():
        # Before the flush: the flusher zeroes what it has committed.
        Path(f"{DB}.ring-snapshot").write_bytes(Path(f"{DB}-ring").read_bytes())
        assert ju.flush(timeout=60)
        Path(f"{DB}.snapshot").write_bytes(
            b"".join(Path(f"{DB}{s}").read_bytes() for s in ("", "-wal") if Path(f"{DB}{s}").exists())
        )
        return {"ok": True}
    """
)


class Landing:
    """One run of the app under uvicorn, and every place its records went, read back."""

    def __init__(self, directory: Path, path: str) -> None:
        (directory / "apiapp.py").write_text(APP)
        prefix = ["env", "JANUS_UTILS_NO_SPEEDUPS=1"] if path == "python" else []
        server = Server(
            [*prefix, sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "apiapp:app"],
            directory,
            directory / "api-logs.db",
        )
        self.db = server.db
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                self.login = client.post("/login", json={"username": USERNAME, "password": PASSWORD})
                self.signup = client.post("/signup", json={"username": USERNAME, "pin": f"{SIGNUP_PIN}x"})
                assert 200 == client.post("/snapshot").status_code
        finally:
            server.stop()
        self.console = (directory / "server.out").read_text(errors="replace")
        self.snapshot = Path(f"{self.db}.snapshot").read_bytes()
        self.db_after = self.db.read_bytes()
        self.ring = Path(f"{self.db}.ring-snapshot").read_bytes()
        conn = apsw.Connection(str(self.db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            self.rows = conn.execute("SELECT * FROM logs ORDER BY id").fetchall()
            self.fts = {needle: _fts_matches(conn, needle) for needle in (PASSWORD, SIGNUP_PIN, USERNAME)}
        finally:
            conn.close()
        self.row_text = "\n".join(repr(row) for row in self.rows)
        self.search = {
            needle: _cli("search", "--db", str(self.db), "--no-pager", "--json", needle)
            for needle in (PASSWORD, SIGNUP_PIN, USERNAME)
        }
        self.export = _exports(self.db, directory)

    def places(self, needle: str) -> list[str]:
        """The places *needle* was found in."""
        data = needle.encode()
        found = {
            "rows": needle in self.row_text,
            "fts": self.fts[needle] > 0,
            "db_wal_bytes": data in self.snapshot or data in self.db_after,
            "ring_bytes": data in self.ring,
            "console": needle in self.console,
            "search": needle in self.search[needle].stdout,
            "export": needle in self.export,
        }
        return [place for place, hit in found.items() if hit]


@pytest.fixture(scope="module")
def landings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Landing]:
    """The app run once per encoder."""
    return {path: Landing(tmp_path_factory.mktemp(f"pydleak-{path}"), path) for path in ("c", "python")}


@pytest.fixture(params=["c", "python"])
def landing(request: pytest.FixtureRequest, landings: dict[str, Landing]) -> Landing:
    return landings[request.param]


class TestRefusedPasswordLandsNowhere:
    def test_the_422_names_the_field_and_the_reason_only(self, landing: Landing) -> None:
        """The client learns which fields and why, not the values it sent."""
        assert 422 == landing.login.status_code
        body = landing.login.json()
        assert ["body.password", "body.username"] == sorted(error["field"] for error in body["errors"])
        assert PASSWORD not in landing.login.text
        assert USERNAME not in landing.login.text

    def test_the_logged_error_keeps_type_loc_and_msg(self, landing: Landing) -> None:
        """The record's cause chain still says what was refused: type, loc and msg, the input redacted."""
        (fields,) = [json.loads(row_fields) for row_fields in _column(landing, "fields")
                     if row_fields and "validation_error" in row_fields and "cause_chain" in row_fields]
        cause = fields["cause_chain"][1][1]
        assert "'loc': ('body', 'password')" in cause
        assert "'msg': 'String should have at least 12 characters'" in cause
        assert "'input': '[REDACTED:password]'" in cause

    def test_the_password_is_in_no_place(self, landing: Landing) -> None:
        """Rows (cause_chain, traceback), FTS index, database and WAL, ring, console, search, export."""
        assert [] == landing.places(PASSWORD)

    def test_a_pin_logged_by_the_app_is_in_no_place(self, landing: Landing) -> None:
        """log.exception, exc.errors() and exc.json() in the message, exc.errors() as a field: none keeps the pin."""
        assert 400 == landing.signup.status_code
        assert [] == landing.places(SIGNUP_PIN)
        messages = _column(landing, "message")
        assert any("signup refused: [" in message and "[REDACTED:pin]" in message for message in messages)

    def test_the_refused_username_is_kept(self, landing: Landing) -> None:
        """A field that is no secret keeps its rejected value: it says why the request was refused."""
        assert {"rows", "fts", "search", "export"} <= set(landing.places(USERNAME))


def _column(landing: Landing, name: str) -> list[str]:
    conn = apsw.Connection(str(landing.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return [value for (value,) in conn.execute(f'SELECT "{name}" FROM logs ORDER BY id')]
    finally:
        conn.close()

