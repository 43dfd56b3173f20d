"""Scoped LogStore: no query, filter, raw FTS text or argument reads a row outside the scope."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus_utils import LogStore
from janus_utils.error_handling.utils.errors import SearchQueryError

from conftest import BASE_TS, make_row, open_writer, run_cli, write_batch

USERS = ["42", "7", "alice", "42 OR 1", None]
AGENTS = ["bot", "crawler", None]
LOGGERS = ["app", "app.db", "apple", "billing", "billing.refunds"]
WORDS = ["payment", "refund", "timeout", "secret", "user", "42", "alice", "bot", "error"]


def _rows() -> list[tuple[Any, ...]]:
    rows = []
    n = 0
    for user in USERS:
        for agent in AGENTS:
            for logger in LOGGERS:
                for level in (10, 20, 30, 40):
                    n += 1
                    words = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(3))
                    rows.append(
                        make_row(
                            f"{words} user_id:{user} agent {agent}",
                            ts=BASE_TS + n * 1_000_000_000,
                            level=level,
                            logger=logger,
                            user_id=user,
                            agent_id=agent,
                            request_id=f"req-{n % 5}",
                            fields=json.dumps({"user_id": user, "n": n, "owner": USERS[n % len(USERS)]}),
                            exception="Traceback: secret" if n % 7 == 0 else None,
                        )
                    )
    return rows


ROWS = _rows()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scope") / "logs.db"
    conn = open_writer(path)
    try:
        write_batch(conn, ROWS)
    finally:
        conn.close()
    return path


def in_scope(record: Any, scope: dict[str, Any]) -> bool:
    if "user_id" in scope and record.user_id != str(scope["user_id"]):
        return False
    if "agent_id" in scope and record.agent_id != scope["agent_id"]:
        return False
    if "level" in scope and record.level < scope["level"]:
        return False
    if "logger" in scope:
        name = scope["logger"]
        if not (record.logger == name or record.logger.startswith(name + ".")):
            return False
    return True


scopes = st.fixed_dictionaries(
    {},
    optional={
        "user_id": st.sampled_from([42, "42", "7", "alice"]),
        "agent_id": st.sampled_from(["bot", "crawler"]),
        "logger": st.sampled_from(["app", "billing", "app.db"]),
        "level": st.sampled_from([20, 30, "ERROR"]),
    },
).filter(bool)

fts_text = st.lists(
    st.sampled_from(list(string.ascii_letters + string.digits + ' "*:^()-+.,{}[]\'\\') + ["OR", " NOT ", " AND ", "NEAR(", "user_id", "message:", "fields:", "exception:"]),
    max_size=20,
).map("".join) | st.text(max_size=20) | st.lists(st.sampled_from(WORDS + ["OR", "NOT", "AND", "*", '"', "{message fields}:", "user_id:42", "-"]), max_size=6).map(" ".join)

filters = st.fixed_dictionaries(
    {},
    optional={
        "user_id": st.sampled_from(USERS[:-1] + ["' OR 1=1 --", "%"]),
        "agent_id": st.sampled_from(["bot", "crawler", "*"]),
        "logger": st.sampled_from(["app", "billing", "", "a", "app.db"]),
        "level": st.sampled_from([0, 10, "DEBUG", 50]),
        "request_id": st.sampled_from(["req-1", "req-2"]),
        "fields": st.sampled_from([{"user_id": "7"}, {"owner": "42"}, {"n": 3}, {"user_id": None}]),
    },
)


class TestScopeProperty:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(scope=scopes, query=fts_text | st.none(), raw=st.booleans(), wanted=filters)
    def test_no_row_outside_the_scope(self, db: Path, scope: dict[str, Any], query: str | None, raw: bool, wanted: dict[str, Any]) -> None:
        """search, count, histogram, tail, export and after return only rows within the scope."""
        scope_checked = {**scope, "level": {"ERROR": 40}.get(scope.get("level"), scope.get("level"))}
        if "level" not in scope:
            scope_checked.pop("level")
        allowed = sum(1 for row in ROWS if in_scope(_as_record(row), scope_checked))
        with LogStore(db, scope=scope) as store:
            try:
                found = store.search(query, raw=raw, limit=None, **wanted)
                count = store.count(query, raw=raw, **wanted)
                histogram = store.histogram("1d", by="user_id", query=query, raw=raw, **wanted)
                exported = list(store.export(query, raw=raw, **wanted))
                after, matched, _ = store.after(0, query, raw=raw, limit=1000, **wanted)
            except SearchQueryError:
                return  # a refused query reads nothing
            tailed = list(store.tail(1000, **wanted))
        for record in [*found, *exported, *after, *tailed]:
            assert in_scope(record, scope_checked), (scope, query, wanted, record)
        assert count == len(found) == len(exported) <= allowed
        assert matched == len(after) <= allowed
        assert sum(sum(counts.values()) for _, counts in histogram) == count
        if "user_id" in scope:
            assert {str(scope["user_id"])} >= {k for _, counts in histogram for k in counts}


def _as_record(row: tuple[Any, ...]) -> Any:
    from janus_utils._schema import COLUMNS

    class R:
        pass

    record = R()
    for column, value in zip(COLUMNS, row):
        setattr(record, column, value)
    return record


class TestScopeApi:
    def test_get_outside_the_scope_is_none(self, db: Path) -> None:
        with LogStore(db) as everything:
            other = everything.search(user_id="7", limit=1)[0]
            mine = everything.search(user_id="42", limit=1)[0]
        with LogStore(db, scope={"user_id": 42}) as store:
            assert store.get(other.id) is None
            assert mine == store.get(mine.id)

    def test_counts_after_and_newest_ts_are_scoped(self, db: Path) -> None:
        with LogStore(db, scope={"user_id": 42, "level": "WARNING"}) as store:
            counts, _ = store.counts_after(0)
            assert sum(counts.values()) == store.count()
            assert all(level >= 30 for level, _ in counts)
            newest = max(r.ts for r in store.search(limit=None))
            assert newest == store.newest_ts()

    def test_sql_is_refused_in_a_scoped_store(self, db: Path) -> None:
        with LogStore(db, scope={"user_id": 42}) as store, pytest.raises(SearchQueryError, match="scope"):
            store.sql("SELECT * FROM logs")

    @pytest.mark.parametrize(
        "scope", [{"user": 1}, {"user_id": None}, {"user_id": [1, 2]}, {"level": "LOUD"}, {"logger": "."}, "user_id=42"]
    )
    def test_bad_scope_is_refused(self, db: Path, scope: Any) -> None:
        with pytest.raises(SearchQueryError):
            LogStore(db, scope=scope)

    def test_stats_are_scoped(self, db: Path) -> None:
        with LogStore(db, scope={"logger": "billing"}) as store:
            stats = store.stats()
        assert set(stats.by_logger) == {"billing", "billing.refunds"}

    def test_clickhouse_store_refuses_a_scope(self) -> None:
        from janus_utils.clickhouse_store import ClickHouseStore

        with pytest.raises(SearchQueryError, match="scope"):
            ClickHouseStore("http://127.0.0.1:1", scope={"user_id": 42})


class TestScopeCli:
    def test_scope_option_limits_search_and_export(self, db: Path, tmp_path: Path) -> None:
        done = run_cli(["search", "--db", str(db), "--scope", "user_id=42", "--json", "--limit", "1000"], cwd=tmp_path)
        assert 0 == done.returncode, done.stderr
        users = {json.loads(line)["user_id"] for line in done.stdout.splitlines()}
        assert {"42"} == users
        done = run_cli(
            ["export", "--db", str(db), "--scope", "user_id=42", "--scope", "level=ERROR", "--user", "7"], cwd=tmp_path
        )
        assert b"" == done.stdout

    def test_bad_scope_option_is_usage(self, db: Path, tmp_path: Path) -> None:
        done = run_cli(["search", "--db", str(db), "--scope", "owner=42"], cwd=tmp_path)
        assert 2 == done.returncode
        assert b"scope" in done.stderr


class TestServeTokenScopes:
    def test_each_token_reads_within_its_scope(self, db: Path, tmp_path: Path) -> None:
        """janus-logs serve --token-scopes: records, a record, live start and /metrics keep to the token's scope."""
        pytest.importorskip("starlette")
        import httpx

        from _webserver import Served

        admin, alice, bot = "admin-" + "a" * 20, "alice-" + "b" * 20, "bot-" + "c" * 20
        (tmp_path / "token").write_text(admin)
        (tmp_path / "token").chmod(0o600)
        (tmp_path / "scopes.json").write_text(
            json.dumps({alice: {"user_id": "alice"}, bot: {"agent_id": "bot", "level": "WARNING"}})
        )
        with LogStore(db) as store:
            other = store.search(user_id="7", limit=1)[0]
        served = Served(db, "--token-file", str(tmp_path / "token"), "--token-scopes", str(tmp_path / "scopes.json"))
        try:
            def get(path: str, token: str | None) -> httpx.Response:
                headers = {"authorization": f"Bearer {token}"} if token else {}
                return httpx.get(served.url + path.lstrip("/"), headers=headers, timeout=10)

            mine = get("/api/records?limit=1000&user=7", alice).json()["records"]
            assert [] == mine  # a filter for another user finds nothing inside alice's scope
            mine = get("/api/records?limit=1000", alice).json()["records"]
            assert mine and {"alice"} == {r["user_id"] for r in mine}
            bots = get("/api/records?limit=1000&q=secret OR user", bot).json()["records"]
            assert bots and all(r["level"] >= 30 for r in bots)
            assert 404 == get(f"/api/record/{other.id}", alice).status_code
            assert 200 == get(f"/api/record/{other.id}", admin).status_code
            assert 403 == get("/metrics", alice).status_code
            assert 200 == get("/metrics", admin).status_code
            assert 401 == get("/api/records", "x" * 30).status_code
            everything = get("/api/records?limit=1000", admin).json()["records"]
            assert len({r["user_id"] for r in everything}) > 1
            histogram = get("/api/histogram", alice).json()
            with LogStore(db, scope={"user_id": "alice"}) as store:
                assert store.count() == sum(sum(b["counts"].values()) for b in histogram["buckets"])
            # The page carries its first screen: within the token's scope too.
            page = get("/", alice).text
            start = page.index('id="first-screen">') + len('id="first-screen">')
            first = json.loads(page[start : page.index("</script>", start)])
            assert first["records"]["records"] and {"alice"} == {r["user_id"] for r in first["records"]["records"]}
            assert histogram["buckets"] == first["histogram"]["buckets"]
        finally:
            served.stop()

    def test_bad_scopes_file_is_usage(self, db: Path, tmp_path: Path) -> None:
        (tmp_path / "scopes.json").write_text(json.dumps({"short": {"user_id": "1"}}))
        done = run_cli(["serve", "--db", str(db), "--token-scopes", str(tmp_path / "scopes.json")], cwd=tmp_path)
        assert 2 == done.returncode
        assert b"at least 16 characters" in done.stderr
