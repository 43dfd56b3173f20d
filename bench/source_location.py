"""The cost of the source location on a log call: WARNING with and without it, beside INFO (the C path).

Run ``python -m bench.source_location``; prints the median ns per call of each, in one run.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import timeit

import janus_utils as ju


def measure(source_location: object, level: str, repeat: int = 15, number: int = 5_000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ju.configure(os.path.join(tmp, "b.db"), console=False, source_location=source_location, on_full="drop")
        log = ju.get_logger("bench")
        call = getattr(log, level)
        # Flushed before each repeat: the ring never fills, the flusher is idle while measured.
        times = timeit.repeat(
            lambda: call("order %d shipped", 7, user_id=3), setup=lambda: ju.flush(), repeat=repeat, number=number
        )
        ju.shutdown()
    return statistics.median(times) / number * 1e9


def main() -> None:
    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}")
    rows = [
        ("info, C path (no location)", measure("WARNING", "info")),
        ("warning, source_location=None (C path)", measure(None, "warning")),
        ("warning, source_location=WARNING (frame + C path)", measure("WARNING", "warning")),
    ]
    base = rows[1][1]
    for name, ns in rows:
        print(f"{name:<58} {ns:8.0f} ns/call  x{ns / base:.2f}")


if __name__ == "__main__":
    main()
