"""janus-logs serve over HTTP: the bind rules, the token, read-only endpoints, the API and /metrics."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from _webserver import Served, file_digest, run_serve
from conftest import BASE_TS, make_row, open_writer, write_batch

pytestmark = pytest.mark.slow

ROWS = [
    make_row("payment failed for order 7", ts=BASE_TS + 1, level=40, logger="svc.pay", user_id="u1", request_id="r-1",
             exception="Traceback (most recent call last):\nValueError: card", fields='{"order": 7}'),
    make_row("user logged in", ts=BASE_TS + 2, level=20, logger="svc.api", user_id="u2", request_id="r-2", trace_id="t" * 32),
    make_row("slow query 900 ms", ts=BASE_TS + 3, level=30, logger="svc.db", request_id="r-2"),
    make_row("cache miss", ts=BASE_TS + 4, level=10, logger="svc.cache"),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "app.db"
    writer = open_writer(path)
    try:
        write_batch(writer, ROWS)
    finally:
        writer.close()
    return path


@pytest.fixture(scope="module")
def served(db: Path) -> Iterator[Served]:
    before = file_digest(db)
    server = Served(db)
    yield server
    server.stop()
    assert before == file_digest(db), "serving changed the database"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    token = secrets.token_urlsafe(32)
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path, token


@pytest.fixture(scope="module")
def guarded(db: Path, token_file: tuple[Path, str]) -> Iterator[tuple[Served, str]]:
    path, token = token_file
    server = Served(db, "--token-file", str(path))
    yield server, token
    server.stop()


def _first_screen(html: str) -> Any:
    """The JSON data block of the page, parsed."""
    start = html.index('<script type="application/json" id="first-screen">')
    body = html[html.index(">", start) + 1 : html.index("</script>", start)]
    return json.loads(body)



def get_json(app: Any, path: str, params: dict[str, str] | None = None) -> Any:
    """GET *path* from the ASGI *app* in this process; the JSON answer."""

    async def ask() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return (await client.get(path, params=params)).json()

    return anyio.run(ask)

class TestBind:
    def test_non_loopback_without_token_is_refused(self, db: Path) -> None:
        """--host 0.0.0.0 without --token-file exits 2 and says why, before listening."""
        done = run_serve("--db", str(db), "--host", "0.0.0.0", "--port", "0")
        assert (2, True, "") == (done.returncode, "without --token-file" in done.stderr, done.stdout)

    def test_ipv6_any_without_token_is_refused(self, db: Path) -> None:
        """'::' is no more private than 0.0.0.0."""
        done = run_serve("--db", str(db), "--host", "::", "--port", "0")
        assert (2, True) == (done.returncode, "without --token-file" in done.stderr)

    def test_short_token_is_refused(self, db: Path, tmp_path: Path) -> None:
        """A token a guess could find is refused with a way to make a good one."""
        weak = tmp_path / "token"
        weak.write_text("secret")
        done = run_serve("--db", str(db), "--token-file", str(weak), "--port", "0")
        assert (2, True) == (done.returncode, "token_urlsafe" in done.stderr)

    def test_missing_database_is_refused(self, tmp_path: Path) -> None:
        """serve on a path with no database is an error at start, not per request."""
        done = run_serve("--db", str(tmp_path / "none.db"), "--port", "0")
        assert (2, True) == (done.returncode, "no log database" in done.stderr)

    def test_non_loopback_with_token_serves(self, db: Path, token_file: tuple[Path, str]) -> None:
        """With a token, 0.0.0.0 is allowed, and still every request needs the token."""
        path, token = token_file
        server = Served(db, "--host", "0.0.0.0", "--token-file", str(path))
        try:
            url = server.url.replace("0.0.0.0", "127.0.0.1")
            without = httpx.get(url + "api/records").status_code
            with_token = httpx.get(url + "api/records", headers={"authorization": f"Bearer {token}"}).status_code
        finally:
            server.stop()
        assert (401, 200) == (without, with_token)


class TestToken:
    @pytest.mark.parametrize("path", ["", "api/records", "api/histogram", "api/record/1", "api/live", "metrics", "static/console.js"])
    def test_every_endpoint_needs_the_token(self, guarded: tuple[Served, str], path: str) -> None:
        """No token, a wrong token or a wrong cookie: 401, whatever the endpoint."""
        server, token = guarded
        answers = {
            httpx.get(server.url + path).status_code,
            httpx.get(server.url + path, headers={"authorization": "Bearer " + "x" * 43}).status_code,
            httpx.get(server.url + path, cookies={"janus_console_token": token[:-1]}).status_code,
        }
        assert {401} == answers

    def test_bearer_token_is_accepted(self, guarded: tuple[Served, str]) -> None:
        """Authorization: Bearer <token> opens the API (what Prometheus sends)."""
        server, token = guarded
        answer = httpx.get(server.url + "api/records", headers={"authorization": f"Bearer {token}"})
        assert (200, 4) == (answer.status_code, len(answer.json()["records"]))

    def test_token_in_address_becomes_a_cookie(self, guarded: tuple[Served, str]) -> None:
        """/?token= sets an HttpOnly, SameSite=Strict cookie and sends the browser to / without it."""
        server, token = guarded
        first = httpx.get(server.url, params={"token": token})
        cookie = first.headers.get("set-cookie", "")
        with httpx.Client(cookies=first.cookies) as client:
            then = client.get(server.url + "api/records").status_code
        assert (303, "/", True, True, 200) == (
            first.status_code,
            first.headers.get("location"),
            "HttpOnly" in cookie,
            "SameSite=strict" in cookie or "samesite=strict" in cookie.lower(),
            then,
        )


class TestReadOnly:
    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    @pytest.mark.parametrize("path", ["", "api/records", "api/record/1", "api/live", "metrics"])
    def test_no_endpoint_takes_a_write(self, served: Served, method: str, path: str) -> None:
        """Every method but GET/HEAD is 405, on every endpoint."""
        assert 405 == httpx.request(method, served.url + path).status_code

    def test_foreign_host_header_is_refused(self, served: Served) -> None:
        """Without a token, a Host other than loopback (DNS rebinding) gets nothing."""
        answer = httpx.get(served.url + "api/records", headers={"host": "evil.example:8765"})
        assert (421, False) == (answer.status_code, "payment" in answer.text)

    def test_security_headers(self, served: Served) -> None:
        """The page and the API carry a strict CSP and the no-sniff/no-frame headers."""
        headers = httpx.get(served.url).headers
        csp = headers["content-security-policy"]
        assert (True, True, True, False, "nosniff", "DENY") == (
            "default-src 'self'" in csp,
            "script-src 'self'" in csp,
            "require-trusted-types-for 'script'" in csp,
            "unsafe-inline" in csp,
            headers["x-content-type-options"],
            headers["x-frame-options"],
        )

    def test_page_has_no_inline_script(self, served: Served) -> None:
        """The page's only script is the packaged file; its first screen is a JSON data block, not script."""
        html = httpx.get(served.url).text
        assert (2, 1, 1) == (
            html.count("<script"),
            html.count('<script src="/static/console.js?v='),
            html.count('<script type="application/json" id="first-screen">'),
        )

    def test_first_screen_is_the_api_answers(self, served: Served) -> None:
        """The data in the page is what /api/records and /api/histogram answer for the same address."""
        params = {"level": "WARNING", "q": "payment OR slow"}
        page = _first_screen(httpx.get(served.url, params=params).text)
        records = httpx.get(served.url + "api/records", params=params).json()
        histogram = httpx.get(served.url + "api/histogram", params=params).json()
        for data in (page["records"], page["histogram"], records, histogram):
            data.pop("took_ms")
        assert ("q=payment+OR+slow&level=WARNING", records, histogram) == (
            page["selection"], page["records"], page["histogram"]
        )

    def test_head_of_the_page(self, served: Served) -> None:
        """HEAD / answers like GET /, without looking anything up."""
        answer = httpx.head(served.url)
        assert (200, b"", "text/html; charset=utf-8") == (answer.status_code, answer.content, answer.headers["content-type"])

    def test_assets_are_versioned_and_cached(self, served: Served) -> None:
        """The page names its assets by content hash, so they may be cached for good."""
        html = httpx.get(served.url).text
        name = html.split('<script src="/', 1)[1].split('"', 1)[0]
        answer = httpx.get(served.url + name)
        assert (200, "immutable", True) == (
            answer.status_code,
            answer.headers["cache-control"].rsplit(", ", 1)[-1],
            answer.headers["content-type"].startswith("text/javascript"),
        )


    def test_assets_are_gzipped_for_those_who_accept_it(self, served: Served) -> None:
        """With Accept-Encoding gzip the script comes gzipped (the same bytes unpacked); without, plain."""
        import gzip

        html = httpx.get(served.url).text
        url = served.url + html.split('<script src="/', 1)[1].split('"', 1)[0]
        packed = httpx.get(url, headers={"accept-encoding": "gzip"})
        plain = httpx.get(url, headers={"accept-encoding": "identity"})
        refused = httpx.get(url, headers={"accept-encoding": "br, gzip;q=0"})
        assert ("gzip", None, None, True, True) == (
            packed.headers.get("content-encoding"),
            plain.headers.get("content-encoding"),
            refused.headers.get("content-encoding"),
            packed.content == plain.content and len(packed.content) > 1000,  # httpx unpacks gzip
            int(packed.headers["content-length"]) < len(plain.content) // 2,
        )


class TestAPI:
    def test_records_newest_first(self, served: Served) -> None:
        """/api/records: the newest records first, with the cursor for the live view."""
        data = httpx.get(served.url + "api/records").json()
        assert ([4, 3, 2, 1], 4) == ([r["id"] for r in data["records"]], data["cursor"])

    def test_records_filters_and_query(self, served: Served) -> None:
        """The query language and the filters of LogStore.search."""
        get = lambda **p: [r["id"] for r in httpx.get(served.url + "api/records", params=p).json()["records"]]  # noqa: E731
        assert ([1], [2, 1], [3, 2], [2], [3], [1]) == (
            get(q='"payment failed"'),
            get(q="payment OR logged"),
            get(request="r-2"),
            get(trace="t" * 32),
            get(logger="svc.db"),
            get(level="ERROR", user="u1"),
        )

    def test_bad_input_is_a_400_with_a_reason(self, served: Served) -> None:
        """A bad time or level is a 400 naming the problem, never a 500."""
        bad_time = httpx.get(served.url + "api/records", params={"since": "soon"})
        bad_level = httpx.get(served.url + "api/records", params={"level": "LOUD"})
        bad_limit = httpx.get(served.url + "api/records", params={"limit": "many"})
        assert (400, 400, 400, True) == (
            bad_time.status_code,
            bad_level.status_code,
            bad_limit.status_code,
            "cannot read 'soon' as a time" in bad_time.json()["error"],
        )

    def test_record_with_neighbours(self, served: Served) -> None:
        """/api/record/{id}: every field, the exception, and the records around it in time."""
        data = httpx.get(served.url + "api/record/2").json()
        assert ("t" * 32, [1], [3, 4]) == (
            data["record"]["trace_id"],
            [r["id"] for r in data["before"]],
            [r["id"] for r in data["after"]],
        )

    def test_unknown_record_is_404(self, served: Served) -> None:
        """A record id that is not in the database is a 404 with a reason."""
        assert 404 == httpx.get(served.url + "api/record/999").status_code

    def test_histogram_counts_the_selection(self, served: Served) -> None:
        """/api/histogram: counts per bucket and level that add up to the selection."""
        data = httpx.get(served.url + "api/histogram", params={"level": "WARNING"}).json()
        totals: dict[str, int] = {}
        for bucket in data["buckets"]:
            for name, n in bucket["counts"].items():
                totals[name] = totals.get(name, 0) + n
        assert {"ERROR": 1, "WARNING": 1} == totals

    def test_histogram_of_a_big_database_covers_the_newest_records(self, tmp_path: Path) -> None:
        """Without since, a histogram counts the newest HISTOGRAM_RECENT_ROWS records and says
        from when; a user, agent or request id is counted whole."""
        from janus_utils.web import _app

        db = tmp_path / "big.db"
        writer = open_writer(db)
        try:
            write_batch(writer, [make_row("x", ts=BASE_TS + n * 10**9, user_id="u1" if n % 2 else None) for n in range(300)])
        finally:
            writer.close()
        app = _app.create_app(str(db), histogram_recent_rows=100)

        async def ask() -> tuple[Any, Any]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                recent = (await client.get("/api/histogram")).json()
                narrow = (await client.get("/api/histogram", params={"user": "u1"})).json()
            return recent, narrow

        recent, narrow = anyio.run(ask)
        total = lambda data: sum(sum(b["counts"].values()) for b in data["buckets"])  # noqa: E731
        assert (100, BASE_TS + 200 * 10**9, 150, None) == (
            total(recent), recent["recent_since"], total(narrow), narrow["recent_since"]
        )

    def test_histogram_of_the_newest_records_from_the_minute_counts(self, tmp_path: Path) -> None:
        """Without since, over more than 6 h, the newest records' histogram is the same whether
        their minutes are in the per-minute counts or not, and equals counting those rows."""
        from janus_utils import LogStore, _rollup
        from janus_utils.web import _app

        answers = []
        for advanced in (False, True):
            db = tmp_path / f"minutes-{advanced}.db"
            writer = open_writer(db)
            try:
                # One record every 2 minutes and a few seconds (partial minutes at the edges), over 10 h.
                write_batch(writer, [
                    make_row("x", ts=BASE_TS + n * 120 * 10**9 + (n * 7919 % 60) * 10**9, level=(10, 20, 30, 40)[n % 4])
                    for n in range(300)
                ])
                if advanced:
                    with writer:
                        _rollup.advance(writer)
            finally:
                writer.close()
            app = _app.create_app(str(db), histogram_recent_rows=100)

            data = get_json(app, "/api/histogram")
            with LogStore(db) as store:
                rows = store.histogram(data["bucket"], "level", after_id=200)
            expected = [{"ts": int(start.timestamp()) * 10**9, "counts": counts} for start, counts in rows]
            answers.append((data["bucket"], data["recent_since"], data["buckets"], data["buckets"] == expected))
        assert answers[0] == answers[1]
        assert ("5m", True, 100) == (
            answers[1][0], answers[1][3], sum(sum(b["counts"].values()) for b in answers[1][2])
        )

    def test_filtered_histogram_of_a_long_database_covers_the_newest_records(self, tmp_path: Path) -> None:
        """A level filter over a database of more than 6 h: the histogram covers the newest records'
        time, as unfiltered, and counts exactly the selection's records in it."""
        from janus_utils import LogStore
        from janus_utils.web import _app

        db = tmp_path / "long.db"
        writer = open_writer(db)
        try:
            write_batch(writer, [
                make_row("x", ts=BASE_TS + n * 120 * 10**9, level=(10, 20, 30, 40)[n % 4]) for n in range(300)
            ])
        finally:
            writer.close()
        app = _app.create_app(str(db), histogram_recent_rows=100)

        data = get_json(app, "/api/histogram", {"level": "WARNING"})
        with LogStore(db) as store:
            expected = len([r for r in store.search(level="WARNING", limit=1000) if r.id > 200])
        assert (BASE_TS + 200 * 120 * 10**9, expected, 50) == (
            data["recent_since"], sum(sum(b["counts"].values()) for b in data["buckets"]), expected
        )

    def test_live_stream_starts_with_hello(self, served: Served) -> None:
        """/api/live is a server-sent event stream that names its cursor first."""
        with httpx.stream("GET", served.url + "api/live", params={"cursor": "2"}) as stream:
            lines = []
            for line in stream.iter_lines():
                lines.append(line)
                if len(lines) >= 5:
                    break
        assert "event: hello" == lines[0]
        assert any(line.startswith("event: records") for line in lines)


HOSTILE_TEXT = (
    "</script><script>alert(1)</script>",
    "</SCRIPT ><script src=//evil.example/x.js></script>",
    "<!--<script>alert(2)//",
    "]]><![CDATA[ &lt; &amp; \u2028\u2029 \u202e \x00 \x1b[31m",
)


class TestFirstScreen:
    def test_hostile_log_text_stays_data(self, tmp_path: Path) -> None:
        """Records that try to end the page's JSON block cannot: the page parses to the same two
        script elements, no byte of the records reaches the HTML as markup, and the JSON gives
        back every character exactly."""
        from html.parser import HTMLParser

        db = tmp_path / "hostile.db"
        writer = open_writer(db)
        try:
            write_batch(writer, [
                make_row(text, ts=BASE_TS + n, logger=text, user_id=text, request_id=text, fields=json.dumps({text: text}))
                for n, text in enumerate(HOSTILE_TEXT)
            ])
        finally:
            writer.close()
        server = Served(db)
        try:
            html = httpx.get(server.url, params={"logger": HOSTILE_TEXT[0]}).text
            everything = httpx.get(server.url).text
        finally:
            server.stop()

        class Tags(HTMLParser):
            def __init__(self) -> None:
                super().__init__()
                self.scripts: list[dict[str, str | None]] = []

            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                if tag == "script":
                    self.scripts.append(dict(attrs))

        tags = Tags()
        tags.feed(everything)
        start = everything.index('id="first-screen">') + len('id="first-screen">')
        block = everything[start : everything.index("</script>", start)]
        shown = _first_screen(everything)["records"]["records"]
        assert (["/static/console.js", "application/json"], "", True) == (
            [(s.get("src") or "").split("?")[0] or s.get("type") for s in tags.scripts],
            "".join(ch for ch in block if ch in "<>&" or not ch.isascii()),
            set(HOSTILE_TEXT) == {r["message"] for r in shown} == {r["logger"] for r in shown} == {r["user_id"] for r in shown},
        )
        assert ("logger=%3C%2Fscript%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E", [HOSTILE_TEXT[0]]) == (
            _first_screen(html)["selection"], [r["message"] for r in _first_screen(html)["records"]["records"]]
        )


class TestMetrics:
    def test_scrape_parses_with_prometheus_client(self, served: Served) -> None:
        """/metrics is Prometheus text that prometheus_client's own parser reads."""
        text = httpx.get(served.url + "metrics").text
        families = {family.name: family for family in text_string_to_metric_families(text)}
        up = families["janus_database_up"].samples[0].value
        sizes = {s.labels["file"]: s.value for s in families["janus_database_bytes"].samples}
        assert (1.0, True, True) == (up, sizes["db"] > 0, "janus_records_committed" in families)
