"""The console in a real browser: Debian's chromium, driven by Playwright, against janus-logs serve.

Every test looks at the page a person would see: rows in the table, the
record view, the filters, the histogram, the live view while another process
logs, and hostile records that must stay text.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _webserver import Served, file_digest
from conftest import BASE_TS, make_row, open_writer, write_batch
from janus_utils import LogStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium; .ci/run does)",
    ),
]

MINUTE = 60 * 1_000_000_000
LOGGERS = ("svc.api", "svc.db", "svc.pay", "worker.mail")
LEVELS = (10, 20, 20, 20, 30, 40)

HOSTILE = {
    "script": "<script>window.__pwned = 1</script> hostile-script",
    "img": '<img src=x onerror="window.__pwned = 2"> hostile-img',
    "link": '<a href="javascript:window.__pwned=3">click me</a> hostile-link',
    "ansi": "\x1b[31mRED\x1b[0m \x1b]0;owned title\x07 hostile-ansi",
    "rtl": "invoice \u202egnp.exe hostile-rtl",
    "big": "hostile-big " + "A" * 1_000_000 + " END",
    # The page's first screen is JSON inside a <script type="application/json">:
    # this one tries to close that block and open a script of its own.
    "close": "</script><script>window.__pwned = 7; alert(7)</script><!--<script> hostile-close \u2028 & ]]>",
}


def _seeded_rows() -> list[tuple[Any, ...]]:
    rows = []
    for n in range(300):
        level = LEVELS[n % len(LEVELS)]
        logger = LOGGERS[n % len(LOGGERS)]
        message = "payment failed for order %d" % n if n % 10 == 3 else "request %d served" % n
        rows.append(make_row(
            message, ts=BASE_TS + n * MINUTE // 2, level=level, logger=logger,
            user_id=f"u{n % 7}", request_id=f"req-{n // 3}", agent_id="agent-7" if n % 11 == 0 else None,
            trace_id=f"{n // 5:032x}" if n % 3 != 1 else None, span_id=f"{n:016x}",
            fields=json.dumps({"order": n, "status": 500 if level >= 40 else 200}),
            exception="Traceback (most recent call last):\n  File \"pay.py\", line 9, in charge\nValueError: card declined"
            if level >= 40 else None,
        ))
    ts = BASE_TS + 300 * MINUTE // 2
    for i, text in enumerate(HOSTILE.values()):
        rows.append(make_row(
            text, ts=ts + i, level=40, logger="<b>svc.evil</b>", user_id="javascript:alert(1)",
            request_id='"><img src=x onerror=window.__pwned=4>', trace_id="\u202eecart",
            fields=json.dumps({"<i>key</i>": "<svg onload=window.__pwned=5>", "url": "javascript:alert(2)"}),
            exception="<script>window.__pwned=6</script>\n\x1b[2J cleared",
        ))
    return rows


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    db = tmp_path_factory.mktemp("console") / "seeded.db"
    writer = open_writer(db)
    try:
        write_batch(writer, _seeded_rows())
    finally:
        writer.close()
    before = file_digest(db)
    server = Served(db)
    yield server, db
    server.stop()
    assert before == file_digest(db), "the console changed the database"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A browser tab on the console that records dialogs, page errors and CSP violations."""

    def __init__(self, browser: Any, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective));"
        )
        self.url = url

    def open(self, query: str = "") -> Page:
        self.page.goto(self.url + query)
        self.loaded()
        return self

    def loaded(self) -> None:
        """Wait until the newest search has been answered and drawn."""
        self.page.wait_for_function("() => document.getElementById('status').textContent.includes('newest')")

    def rows(self) -> list[dict[str, str]]:
        return self.page.eval_on_selector_all(
            "#records tbody tr[data-id]",
            """rows => rows.map(r => ({id: r.dataset.id, level: r.cells[1].textContent,
                logger: r.cells[2].textContent, message: r.cells[3].textContent,
                user: r.cells[4].textContent, request: r.cells[5].textContent}))""",
        )

    def wait_rows(self, predicate_js: str, timeout: float = 10_000) -> None:
        """Wait until every row satisfies *predicate_js* (a function of the row) and there is one."""
        self.page.wait_for_function(
            f"""() => {{ const rows = [...document.querySelectorAll('#records tbody tr[data-id]')];
                return rows.length > 0 && rows.every({predicate_js}); }}""",
            timeout=timeout,
        )

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def page(browser: Any, seeded: tuple[Served, Path]) -> Iterator[Page]:
    tab = Page(browser, seeded[0].url)
    yield tab
    assert ([], [], []) == (tab.dialogs, tab.errors, tab.page.evaluate("window.__violations"))
    tab.close()


class TestFirstScreen:
    def test_newest_records_and_histogram(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """The page opens on the newest 100 records, newest first, and a histogram of all of them."""
        page.open()
        page.page.wait_for_function("() => document.getElementById('histogram').dataset.total > 0")
        with LogStore(seeded[1]) as store:
            newest = [str(r.id) for r in store.search(limit=100)]
            total = store.count()
        ids = [row["id"] for row in page.rows()]
        bars = page.page.locator("#histogram g.bucket").count()
        assert (newest, str(total), True) == (ids, page.page.get_attribute("#histogram", "data-total"), bars > 10)

    def test_first_screen_comes_inside_the_page(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """The page brings its first records and histogram (for the address's filters): no API request."""
        page.open("?level=WARNING&q=" + urllib.parse.quote("payment failed"))
        page.page.wait_for_function("() => performance.getEntriesByName('histogram-shown').length > 0")
        fetched = page.page.evaluate(
            "() => performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
            ".filter(p => p === '/api/records' || p === '/api/histogram')"
        )
        with LogStore(seeded[1]) as store:
            expected = [str(r.id) for r in store.search("payment failed", level="WARNING", limit=100)]
            total = store.count("payment failed", level="WARNING")
        shown = [row["id"] for row in page.rows()]
        left = page.page.evaluate("() => document.querySelectorAll('script[type=\"application/json\"]').length")
        assert ([], expected, str(total), 0) == (
            fetched, shown, page.page.get_attribute("#histogram", "data-total"), left
        )

    def test_a_selection_the_page_cannot_answer_asks_the_api(self, page: Page) -> None:
        """A bad since in the address: the page has no first screen for it, and the API says why."""
        page.page.goto(page.url + "?since=soonish")
        page.page.wait_for_selector("#notice.error")
        fetched = page.page.evaluate(
            "() => performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
            ".filter(p => p === '/api/records')"
        )
        assert (True, ["/api/records"]) == ("cannot read 'soonish' as a time" in page.page.text_content("#notice"), fetched)


class TestSearch:
    def test_typing_a_query_searches_as_you_type(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """Each keystroke (debounced) searches with LogStore's query language; the last one wins."""
        page.open()
        page.page.locator("#q").press_sequentially('"payment failed"', delay=30)
        page.wait_rows("r => r.cells[3].textContent.includes('payment failed')")
        page.loaded()
        with LogStore(seeded[1]) as store:
            expected = [str(r.id) for r in store.search('"payment failed"')]
        assert (expected, True) == ([row["id"] for row in page.rows()], "q=%22payment+failed%22" in page.page.url)

    def test_query_syntax_or_not(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """OR / NOT and prefixes behave as in janus-logs search."""
        page.open("?q=" + urllib.parse.quote("pay* OR served NOT request"))
        with LogStore(seeded[1]) as store:
            expected = [str(r.id) for r in store.search("pay* OR served NOT request")]
        assert expected == [row["id"] for row in page.rows()]

    def test_bad_time_says_what_is_wrong(self, page: Page) -> None:
        """A since the server cannot read shows its reason, not an empty table."""
        page.page.goto(page.url)
        page.loaded()
        page.page.fill("#since", "soonish")
        page.page.wait_for_selector("#notice.error")
        assert "cannot read 'soonish' as a time" in page.page.text_content("#notice")


class TestFilters:
    def test_level(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """The level select shows that level and above."""
        page.open()
        page.page.select_option("#level", "ERROR")
        page.wait_rows("r => ['ERROR', 'CRITICAL'].includes(r.cells[1].textContent)")
        page.loaded()
        with LogStore(seeded[1]) as store:
            expected = [str(r.id) for r in store.search(level="ERROR")]
        assert expected == [row["id"] for row in page.rows()]

    def test_logger_user_agent_request_and_time(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """Each text filter narrows the rows exactly as the same LogStore filter does."""
        since, until = "2023-11-14T22:30:00Z", "2023-11-14T23:30:00Z"
        page.open(f"?logger=svc.db&user=u3&since={since}&until={until}")
        with LogStore(seeded[1]) as store:
            expected = [str(r.id) for r in store.search(logger="svc.db", user_id="u3", since=since, until=until)]
            agent = [str(r.id) for r in store.search(agent_id="agent-7")]
            request = [str(r.id) for r in store.search(request_id="req-40")]
        got = [row["id"] for row in page.rows()]
        page.open("?agent=agent-7")
        got_agent = [row["id"] for row in page.rows()]
        page.open("?request=req-40")
        got_request = [row["id"] for row in page.rows()]
        assert (expected, agent, request, True) == (got, got_agent, got_request, len(expected) > 0)

    def test_histogram_bucket_narrows_the_time(self, page: Page) -> None:
        """A click on a histogram bar sets since/until to that bucket."""
        page.open()
        page.page.wait_for_function("() => document.getElementById('histogram').dataset.total > 0")
        page.page.locator("#histogram g.bucket").nth(3).click()
        page.page.wait_for_function("() => document.getElementById('since').value !== ''")
        page.loaded()
        since = page.page.input_value("#since")
        until = page.page.input_value("#until")
        times = page.page.eval_on_selector_all("#records tbody tr[data-id]", "rows => rows.map(r => Number(r.dataset.ts))")
        low = int(time.mktime(time.strptime(since[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone) * 10**9
        high = int(time.mktime(time.strptime(until[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone) * 10**9
        assert (True, True) == (len(times) > 0, all(low <= t < high for t in times))


class TestRecord:
    def test_opens_with_every_field_exception_and_neighbours(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """A click on a row shows every column, each JSON field, the traceback and the records around it."""
        page.open("?level=ERROR&logger=svc.db")
        target = page.rows()[1]["id"]
        page.page.click(f"#records tbody tr[data-id='{target}']")
        page.page.wait_for_selector(f"#detail[data-id='{target}']")
        with LogStore(seeded[1]) as store:
            record = store.get(int(target))
            assert record is not None
        shown = page.page.eval_on_selector_all(
            "#detail-fields dd", "dds => Object.fromEntries(dds.map(d => [d.dataset.field, d.textContent]))"
        )
        neighbours = page.page.eval_on_selector_all("#neighbours li", "lis => lis.map(l => [l.dataset.id, l.className])")
        assert (record.message, record.user_id, record.request_id, record.trace_id, str(record.fields["order"])) == (
            shown["message"], shown["user_id"], shown["request_id"], shown["trace_id"], shown["order"]
        )
        assert ({"time", "level", "logger", "span_id", "pid", "thread", "status"} <= set(shown), True) == (
            True, "ValueError: card declined" in page.page.text_content("#detail-exception")
        )
        ids = [int(i) for i, _ in neighbours]
        assert (11, [target], ids) == (
            len(neighbours), [i for i, c in neighbours if c == "self"], list(range(int(target) - 5, int(target) + 6))
        )
        assert f"open={target}" in page.page.url

    def test_address_reopens_a_record(self, page: Page) -> None:
        """?open=<id> opens that record on load; Escape closes it."""
        page.open("?open=10")
        page.page.wait_for_selector("#detail[data-id='10']")
        page.page.keyboard.press("Escape")
        page.page.wait_for_selector("#detail", state="hidden")
        assert "open=" not in page.page.url


class TestClickToFilter:
    def test_user_and_request_chips_in_the_table(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """A click on a user or request id filters on it ("what else happened in this request")."""
        page.open()
        page.page.locator("#records tbody tr[data-id] button[data-filter='user']").first.click()
        page.page.wait_for_function("() => document.getElementById('user').value !== ''")
        page.loaded()
        user = page.page.input_value("#user")
        users = {row["user"] for row in page.rows()}
        page.page.locator("#records tbody tr[data-id] button[data-filter='request']").first.click()
        page.page.wait_for_function("() => document.getElementById('request').value !== ''")
        page.loaded()
        request = page.page.input_value("#request")
        with LogStore(seeded[1]) as store:
            expected = [str(r.id) for r in store.search(user_id=user, request_id=request)]
        assert ({user}, expected) == (users, [row["id"] for row in page.rows()])

    def test_agent_and_trace_chips_in_the_record(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """In the record view, agent and trace ids filter too; a trace is searched an hour either side."""
        page.open("?agent=agent-7")
        row = next(r for r in page.rows() if (int(r["id"]) - 1) % 3 != 1)  # one with a trace id
        page.page.click(f"#records tbody tr[data-id='{row['id']}']")
        page.page.wait_for_selector(f"#detail[data-id='{row['id']}']")
        page.page.click("#detail-fields button[data-filter='trace']")
        page.page.wait_for_function("() => document.getElementById('trace').value !== ''")
        page.loaded()
        trace = page.page.input_value("#trace")
        with LogStore(seeded[1]) as store:
            expected = [str(r.id) for r in store.search(trace_id=trace, agent_id="agent-7")]
        got = [r["id"] for r in page.rows()]
        bounded = page.page.input_value("#since") != "" and page.page.input_value("#until") != ""
        page.page.click("#clear")
        page.loaded()
        page.page.click(f"#records tbody tr[data-id='{got[0]}']")
        page.page.wait_for_selector(f"#detail[data-id='{got[0]}']")
        page.page.click("#detail-fields button[data-filter='agent']")
        page.page.wait_for_function("() => document.getElementById('agent').value === 'agent-7'")
        assert (expected, True, True) == (got, bounded, len(expected) >= 1)


class TestHostileRecords:
    def test_every_hostile_record_is_text(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """<script>, <img onerror>, javascript: links, ANSI escapes, RTL overrides and a 1 MB message
        render as the characters they are: no element injected, no script run, no dialog."""
        page.open("?q=hostile*")
        rows = page.rows()
        markup = page.page.evaluate(
            """() => ({
                scripts: [...document.scripts].map(s => s.getAttribute('src').split('?')[0]),
                injected: document.querySelectorAll('main img, main a, main b, main i, main svg, main iframe, main script').length,
                pwned: window.__pwned === undefined ? null : window.__pwned,
                title: document.title,
                asked: performance.getEntriesByType('resource').filter(e => e.name.includes('/api/records')).length,
            })"""
        )
        messages = " ".join(row["message"] for row in rows)
        # asked 0: these rows came inside the page itself, as its first screen.
        assert ({"scripts": ["/static/console.js"], "injected": 0, "pwned": None, "title": "janus logs", "asked": 0}, 7) == (
            markup, len(rows)
        )
        assert all(text in messages for text in (
            "<script>window.__pwned = 1</script>",
            '<img src=x onerror="window.__pwned = 2">',
            '<a href="javascript:window.__pwned=3">',
            "\\x1b[31mRED\\x1b[0m \\x1b]0;owned title\\x07",  # ESC and BEL as visible escapes
            "invoice <U+202E>gnp.exe",  # the override is shown, not obeyed
            "… (1,000,016 characters)",
            "</script><script>window.__pwned = 7; alert(7)</script><!--<script> hostile-close",
        ))
        assert {"<b>svc.evil</b>"} == {row["logger"] for row in rows}
        assert {"javascript:alert(1)"} == {row["user"] for row in rows}

    def test_hostile_record_view(self, page: Page, seeded: tuple[Served, Path]) -> None:
        """The record view shows fields, keys and the traceback as text, the 1 MB message whole."""
        with LogStore(seeded[1]) as store:
            big = store.search("hostile\\-big", limit=1) or store.search('"hostile-big"', limit=1)
        page.open(f"?open={big[0].id}")
        page.page.wait_for_selector(f"#detail[data-id='{big[0].id}']")
        view = page.page.evaluate(
            """() => ({
                message: document.querySelector("#detail-fields dd[data-field='message']").textContent.length,
                key: document.querySelector("#detail-fields dd[data-field='<i>key</i>']").textContent,
                trace: document.querySelector("#detail-fields dd[data-field='trace_id']").textContent,
                exception: document.getElementById('detail-exception').textContent,
                injected: document.querySelectorAll('#detail img, #detail svg, #detail script, #detail i, #detail a').length,
            })"""
        )
        assert (len(HOSTILE["big"]), "<svg onload=window.__pwned=5>", "<U+202E>ecart", 0) == (
            view["message"], view["key"], view["trace"], view["injected"]
        )
        assert "<script>window.__pwned=6</script>\n\\x1b[2J cleared" == view["exception"]


# ---------------------------------------------------------------- the live view
LOGGER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import janus_utils as ju
    ju.configure(sys.argv[1], console=False)
    log = ju.get_logger("svc.live")
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "log":
            log.warning(arg, user_id="u-live")
        elif command == "flood":
            for i in range(int(arg)):
                log.info("flood record %d", i)
        ju.flush()
        print("done", flush=True)
    ju.shutdown()
    """
)


class Logger:
    """Another process that logs into the database on request."""

    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOGGER_SCRIPT, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert "ready" == self.process.stdout.readline().strip()  # type: ignore[union-attr]

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        assert "done" == self.process.stdout.readline().strip()  # type: ignore[union-attr]

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Logger]]:
    db = tmp_path_factory.mktemp("live") / "live.db"
    writer = open_writer(db)
    try:
        write_batch(writer, [make_row(f"before {n}", ts=time.time_ns() - 10**9 + n) for n in range(20)])
    finally:
        writer.close()
    logger = Logger(db)
    server = Served(db)
    yield server, logger
    server.stop()
    logger.close()


class TestLive:
    def test_follows_another_process_within_a_second(self, browser: Any, live: tuple[Served, Logger]) -> None:
        """Records another process logs appear at the top without a reload, each well within a second."""
        server, logger = live
        tab = Page(browser, server.url).open()
        try:
            latencies = []
            for n in range(5):
                token = f"live-token-{n}"
                logger.send(f"log {token}")
                tab.page.wait_for_function(
                    f"() => document.querySelector('#records tbody tr[data-id]').textContent.includes('{token}')", timeout=5000
                )
                latencies.append(tab.page.evaluate(
                    "() => { const r = document.querySelector('#records tbody tr[data-id]');"
                    " return Number(r.dataset.arrived) - Number(r.dataset.ts) / 1e6; }"
                ))
        finally:
            tab.close()
        assert statistics.median(latencies) < 1000, latencies

    def test_pause_and_resume(self, browser: Any, live: tuple[Served, Logger]) -> None:
        """Paused, nothing new arrives; resumed, what was committed meanwhile comes in."""
        server, logger = live
        tab = Page(browser, server.url).open()
        try:
            tab.page.click("#live")
            tab.page.wait_for_function("() => document.getElementById('live').getAttribute('aria-pressed') === 'false'")
            logger.send("log paused-token")
            time.sleep(1.0)
            while_paused = "paused-token" in tab.page.text_content("#records tbody")
            tab.page.click("#live")
            tab.page.wait_for_function("() => document.querySelector('#records tbody').textContent.includes('paused-token')", timeout=5000
            )
        finally:
            tab.close()
        assert not while_paused

    def test_flood_is_sampled_and_says_so(self, browser: Any, live: tuple[Served, Logger]) -> None:
        """20,000 records at once: the page shows a sample, says so, and keeps at most 500 rows."""
        server, logger = live
        tab = Page(browser, server.url).open()
        try:
            logger.send("flood 20000")
            tab.page.wait_for_selector("#notice.sampling", timeout=10_000)
            notice = tab.page.text_content("#notice")
            time.sleep(0.5)
            shown = tab.page.locator("#records tbody tr[data-id]").count()
            responsive = tab.page.evaluate("1 + 1")
        finally:
            tab.close()
        assert (True, True, 2) == ("Flood" in notice and "a sample" in notice, shown <= 500, responsive)
