"""A tour of janus_utils: several threads log into ./janus-logs.db, then the demo searches it.

Run ``python -m janus_utils.demo [--db PATH] [--records N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

import janus_utils as ju
from janus_utils._cli_output import reader_gone

ROUTES = ("/login", "/orders", "/search", "/profile", "/checkout")


def handle_requests(worker: int, count: int) -> None:
    """One web worker thread: each request logs with its own context."""
    log = ju.get_logger(f"demo.web.worker{worker}")
    rng = random.Random(worker)
    for n in range(count):
        user = rng.randint(1, 50)
        with ju.log_context(request_id=f"w{worker}-r{n}", user_id=user):
            route = rng.choice(ROUTES)
            log.info("%s handled in %d ms", route, rng.randint(2, 90), route=route, status=200)
            if route == "/checkout" and n % 60 == 0:
                try:
                    raise TimeoutError("payment gateway did not answer")
                except TimeoutError:
                    log.exception("checkout failed for order %d", 1000 + n, order=1000 + n)


def run_agent() -> None:
    """An agent acting for a user: every record carries its agent_id."""
    log = ju.get_logger("demo.agents").bind(agent_id="planner-7")
    for step in ("plan", "retrieve", "draft", "review"):
        with ju.log_context(user_id=42):
            log.info("agent step %s done", step, step=step)
    # Secrets never reach the database: both of these are redacted.
    log.warning(
        "retrying upstream with password=hunter2, Authorization: Bearer %s",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        api_key="sk-live-51HxQ2eZvKYlo2C",
    )


def cli_command() -> str:
    """How to run janus-logs from here, as typed: janus-logs on PATH, else the venv's, else python -m."""
    script = Path(sys.executable).parent / "janus-logs"
    if script.is_file():
        on_path = shutil.which("janus-logs")
        if on_path is not None and Path(on_path).resolve() == script.resolve():
            return "janus-logs"
        relative = os.path.relpath(script)
        return shlex.quote(relative if not relative.startswith("..") else str(script))
    python = os.path.relpath(sys.executable)
    return shlex.quote(python if not python.startswith("..") else sys.executable) + " -m janus_utils"


def _remove_database(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", "-ring", "-flusher.lock"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="janus-logs.db", help="database to write (default: %(default)s)")
    parser.add_argument("--records", type=int, default=2000, help="records per worker thread")
    parser.add_argument("--fresh", action="store_true", help="delete the database first (it is appended to otherwise)")
    args = parser.parse_args(argv)
    try:
        code = _tour(args)
        sys.stdout.flush()  # a reader that went away is found here, not at exit
        return code
    except BrokenPipeError:  # python -m janus_utils.demo | head -1
        reader_gone(sys.stdout)
        return 0


def _tour(args: argparse.Namespace) -> int:
    if args.fresh:
        _remove_database(args.db)
    before = 0
    if os.path.exists(args.db):
        with ju.LogStore(args.db) as store:
            before = store.count()
    # The console stays quiet: what was logged is read back from the database below.
    ju.configure(args.db, level="INFO", console=False, service="demo-shop")
    started = time.perf_counter()
    threads = [threading.Thread(target=handle_requests, args=(w, args.records)) for w in range(4)]
    threads.append(threading.Thread(target=run_agent))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ju.flush()
    elapsed = time.perf_counter() - started
    committed = ju.stats()["committed"]
    ju.shutdown()

    where = os.path.abspath(args.db)
    print(f"logged {committed:,} records from {len(threads)} threads in {elapsed:.2f} s")
    print(f"  into {where} (SQLite, WAL; the ring {os.path.basename(where)}-ring beside it holds records not yet committed)")
    if before:
        print(f"  appended: the database already held {before:,} records (--fresh starts from an empty one)")
    with ju.LogStore(args.db) as store:
        errors = store.search("gateway", level="ERROR", limit=None)
        print(f"\nsearch('gateway', level='ERROR') found {len(errors):,} records, each with its traceback; the newest 3:")
        for rec in errors[:3]:
            print(f"  {rec.time.astimezone():%H:%M:%S} {rec.level_name} {rec.logger} request={rec.request_id}: {rec.message}")
        secret = store.search(agent_id="planner-7", level="WARNING", limit=1)
        if secret:
            print(f"\nsecrets are redacted before they are stored:\n  {secret[0].message}")
        print(f"\nrecords of user 42: {store.count(user_id=42):,}")
    command = cli_command()
    db = "" if args.db == "janus-logs.db" and not os.environ.get("JANUS_LOG_DB") else f" --db {shlex.quote(args.db)}"
    print("\nnext, try (each is a command of its own):")
    if errors:
        print(f"  {command} show {errors[0].id}{db}")
    print(f"  {command} search gateway --level ERROR -n 3{db}")
    print(f"  {command} count --by level{db}")
    if not errors:
        print(f"  {command} stats{db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
