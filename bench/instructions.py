"""Instructions per log call, counted by callgrind: a figure a busy machine does not move.

Usage::

    python -m bench.instructions                 # 5,000 reference calls, OpenTelemetry blocked
    python -m bench.instructions --otel          # with opentelemetry importable (no span active)
    python -m bench.instructions --calls 20000
    python -m bench.instructions --no-redact     # the same with redact=False: the prefilter's share
    python -m bench.instructions --str-ids       # the benchmarks' own call: a str id, not an int

Runs a probe twice under ``valgrind --tool=callgrind --separate-threads=yes``:
import janus_utils, configure a database in a temporary directory (flusher
idle: commit_interval 3600 s), then N enabled reference calls
(``log.info("user %s logged in", i, user_id=i, ip=..., agent_id=...)``), and
the same with 0 calls.  With ``--str-ids`` the argument and user_id are the
benchmarks' ids (``"u0000123"``, bench/_sizes.py), all built in both runs
before any call.  Per call: the difference of the main thread's
instruction counts over N (the flusher thread is counted apart, so its
wake-ups do not blur the figure).  Also printed: the main thread's
instructions for import + configure (the 0-call run).  Python writes no
bytecode cache here (PYTHONDONTWRITEBYTECODE may be set), so that figure
includes compiling janus_utils's modules; it is comparable between commits
run the same way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """
import os, sys, tempfile
if sys.argv[2] == "no-otel":
    sys.modules["opentelemetry"] = None  # find_spec() then says: not installed
import janus_utils as ju
calls = int(sys.argv[1])
ju.configure(os.path.join(tempfile.mkdtemp(), "probe.db"), console=False, level="INFO", commit_interval=3600,
             redact=sys.argv[3] == "redact")
info = ju.get_logger("svc.auth").info
# The str ids: as many in both runs, so that building them is no call's share.
ids = [f"u{n:07d}" for n in range(int(sys.argv[4]))] if sys.argv[5] == "str" else None
def run(n):
    for i in range(n) if ids is None else ids[:n]:
        info("user %s logged in", i, user_id=i, ip="10.0.0.1", agent_id="planner-7")
run(calls)
os._exit(0)  # no shutdown: it would commit, in the main thread, only in the N-call run
"""


def _main_thread_instructions(calls: int, ids: int, str_ids: bool, otel: bool, redact: bool, workdir: Path) -> int:
    out = workdir / f"callgrind.{calls}.out"
    subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
            sys.executable, "-c", PROBE, str(calls), "otel" if otel else "no-otel",
            "redact" if redact else "no-redact", str(ids), "str" if str_ids else "int",
        ],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Both runs hash strings alike (the caller's seed, else 0): with random
        # seeds import + configure differ by more than the calls being counted.
        env={**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")},
    )
    main = Path(f"{out}-01")
    for line in main.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {main}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--otel", action="store_true", help="leave opentelemetry importable")
    parser.add_argument("--no-redact", action="store_true", help="configure(redact=False): no prefilter")
    parser.add_argument("--str-ids", action="store_true", help="str ids as the benchmarks log, not ints")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = (args.calls, args.str_ids, args.otel, not args.no_redact, Path(tmp))
        base = _main_thread_instructions(0, *run)
        loaded = _main_thread_instructions(args.calls, *run)
    per_call = (loaded - base) / args.calls
    otel = "importable" if args.otel else "blocked"
    redact = "off" if args.no_redact else "on"
    ids = "str" if args.str_ids else "int"
    print(f"import + configure: {base:,} instructions (main thread; OpenTelemetry {otel}, redaction {redact})")
    print(f"per enabled reference call: {per_call:,.0f} instructions (over {args.calls:,} calls, {ids} ids)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
