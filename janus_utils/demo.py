"""A tour of janus_utils: several threads log into ./janus-logs.db, then the demo searches it.

Run ``python -m janus_utils.demo [--db PATH] [--records N]``.
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import janus_utils as ju

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="janus-logs.db", help="database to write (default: %(default)s)")
    parser.add_argument("--records", type=int, default=2000, help="records per worker thread")
    args = parser.parse_args(argv)

    ju.configure(args.db, level="INFO", console=True, console_level="WARNING")
    started = time.perf_counter()
    threads = [threading.Thread(target=handle_requests, args=(w, args.records)) for w in range(4)]
    threads.append(threading.Thread(target=run_agent))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ju.flush()
    elapsed = time.perf_counter() - started
    stats = ju.stats()
    print(f"\nlogged and committed {stats['committed']} records from {len(threads)} threads "
          f"in {elapsed:.2f} s into {args.db}")

    with ju.LogStore(args.db) as store:
        print("\nsearch('gateway', level='ERROR', limit=3):")
        for rec in store.search("gateway", level="ERROR", limit=3):
            print(f"  {rec.time} {rec.level_name} {rec.logger} user={rec.user_id} "
                  f"request={rec.request_id}: {rec.message}")
        print("\nsearch(agent_id='planner-7'):")
        for rec in store.search(agent_id="planner-7", order="oldest"):
            print(f"  {rec.level_name} {rec.message} {rec.fields}")
        print(f"\nrecords for user 42: {store.count(user_id=42)}")
    print("\nmore: janus-logs search gateway --level ERROR | janus-logs tail -f | janus-logs stats")
    ju.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
