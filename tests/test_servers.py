"""Real servers: Flask under gunicorn -w 4, FastAPI under uvicorn --workers 2, Django under gunicorn.

Each test writes a small app into a temp dir, starts the server as a
subprocess on a free loopback port with the recipe shipped in the package,
sends a bounded load (a few hundred requests, with 404/405/422/500 routes and
a worker SIGKILLed half way), stops the server and reads the database:

- one access record per answered request, with the response's request id;
- every error response's error_id stored exactly once, with method and path;
- the frameworks' own 404/405/422 answered as problem+json and logged;
- the servers' own records (boot, the killed worker, access records of
  requests no integration handled) captured;
- no record stored twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import pytest

import janus_utils as ju

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

ROUNDS = 50  # requests per round: see Load.plan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Server:
    argv: list[str]
    cwd: Path
    db: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "JANUS_LOG_DB": str(self.db), "PYTHONPATH": str(self.cwd), "NO_COLOR": "1"}
        env.pop("JANUS_UTILS_NO_SPEEDUPS", None)
        self.out = open(self.cwd / "server.out", "wb")
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
            try:
                if httpx.get(f"{self.url}/ok", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"server did not answer: {self.log()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.cwd / "server.out").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.out.close()
        # Nothing of the server may outlive the test.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Answer:
    method: str
    path: str
    status: int
    request_id: str
    sent_id: str | None
    body: dict | None


class Load:
    """A bounded mix of requests; a worker is SIGKILLed half way."""

    def __init__(self, server: Server, plan: list[tuple[str, str, int]], kill: callable) -> None:
        self.server, self.plan, self.kill = server, plan, kill
        self.answers: list[Answer] = []
        self.failed = 0

    def run(self, rounds: int = ROUNDS) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time: every worker serves
        with httpx.Client(base_url=self.server.url, timeout=10, limits=limits) as client:
            n = 0
            for r in range(rounds):
                if r == rounds // 2:
                    time.sleep(0.3)  # the last access records are pushed before the kill
                    self.kill()
                for method, path, _ in self.plan:
                    n += 1
                    sent = f"t-{n}" if n % 2 else None
                    headers = {"X-Request-ID": sent} if sent else {}
                    for _attempt in range(5):
                        try:
                            response = client.request(method, path, headers=headers)
                            break
                        except httpx.TransportError:  # the killed worker's connection
                            self.failed += 1
                            time.sleep(0.2)
                    else:
                        raise AssertionError("server stopped answering")
                    body = None
                    if response.headers.get("content-type", "").startswith("application/problem+json"):
                        body = response.json()
                    self.answers.append(
                        Answer(method, path, response.status_code, response.headers.get("x-request-id", ""), sent, body)
                    )


def read_db(db: Path) -> list[dict]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        cols = ["id", "ts", "level", "logger", "message", "request_id", "pid", "fields"]
        out = []
        for row in conn.execute(f"SELECT {', '.join(cols)} FROM logs ORDER BY id"):
            rec = dict(zip(cols, row))
            rec["fields"] = json.loads(rec["fields"]) if rec["fields"] else {}
            out.append(rec)
        return out
    finally:
        conn.close()


def check(load: Load, records: list[dict], plan: list[tuple[str, str, int]]) -> dict[str, int]:
    """The checks every server test makes; returns figures for the report."""
    expected = {(m, p): s for m, p, s in plan}
    for a in load.answers:
        assert expected[(a.method, a.path)] == a.status, (a, )
        if a.path.startswith("/plain"):  # no integration: nothing echoed
            a.request_id = a.sent_id or ""
            continue
        assert a.request_id, a
        if a.sent_id is not None:
            assert a.sent_id == a.request_id
    # one access record per answered request, with its request id
    access = [r for r in records if r["logger"] in ("janus.access", "gunicorn.access", "uvicorn.access")]
    by_id = Counter(r["request_id"] for r in access)
    uvicorn = "uvicorn" in " ".join(load.server.argv)
    for a in load.answers:
        if a.path.startswith("/plain") and (uvicorn or not a.sent_id):
            continue  # the server's record has the id only from the request header, and uvicorn's not even that
        assert 1 == by_id[a.request_id], (a, by_id[a.request_id])
    # every error response's error_id once, with method and path
    errors = Counter(r["fields"].get("error_id") for r in records if r["fields"].get("error_id"))
    error_answers = [a for a in load.answers if a.status >= 400]
    for a in error_answers:
        assert a.body is not None, a
        eid = a.body["error_id"]
        assert 1 == errors[eid], (a, errors[eid])
        (rec,) = [r for r in records if r["fields"].get("error_id") == eid]
        assert (a.method, a.path, a.request_id) == (rec["fields"]["http_method"], rec["fields"]["http_path"], rec["request_id"])
    # no record stored twice
    keys = Counter((r["ts"], r["pid"], r["logger"], r["message"]) for r in records)
    assert [] == [k for k, c in keys.items() if c > 1]
    return {
        "requests": len(load.answers),
        "retried": load.failed,
        "access records": len(access),
        "error responses": len(error_answers),
        "records": len(records),
    }


def kill_one(server: Server, match: str) -> callable:
    killed: list[int] = []

    def kill() -> None:
        assert server.proc is not None
        workers = [p for p in children(server.proc.pid) if match in cmdline(p)]
        assert workers, f"no worker found: {children(server.proc.pid)}"
        os.kill(workers[0], signal.SIGKILL)
        killed.append(workers[0])

    kill.killed = killed  # type: ignore[attr-defined]
    return kill


FLASK_APP = textwrap.dedent(
    """
    import flask
    import janus_utils as ju
    from janus_utils.error_handling import NotFound, handle_errors
    from janus_utils.integrations.flask import init_app

    app = flask.Flask(__name__)
    init_app(app)
    log = ju.get_logger("shop")

    @app.get("/ok")
    def ok():
        log.info("hello")
        return "ok"

    @app.get("/orders/<int:n>")
    @handle_errors
    def order(n):
        raise NotFound("no such order", details={"order_id": n})

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    def plain(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain"]

    def application(environ, start_response):
        # /plain bypasses the integration: gunicorn's own access record covers it.
        if environ["PATH_INFO"].startswith("/plain"):
            return plain(environ, start_response)
        return app(environ, start_response)
    """
)

WSGI_PLAN = [
    ("GET", "/ok", 200),
    ("GET", "/orders/5", 404),
    ("GET", "/no-such-route", 404),
    ("POST", "/ok", 405),
    ("GET", "/boom", 500),
    ("GET", "/plain", 200),
]


def test_flask_under_gunicorn_4_workers(tmp_path: Path) -> None:
    """Flask + init_app under gunicorn -w 4 with the gunicorn_conf recipe."""
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    (tmp_path / "shopapp.py").write_text(FLASK_APP)
    server = Server(
        [sys.executable, "-m", "gunicorn", "-c", "python:janus_utils.integrations.gunicorn_conf",
         "-w", "4", "-b", "127.0.0.1:{port}", "shopapp:application"],
        tmp_path, tmp_path / "logs.db",
    )
    kill = kill_one(server, "gunicorn")
    server.start()
    try:
        load = Load(server, WSGI_PLAN, kill)
        load.run()
    finally:
        server.stop()
    records = read_db(server.db)
    figures = check(load, records, WSGI_PLAN)
    gunicorn = [r["message"] for r in records if r["logger"] == "gunicorn.error"]
    assert sum("Booting worker" in m for m in gunicorn) >= 5, gunicorn  # 4, and the one replacing the killed
    assert any(f"(pid:{kill.killed[0]}) was sent SIGKILL" in m for m in gunicorn), gunicorn  # type: ignore[attr-defined]
    plain = [r for r in records if r["logger"] == "gunicorn.access"]
    assert len(plain) == sum(a.path == "/plain" for a in load.answers)
    assert all(r["fields"]["http_path"] == "/plain" and r["fields"]["http_status"] == 200 for r in plain)
    pids = {r["pid"] for r in records if r["logger"] == "janus.access"}
    assert len(pids) >= 4
    print("flask/gunicorn", figures, {"gunicorn.error": len(gunicorn), "gunicorn.access": len(plain), "worker pids": len(pids)})


FASTAPI_APP = textwrap.dedent(
    """
    import fastapi
    import janus_utils as ju
    from janus_utils.error_handling import NotFound, handle_errors
    from janus_utils.integrations.starlette import install

    app = fastapi.FastAPI()
    install(app)
    log = ju.get_logger("api")

    @app.get("/ok")
    async def ok():
        log.info("hello")
        return {"ok": True}

    @app.get("/items/{n}")
    async def item(n: int):
        if n == 0:
            raise fastapi.HTTPException(status_code=404, detail="no item 0")
        return {"n": n}

    @app.get("/orders/{n}")
    @handle_errors
    async def order(n: int):
        raise NotFound("no such order", details={"order_id": n})

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    async def plain(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"plain"})

    async def application(scope, receive, send):
        # /plain bypasses the integration: uvicorn's own access record covers it.
        if scope["type"] == "http" and scope["path"].startswith("/plain"):
            return await plain(scope, receive, send)
        return await app(scope, receive, send)
    """
)

ASGI_PLAN = [
    ("GET", "/ok", 200),
    ("GET", "/items/0", 404),
    ("GET", "/items/abc", 422),
    ("GET", "/orders/5", 404),
    ("GET", "/no-such-route", 404),
    ("POST", "/ok", 405),
    ("GET", "/boom", 500),
    ("GET", "/plain", 200),
]


def _started_pids(records: list[dict]) -> set[int]:
    """The pids of the uvicorn workers whose "Started server process" record is stored."""
    return {
        r["pid"] for r in records if r["logger"].startswith("uvicorn.error") and "Started server process" in r["message"]
    }


def test_fastapi_under_uvicorn_2_workers(tmp_path: Path) -> None:
    """FastAPI + install() under uvicorn --workers 2 with the shipped --log-config file."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from janus_utils.integrations import UVICORN_LOG_CONFIG

    (tmp_path / "apiapp.py").write_text(FASTAPI_APP)
    server = Server(
        [sys.executable, "-m", "uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", "{port}",
         "--log-config", UVICORN_LOG_CONFIG, "apiapp:application"],
        tmp_path, tmp_path / "logs.db",
    )
    kill = kill_one(server, "spawn_main")
    server.start()
    try:
        load = Load(server, ASGI_PLAN, kill)
        load.run(rounds=40)
        # uvicorn's supervisor restarts the killed worker on its own schedule, which
        # the load may outrun: wait for the replacement's start record before stopping.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_started_pids(read_db(server.db))) < 3:
            time.sleep(0.2)
    finally:
        server.stop()
    records = read_db(server.db)
    figures = check(load, records, ASGI_PLAN)
    uvicorn = [r for r in records if r["logger"].startswith("uvicorn.error")]
    assert len(_started_pids(records)) >= 3, [r["message"] for r in uvicorn]  # 2 workers and the replacement
    assert any("Started parent process" in r["message"] for r in uvicorn)
    plain = [r for r in records if r["logger"] == "uvicorn.access"]
    assert len(plain) == sum(a.path == "/plain" for a in load.answers)
    assert all(r["fields"]["http_path"] == "/plain" for r in plain)
    assert not any("Exception in ASGI application" in r["message"] for r in uvicorn)
    print("fastapi/uvicorn", figures, {"uvicorn.error": len(uvicorn), "uvicorn.access": len(plain)})


DJANGO_SITE = textwrap.dedent(
    """
    import os
    from django.core.exceptions import PermissionDenied
    from django.http import HttpResponse, JsonResponse
    from django.urls import path
    from django.views import View
    import janus_utils as ju
    from janus_utils.error_handling import NotFound, handle_errors

    DEBUG = False
    ALLOWED_HOSTS = ["*"]
    SECRET_KEY = "test"
    ROOT_URLCONF = "djsite"
    INSTALLED_APPS = []
    MIDDLEWARE = ["janus_utils.integrations.django.JanusMiddleware"]
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"janus": {"class": "janus_utils.JanusHandler", "db_path": os.environ["JANUS_LOG_DB"]}},
        "root": {"handlers": ["janus"], "level": "INFO"},
        "loggers": {"django.request": {"level": "ERROR"}},
    }

    def ok(request):
        ju.get_logger("site").info("hello")
        return HttpResponse("ok")

    @handle_errors
    def order(request, n):
        raise NotFound("no such order", details={"order_id": n})

    def boom(request):
        raise RuntimeError("boom")

    class OnlyGet(View):
        def get(self, request):
            return JsonResponse({"ok": True})

    urlpatterns = [path("ok", ok), path("orders/<int:n>", order), path("boom", boom), path("only-get", OnlyGet.as_view())]
    handler404 = "janus_utils.integrations.django.handler404"
    handler500 = "janus_utils.integrations.django.handler500"
    """
)

DJANGO_WSGI = "import os\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'djsite')\nfrom django.core.wsgi import get_wsgi_application\napplication = get_wsgi_application()\n"

DJANGO_PLAN = [
    ("GET", "/ok", 200),
    ("GET", "/orders/5", 404),
    ("GET", "/no-such-route", 404),
    ("POST", "/only-get", 405),
    ("GET", "/boom", 500),
]


def test_django_under_gunicorn(tmp_path: Path) -> None:
    """Django with the middleware, handler404/500 and the LOGGING snippet, under gunicorn -w 2."""
    pytest.importorskip("django")
    pytest.importorskip("gunicorn")
    (tmp_path / "djsite.py").write_text(DJANGO_SITE)
    (tmp_path / "djwsgi.py").write_text(DJANGO_WSGI)
    server = Server(
        [sys.executable, "-m", "gunicorn", "-c", "python:janus_utils.integrations.gunicorn_conf",
         "-w", "2", "-b", "127.0.0.1:{port}", "djwsgi:application"],
        tmp_path, tmp_path / "logs.db",
    )
    kill = kill_one(server, "gunicorn")
    server.start()
    try:
        load = Load(server, DJANGO_PLAN, kill)
        load.run(rounds=40)
    finally:
        server.stop()
    records = read_db(server.db)
    figures = check(load, records, DJANGO_PLAN)
    assert not any(r["logger"] == "django.request" for r in records)
    gunicorn = [r["message"] for r in records if r["logger"] == "gunicorn.error"]
    assert any("was sent SIGKILL" in m for m in gunicorn)
    print("django/gunicorn", figures, {"gunicorn.error": len(gunicorn)})
