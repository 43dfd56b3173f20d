"""Alert rules: be told when matching records pile up, once per storm, not once per record.

    ju.configure(..., alerts=[
        ju.Alert("errors spiking", level="ERROR", threshold=20, window="1m",
                 cooldown="10m", notify="http://127.0.0.1:9093/hook"),
        ju.Alert("payment failures", query='"payment failed"', threshold=1,
                 window="5m", notify=page_oncall),
    ])

How it runs:

* On committed records only: an evaluator reads the database through a
  read-only :class:`~janus_utils.store.LogStore`, so a rule sees what a search
  sees, with the same query language and filters, and never touches the ring,
  the flusher or a log call.
* One evaluator per database: every process that configured alerts competes
  for a lock beside the database (``<db>-alerts.lock``); the holder evaluates,
  the others wait to take over if its process dies.  It is a lock of its own,
  not the flusher's: the process that holds the flusher lock may not have
  configured any alert, and evaluating never delays a commit.  The rules that
  run are the evaluating process's: give every process the same ones.
* Sliding windows: after new records are committed, each rule counts the
  matching records of the last *window* (by their ts).  At *threshold* it
  fires, then stays quiet for *cooldown*: a storm of 10,000 errors sends one
  notification per cooldown.  When each rule last fired is kept in
  ``<db>-alerts.json``, so a new evaluator after a failover keeps the cooldown.
  It is written when a rule fires, before the notification goes out: a
  process killed in between loses that notification rather than sending two.
* Notifications go out from their own thread: a JSON POST to a URL, or a call
  of a function, with the rule, the count, the window and a few sample records
  as stored (redacted before they were stored).  A failed one is retried with
  backoff, then counted as failed; ``stats()["alerts"]`` reports it.  Nothing
  here ever logs through janus_utils, so an alert about errors cannot cause
  more errors to alert about.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._levels import level_name, parse_level
from ._timeparse import format_ts, parse_duration
from .error_handling.utils.errors import ConfigError
from .file_handler import FileLock, atomic_write

__all__ = ["Alert", "AlertEngine", "Notifier"]

Notifier = Callable[[dict[str, Any]], Any]
"""A function that takes the notification (a JSON-ready dict); raising means it failed."""

SAMPLE_CHARS = 4096  # a sample record's message and exception are cut to this many characters
_NS = 1_000_000_000
_COMMIT_MARGIN_NS = 10 * _NS  # how far out of ts order records of several processes may be committed


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a duration like '1m' or seconds, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value) / _NS
        except Exception:
            raise ConfigError(f"{name} must be a duration like 30s, 1m, 10m or 1h, not {value!r}") from None
    else:
        raise ConfigError(f"{name} must be a duration like '1m' or seconds, not {type(value).__name__}")
    if not seconds > 0:
        raise ConfigError(f"{name} must be more than 0 seconds, not {value!r}")
    return seconds


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Alert:
    """One rule: *threshold* matching records within *window* send one notification.

    Matching uses LogStore's language: *query* is a full-text query as in
    ``search()``; *level* is a minimum level; *logger* a logger and its
    children; *fields* equality on JSON fields.  *window* and *cooldown* are
    durations ("30s", "1m", "10m") or seconds.  *notify* is an http(s) URL
    that gets a JSON POST, or a callable that gets the same dict.  *samples*
    records (the newest matching) travel with the notification.
    """

    name: str
    notify: str | Notifier
    query: str | None = None
    level: int | str | None = None
    logger: str | None = None
    fields: Mapping[str, Any] | None = None
    threshold: int = 1
    window: str | float = "1m"
    cooldown: str | float = "10m"
    samples: int = 5
    window_s: float = field(init=False, repr=False)
    cooldown_s: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("an Alert needs a name, e.g. Alert('errors spiking', ...)")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 1:
            raise ConfigError(f"Alert {self.name!r}: threshold must be a whole number of at least 1, not {self.threshold!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or not 0 <= self.samples <= 100:
            raise ConfigError(f"Alert {self.name!r}: samples must be 0 to 100, not {self.samples!r}")
        if self.query is not None and not isinstance(self.query, str):
            raise ConfigError(f"Alert {self.name!r}: query must be text, not {type(self.query).__name__}")
        if self.level is not None:
            try:
                object.__setattr__(self, "level", parse_level(self.level))
            except ValueError as exc:
                raise ConfigError(f"Alert {self.name!r}: {exc}") from None
        if self.logger is not None and (not isinstance(self.logger, str) or not self.logger.strip(".")):
            raise ConfigError(f"Alert {self.name!r}: logger must be a logger name like 'svc' or 'svc.db'")
        if self.fields is not None and not isinstance(self.fields, Mapping):
            raise ConfigError(f"Alert {self.name!r}: fields must be a mapping like {{'status': 500}}")
        object.__setattr__(self, "window_s", _seconds(self.window, f"Alert {self.name!r}: window"))
        object.__setattr__(self, "cooldown_s", _seconds(self.cooldown, f"Alert {self.name!r}: cooldown"))
        notify = self.notify
        if isinstance(notify, str):
            parts = urllib.parse.urlsplit(notify)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(
                    f"Alert {self.name!r}: notify must be an http:// or https:// URL or a function, not {notify!r}"
                )
        elif not callable(notify):
            raise ConfigError(f"Alert {self.name!r}: notify must be a URL or a function, not {type(notify).__name__}")

    @property
    def filters(self) -> dict[str, Any]:
        """The LogStore filters this rule matches with."""
        found: dict[str, Any] = {}
        if self.level is not None:
            found["level"] = self.level
        if self.logger is not None:
            found["logger"] = self.logger
        if self.fields:
            found["fields"] = dict(self.fields)
        return found

    def describe(self) -> dict[str, Any]:
        """The rule as a notification names it."""
        return {
            "name": self.name,
            "query": self.query,
            "level": level_name(self.level) if isinstance(self.level, int) else None,
            "logger": self.logger,
            "fields": dict(self.fields) if self.fields else None,
            "threshold": self.threshold,
            "window": _duration_text(self.window_s),
            "cooldown": _duration_text(self.cooldown_s),
        }


def check_rules(rules: object) -> tuple[Alert, ...]:
    """configure(alerts=...) as a tuple of Alerts with distinct names; ConfigError otherwise."""
    if rules is None:
        return ()
    if isinstance(rules, Alert):
        rules = [rules]
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence):
        raise ConfigError("alerts must be a list of janus_utils.Alert(...) rules")
    checked: list[Alert] = []
    for rule in rules:
        if not isinstance(rule, Alert):
            raise ConfigError(f"alerts must hold janus_utils.Alert(...) rules, not {type(rule).__name__}")
        if any(rule.name == other.name for other in checked):
            raise ConfigError(f"two alerts are named {rule.name!r}: give each rule its own name")
        checked.append(rule)
    return tuple(checked)


def _ts_text(ts: int) -> str:
    seconds, ns = divmod(ts, _NS)
    return f"{seconds}.{ns:09d}"


def _sample(record: Any) -> dict[str, Any]:
    data = record.to_dict()
    for key in ("message", "exception"):
        text = data.get(key)
        if isinstance(text, str) and len(text) > SAMPLE_CHARS:
            data[key] = text[:SAMPLE_CHARS] + f"…[cut: {len(text) - SAMPLE_CHARS} more chars]"
    return data


def post_json(url: str, payload: Mapping[str, Any], timeout: float = 5.0) -> None:
    """POST *payload* as JSON to *url*; raises unless the answer is 2xx."""
    body = json.dumps(payload, ensure_ascii=False, default=str).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"content-type": "application/json", "user-agent": "janus_utils-alerts"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked in Alert)
        if not 200 <= response.status < 300:
            raise OSError(f"{url} answered {response.status}")


_engines: weakref.WeakSet[AlertEngine] = weakref.WeakSet()
_abandoned: list[Any] = []  # connections a forked child inherited: never used, never closed


class AlertEngine:
    """Evaluates rules for one database (when this process holds its lock) and sends notifications.

    Two threads: the evaluator and the notifier.  Neither ever runs in a log
    call or in the flusher's commit loop.
    """

    def __init__(
        self,
        db_path: str,
        rules: Sequence[Alert],
        *,
        poll_interval: float = 0.5,
        election_interval: float = 1.0,
        retry_backoff: float = 1.0,
        retry_max_backoff: float = 60.0,
        retry_for: float = 300.0,
        queue_size: int = 100,
        post: Callable[[str, Mapping[str, Any]], None] = post_json,
    ) -> None:
        self.db_path = os.path.abspath(db_path)
        self.rules = tuple(rules)
        self.poll_interval = poll_interval
        self.election_interval = election_interval
        self.retry_backoff = retry_backoff
        self.retry_max_backoff = retry_max_backoff
        self.retry_for = retry_for
        self.queue_size = queue_size
        self.post = post
        self.lock_path = self.db_path + "-alerts.lock"
        self.state_path = self.db_path + "-alerts.json"
        self._init_runtime()
        _engines.add(self)

    def _init_runtime(self) -> None:
        self._stop_evaluating = False
        self.lock = FileLock(self.lock_path)
        self.leader = False
        self.stopping = threading.Event()
        self.pending: queue.Queue[dict[str, Any]] = queue.Queue(self.queue_size)
        self.store: Any = None
        self.store_lock = threading.Lock()  # held around each evaluation and across fork
        self.threads: list[threading.Thread] = []
        self.last_fired: dict[str, float] = {}  # rule name -> wall-clock seconds
        self.seen_id = -1
        # counters (this process)
        self.fired = 0
        self.sent = 0
        self.failed = 0
        self.retries = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.last_sent: float | None = None
        self.by_rule: dict[str, dict[str, Any]] = {r.name: {"fired": 0, "sent": 0, "failed": 0} for r in self.rules}
        self._last_report = 0.0
        self._in_flight = 0

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._evaluate_loop, name="janus-alerts", daemon=True),
            threading.Thread(target=self._notify_loop, name="janus-alerts-notify", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Evaluate once more, stop, and give notifications up to *timeout* seconds to go out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        evaluator = self.threads[0] if self.threads else None
        self._stop_evaluating = True
        if evaluator is not None and evaluator is not threading.current_thread():
            evaluator.join(timeout)
        if self.leader:
            # What was committed since the last look (the records logged just
            # before shutdown) is evaluated once more, not left to nobody.
            with self.store_lock, contextlib.suppress(Exception):
                self.evaluate_once()
        # Let what is queued go out, then stop the notifier.
        while (self.pending.qsize() or self._in_flight) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02)
        self.stopping.set()
        for thread in self.threads[1:]:
            if thread is not threading.current_thread():
                thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.1))
        with self.store_lock:
            if self.store is not None:
                with contextlib.suppress(Exception):
                    self.store.close()
                self.store = None
            if self.leader:
                with contextlib.suppress(Exception):
                    self.lock.release()
                self.leader = False

    def stats(self) -> dict[str, Any]:
        return {
            "rules": len(self.rules),
            "evaluating": self.leader,
            "fired": self.fired,
            "sent": self.sent,
            "failed": self.failed,
            "retries": self.retries,
            "queued": self.pending.qsize() + self._in_flight,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "last_sent": format_ts(int(self.last_sent * _NS), digits=3) if self.last_sent else None,
            "by_rule": {name: dict(counts) for name, counts in self.by_rule.items()},
        }

    # -- the evaluator -----------------------------------------------------
    def _evaluate_loop(self) -> None:
        while not self._stop_evaluating and not self.stopping.is_set():
            try:
                if not self.leader:
                    if self.lock.acquire(blocking=False):
                        self.leader = True
                        self.last_fired = self._load_state()
                        self.seen_id = -1
                    else:
                        self.stopping.wait(self.election_interval)
                        continue
                with self.store_lock:
                    self.evaluate_once()
            except Exception as err:  # the evaluator must outlive any one failure
                self._report(f"alert evaluation failed: {type(err).__name__}: {err}")
                with self.store_lock:
                    if self.store is not None:
                        with contextlib.suppress(Exception):
                            self.store.close()
                        self.store = None
            self.stopping.wait(self.poll_interval)

    def evaluate_once(self, now: float | None = None) -> int:
        """Check every rule against what was committed; returns how many fired."""
        from .error_handling.utils.errors import FileHandlerError
        from .store import LogStore

        if self.store is None:
            try:
                self.store = LogStore(self.db_path)
            except FileHandlerError:
                return 0  # no database yet: the flusher creates it
        store = self.store
        newest = store.newest_id()
        if newest == self.seen_id:
            return 0  # nothing committed since: every window count can only have fallen
        self.seen_id = newest
        now = time.time() if now is None else now
        fired = 0
        for rule in self.rules:
            last = self.last_fired.get(rule.name)
            if last is not None and now - last < rule.cooldown_s:
                continue
            start_ns = int((now - rule.window_s) * _NS)
            since = _ts_text(start_ns)
            # Count from the id where the window starts: the work is the
            # window's rows, however many older records the query matches.
            # The margin covers records committed a little out of ts order.
            first = store.search(since=_ts_text(start_ns - _COMMIT_MARGIN_NS), order="oldest", limit=1)
            if not first:
                continue
            found, count, _ = store.after(
                first[0].id - 1, rule.query, limit=max(rule.samples, 1), since=since, **rule.filters
            )
            if count < rule.threshold:
                continue
            found = found[: rule.samples]
            self.last_fired[rule.name] = now
            self._save_state()
            payload = {
                "rule": rule.name,
                "count": count,
                "threshold": rule.threshold,
                "window": _duration_text(rule.window_s),
                "window_seconds": rule.window_s,
                "fired_at": format_ts(int(now * _NS), digits=3),
                "database": self.db_path,
                "match": rule.describe(),
                "samples": [_sample(record) for record in found],
            }
            self.fired += 1
            self.by_rule[rule.name]["fired"] += 1
            try:
                self.pending.put_nowait(payload)
            except queue.Full:
                self.dropped += 1
                self._report(f"alert {rule.name!r} not sent: {self.queue_size} notifications are already waiting")
            fired += 1
        return fired

    def _load_state(self) -> dict[str, float]:
        try:
            with open(self.state_path, encoding="utf-8") as stream:
                data = json.load(stream)
        except (OSError, ValueError):
            return {}
        fired = data.get("last_fired") if isinstance(data, dict) else None
        if not isinstance(fired, dict):
            return {}
        return {str(k): float(v) for k, v in fired.items() if isinstance(v, (int, float))}

    def _save_state(self) -> None:
        try:
            atomic_write(self.state_path, json.dumps({"last_fired": self.last_fired}), 0o600)
        except Exception as err:
            self._report(f"cannot keep the alert state in {self.state_path}: {err}")

    # -- the notifier ------------------------------------------------------
    def _notify_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                payload = self.pending.get(timeout=0.2)
            except queue.Empty:
                continue
            self._in_flight = 1
            try:
                self._deliver(payload)
            finally:
                self._in_flight = 0

    def _deliver(self, payload: dict[str, Any]) -> None:
        rule = next((r for r in self.rules if r.name == payload["rule"]), None)
        if rule is None:
            return
        started = time.monotonic()
        backoff = self.retry_backoff
        while True:
            try:
                if isinstance(rule.notify, str):
                    self.post(rule.notify, payload)
                else:
                    rule.notify(payload)
            except Exception as err:
                self.last_error = f"alert {rule.name!r}: notify failed: {type(err).__name__}: {err}"
                self._report(self.last_error)
                if self.stopping.is_set() or time.monotonic() - started + backoff > self.retry_for:
                    self.failed += 1
                    self.by_rule[rule.name]["failed"] += 1
                    return
                self.retries += 1
                if self.stopping.wait(backoff):
                    self.failed += 1
                    self.by_rule[rule.name]["failed"] += 1
                    return
                backoff = min(backoff * 2, self.retry_max_backoff)
                continue
            self.sent += 1
            self.by_rule[rule.name]["sent"] += 1
            self.last_sent = time.time()
            return

    def _report(self, message: str) -> None:
        """stderr, at most every 10 s; never the logger, which could feed the alert it reports."""
        self.last_error = message
        now = time.monotonic()
        if now - self._last_report >= 10.0:
            self._last_report = now
            with contextlib.suppress(Exception):
                from .security import sanitize

                print(f"janus_utils: {sanitize(message)}", file=sys.stderr)

    # -- fork --------------------------------------------------------------
    def _before_fork(self) -> None:
        self.store_lock.acquire()

    def _after_fork_parent(self) -> None:
        self.store_lock.release()

    def _after_fork_child(self) -> None:
        # The child has neither thread, nor the lock (FileLock drops it at
        # fork), and must never use the parent's connection.
        if self.store is not None:
            _abandoned.append(self.store)
        running = bool(self.threads) and not self.stopping.is_set() and not self._stop_evaluating
        self._init_runtime()
        if running:
            self.start()


def _before_fork() -> None:
    for engine in list(_engines):
        engine._before_fork()


def _after_fork_parent() -> None:
    for engine in list(_engines):
        engine._after_fork_parent()


def _after_fork_child() -> None:
    for engine in list(_engines):
        engine._after_fork_child()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
