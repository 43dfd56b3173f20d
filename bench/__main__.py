"""``python -m bench``: the environment, every suite in one pytest-benchmark run, a table of ratios.

Usage::

    python -m bench                  # full sizes (about 10-15 minutes on 2 cores)
    python -m bench --quick          # tiny sizes: proves everything runs
    python -m bench --markdown       # the table as a Markdown section for README.md
    python -m bench --save-json out.json -- -k producer   # keep the raw run; pass pytest args

Ratios are taken between medians measured in the same run, on the same
machine, minutes apart; the absolute medians are this machine's only.
Progress (pytest's output) goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JANUS_OVERHEAD_MIB = 48  # what janus may use beside its ring (see bench_memory.py)


# ---------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> list[tuple[str, str]]:
    import apsw

    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    return [
        ("CPU", _cpu_model()),
        ("cores", f"{cores} ({usable} usable)"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", apsw.sqlite_lib_version()),
        ("apsw", apsw.apsw_version()),
        ("cffi", _version("cffi")),
        ("janus_utils", f"{_version('janus_utils')} ({_git_commit()})"),
        ("picologging", _version("picologging")),
        ("loguru", _version("loguru")),
        ("structlog", _version("structlog") + (f", orjson {_version('orjson')}" if _version("orjson")[0].isdigit() else ", stdlib json")),
        ("pytest-benchmark", _version("pytest-benchmark")),
    ]


def machine_name(env: list[tuple[str, str]]) -> str:
    found = dict(env)
    return f"{found['CPU']}, {os.cpu_count()} cores"


# ---------------------------------------------------------------- running


def run_suites(json_path: Path, extra_args: list[str], quick: bool) -> int:
    """One pytest-benchmark run over bench/ (memory runs separately, at its own sizes)."""
    env = dict(os.environ)
    if quick:
        env["JANUS_BENCH_QUICK"] = "1"
    command = [
        sys.executable, "-m", "pytest", "bench/", "-q", "-p", "no:cacheprovider",
        "--ignore=bench/bench_memory.py",
        f"--benchmark-json={json_path}",
        "--benchmark-columns=median,iqr,rounds",
        "--benchmark-sort=name",
        "-o", "faulthandler_timeout=1800",
        *extra_args,
    ]
    print("$ " + " ".join(command[1:]), file=sys.stderr, flush=True)
    return subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stderr, check=False).returncode


# ---------------------------------------------------------------- figures


def _key(bench: dict[str, Any]) -> str:
    info = bench.get("extra_info") or {}
    return str(info.get("peer") or (bench.get("params") or {}).get("key") or bench["name"])


def _by_group(data: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for bench in data.get("benchmarks", []):
        name = bench["name"]
        # janus's own groups hold several benchmarks of one peer: key them by name.
        key = name if bench.get("group") in ("janus-self", "janus-watch", "prefilter") else _key(bench)
        groups.setdefault(bench.get("group") or "", {})[key] = bench
    return groups


def _per_call(bench: dict[str, Any]) -> float:
    return bench["stats"]["median"] / bench["extra_info"]["calls_per_round"]


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×" if x < 10 else f"{x:.0f}×" if x >= 100 else f"{x:.1f}×"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


class Table:
    def __init__(self, title: str, header: list[str], note: str = "") -> None:
        self.title = title
        self.header = header
        self.rows: list[list[str]] = []
        self.note = note

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))


def _labels() -> dict[str, str]:
    from bench._peers import LABELS

    return dict(LABELS)


def producer_table(title: str, group: dict[str, dict[str, Any]], machine: str, skipped: dict[str, str]) -> Table:
    labels = _labels()
    table = Table(title, ["logger", "janus is N× cheaper", f"per call, median ({machine})"])
    janus = group.get("janus")
    rows = []
    for key, bench in group.items():
        cost = _per_call(bench)
        ratio = cost / _per_call(janus) if janus else float("nan")
        rows.append((0 if key == "janus" else 1, -ratio if key != "janus" else 0, labels.get(key, key), ratio, cost, key))
    for _, _, label, ratio, cost, key in sorted(rows, key=lambda r: (r[0], r[1])):
        shown = fmt_ratio(ratio) if ratio >= 1 else f"{fmt_ratio(1 / ratio)} dearer"
        table.add(label, "—" if key == "janus" else shown, fmt_time(cost))
    for key, why in skipped.items():
        table.add(labels.get(key, key), why, "—")
    return table


def figures(data: dict[str, Any], memory: list[dict[str, Any]] | None, machine: str) -> tuple[list[Table], list[tuple[str, str, bool | None]]]:
    groups = _by_group(data)
    tables: list[Table] = []
    goals: list[tuple[str, str, bool | None]] = []

    def ratio_of(group: str, peer: str, per: Callable[[dict[str, Any]], float] = _per_call) -> float | None:
        g = groups.get(group, {})
        if peer in g and "janus" in g:
            return per(g[peer]) / per(g["janus"])
        return None

    p1 = groups.get("producer-1-thread", {})
    if p1:
        tables.append(producer_table("Producer cost, 1 thread (INFO, \"user %s logged in\", 3 fields)", p1, machine, {}))
        for peer, want in (("stdlib_file", 10.0), ("picologging", 12.0)):
            r = ratio_of("producer-1-thread", peer)
            if r is not None:
                goals.append((f"producer: janus ≥ {want:g}× cheaper than {_labels()[peer]}", fmt_ratio(r), r >= want))
        if "janus" in p1:
            own = _per_call(p1["janus"])
            goals.append(("producer: janus's reference call ≤ 350 ns (median)", fmt_time(own), own <= 350e-9))
    p4 = groups.get("producer-4-threads", {})
    if p4:
        skipped = {"picologging": "deadlocks (microsoft/picologging#207)"} if "picologging" not in p4 else {}
        tables.append(producer_table("Producer cost, 4 threads (wall time ÷ 4N calls)", p4, machine, skipped))
    below = groups.get("below-level", {})
    if below:
        tables.append(producer_table("A call below the level (DEBUG on an INFO logger)", below, machine, {}))
        for peer in ("stdlib_file", "picologging"):
            r = ratio_of("below-level", peer)
            if r is not None and not (peer == "picologging" and groups.get("below-level-paired")):
                goals.append((f"below the level: janus no dearer than {_labels()[peer]}",
                              f"{peer} ÷ janus = {fmt_ratio(r)}", r >= 1.0))
    below_paired = groups.get("below-level-paired", {})
    if below_paired:
        info = next(iter(below_paired.values()))["extra_info"]
        r, each = info["median_ratio"], info["median_ns"]
        goals.append((f"below the level: janus no dearer than {_labels()['picologging']} (median of {info['pairs']} pairs)",
                      f"picologging ÷ janus = {r:.2f}× ({fmt_time(each['janus'] / 1e9)} vs "
                      f"{fmt_time(each['picologging'] / 1e9)}; lowest pair {min(info['ratios']):.2f}×)", r >= 1.0))

    e2e = groups.get("end-to-end", {})
    if e2e:
        labels = {**_labels(), "apsw_executemany": "bare apsw executemany + FTS fill per 2,000 (the floor)",
                  "janus": "janus_utils, 4 threads, until flush() (committed, FTS-searchable)",
                  "janus_sealed": "janus_utils with seal_key_file (every batch sealed)",
                  "janus_process": "janus_utils, flusher=\"process\", the same",
                  "stdlib_file": "stdlib FileHandler, 4 threads, to a file (not searchable)",
                  "sqlite_naive": "naive SQLite handler, 4 threads, one commit per record (no FTS)"}
        rate = {k: b["extra_info"]["records"] / b["stats"]["median"] for k, b in e2e.items()}
        table = Table("End to end: records from 4 threads until written", ["pipeline", "records", "rows/s (median)", "janus ÷ this"])
        for key in ("janus", "janus_sealed", "janus_process", "apsw_executemany", "stdlib_file", "sqlite_naive"):
            if key in e2e:
                vs = "—" if key == "janus" or "janus" not in rate else fmt_ratio(rate["janus"] / rate[key])
                table.add(labels[key], fmt_rate(e2e[key]["extra_info"]["records"]), fmt_rate(rate[key]), vs)
        tables.append(table)
        if "janus" in rate and "apsw_executemany" in rate:
            r = rate["janus"] / rate["apsw_executemany"]
            goals.append(("end to end: janus ≥ 0.6× bare apsw executemany", f"{r:.3f}×", r >= 0.6))
        if "janus" in rate and "janus_sealed" in rate:
            r = rate["janus_sealed"] / rate["janus"]
            goals.append(("sealing costs ≤ 10% end to end", f"sealed ÷ unsealed = {r:.3f}×", r >= 0.9))
        if "janus_process" in rate and "apsw_executemany" in rate and not groups.get("end-to-end-paired"):
            r = rate["janus_process"] / rate["apsw_executemany"]
            goals.append(("end to end, flusher=\"process\": ≥ 1.0× bare apsw executemany", f"{r:.3f}×", r >= 1.0))

    paired = groups.get("end-to-end-paired", {})
    if paired:
        info = next(iter(paired.values()))["extra_info"]
        r = info["median_ratio"]
        goals.append(("end to end, flusher=\"process\": ≥ 1.0× bare apsw executemany (median of "
                      f"{info['pairs']} pairs)", f"{r:.3f}× (pairs: " + ", ".join(f"{x:.2f}" for x in info["ratios"]) + ")",
                      r >= 1.0))

    tail = groups.get("tail-latency", {})
    if tail:
        table = Table("A log call while the flusher commits (4 threads flat out)",
                      ["logger", "calls/s", "p50", "p99", "p99.9", "p99 ÷ p50"])
        for key, b in tail.items():
            x = b["extra_info"]
            label = "no logger: marshal.dumps of the record (the machine's own spread)" if key == "floor" else _labels().get(key, key)
            table.add(label, fmt_rate(x["calls_per_s"]), fmt_time(x["p50_ns"] / 1e9),
                      fmt_time(x["p99_ns"] / 1e9), fmt_time(x["p999_ns"] / 1e9), f"{x['p99_over_p50']:.2f}")
        tables.append(table)
        if "janus_process" in tail:
            info = tail["janus_process"]["extra_info"]
            r = info["p99_over_p50"]
            each = info.get("windows_p99_over_p50") or []
            shown = f"{r:.2f}×" + (f" (pooled; windows: {', '.join(f'{x:.2f}' for x in each)})" if len(each) > 1 else "")
            if "floor" in tail:
                shown += f"; no logger, same run: {tail['floor']['extra_info']['p99_over_p50']:.2f}×"
            goals.append(("tail, flusher=\"process\": p99 ≤ 3× median", shown, r <= 3.0))

    search = groups.get("search", {})
    if search and "janus" in search:
        info = search["janus"]["extra_info"]
        labels = {
            "janus": f"janus LogStore.search (FTS5), newest {info['limit']}",
            "grep_filter": "grep -w -F, then json.loads + filter the hits",
            "grep_count": "grep -c alone (reads the file once, no filter)",
            "python_scan": "Python: json.loads every line + filter",
        }
        table = Table(
            f"Search: \"{info['query']}\", level ≥ WARNING, logger svc.*, over {info['records']:,} records "
            f"({info['matches']} match; JSON lines {info['jsonl_bytes'] / 1e6:.0f} MB)",
            ["method", "janus is N× faster", f"median ({machine})"],
        )
        janus_median = search["janus"]["stats"]["median"]
        for key in ("janus", "grep_filter", "grep_count", "python_scan"):
            if key in search:
                med = search[key]["stats"]["median"]
                table.add(labels[key], "—" if key == "janus" else fmt_ratio(med / janus_median), fmt_time(med))
        tables.append(table)
        goals.append(("search: median < 20 ms", fmt_time(janus_median), janus_median < 0.020))
        if "grep_filter" in search:
            r = search["grep_filter"]["stats"]["median"] / janus_median
            goals.append(("search: ≥ 50× faster than grep (+ filter)", fmt_ratio(r), r >= 50))

    if memory:
        lock = memory[0]["lock_s"]
        table = Table(
            f"Memory: one burst, the SQLite database exclusively locked for its first {lock:g} s",
            ["logger", "records", "peak RSS", "growth in the burst", "burst time", "note"],
        )
        for m in memory:
            note = ""
            if m["kind"] == "janus":
                note = f"ring {m['ring_mib']:g} MiB, {m['dropped']} dropped; the caller waits when the ring is full"
            elif "queued_at_end" in m:
                note = f"{m['queued_at_end']:,} records still queued at the end"
            elif m["kind"] == "loguru_enqueue":
                note = "its pipe fills and the caller waits"
            table.add(m["label"], fmt_rate(m["records"]), f"{m['peak_rss_mib']:.0f} MiB",
                      f"{m['growth_mib']:.0f} MiB", f"{m['burst_s']:.1f} s", note)
        tables.append(table)
        janus = next((m for m in memory if m["kind"] == "janus"), None)
        if janus:
            goals.append((
                f"memory: janus growth ≤ ring + {JANUS_OVERHEAD_MIB} MiB",
                f"{janus['growth_mib']:.0f} MiB (ring {janus['ring_mib']:g} MiB)",
                janus["growth_mib"] <= janus["ring_mib"] + JANUS_OVERHEAD_MIB,
            ))

    gates = {
        "janus-self": "janus-self: the regression gate (fixed rounds, flusher idle)",
        "janus-watch": "janus-watch: janus figures too noisy to gate at 15%",
    }
    for group, title in gates.items():
        own = groups.get(group, {})
        if not own:
            continue
        table = Table(title, ["benchmark", "median per round", "per record", "IQR ÷ median", "rounds"])
        for name, bench in sorted(own.items()):
            stats = bench["stats"]
            info = bench.get("extra_info") or {}
            n = info.get("calls_per_round") or info.get("records_per_round") or 1
            short = name.removeprefix("test_janus_self_").removeprefix("test_janus_watch_")
            table.add(short, fmt_time(stats["median"]), fmt_time(stats["median"] / n),
                      f"{stats['iqr'] / stats['median']:.0%}", str(stats["rounds"]))
        tables.append(table)
    prefilter = groups.get("prefilter", {})
    on, off = prefilter.get("test_prefilter_redact_on"), prefilter.get("test_prefilter_redact_off")
    if on and off:
        table = Table(
            "prefilter: the same clean call with redaction on and off (C encoder, flusher idle)",
            ["setup", "per call, median", "IQR ÷ median", "rounds"],
        )
        for bench in (on, off):
            stats = bench["stats"]
            table.add(bench["extra_info"]["label"], fmt_time(_per_call(bench)),
                      f"{stats['iqr'] / stats['median']:.0%}", str(stats["rounds"]))
        delta = _per_call(on) - _per_call(off)
        table.add("difference of the medians", fmt_time(delta), "", "")
        paired = [b["extra_info"].get("paired_delta") for b in (on, off)]
        if None not in paired:
            # Each round against the other setup's round just before it; the
            # off benchmark's differences run the other way.
            delta = (paired[0] - paired[1]) / 2
            table.add("median of paired round differences", fmt_time(delta), "", "")
        tables.append(table)
        goals.append(("prefilter: cost on a clean record ≤ 0.15 µs", fmt_time(delta), delta <= 150e-9))
    latency = groups.get("call-latency", {})
    if latency:
        tables.append(latency_table(latency))
        for key, bench in latency.items():
            info = bench["extra_info"]
            if key.startswith("janus") and info.get("p50_ns"):
                r = info["p99_ns"] / info["p50_ns"]
                goals.append((f"tail ({key}): p99 of a log call during flushing ≤ 3× its median",
                              f"{r:.1f}×", r <= 3.0))
    ship_tables, ship_goals = ship_figures(groups, machine)
    tables += ship_tables
    goals += ship_goals
    known = {"producer-1-thread", "producer-4-threads", "below-level", "below-level-paired", "end-to-end", "end-to-end-paired", "tail-latency", "search", "prefilter",
             "call-latency", *gates, *SHIP_GROUPS}
    other = [bench for group, found in sorted(groups.items()) if group not in known for bench in found.values()]
    if other:
        table = Table("Other janus benchmarks (absolute only)", ["benchmark", "median", "note"])
        for bench in sorted(other, key=lambda b: (b.get("group") or "", b["name"])):
            info = bench.get("extra_info") or {}
            note = info.get("note") or (
                f"{info['rows_per_s']:,} rows/s on {info['table_rows']:,} rows" if "rows_per_s" in info else ""
            )
            table.add(bench["name"], fmt_time(bench["stats"]["median"]), note)
        tables.append(table)
    return tables, goals


def latency_table(group: dict[str, dict[str, Any]]) -> Table:
    """bench_latency.py: every call timed, 4 threads flat out, the flusher committing throughout."""
    first = next(iter(group.values()))["extra_info"]
    table = Table(
        f"The tail: one log call while {first['threads']} threads log flat out for {first['seconds']:g} s "
        f"(every call timed; the timer pair alone is {first['timer_ns']} ns)",
        ["logger", "calls", "p50", "p99", "p99.9", "p99 ÷ p50", "note"],
    )
    order = sorted(group, key=lambda k: (not k.startswith("janus"), k))
    for key in order:
        info = group[key]["extra_info"]
        note = ""
        if "committed_during" in info:
            note = f"{info['committed_during']:,} committed during the run, {info['dropped']} dropped"
        table.add(info["label"], fmt_rate(info["calls"]), fmt_time(info["p50_ns"] * 1e-9),
                  fmt_time(info["p99_ns"] * 1e-9), fmt_time(info["p999_ns"] * 1e-9),
                  f"{info['p99_ns'] / max(info['p50_ns'], 1):.1f}×", note)
    return table


SHIP_GROUPS = ("ship-clickhouse", "ship-otlp", "ship-lag", "ship-sink-down")


def ship_figures(groups: dict[str, dict[str, dict[str, Any]]], machine: str) -> tuple[list[Table], list[tuple[str, str, bool | None]]]:
    """Shipping (bench_ship.py): throughput beside a bare insert, OTLP, lag, log calls with a sink down."""
    tables: list[Table] = []
    goals: list[tuple[str, str, bool | None]] = []
    by_name = {name: bench for group in SHIP_GROUPS for name, bench in groups.get(group, {}).items()}
    bare = by_name.get("test_ship_clickhouse_bare_insert")
    shipper = by_name.get("test_ship_clickhouse_shipper")
    otlp = by_name.get("test_ship_otlp_shipper")

    def rate(bench: dict[str, Any]) -> float:
        return float(bench["extra_info"]["rows"]) / bench["stats"]["median"]

    if bare or shipper or otlp:
        table = Table("Shipping throughput (loopback)", ["pipeline", "rows", "rows/s (median)", "÷ bare insert"])
        for bench in (bare, shipper, otlp):
            if bench:
                info = bench["extra_info"]
                ratio = fmt_ratio(rate(bench) / rate(bare)) if bare and bench is not otlp else ""
                table.add(info["what"], f"{info['rows']:,}", fmt_rate(rate(bench)), ratio)
        tables.append(table)
    if bare and shipper:
        r = rate(shipper) / rate(bare)
        goals.append(("ship: ClickHouse shipper ≥ 0.5× a bare JSONEachRow insert", fmt_ratio(r), r >= 0.5))
        goals.append(("ship: ClickHouse shipper ≥ 100,000 rows/s", fmt_rate(rate(shipper)), rate(shipper) >= 100_000))
    if otlp:
        goals.append(("ship: OTLP ≥ 30,000 records/s", fmt_rate(rate(otlp)), rate(otlp) >= 30_000))
    lag = by_name.get("test_ship_lag_at_steady_10k")
    if lag:
        info = lag["extra_info"]
        table = Table("Shipping lag at a steady 10,000 records/s (ClickHouse sink, same process)",
                      ["records", "rate", "lag median", "lag p99", "lag max"])
        table.add(f"{info['records']:,}", f"{info['rate']:,}/s", f"{info['lag_median_s']} s", f"{info['lag_p99_s']} s", f"{info['lag_max_s']} s")
        tables.append(table)
        goals.append(("ship: lag at 10,000 records/s < 1 s", f"{info['lag_max_s']} s", info["lag_max_s"] < 1.0))
    plain = by_name.get("test_ship_log_calls_no_sink")
    down = by_name.get("test_ship_log_calls_sink_down")
    if plain and down:
        info = down["extra_info"]
        table = Table(
            f"A sink down for {info['outage_s']} s: log call cost",
            ["setup", f"per call, median ({machine})", "lag when it came back", "caught up in"],
        )
        table.add("no sink", fmt_time(_per_call(plain)), "", "")
        table.add("OTLP sink down", fmt_time(_per_call(down)), f"{info['lag_rows_peak']:,} rows", f"{info['catch_up_s']} s")
        tables.append(table)
        r = _per_call(down) / _per_call(plain)
        goals.append(("ship: log calls with a sink down ≤ 1.2× no sink", fmt_ratio(r), r <= 1.2))
    return tables, goals


# ---------------------------------------------------------------- rendering


def _text_table(table: Table) -> list[str]:
    rows = [table.header, *table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(table.header))]
    lines = [table.title, "-" * len(table.title)]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(table: Table) -> list[str]:
    lines = [f"**{table.title}**", "", "| " + " | ".join(map(_md_cell, table.header)) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.header))) + "|")
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
    return lines


def _goal_table(goals: Iterable[tuple[str, str, bool | None]]) -> Table:
    table = Table("Goals", ["goal", "measured", "met"])
    for goal, measured, met in goals:
        table.add(goal, measured, "yes" if met else "NO")
    return table


def render(env: list[tuple[str, str]], tables: list[Table], goals: list[tuple[str, str, bool | None]], *, markdown: bool, quick: bool) -> str:
    when = time.strftime("%Y-%m-%d")
    size = "quick sizes (JANUS_BENCH_QUICK=1): not figures to quote" if quick else "full sizes"
    out: list[str] = []
    all_tables = [*tables, _goal_table(goals)] if goals else tables
    if markdown:
        out += ["## Performance", "",
                f"Measured with `python -m bench` ({size}) on {when}. Ratios compare medians taken in one run "
                "on one machine; the absolute times are that machine's and vary by up to 2× between runs "
                "on a busy 2-core VM. See bench/README.md for what each benchmark measures.", ""]
        out += [f"- {k}: {v}" for k, v in env]
        for table in all_tables:
            out += ["", *_md_table(table)]
    else:
        out += ["Environment", "-----------"] + [f"{k:17} {v}" for k, v in env]
        out += ["", f"{size}, {when}"]
        for table in all_tables:
            out += ["", *_text_table(table)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few rounds (as JANUS_BENCH_QUICK=1)")
    parser.add_argument("--markdown", action="store_true", help="print the report as a Markdown section")
    parser.add_argument("--save-json", metavar="PATH", help="keep pytest-benchmark's JSON of the run")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the memory bursts")
    parser.add_argument("--from-json", metavar="PATH", help="no run: render the report from a saved JSON")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest (e.g. -- -k producer)")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["JANUS_BENCH_QUICK"] = "1"
    sys.path.insert(0, str(ROOT))

    env = environment()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text(encoding="utf-8")).get("janus_environment")
        env = [tuple(pair) for pair in saved] if saved else env  # type: ignore[misc]
    if not args.markdown:
        print("\n".join(["Environment", "-----------"] + [f"{k:17} {v}" for k, v in env]), flush=True)
        print(file=sys.stderr)

    memory: list[dict[str, Any]] | None = None
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        memory = data.get("janus_memory")
        if data.get("janus_quick"):
            args.quick = True
    else:
        with tempfile.TemporaryDirectory(prefix="janus-bench-") as tmp:
            json_path = Path(args.save_json).resolve() if args.save_json else Path(tmp) / "run.json"
            code = run_suites(json_path, args.pytest_args, args.quick)
            if not json_path.exists():
                print(f"pytest exited with {code} and wrote no results", file=sys.stderr)
                return code or 1
            data = json.loads(json_path.read_text(encoding="utf-8"))
            if code != 0:
                print(f"warning: pytest exited with {code}; the table shows what ran", file=sys.stderr)
        if not args.skip_memory:
            from bench import _memory

            memory = []
            for kind in _memory.KINDS:
                print(f"memory burst: {kind} ...", file=sys.stderr, flush=True)
                memory.append(_memory.measure(kind))
        if args.save_json:
            data["janus_memory"] = memory
            data["janus_environment"] = env
            data["janus_quick"] = os.environ.get("JANUS_BENCH_QUICK") == "1"
            Path(args.save_json).write_text(json.dumps(data, indent=1), encoding="utf-8")

    tables, goals = figures(data, memory, machine_name(env))
    report = render(env, tables, goals, markdown=args.markdown, quick=args.quick or os.environ.get("JANUS_BENCH_QUICK") == "1")
    if not args.markdown:
        report = report.split("\n\n", 1)[1]  # the environment is printed already
    sys.stdout.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
